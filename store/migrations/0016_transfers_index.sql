-- Which site held a child when (projections/rule_queries.py, the follow-up rules' figures) is read
-- from the children's registrations and transfers. Through events_children that reads every
-- event of the township's children to keep the few transfers; this partial index holds transfers
-- only (registrations have theirs, 0011). Transfers are a small share of appends.
CREATE INDEX IF NOT EXISTS events_transfers ON events USING gin (children) WHERE type = 'ChildTransferred';
