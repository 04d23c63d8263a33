-- The central event store. See store/postgres.py for how each guarantee holds.
--
-- Partitioning plan (docs/ARCHITECTURE.md, "Scale notes"): `events` carries no unique constraint, so it can
-- become `PARTITION BY LIST (region)` with `RANGE (committed_at)` sub-partitions without any
-- key changing. Identity lives in `event_index` (event_id -> content hash), a narrow table that
-- is kept forever and can be hash-partitioned by event_id if it ever needs to be.

CREATE TABLE event_index (
    event_id  uuid    PRIMARY KEY,
    hash      bytea   NOT NULL  -- sha256 of the canonical event (site and seq included): same id + same hash = duplicate
);
-- (site_id, site_seq) is unique too. That is enforced by the appender under the site's
-- site_progress row lock (a sequence number at or below the watermark or inside a committed
-- range is taken), which costs no second unique index on every insert.

-- Positions only order rows within one transaction (the global order is (tx_id, position)),
-- so each backend may cache a range of them.
CREATE SEQUENCE events_position_seq AS bigint CACHE 1000;

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
);

CREATE INDEX events_global_order ON events (tx_id, position);
CREATE INDEX events_site_seq ON events (site_id, site_seq);
CREATE INDEX events_children ON events USING gin (children);
CREATE INDEX events_committed_at ON events USING brin (committed_at);

-- Per-site contiguity: everything <= watermark is committed; `pending` holds the committed
-- ranges above it, flattened as [lo1, hi1, lo2, hi2, ...]; holes are the gaps between.
CREATE TABLE site_progress (
    site_id             text        PRIMARY KEY,
    watermark           bigint      NOT NULL DEFAULT 0,
    max_seq             bigint      NOT NULL DEFAULT 0,
    pending             bigint[]    NOT NULL DEFAULT '{}',
    events_stored       bigint      NOT NULL DEFAULT 0,
    duplicates_seen     bigint      NOT NULL DEFAULT 0,
    last_committed_at   timestamptz,
    newest_occurred_at  timestamptz
);
