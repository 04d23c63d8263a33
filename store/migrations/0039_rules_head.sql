-- The newest rule event below the readers' horizon, as a function whose query is planned once.
--
-- Every rollup request reads it with its scope's heads (projections/queries.py `heads_select`,
-- and `rule_queries.inputs_key`): the rules' inputs of a scope depend on it. Written inside those
-- statements, which take parameters, it was planned again at every execution (PostgreSQL kept
-- custom plans for them), and planning `max(tx_id)` over every partition of `events` cost ~6 ms of
-- the database's CPU per statement at 1M events in 121 partitions (the API benchmark), where the
-- rest of the statement costs ~0.3 ms. A PL/pgSQL function's query without parameters is planned
-- once per session and its plan kept. STABLE: it reads with the calling statement's snapshot, so
-- the answer is the one the query gave inside the statement (the same horizon as
-- projections/source.py HORIZON).
CREATE FUNCTION events_rules_head() RETURNS bigint
    LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT max(tx_id) FROM events
             WHERE type IN ('FollowUpRuleSet', 'FollowUpRuleRetired', 'SchoolCalendarSet')
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint);
END
$$;
