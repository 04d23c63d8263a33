-- The partitions' maintenance holds readers off while it moves rows, not only appenders.
--
-- 0024/0025 took a SHARE lock on the parent: appenders waited, readers went on. A reader that
-- planned while a move was under way waited for the default partition's lock (the attach holds
-- it), then ran with the partitions as it had read them before the attach and a snapshot taken
-- after the commit: the rows had left the default for a partition its plan did not scan, and it
-- saw none of them (a restore served at the center's start, while the first maintenance moved
-- the rows stored before it, answered "restored up to site_seq 0": tests/test_agent_restore.py).
-- An ACCESS EXCLUSIVE lock on `events` makes every query that opens the log wait for the commit
-- and then read the partitions afresh. The wait is the move's length: the rows a default holds
-- (those of a region before its first maintenance, or of a month beyond the months made ahead),
-- and at most the function's lock_timeout (2 s) while a long reader holds the log: the step then
-- fails, is logged, and runs again later (service/center.py).

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
    -- Appenders and readers wait from here to our commit (see the head of this file).
    LOCK TABLE ONLY public.events IN ACCESS EXCLUSIVE MODE;
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
    LOCK TABLE ONLY public.events IN ACCESS EXCLUSIVE MODE;  -- as in shouwang_event_region
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
