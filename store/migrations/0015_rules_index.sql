-- The township's follow-up rules and school calendars (FollowUpRuleSet, FollowUpRuleRetired,
-- SchoolCalendarSet) name no child, so events_children cannot find them; every figure of the
-- rules (projections/rule_queries.py) reads them. A partial index in the store's order holds
-- only those few events.
CREATE INDEX IF NOT EXISTS events_rules ON events (tx_id, position)
    WHERE type IN ('FollowUpRuleSet', 'FollowUpRuleRetired', 'SchoolCalendarSet');
