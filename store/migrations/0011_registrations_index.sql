-- Ingest's authority check (service/authority.py load_facts) asks, for every batch, which sites
-- registered the children the batch names. Through events_children that reads every event of
-- those children (a child has hundreds) to keep the few registrations; this partial index holds
-- registrations only, so the check reads one row per registration. Registrations are a small
-- share of appends, so the index costs appends little.
CREATE INDEX IF NOT EXISTS events_registrations ON events USING gin (children) WHERE type = 'ChildRegistered';
