-- The HTTP API: people, their tokens, the read log, and the township office's own site log.
-- See service/api/auth.py, service/api/audit.py and service/api/writes.py.

-- People who use the API. Station and school staff belong to one site (their children only);
-- township staff to the township office site (every site of its township); an auditor to a
-- township ('region.township', read only); an admin to no site (sites and users).
CREATE TABLE api_users (
    username        text        PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9._@-]{1,64}$'),
    role            text        NOT NULL CHECK (role IN ('station', 'school', 'township', 'auditor', 'admin')),
    site_id         text,       -- station, school, township: the user's own site
    township        text,       -- 'region.township' the user sees (station/school: their site's)
    display_name    text        NOT NULL DEFAULT '',
    -- scrypt(password, salt); parameters kept per row so they can be raised later.
    password_salt   bytea       NOT NULL,
    password_hash   bytea       NOT NULL,
    scrypt_n        integer     NOT NULL,
    scrypt_r        integer     NOT NULL,
    scrypt_p        integer     NOT NULL,
    active          boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz,
    CHECK ((role IN ('station', 'school', 'township')) = (site_id IS NOT NULL)),
    CHECK ((role = 'admin') = (township IS NULL))
);

-- Bearer tokens: only their SHA-256 is kept, so a stolen table is no key. Revocable, expiring.
CREATE TABLE api_tokens (
    token_id        uuid        PRIMARY KEY,
    token_hash      bytea       NOT NULL UNIQUE,
    username        text        NOT NULL REFERENCES api_users (username),
    label           text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (username);

-- Password guessing: failures per login name (known or not, so probing unknown names is slowed
-- the same way and does not tell which names exist); locked until `locked_until`.
CREATE TABLE login_throttle (
    username        text        PRIMARY KEY,
    failures        integer     NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    last_failure_at timestamptz
);

-- The read log (docs/ARCHITECTURE.md, guarantee 9): every read of a child's archive, timeline or
-- as-of view, who, when, which child, which route, and whether it was served. Append-only:
-- the trigger below refuses UPDATE, DELETE and TRUNCATE for every role, the owner included.
CREATE TABLE read_log (
    id          bigserial   PRIMARY KEY,
    read_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    username    text        NOT NULL,
    role        text        NOT NULL,
    child_id    text        NOT NULL,
    route       text        NOT NULL,
    query       text        NOT NULL DEFAULT '',
    outcome     text        NOT NULL CHECK (outcome IN ('served', 'not_found'))
);
CREATE INDEX read_log_child ON read_log (child_id, id);
CREATE INDEX read_log_user ON read_log (username, id);

CREATE FUNCTION read_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the read log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER read_log_no_update BEFORE UPDATE OR DELETE ON read_log
    FOR EACH ROW EXECUTE FUNCTION read_log_is_append_only();
CREATE TRIGGER read_log_no_truncate BEFORE TRUNCATE ON read_log
    FOR EACH STATEMENT EXECUTE FUNCTION read_log_is_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON read_log FROM PUBLIC;

-- The township office's own site log as the API writes it (resolutions, merges, corrections):
-- the HLC it last issued. Its sequence and chain come from the store itself (the last event
-- of that site), read under this row's lock, so an API write is sealed like any agent's.
CREATE TABLE api_site_clock (
    site_id     text    PRIMARY KEY,
    last_hlc    bigint  NOT NULL DEFAULT 0
);
