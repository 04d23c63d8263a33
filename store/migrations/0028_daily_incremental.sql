-- The runner's daily rows in time that does not grow with the store (projections/daily.py).
--
-- 1. `shouwang_daily_refresh` for some keys found the facts of those (township, site, day) keys
--    through a hash join on (township, site) with the day as a filter: every fact of every site
--    a batch touched was read and paired with each of its days (1.3 s a batch of 1,000 events
--    over 200k stored, growing with the store). The facts of each key are now read by a
--    LATERAL subquery the planner cannot flatten (OFFSET 0), one index range of
--    fact (township, occurred_at) per key. What it computes is unchanged.
-- 2. `shouwang_daily_add`: the facts of events that had none before, added to their rows in
--    place (counts and sums added, the distinct children merged), by the same aggregate. The
--    runner uses it for facts that are new and whose key no refresh of the same write
--    recomputes; a fact changed or removed still recomputes its keys, before and after.
--
-- The aggregate both functions (and a rebuild, through the refresh with NULL keys) use is
-- `shouwang_daily_agg`, the text migration 0023 had inside the refresh.

CREATE FUNCTION shouwang_daily_agg() RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
    SELECT $q$
        SELECT f.township, ((f.occurred_at AT TIME ZONE 'UTC') + interval '8 hours')::date, f.site_id, f.kind,
               coalesce(f.source, ''), coalesce(f.detail, ''), count(*)::integer, sum(f.amount_fen)::bigint,
               sum(f.count)::bigint,
               CASE WHEN f.kind IN ('aid', 'condolence', 'activity', 'pairing_started') THEN coalesce(
                   (SELECT array_agg(DISTINCT c ORDER BY c)
                      FROM unnest(string_to_array(string_agg(array_to_string(f.children, ' '), ' '), ' ')) c
                     WHERE c <> ''), '{}') ELSE '{}' END
    $q$
$fn$;

CREATE OR REPLACE FUNCTION shouwang_daily_refresh(s text, p_township text[], p_site text[], p_day date[])
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_township IS NULL THEN
        EXECUTE format('DELETE FROM %I.daily', s);
        EXECUTE format('INSERT INTO %1$I.daily ' || shouwang_daily_agg() || ' FROM %1$I.fact f GROUP BY 1, 2, 3, 4, 5, 6', s);
        RETURN;
    END IF;
    EXECUTE format($q$DELETE FROM %1$I.daily d USING unnest($1::text[], $2::text[], $3::date[]) k (township, site_id, day)
                       WHERE d.township = k.township AND d.site_id = k.site_id AND d.day = k.day$q$, s)
        USING p_township, p_site, p_day;
    EXECUTE format('INSERT INTO %1$I.daily ' || shouwang_daily_agg() || $q$
          FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::date[])) k (township, site_id, day)
         CROSS JOIN LATERAL (
               SELECT * FROM %1$I.fact x
                WHERE x.township = k.township AND x.site_id = k.site_id
                  AND x.occurred_at >= (k.day::timestamp - interval '8 hours') AT TIME ZONE 'UTC'
                  AND x.occurred_at < (k.day::timestamp + interval '16 hours') AT TIME ZONE 'UTC'
               OFFSET 0) f
         GROUP BY 1, 2, 3, 4, 5, 6$q$, s)
        USING p_township, p_site, p_day;
END
$fn$;

CREATE FUNCTION shouwang_daily_add(s text, p_events text[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('INSERT INTO %1$I.daily AS d ' || shouwang_daily_agg() || $q$
          FROM %1$I.fact f WHERE f.event_id = ANY($1::text[])
         GROUP BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (township, day, site_id, kind, source, detail) DO UPDATE
           SET facts = d.facts + excluded.facts, amount_fen = d.amount_fen + excluded.amount_fen,
               count = d.count + excluded.count,
               children = CASE WHEN excluded.children = '{}' THEN d.children
                               ELSE ARRAY(SELECT DISTINCT c FROM unnest(d.children || excluded.children) c
                                           ORDER BY c) END$q$, s)
        USING p_events;
END
$fn$;

-- 3. The archives' `view` (a whole archive, msgpack, about 5 KB at a hundred events) compressed
--    with lz4 instead of pglz: a batch rewrites one row per archive it touches, and pglz was
--    about half of that write (1,000 archives rewritten: 0.60 s with pglz, 0.22 s with lz4, the
--    same size within 2%). The live schema's column, and every schema made from now on (a
--    rebuild's shadow). A server built without lz4 keeps pglz (the same values either way).
CREATE FUNCTION shouwang_projection_lz4(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %I.archive ALTER COLUMN view SET COMPRESSION lz4', s);
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END
$fn$;

ALTER FUNCTION shouwang_projection_schema(text) RENAME TO shouwang_projection_schema_0023;

CREATE FUNCTION shouwang_projection_schema(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM shouwang_projection_schema_0023(s);
    PERFORM shouwang_projection_lz4(s);
END
$fn$;

REVOKE EXECUTE ON FUNCTION shouwang_projection_schema(text), shouwang_projection_schema_0023(text),
    shouwang_projection_lz4(text) FROM PUBLIC;

SELECT shouwang_projection_lz4('proj');
