-- The store's append as one server-side call (store/postgres.py, `append_in`): lock the sites'
-- progress rows in site order, tell each event's fate, insert the new ones into event_index and
-- into events, and advance each site's watermark, in
-- one round trip. It keeps every promise listed at the top of store/postgres.py:
--
-- * progress rows are locked (upsert, in site order) before anything is checked, so sequence
--   numbers are checked against a current view and two appenders never deadlock on sites;
-- * an event whose (site, site_seq) is committed already (at or below the watermark, or inside
--   a committed range) is not inserted: it is a duplicate if event_index holds its id with the
--   same hash, refused ('c') if with another hash, and refused ('t', with the holder) if its id
--   is not stored at all (a different event claiming a taken sequence number);
-- * new ids go into event_index with ON CONFLICT DO NOTHING (in id order, so two appenders
--   never wait on each other's ids crosswise); an id that is there already is classified as
--   above; the primary key settles racing appenders (the second waits for the first's commit);
-- * rows of events get tx_id/position from their defaults, in the caller's order; nothing
--   is ever updated or deleted in events.
--
-- The caller guarantees that event ids, and (site_id, site_seq) pairs, are unique within the
-- batch (a batch with repeats takes the store's general path, which handles them one by one).
--
-- Result: `outcome`, one character per event in the caller's order ('s' stored, 'd' duplicate,
-- 'c' refused: id stored with different content, 't' refused: site_seq taken), and `holders`,
-- the id stored at the taken (site, site_seq) of each 't' event, in order (NULL if none found).
CREATE FUNCTION shouwang_append(
    p_site_id text[], p_site_seq bigint[], p_event_id uuid[], p_hash bytea[],
    p_occurred_at timestamptz[], p_type text[], p_schema_version integer[], p_understood boolean[],
    p_actor text[], p_recorded_at bigint[], p_prev_hash bytea[], p_children text[], p_based_on jsonb[],
    p_payload jsonb[], p_notify boolean, OUT outcome text, OUT holders uuid[]
) LANGUAGE plpgsql
-- One plan per statement, made once per connection: the default would re-plan every statement
-- at every call (for a parameter array the planner's guess makes the generic plan look dearer
-- than the custom one), doubling the server's CPU time per single-event append.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_sites text[];
    v_done int8multirange[];  -- per site: every committed site_seq ([1, watermark] and the ranges above)
    v_stored boolean[];
    v_inserted uuid[];
    v_n integer := cardinality(p_event_id);
    v_new integer;
BEGIN
    IF coalesce(v_n, 0) = 0 THEN
        outcome := '';
        holders := '{}';
        RETURN;
    END IF;

    -- 1. Lock the progress rows in site order (the upsert takes them in input order).
    WITH locked AS (
        INSERT INTO site_progress (site_id)
        SELECT DISTINCT s FROM unnest(p_site_id) AS s ORDER BY 1
        ON CONFLICT (site_id) DO UPDATE SET site_id = EXCLUDED.site_id
        RETURNING site_id, watermark, pending
    )
    SELECT array_agg(l.site_id ORDER BY l.site_id),
           array_agg(int8multirange(int8range(1, l.watermark + 1)) + coalesce(
               (SELECT range_agg(int8range(l.pending[i], l.pending[i + 1] + 1))
                  FROM generate_series(1, cardinality(l.pending), 2) AS i),
               '{}'::int8multirange) ORDER BY l.site_id)
      INTO v_sites, v_done
      FROM locked AS l;

    -- The store sends batches of up to a couple of hundred events, for which the generic plans
    -- are right (measured: planning each statement for a batch of 100 cost more than it saved).
    -- A much larger batch would join by nested loops: plan it for its size (the SET clause
    -- above restores the caller's setting on return).
    IF v_n > 1000 THEN
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;

    -- 2. New ids of events whose sequence number is free go into event_index.
    WITH ins AS (
        INSERT INTO event_index (event_id, hash)
        SELECT u.event_id, u.hash
          FROM unnest(p_site_id, p_site_seq, p_event_id, p_hash) AS u(site_id, site_seq, event_id, hash)
          JOIN unnest(v_sites, v_done) AS d(site_id, done) ON d.site_id = u.site_id
         WHERE NOT d.done @> u.site_seq
         ORDER BY u.event_id
        ON CONFLICT DO NOTHING
        RETURNING event_id
    )
    SELECT array_agg(event_id) INTO v_inserted FROM ins;
    v_new := coalesce(cardinality(v_inserted), 0);
    IF v_new = v_n THEN
        v_stored := array_fill(true, ARRAY[v_n]);
    ELSE
        SELECT array_agg(x.event_id IS NOT NULL ORDER BY u.i)
          INTO v_stored
          FROM unnest(p_event_id) WITH ORDINALITY AS u(event_id, i)
          LEFT JOIN unnest(v_inserted) AS x(event_id) ON x.event_id = u.event_id;
    END IF;

    -- 3. The stored events themselves, in the caller's order.
    IF v_new > 0 THEN
        IF NOT p_notify THEN
            PERFORM set_config('shouwang.notify_after_commit', 'on', true);
        END IF;
        INSERT INTO events (region, site_id, site_seq, event_id, type, schema_version, understood, actor,
                            occurred_at, recorded_at, prev_hash, hash, children, based_on, payload)
        SELECT split_part(u.site_id, '.', 1), u.site_id, u.site_seq, u.event_id, u.type, u.schema_version,
               u.understood, u.actor, u.occurred_at, u.recorded_at, u.prev_hash, u.hash,
               string_to_array(u.children, ' '), u.based_on, u.payload
          FROM unnest(p_site_id, p_site_seq, p_event_id, p_type, p_schema_version, p_understood, p_actor,
                      p_occurred_at, p_recorded_at, p_prev_hash, p_hash, p_children, p_based_on, p_payload,
                      v_stored) WITH ORDINALITY
               AS u(site_id, site_seq, event_id, type, schema_version, understood, actor, occurred_at,
                    recorded_at, prev_hash, hash, children, based_on, payload, stored, i)
         WHERE u.stored
         ORDER BY u.i;
    END IF;

    -- 4. Each event's fate; events not stored are looked up (one index probe each).
    IF v_new = v_n THEN
        outcome := repeat('s', v_n);
        holders := '{}';
    ELSE
        SELECT string_agg(c.code, '' ORDER BY c.i),
               coalesce(array_agg(c.holder ORDER BY c.i) FILTER (WHERE c.code = 't'), '{}')
          INTO outcome, holders
          FROM (
            SELECT u.i,
                   CASE WHEN u.stored THEN 's'
                        WHEN x.hash IS NULL THEN 't'
                        WHEN x.hash = u.hash THEN 'd'
                        ELSE 'c' END AS code,
                   CASE WHEN NOT u.stored AND x.hash IS NULL THEN
                       (SELECT e.event_id FROM events AS e
                         WHERE e.site_id = u.site_id AND e.site_seq = u.site_seq
                         ORDER BY e.tx_id, e.position LIMIT 1)
                   END AS holder
              FROM unnest(p_site_id, p_site_seq, p_event_id, p_hash, v_stored) WITH ORDINALITY
                   AS u(site_id, site_seq, event_id, hash, stored, i)
              LEFT JOIN LATERAL (SELECT xi.hash FROM event_index AS xi
                                  WHERE NOT u.stored AND xi.event_id = u.event_id) AS x ON true
          ) AS c;
    END IF;

    -- 5. Advance the progress of the sites that stored or saw duplicates (rows locked in step 1).
    WITH per_site AS (
        SELECT u.site_id,
               count(*) FILTER (WHERE u.code = 's') AS stored,
               count(*) FILTER (WHERE u.code = 'd') AS dups,
               coalesce(max(u.site_seq) FILTER (WHERE u.code = 's'), 0) AS max_seq,
               max(u.occurred_at) FILTER (WHERE u.code = 's') AS newest,
               coalesce(range_agg(int8range(u.site_seq, u.site_seq + 1)) FILTER (WHERE u.code = 's'),
                        '{}'::int8multirange) AS added
          FROM unnest(p_site_id, p_site_seq, p_occurred_at, string_to_array(outcome, NULL))
               AS u(site_id, site_seq, occurred_at, code)
         GROUP BY u.site_id
        HAVING count(*) FILTER (WHERE u.code IN ('s', 'd')) > 0
    ), merged AS (
        SELECT ps.*, d.done + ps.added AS done,
               (SELECT r FROM unnest(d.done + ps.added) AS r LIMIT 1) AS first_range
          FROM per_site AS ps
          JOIN unnest(v_sites, v_done) AS d(site_id, done) ON d.site_id = ps.site_id
    ), computed AS (
        SELECT m.*,
               CASE WHEN lower(m.first_range) = 1 THEN upper(m.first_range) - 1 ELSE 0 END AS watermark,
               ARRAY(SELECT b FROM unnest(m.done) AS r,
                            LATERAL (VALUES (lower(r)), (upper(r) - 1)) AS v(b)
                      WHERE lower(r) > 1
                      ORDER BY b) AS pending
          FROM merged AS m
    )
    UPDATE site_progress AS p
       SET watermark = c.watermark, pending = c.pending,
           max_seq = greatest(p.max_seq, c.max_seq),
           events_stored = p.events_stored + c.stored,
           duplicates_seen = p.duplicates_seen + c.dups,
           last_committed_at = CASE WHEN c.stored > 0 THEN now() ELSE p.last_committed_at END,
           newest_occurred_at = greatest(p.newest_occurred_at, c.newest)
      FROM computed AS c
     WHERE p.site_id = c.site_id;

END
$fn$;

-- The store's wake-up for listeners (0003), unless the appender says it notifies after its commit
-- (`shouwang_append(..., p_notify => false)`, EventStore.append): a NOTIFY takes a cluster-wide
-- lock at commit and holds it until the commit is flushed, which serializes concurrent small
-- appends behind one another's fsyncs (no group commit).
CREATE OR REPLACE FUNCTION shouwang_notify_events() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_setting('shouwang.notify_after_commit', true) IS DISTINCT FROM 'on' THEN
        PERFORM pg_notify('shouwang_events', '');
    END IF;
    RETURN NULL;
END
$fn$;
