-- Daily per-site aggregates of counted work (projections/daily.py), so a rollup of any date range
-- sums a few rows per site and day instead of reading every fact of the range (issue 19).
--
-- One row per (township, day, site, kind, source, detail): how many facts, their amounts and
-- counts, and, for the kinds whose distinct children a rollup counts (aid, condolence, activity and
-- pairings started), the sorted distinct child ids they name. `day` is the reporting day of
-- occurred_at (China Standard Time, events/localtime.py). Every row is a GROUP BY of `fact`
-- (`shouwang_daily_refresh` below), computed the same way by the runner (for the days a batch touched) and by a
-- rebuild (for every day), so a rebuild equals the incremental result byte for byte.
--
-- The table is made by the schema function like every read model (the live schema and a
-- rebuild's shadow can never differ): the functions of 0003 keep their bodies under new names
-- and the functions of that name call them, then add this table and its key.

ALTER FUNCTION shouwang_projection_schema(text) RENAME TO shouwang_projection_schema_0003;
ALTER FUNCTION shouwang_projection_indexes(text) RENAME TO shouwang_projection_indexes_0003;

CREATE FUNCTION shouwang_projection_daily(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($$CREATE TABLE %I.daily (
        township    text     NOT NULL,
        day         date     NOT NULL,
        site_id     text     NOT NULL,
        kind        text     NOT NULL,
        source      text     NOT NULL,   -- '' when the fact has none
        detail      text     NOT NULL,   -- '' when the fact has none
        facts       integer  NOT NULL,
        amount_fen  bigint   NOT NULL,
        count       bigint   NOT NULL,
        children    text[]   NOT NULL    -- aid, condolence, activity, pairing_started: distinct child ids; else '{}'
    )$$, s);
END
$fn$;

CREATE FUNCTION shouwang_projection_schema(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM shouwang_projection_schema_0003(s);
    PERFORM shouwang_projection_daily(s);
END
$fn$;

CREATE FUNCTION shouwang_projection_indexes(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM shouwang_projection_indexes_0003(s);
    EXECUTE format('ALTER TABLE %I.daily ADD PRIMARY KEY (township, day, site_id, kind, source, detail)', s);
END
$fn$;

REVOKE EXECUTE ON FUNCTION shouwang_projection_schema(text), shouwang_projection_indexes(text),
    shouwang_projection_schema_0003(text), shouwang_projection_indexes_0003(text),
    shouwang_projection_daily(text) FROM PUBLIC;

-- The one aggregate both the runner and a rebuild write `daily` with. With p_township NULL every
-- row (a rebuild, after its facts are in; this migration); else the rows of the given (township,
-- site, day) keys, deleted and recomputed from the facts of those days (the runner, in the
-- transaction of the batch that changed those facts, projections/daily.py `refresh`). Facts of a
-- day are found through the fact index (township, occurred_at).
CREATE FUNCTION shouwang_daily_refresh(s text, p_township text[], p_site text[], p_day date[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    agg constant text := $q$
        SELECT f.township, ((f.occurred_at AT TIME ZONE 'UTC') + interval '8 hours')::date, f.site_id, f.kind,
               coalesce(f.source, ''), coalesce(f.detail, ''), count(*)::integer, sum(f.amount_fen)::bigint,
               sum(f.count)::bigint,
               CASE WHEN f.kind IN ('aid', 'condolence', 'activity', 'pairing_started') THEN coalesce(
                   (SELECT array_agg(DISTINCT c ORDER BY c)
                      FROM unnest(string_to_array(string_agg(array_to_string(f.children, ' '), ' '), ' ')) c
                     WHERE c <> ''), '{}') ELSE '{}' END
          FROM %1$I.fact f $q$;
BEGIN
    IF p_township IS NULL THEN
        EXECUTE format('DELETE FROM %I.daily', s);
        EXECUTE format('INSERT INTO %1$I.daily ' || agg || ' GROUP BY 1, 2, 3, 4, 5, 6', s);
        RETURN;
    END IF;
    EXECUTE format($q$DELETE FROM %1$I.daily d USING unnest($1::text[], $2::text[], $3::date[]) k (township, site_id, day)
                       WHERE d.township = k.township AND d.site_id = k.site_id AND d.day = k.day$q$, s)
        USING p_township, p_site, p_day;
    EXECUTE format('INSERT INTO %1$I.daily ' || agg || $q$
          JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::date[])) k (township, site_id, day)
            ON f.township = k.township AND f.site_id = k.site_id
           AND f.occurred_at >= (k.day::timestamp - interval '8 hours') AT TIME ZONE 'UTC'
           AND f.occurred_at < (k.day::timestamp + interval '16 hours') AT TIME ZONE 'UTC'
         GROUP BY 1, 2, 3, 4, 5, 6$q$, s)
        USING p_township, p_site, p_day;
END
$fn$;

-- The live schema gets the table, keyed, and filled from its facts.
SELECT shouwang_projection_daily('proj');
ALTER TABLE proj.daily ADD PRIMARY KEY (township, day, site_id, kind, source, detail);
SELECT shouwang_daily_refresh('proj', NULL, NULL, NULL);
