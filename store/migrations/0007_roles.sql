-- Two database roles (docs/SECURITY.md, "Database roles and the demo's NATS"; store/roles.py).
--
-- The OWNER role runs the migrations and owns every table, function and trigger. The SERVICE
-- role is what the center, the HTTP API and the projections connect as: it owns nothing (so it
-- cannot ALTER, DISABLE or DROP a trigger, or drop a table) and holds only the privileges below,
-- which are what the code does. `shouwang db roles` creates both roles, records the service
-- role here and calls shouwang_grant_service; store/migrate.py calls it again inside the
-- transaction of every later migration, so a new table never stays with a wrong grant.
--
-- With one role (the tests, the demo) `service_roles` stays empty and nothing here changes
-- what that role may do.

CREATE TABLE service_roles (
    role        name        PRIMARY KEY,
    granted_at  timestamptz NOT NULL DEFAULT now()
);

-- The exact privileges of the service role. Run by the owner (or a superuser): it revokes
-- everything the role holds on the tables and sequences of `public` and `proj`, then grants
-- per table what the code needs. A table this function does not name (a later migration's)
-- gets SELECT, INSERT, UPDATE, DELETE: a migration adding a table that must not be changed
-- replaces this function and names it (as read_log is named below).
CREATE FUNCTION shouwang_grant_service(p_role name) RETURNS void LANGUAGE plpgsql
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

-- A projections rebuild (projections/rebuild.py) makes a shadow schema, keys it and swaps it in
-- by renaming schemas: that takes ownership, which the service role has not. These three do it
-- as the owner (SECURITY DEFINER, fixed search_path) and touch only proj and proj_shadow; the
-- shadow's tables get the service's privileges from the owner's default privileges (store/roles.py).
CREATE FUNCTION shouwang_projection_shadow() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
BEGIN
    DROP SCHEMA IF EXISTS proj_shadow CASCADE;
    PERFORM shouwang_projection_schema('proj_shadow');
END
$fn$;

CREATE FUNCTION shouwang_projection_keys(s text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
BEGIN
    IF s IS DISTINCT FROM 'proj_shadow' THEN
        RAISE EXCEPTION 'only the shadow schema proj_shadow is keyed after its load, not %', s
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM shouwang_projection_indexes(s);
END
$fn$;

-- The caller holds the runner's advisory lock in the same transaction (rebuild.rebuild).
CREATE FUNCTION shouwang_projection_swap() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
BEGIN
    ALTER SCHEMA proj RENAME TO proj_retired;
    ALTER SCHEMA proj_shadow RENAME TO proj;
    DROP SCHEMA proj_retired CASCADE;
END
$fn$;

REVOKE EXECUTE ON FUNCTION shouwang_projection_schema(text), shouwang_projection_indexes(text),
    shouwang_projection_shadow(), shouwang_projection_keys(text), shouwang_projection_swap() FROM PUBLIC;
