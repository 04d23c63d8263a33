-- The partitions of `events` (0024) are found by what they hold, not by their names: a region's
-- partition by its list value, a month's by its lower bound, a region's default as its DEFAULT.
-- A name is only a label, and one already taken (the region 'default' would be `events_default`;
-- the region 'gx-202601' would be `events_gx_202601`, January 2026 of the region 'gx') gets a
-- digest of what the partition holds appended. Under 0024's functions such a collision made the
-- maintenance step fail at every run (appends went on into the default partitions).

CREATE FUNCTION shouwang_event_region_table(p_region text) RETURNS regclass LANGUAGE sql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $fn$
    SELECT c.oid::regclass
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'public.events'::regclass AND c.relkind = 'p'
       AND replace((regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$^FOR VALUES IN \('(.*)'\)$$re$))[1],
                   '''''', '''') = p_region
$fn$;

CREATE FUNCTION shouwang_event_month_table(p_parent regclass, p_from timestamptz) RETURNS regclass LANGUAGE sql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $fn$
    SELECT c.oid::regclass
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_parent
       AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$^FOR VALUES FROM \('([^']*)'\)$re$))[1]::timestamptz
           = p_from
$fn$;

CREATE FUNCTION shouwang_event_default_of(p_parent regclass) RETURNS regclass LANGUAGE sql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $fn$
    SELECT c.oid::regclass
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
$fn$;

-- `p_name` if no relation of `public` has it, else the name with a digest of `p_key`.
CREATE FUNCTION shouwang_event_free_name(p_name text, p_key text) RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $fn$
    SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = p_name AND relnamespace = 'public'::regnamespace)
                THEN p_name
                ELSE left(p_name, 40) || '_x' || left(md5(p_key), 10) END
$fn$;

CREATE OR REPLACE FUNCTION shouwang_event_region(p_region text) RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_table text;
    v_default text;
BEGIN
    IF public.shouwang_event_region_table(p_region) IS NOT NULL THEN
        RETURN 0;
    END IF;
    -- Appenders wait from here to our commit (a SHARE lock conflicts with their ROW EXCLUSIVE; readers
    -- go on): one that routed a row by the partitions as they were would put it in the default
    -- after the attach below, which PostgreSQL refuses.
    LOCK TABLE ONLY public.events IN SHARE MODE;
    v_table := public.shouwang_event_free_name(public.shouwang_event_partition_name(p_region, NULL), p_region);
    EXECUTE format('CREATE TABLE public.%I (LIKE public.events INCLUDING DEFAULTS) PARTITION BY RANGE (committed_at)',
                   v_table);
    v_default := public.shouwang_event_free_name(v_table || '_default', p_region || ' default');
    EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I DEFAULT', v_default, v_table);
    EXECUTE format('WITH moved AS (DELETE FROM public.events_default WHERE region = $1 RETURNING *) '
                   'INSERT INTO public.%I SELECT * FROM moved', v_table) USING p_region;
    EXECUTE format('ALTER TABLE public.events ATTACH PARTITION public.%I FOR VALUES IN (%L)', v_table, p_region);
    RETURN 1;
END
$fn$;

CREATE OR REPLACE FUNCTION shouwang_event_month(p_region text, p_month date) RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_parent regclass := public.shouwang_event_region_table(p_region);
    v_from timestamptz := public.shouwang_event_month_start(p_month);
    v_to timestamptz := public.shouwang_event_month_start((date_trunc('month', p_month) + interval '1 month')::date);
    v_table text;
BEGIN
    IF v_parent IS NULL THEN
        RAISE EXCEPTION 'region % has no partition of events yet', p_region USING ERRCODE = 'undefined_table';
    END IF;
    IF public.shouwang_event_month_table(v_parent, v_from) IS NOT NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('LOCK TABLE ONLY %s IN SHARE MODE', v_parent);  -- as in shouwang_event_region
    v_table := public.shouwang_event_free_name(public.shouwang_event_partition_name(p_region, p_month),
                                               p_region || ' ' || p_month::text);
    EXECUTE format('CREATE TABLE public.%I (LIKE public.events INCLUDING DEFAULTS)', v_table);
    EXECUTE format('WITH moved AS (DELETE FROM %s WHERE committed_at >= $1 AND committed_at < $2 RETURNING *) '
                   'INSERT INTO public.%I SELECT * FROM moved', public.shouwang_event_default_of(v_parent), v_table)
        USING v_from, v_to;
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                   v_parent, v_table, v_from, v_to);
    RETURN 1;
END
$fn$;

-- The months (China time) of the rows a region's default partition holds.
CREATE FUNCTION shouwang_event_months_waiting(p_region text) RETURNS SETOF date LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT DISTINCT date_trunc(''month'', committed_at AT TIME ZONE ''Asia/Shanghai'')::date FROM %s',
        public.shouwang_event_default_of(public.shouwang_event_region_table(p_region)));
END
$fn$;
DROP FUNCTION shouwang_event_default_months(text);

CREATE OR REPLACE FUNCTION shouwang_event_partitions(p_ahead integer DEFAULT 2) RETURNS integer LANGUAGE plpgsql
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
            SELECT replace((regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$^FOR VALUES IN \('(.*)'\)$$re$))[1],
                           '''''', '''') AS region
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'public.events'::regclass AND c.relkind = 'p'
        )
        SELECT g.region, g.month FROM (
            SELECT rg.region, m::date AS month
              FROM regions AS rg, generate_series(v_this, v_this + make_interval(months => p_ahead), '1 month') AS m
            UNION
            SELECT rg.region, w.month
              FROM regions AS rg, LATERAL public.shouwang_event_months_waiting(rg.region) AS w(month)
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
