-- Events a township office relayed to the center (service/relay.py): the center lacked them
-- after a restore from an older backup, and the office handed back the copies the fan-out had
-- sealed for it. The events themselves are in `events` like any other (the same event_id,
-- site_seq, prev_hash and hash as their site sealed them); this table says which came back that
-- way, from which office, when, for the auditor (docs/SECURITY.md, "Relayed copies").
-- Append-only, like read_log: the trigger refuses UPDATE, DELETE and TRUNCATE for every role.
CREATE TABLE relayed_events (
    event_id    uuid        PRIMARY KEY,
    site_id     text        NOT NULL,   -- the event's own site
    site_seq    bigint      NOT NULL,
    relayed_by  text        NOT NULL,   -- the township office site that relayed it
    relayed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX relayed_events_site ON relayed_events (site_id, site_seq);

CREATE FUNCTION relayed_events_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the list of relayed events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER relayed_events_no_update BEFORE UPDATE OR DELETE ON relayed_events
    FOR EACH ROW EXECUTE FUNCTION relayed_events_is_append_only();
CREATE TRIGGER relayed_events_no_truncate BEFORE TRUNCATE ON relayed_events
    FOR EACH STATEMENT EXECUTE FUNCTION relayed_events_is_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON relayed_events FROM PUBLIC;
