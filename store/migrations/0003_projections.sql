-- Read models (projections/). See projections/runner.py for how each is kept.
--
-- All read models live in one schema, `proj`, together with their checkpoint, so that a rebuild
-- can fill a shadow schema from zero while `proj` keeps serving, then swap the two by renaming
-- schemas in one transaction (projections/rebuild.py). The tables are made by one function so
-- the live and the shadow schema can never differ.

CREATE FUNCTION shouwang_projection_schema(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('CREATE SCHEMA %I', s);
    -- Where the runner is in the store's global order; written in the same transaction as
    -- every read-model change (guarantee 5).
    EXECUTE format($$CREATE TABLE %I.checkpoint (
        name            text        NOT NULL,
        tx              bigint      NOT NULL,
        pos             bigint      NOT NULL,
        applied         bigint      NOT NULL,      -- events applied so far
        skipped         bigint      NOT NULL,      -- events not understood (unknown type/version)
        last_committed_at timestamptz              -- committed_at of the last event applied
    )$$, s);
    -- One row per child id: the merged archive (msgpack of projections.archive.ChildArchive) and
    -- the columns lists and searches need. A merged child's row names the kept one (root_id).
    EXECUTE format($$CREATE TABLE %I.archive (
        child_id          text     NOT NULL,
        root_id           text     NOT NULL,
        registered        boolean  NOT NULL,
        open              boolean  NOT NULL,
        sites             text[]   NOT NULL,
        townships         text[]   NOT NULL,
        name              text,
        birth_date        date,
        household_village text,
        resident_id       text,
        open_conflicts    integer  NOT NULL,
        events            integer  NOT NULL,
        view              bytea    NOT NULL
    )$$, s);
    -- Contacts per child and month (after corrections), for the follow-up rules.
    EXECUTE format($$CREATE TABLE %I.followup (
        child_id  text     NOT NULL,
        month     text     NOT NULL,
        visits    integer  NOT NULL,
        calls     integer  NOT NULL,
        letters   integer  NOT NULL,
        talks     integer  NOT NULL
    )$$, s);
    -- Conflicts between concurrent updates of one field, open (resolved_by NULL) or resolved.
    EXECUTE format($$CREATE TABLE %I.conflict (
        child_id     text    NOT NULL,
        field        text    NOT NULL,
        heads        text[]  NOT NULL,
        winner       text    NOT NULL,
        resolved_by  text    NOT NULL DEFAULT ''
    )$$, s);
    -- Counted work, one row per event as it counts after corrections (projections/facts.py).
    EXECUTE format($$CREATE TABLE %I.fact (
        event_id     text         NOT NULL,
        kind         text         NOT NULL,
        site_id      text         NOT NULL,
        township     text         NOT NULL,
        occurred_at  timestamptz  NOT NULL,
        children     text[]       NOT NULL,
        amount_fen   bigint       NOT NULL,
        count        integer      NOT NULL,
        source       text,
        detail       text
    )$$, s);
    -- Merges recorded between archives; `undone` when an ArchivesUnmerged names the merge.
    EXECUTE format($$CREATE TABLE %I.merge_edge (
        merge_event_id  text     NOT NULL,
        kept            text     NOT NULL,
        merged          text     NOT NULL,
        recorded_at     bigint   NOT NULL,
        site_id         text     NOT NULL,
        site_seq        bigint   NOT NULL,
        undone          boolean  NOT NULL
    )$$, s);
    -- Candidate duplicates among archives that are not merged: the same resident ID, or the same
    -- name, birth date and household village.
    EXECUTE format($$CREATE VIEW %1$I.duplicate AS
        SELECT a.child_id AS child_a, b.child_id AS child_b, 'resident_id' AS reason, a.townships || b.townships AS townships
          FROM %1$I.archive a JOIN %1$I.archive b ON a.resident_id = b.resident_id AND a.child_id < b.child_id
         WHERE a.root_id = a.child_id AND b.root_id = b.child_id
        UNION
        SELECT a.child_id, b.child_id, 'name_birth_village', a.townships || b.townships
          FROM %1$I.archive a JOIN %1$I.archive b
            ON a.name = b.name AND a.birth_date = b.birth_date AND a.household_village = b.household_village
           AND a.child_id < b.child_id
         WHERE a.root_id = a.child_id AND b.root_id = b.child_id
           AND (a.resident_id IS NULL OR b.resident_id IS NULL OR a.resident_id <> b.resident_id)$$, s);
END
$fn$;

-- Keys and indexes, separate so that a rebuild can bulk-load its shadow tables first and index
-- them once (much faster than maintaining the indexes row by row).
CREATE FUNCTION shouwang_projection_indexes(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %I.checkpoint ADD PRIMARY KEY (name)', s);
    EXECUTE format('ALTER TABLE %I.archive ADD PRIMARY KEY (child_id)', s);
    EXECUTE format('CREATE INDEX ON %I.archive USING gin (sites)', s);
    EXECUTE format('CREATE INDEX ON %I.archive USING gin (townships)', s);
    EXECUTE format('CREATE INDEX ON %I.archive (root_id)', s);
    EXECUTE format('CREATE INDEX ON %I.archive (resident_id) WHERE resident_id IS NOT NULL', s);
    EXECUTE format('CREATE INDEX ON %I.archive (name, birth_date, household_village)', s);
    EXECUTE format('ALTER TABLE %I.followup ADD PRIMARY KEY (child_id, month)', s);
    EXECUTE format('ALTER TABLE %I.conflict ADD PRIMARY KEY (child_id, field, heads, resolved_by)', s);
    EXECUTE format('ALTER TABLE %I.fact ADD PRIMARY KEY (event_id)', s);
    EXECUTE format('CREATE INDEX ON %I.fact (township, occurred_at)', s);
    EXECUTE format('ALTER TABLE %I.merge_edge ADD PRIMARY KEY (merge_event_id)', s);
END
$fn$;

SELECT shouwang_projection_schema('proj');
SELECT shouwang_projection_indexes('proj');

-- The runner sleeps until something is committed: one notification per appending statement
-- (delivered at commit), with a short poll as the fallback.
CREATE FUNCTION shouwang_notify_events() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('shouwang_events', '');
    RETURN NULL;
END
$fn$;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION shouwang_notify_events();

-- Corrections are found by the event they correct (a correction family, projections/archive.py),
-- and the corrected original by its id (without this, a seq scan of the whole log per batch; it
-- also serves EventStore.get). uuid7 ids arrive nearly in order, so the index stays cheap.
CREATE INDEX events_corrected_event ON events ((payload->>'corrected_event_id')) WHERE type = 'EventCorrected';
CREATE INDEX events_event_id ON events (event_id);
