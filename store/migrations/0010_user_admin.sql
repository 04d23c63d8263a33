-- User administration (service/api/auth.py, service/api/accounts.py, service/admin_pages.py).
--
-- api_users gains: when the person last logged in; a one-time code an admin issued (adding a
-- user, or resetting a password), kept only as its SHA-256 with an expiry, which the person uses
-- once to set their own password; and when the password was last set.
ALTER TABLE api_users ADD COLUMN last_login_at timestamptz;
ALTER TABLE api_users ADD COLUMN password_set_at timestamptz;
ALTER TABLE api_users ADD COLUMN reset_code_hash bytea UNIQUE;
ALTER TABLE api_users ADD COLUMN reset_expires_at timestamptz;
ALTER TABLE api_users ADD CONSTRAINT api_users_reset_code_expires
    CHECK ((reset_code_hash IS NULL) = (reset_expires_at IS NULL));

-- The center's log of account actions: who did what to whom, when (never a password or a code).
-- Append-only like read_log: the trigger refuses UPDATE, DELETE and TRUNCATE for every role, and
-- the service role holds only SELECT and INSERT (shouwang_grant_service, replaced below).
CREATE TABLE api_user_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text        NOT NULL,   -- who: a user name, or 'cli:<os user>' for the command line
    action      text        NOT NULL CHECK (action IN ('added', 'disabled', 'enabled', 'code_issued',
                                                       'password_changed', 'password_set_with_code')),
    target      text        NOT NULL,   -- to whom: the user name acted on
    detail      text        NOT NULL DEFAULT ''
);
CREATE INDEX api_user_log_target ON api_user_log (target, id);

CREATE FUNCTION api_user_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the log of account actions is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER api_user_log_no_update BEFORE UPDATE OR DELETE ON api_user_log
    FOR EACH ROW EXECUTE FUNCTION api_user_log_is_append_only();
CREATE TRIGGER api_user_log_no_truncate BEFORE TRUNCATE ON api_user_log
    FOR EACH STATEMENT EXECUTE FUNCTION api_user_log_is_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON api_user_log FROM PUBLIC;

-- shouwang_grant_service as in 0007, naming api_user_log (SELECT, INSERT) so the service role
-- cannot change the log of account actions (0007: a table that must not be changed is named).
CREATE OR REPLACE FUNCTION shouwang_grant_service(p_role name) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    r record;
    want text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', p_role);
    IF to_regnamespace('proj') IS NOT NULL THEN
        EXECUTE format('GRANT USAGE ON SCHEMA proj TO %I', p_role);
    END IF;
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relname::text AS name, n.nspname::text AS nsp, c.relkind
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('public', 'proj', 'proj_shadow') AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    LOOP
        want := CASE
            -- nextval() of column defaults (events.position, quarantine.id, read_log.id)
            WHEN r.relkind = 'S' THEN 'USAGE'
            -- read models: the runner and a rebuild replace rows (projections/tables.py)
            WHEN r.nsp <> 'public' AND r.relkind IN ('r', 'p') THEN 'SELECT, INSERT, UPDATE, DELETE'
            WHEN r.nsp <> 'public' THEN 'SELECT'
            -- the log: appended and read, never changed (guarantee 8; store/postgres.py, shouwang_append)
            WHEN r.name IN ('events', 'event_index') THEN 'SELECT, INSERT'
            -- every read of a child's data: appended and read (guarantee 9; service/api/audit.py)
            WHEN r.name = 'read_log' THEN 'SELECT, INSERT'
            -- the center's log of account actions: appended and read (service/api/auth.py, 0010)
            WHEN r.name = 'api_user_log' THEN 'SELECT, INSERT'
            -- `db status` and the start-up check that nothing is pending (store/migrate.py)
            WHEN r.name = 'schema_migrations' THEN 'SELECT'
            WHEN r.name = 'service_roles' THEN NULL
            -- a successful log-in forgets the failures (service/api/auth.py)
            WHEN r.name = 'login_throttle' THEN 'SELECT, INSERT, UPDATE, DELETE'
            -- upserted and updated, never deleted: progress and counters, the registry, quarantine
            -- (replay marks rows), scope versions (closed by until_tx), checkpoints, users and tokens
            -- (disabled, revoked), the township office's clock
            WHEN r.name IN ('site_progress', 'sites', 'quarantine', 'child_scope', 'child_links',
                            'fanout_checkpoint', 'api_users', 'api_tokens', 'api_site_clock')
                THEN 'SELECT, INSERT, UPDATE'
            WHEN r.relkind IN ('v', 'm') THEN 'SELECT'
            ELSE 'SELECT, INSERT, UPDATE, DELETE'
        END;
        EXECUTE format('REVOKE ALL ON %s FROM %I', r.rel, p_role);
        IF want IS NOT NULL THEN
            EXECUTE format('GRANT %s ON %s TO %I', want, r.rel, p_role);
        END IF;
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION shouwang_append TO %I', p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION shouwang_projection_shadow(), shouwang_projection_keys(text), '
                   'shouwang_projection_swap() TO %I', p_role);
END
$fn$;
REVOKE EXECUTE ON FUNCTION shouwang_grant_service(name) FROM PUBLIC;
