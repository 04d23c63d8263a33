-- The log partitioned by region and month (docs/SCALE.md, "The partitioned store").
--
-- `events` becomes PARTITION BY LIST (region); each region's partition is PARTITION BY RANGE
-- (committed_at), one partition per calendar month in China time (Asia/Shanghai, UTC+8, no
-- daylight saving): a month's partition then holds what the townships call that month (the
-- daily rows and every report count days in China time, 0023), so keeping or archiving a
-- month is keeping or archiving one partition. `events` has no unique constraint (identity is
-- in event_index, 0001), so no key changes; the global order (tx_id, position) and the
-- horizon of store/postgres.py are one transaction id space and one sequence, unchanged across
-- partitions: an ordered read becomes a Merge Append of one index scan per partition.
--
-- Partitions exist before rows arrive, and an append never fails for want of one:
-- * `events_default` (DEFAULT of the top level) takes a region that has no partition yet, and
--   each region's `<region>_default` a month that has none;
-- * shouwang_event_partitions(ahead) (SECURITY DEFINER, run by `center run` at start and
--   daily, and by `shouwang db partitions --ensure`) creates a partition for every region of
--   the registry and of the default partition, and for this month and `ahead` months more of
--   every region, moving any rows of a new partition out of the default in the same
--   transaction (every column kept, tx_id and position included). Concurrent calls serialize
--   on an advisory lock; a call that cannot get a table lock within lock_timeout fails alone
--   (appends go on into the defaults) and the next call does the work.
-- Moving a row out of a default partition is the only DELETE of `events` rows anywhere, done
-- by the owner inside this function: the row's values, its place in the global order and its
-- visibility do not change (one transaction), so history is not rewritten (guarantee 8).

-- This migration moves the stored log: rename the old table, create the partitioned one and
-- its partitions, copy every row with every column as stored, index, drop the old table. The
-- migration runs in one transaction (store/migrate.py).
DROP INDEX events_global_order, events_site_seq, events_children, events_committed_at,
    events_corrected_event, events_event_id, events_registrations, events_rules, events_transfers;
DROP TRIGGER events_notify ON events;
ALTER TABLE events RENAME TO events_unpartitioned;

CREATE TABLE events (
    -- Global order is (tx_id, position): see store/postgres.py "Readers never skip".
    position        bigint      NOT NULL DEFAULT nextval('events_position_seq'),
    tx_id           bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    committed_at    timestamptz NOT NULL DEFAULT now(),
    region          text        NOT NULL,
    site_id         text        NOT NULL,
    site_seq        bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL,
    understood      boolean     NOT NULL,  -- false: a type or version this center does not know yet
    actor           text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     bigint      NOT NULL,  -- hybrid logical clock of the recording site
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    children        text[]      NOT NULL,
    based_on        jsonb       NOT NULL,
    payload         jsonb       NOT NULL   -- as the site sent it, at its schema_version
) PARTITION BY LIST (region);

CREATE TABLE events_default PARTITION OF events DEFAULT;

-- A partition's name: events_<region> (a region as api_users.region spells it, '-' as '_';
-- any other region by a readable prefix and a digest) and events_<region>_<yyyymm>.
CREATE FUNCTION shouwang_event_partition_name(p_region text, p_month date) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT 'events_'
        || CASE WHEN p_region ~ '^[a-z0-9-]{1,24}$' THEN replace(p_region, '-', '_')
                ELSE left(regexp_replace(lower(p_region), '[^a-z0-9]+', '', 'g'), 16) || '_x' || left(md5(p_region), 10)
           END
        || CASE WHEN p_month IS NULL THEN '' ELSE '_' || to_char(p_month, 'YYYYMM') END
$fn$;

-- The first instant of a month in China time.
CREATE FUNCTION shouwang_event_month_start(p_month date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT date_trunc('month', p_month)::timestamp AT TIME ZONE 'Asia/Shanghai'
$fn$;

-- A region's partition (itself partitioned by month, with its default), if it has none; rows of
-- the region in events_default move into it. Returns the partitions created (0 or 1).
CREATE FUNCTION shouwang_event_region(p_region text) RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_table text := public.shouwang_event_partition_name(p_region, NULL);
BEGIN
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'public.events'::regclass AND c.relname = v_table) THEN
        RETURN 0;
    END IF;
    -- Appenders wait from here to our commit (a SHARE lock conflicts with their ROW EXCLUSIVE; readers
    -- go on): one that routed a row by the partitions as they were would put it in the default
    -- after the attach below, which PostgreSQL refuses.
    LOCK TABLE ONLY public.events IN SHARE MODE;
    EXECUTE format('CREATE TABLE public.%I (LIKE public.events INCLUDING DEFAULTS) PARTITION BY RANGE (committed_at)', v_table);
    EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I DEFAULT', v_table || '_default', v_table);
    EXECUTE format('WITH moved AS (DELETE FROM public.events_default WHERE region = $1 RETURNING *) '
                   'INSERT INTO public.%I SELECT * FROM moved', v_table) USING p_region;
    EXECUTE format('ALTER TABLE public.events ATTACH PARTITION public.%I FOR VALUES IN (%L)', v_table, p_region);
    RETURN 1;
END
$fn$;

-- A month's partition of a region (whose partition exists), if it has none; the region's rows
-- of that month in its default partition move into it. Returns the partitions created (0 or 1).
CREATE FUNCTION shouwang_event_month(p_region text, p_month date) RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_parent text := public.shouwang_event_partition_name(p_region, NULL);
    v_table text := public.shouwang_event_partition_name(p_region, p_month);
    v_from timestamptz := public.shouwang_event_month_start(p_month);
    v_to timestamptz := public.shouwang_event_month_start((date_trunc('month', p_month) + interval '1 month')::date);
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = v_table AND c.relnamespace = 'public'::regnamespace) THEN
        RETURN 0;
    END IF;
    EXECUTE format('LOCK TABLE ONLY public.%I IN SHARE MODE', v_parent);  -- as in shouwang_event_region
    EXECUTE format('CREATE TABLE public.%I (LIKE public.events INCLUDING DEFAULTS)', v_table);
    EXECUTE format('WITH moved AS (DELETE FROM public.%I WHERE committed_at >= $1 AND committed_at < $2 RETURNING *) '
                   'INSERT INTO public.%I SELECT * FROM moved', v_parent || '_default', v_table) USING v_from, v_to;
    EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                   v_parent, v_table, v_from, v_to);
    RETURN 1;
END
$fn$;

-- The maintenance step (see the top of this file). Returns the partitions created.
CREATE FUNCTION shouwang_event_partitions(p_ahead integer DEFAULT 2) RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $fn$
DECLARE
    v_this date := date_trunc('month', now() AT TIME ZONE 'Asia/Shanghai')::date;
    v_created integer := 0;
    r record;
BEGIN
    IF p_ahead IS NULL OR p_ahead < 0 OR p_ahead > 120 THEN
        RAISE EXCEPTION 'months ahead must be 0 to 120, got %', p_ahead USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('shouwang_event_partitions'));
    FOR r IN SELECT split_part(site_id, '.', 1) AS region FROM public.sites
             UNION SELECT DISTINCT region FROM public.events_default
             ORDER BY 1 LOOP
        v_created := v_created + public.shouwang_event_region(r.region);
    END LOOP;
    FOR r IN
        WITH regions AS (
            SELECT c.relname::text AS parent,
                   replace((regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$^FOR VALUES IN \('(.*)'\)$$re$))[1],
                           '''''', '''') AS region
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'public.events'::regclass AND c.relkind = 'p'
        )
        SELECT g.region, g.month FROM (
            SELECT rg.region, m::date AS month
              FROM regions AS rg, generate_series(v_this, v_this + make_interval(months => p_ahead), '1 month') AS m
            UNION
            SELECT rg.region, d.month
              FROM regions AS rg,
                   LATERAL public.shouwang_event_default_months(rg.parent || '_default') AS d(month)
        ) AS g ORDER BY 1, 2
    LOOP
        v_created := v_created + public.shouwang_event_month(r.region, r.month);
    END LOOP;
    IF v_created > 0 THEN  -- new tables get the owner's default privileges: narrow them again
        FOR r IN SELECT role FROM public.service_roles ORDER BY role LOOP
            PERFORM public.shouwang_grant_service(r.role);
        END LOOP;
    END IF;
    RETURN v_created;
END
$fn$;
REVOKE EXECUTE ON FUNCTION shouwang_event_partitions(integer) FROM PUBLIC;

-- The months (China time) of the rows a region's default partition holds.
CREATE FUNCTION shouwang_event_default_months(p_default text) RETURNS SETOF date LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT DISTINCT date_trunc(''month'', committed_at AT TIME ZONE ''Asia/Shanghai'')::date FROM public.%I',
        p_default);
END
$fn$;

-- The stored log's partitions: every region and month it holds, and the months ahead.
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT region FROM events_unpartitioned
             UNION SELECT split_part(site_id, '.', 1) FROM sites
             ORDER BY 1 LOOP
        PERFORM shouwang_event_region(r.region);
    END LOOP;
    FOR r IN SELECT DISTINCT region, date_trunc('month', committed_at AT TIME ZONE 'Asia/Shanghai')::date AS month
               FROM events_unpartitioned ORDER BY 1, 2 LOOP
        PERFORM shouwang_event_month(r.region, r.month);
    END LOOP;
END
$do$;
SELECT shouwang_event_partitions(2);

INSERT INTO events (position, tx_id, committed_at, region, site_id, site_seq, event_id, type, schema_version,
                    understood, actor, occurred_at, recorded_at, prev_hash, hash, children, based_on, payload)
SELECT position, tx_id, committed_at, region, site_id, site_seq, event_id, type, schema_version,
       understood, actor, occurred_at, recorded_at, prev_hash, hash, children, based_on, payload
  FROM events_unpartitioned
 ORDER BY tx_id, position;
DROP TABLE events_unpartitioned;

-- Every index of the old table, on every partition (PostgreSQL creates them on partitions made later).
CREATE INDEX events_global_order ON events (tx_id, position);
CREATE INDEX events_site_seq ON events (site_id, site_seq);
CREATE INDEX events_children ON events USING gin (children);
CREATE INDEX events_committed_at ON events USING brin (committed_at);
CREATE INDEX events_corrected_event ON events ((payload->>'corrected_event_id')) WHERE type = 'EventCorrected';
CREATE INDEX events_event_id ON events (event_id);
CREATE INDEX events_registrations ON events USING gin (children) WHERE type = 'ChildRegistered';
CREATE INDEX events_rules ON events (tx_id, position)
    WHERE type IN ('FollowUpRuleSet', 'FollowUpRuleRetired', 'SchoolCalendarSet');
CREATE INDEX events_transfers ON events USING gin (children) WHERE type = 'ChildTransferred';

CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION shouwang_notify_events();

-- Autovacuum analyzes partitions, never a partitioned table itself.
ANALYZE events;

-- shouwang_grant_service as in 0010, with the partitions of `events`: the service reads and
-- appends through `events` (PostgreSQL checks the privileges of the table named in a query, not
-- of the partitions a row goes to), and holds nothing on a partition itself; it may run the
-- maintenance step.
CREATE OR REPLACE FUNCTION shouwang_grant_service(p_role name) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    r record;
    want text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', p_role);
    IF to_regnamespace('proj') IS NOT NULL THEN
        EXECUTE format('GRANT USAGE ON SCHEMA proj TO %I', p_role);
    END IF;
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relname::text AS name, n.nspname::text AS nsp, c.relkind,
               c.relispartition AND pg_partition_root(c.oid) = 'public.events'::regclass AS log_partition
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('public', 'proj', 'proj_shadow') AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    LOOP
        want := CASE
            -- nextval() of column defaults (events.position, quarantine.id, read_log.id)
            WHEN r.relkind = 'S' THEN 'USAGE'
            -- read models: the runner and a rebuild replace rows (projections/tables.py)
            WHEN r.nsp <> 'public' AND r.relkind IN ('r', 'p') THEN 'SELECT, INSERT, UPDATE, DELETE'
            WHEN r.nsp <> 'public' THEN 'SELECT'
            -- a partition of the log: read and appended through `events` only
            WHEN r.log_partition THEN NULL
            -- the log: appended and read, never changed (guarantee 8; store/postgres.py, shouwang_append)
            WHEN r.name IN ('events', 'event_index') THEN 'SELECT, INSERT'
            -- every read of a child's data: appended and read (guarantee 9; service/api/audit.py)
            WHEN r.name = 'read_log' THEN 'SELECT, INSERT'
            -- the center's log of account actions: appended and read (service/api/auth.py, 0010)
            WHEN r.name = 'api_user_log' THEN 'SELECT, INSERT'
            -- `db status` and the start-up check that nothing is pending (store/migrate.py)
            WHEN r.name = 'schema_migrations' THEN 'SELECT'
            WHEN r.name = 'service_roles' THEN NULL
            -- a successful log-in forgets the failures (service/api/auth.py)
            WHEN r.name = 'login_throttle' THEN 'SELECT, INSERT, UPDATE, DELETE'
            -- upserted and updated, never deleted: progress and counters, the registry, quarantine
            -- (replay marks rows), scope versions (closed by until_tx), checkpoints, users and tokens
            -- (disabled, revoked), the township office's clock
            WHEN r.name IN ('site_progress', 'sites', 'quarantine', 'child_scope', 'child_links',
                            'fanout_checkpoint', 'api_users', 'api_tokens', 'api_site_clock')
                THEN 'SELECT, INSERT, UPDATE'
            WHEN r.relkind IN ('v', 'm') THEN 'SELECT'
            ELSE 'SELECT, INSERT, UPDATE, DELETE'
        END;
        EXECUTE format('REVOKE ALL ON %s FROM %I', r.rel, p_role);
        IF want IS NOT NULL THEN
            EXECUTE format('GRANT %s ON %s TO %I', want, r.rel, p_role);
        END IF;
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION shouwang_append TO %I', p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION shouwang_event_partitions(integer) TO %I', p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION shouwang_projection_shadow(), shouwang_projection_keys(text), '
                   'shouwang_projection_swap() TO %I', p_role);
END
$fn$;
REVOKE EXECUTE ON FUNCTION shouwang_grant_service(name) FROM PUBLIC;
