-- The center: site registry, quarantine, fan-out scope and checkpoint. See service/ingest.py,
-- service/quarantine.py, service/fanout.py and service/sites.py.

-- Every site allowed to send events. An event whose subject names a site that is not here, or
-- not active, goes to quarantine (replayable once the site is registered).
CREATE TABLE sites (
    site_id         text        PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('village', 'school', 'township')),
    name            text        NOT NULL,
    township        text,                      -- display name of the township (乡镇), optional
    active          boolean     NOT NULL DEFAULT true,
    nats_password   text        NOT NULL,      -- rendered into the NATS users file (deploy/nats)
    registered_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz,
    not_understood  bigint      NOT NULL DEFAULT 0,  -- events stored but of a type/version unknown here
    quarantined     bigint      NOT NULL DEFAULT 0
);

-- Refused input, kept byte for byte with why and when (guarantee 7). Never deleted: a replay
-- marks the row 'replayed' and the event enters the store the ordinary way.
CREATE TABLE quarantine (
    id              bigserial   PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    subject         text        NOT NULL,
    site_id         text,                      -- the site named by the subject, when it names one
    event_id        uuid,                      -- when the bytes decoded far enough to tell
    site_seq        bigint,
    reason          text        NOT NULL,
    raw             bytea       NOT NULL,
    msgpack         boolean     NOT NULL DEFAULT false,
    stream_seq      bigint,                    -- CARE_UP sequence it arrived as
    deliveries      integer,
    dead_letter     boolean     NOT NULL DEFAULT false,  -- reached MaxDeliver without a commit
    status          text        NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'replayed')),
    attempts        integer     NOT NULL DEFAULT 1,
    resolved_at     timestamptz,
    resolution      text
);
CREATE INDEX quarantine_held ON quarantine (site_id, id) WHERE status = 'held';
CREATE UNIQUE INDEX quarantine_dead_letter ON quarantine (stream_seq) WHERE dead_letter;

-- Fan-out scope: which sites look after which child, versioned by the ingest transaction that
-- changed it (pg_current_xact_id), so the fan-out, which reads events in (tx_id, position)
-- order, sends each event to the sites in scope at that event, and a site that enters the
-- scope gets the child's history. Written in the same transaction as the events.
CREATE TABLE child_scope (
    child_id    text    NOT NULL,
    role        text    NOT NULL CHECK (role IN ('village', 'school')),
    site_id     text    NOT NULL,
    from_tx     bigint  NOT NULL,
    until_tx    bigint,              -- NULL while in scope
    from_event  uuid    NOT NULL
);
CREATE INDEX child_scope_child ON child_scope (child_id);
CREATE UNIQUE INDEX child_scope_current ON child_scope (child_id, role) WHERE until_tx IS NULL;

-- Archives merged (ArchivesMerged): each child's scope sees the other's events from then on.
CREATE TABLE child_links (
    child_id        text    NOT NULL,
    linked_child_id text    NOT NULL,
    from_tx         bigint  NOT NULL,
    until_tx        bigint,
    from_event      uuid    NOT NULL
);
CREATE INDEX child_links_child ON child_links (child_id);

-- Where the fan-out has got to in the global order (tx_id, position).
CREATE TABLE fanout_checkpoint (
    name    text    PRIMARY KEY,
    tx      bigint  NOT NULL DEFAULT 0,
    pos     bigint  NOT NULL DEFAULT 0
);
