"""The two database roles: the owner, who migrates and owns everything, and the service, who
owns nothing and may do only what the center, the HTTP API and the projections do.

`setup_roles` (the command `shouwang db roles`) is run by a superuser (or a role with CREATEROLE
that may hand ownership over) connected to the center's database, once at install and again
whenever wanted: every step is idempotent.

1. Both roles exist, can log in, and are nothing more (no superuser, CREATEDB, CREATEROLE,
   replication or RLS bypass), neither a member of the other. A password given is set; a role
   created without one gets a random password, returned once.
2. The owner owns the database, the schema `public` and every object of `public`, `proj` and
   `proj_shadow` (an install of one role is handed over); the service owns nothing in it.
   PUBLIC loses every privilege on the database and on `public`; the service may CONNECT and
   make TEMPORARY tables (the projections' bulk upserts, projections/tables.py).
3. The owner's default privileges give the service USAGE on schemas, SELECT, INSERT, UPDATE,
   DELETE on tables and USAGE on sequences it creates later (a later migration's table, the
   shadow schema a rebuild makes through migration 0007's SECURITY DEFINER functions).
4. The migrations run as the owner (SET ROLE), the service role is recorded in `service_roles`,
   and `shouwang_grant_service` (migration 0007) narrows its privileges to what the code does:
   on `read_log`, `events` and `event_index` only SELECT and INSERT.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

import asyncpg

from store import migrate
from store.conn import Conn

_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
APP_SCHEMAS = ("public", "proj", "proj_shadow")
DEFAULT_OWNER = "shouwang_owner"
DEFAULT_SERVICE = "shouwang"


class RoleError(Exception):
    """The roles cannot be set up as asked; the message says why and what to do."""


@dataclass
class RolesReport:
    database: str
    owner: str
    service: str
    created: list[str] = field(default_factory=list)
    generated_passwords: dict[str, str] = field(default_factory=dict)  # role -> password, shown once
    migrated: list[int] = field(default_factory=list)
    reassigned: int = 0  # objects whose ownership moved to the owner


async def _run(conn: Conn, template: str, *args: str) -> None:
    """Execute a utility statement whose identifiers (%I) and literals (%L) PostgreSQL quotes."""
    params = ", ".join(f"${i}::text" for i in range(2, len(args) + 2))
    sql = await conn.fetchval(f"SELECT format($1{', ' + params if args else ''})", template, *args)
    await conn.execute(sql)


async def _ensure_role(conn: Conn, role: str, password: str | None, report: RolesReport) -> None:
    row = await conn.fetchrow("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role)
    if row is not None and row["rolsuper"]:
        raise RoleError(f"role {role!r} is a superuser: the owner and the service role must be ordinary roles")
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
    if row is None:
        if not password:
            password = secrets.token_urlsafe(24)
            report.generated_passwords[role] = password
        await _run(conn, f"CREATE ROLE %I {attributes} PASSWORD %L", role, password)
        report.created.append(role)
        return
    await _run(conn, f"ALTER ROLE %I {attributes}", role)
    if password:
        await _run(conn, "ALTER ROLE %I PASSWORD %L", role, password)


_OWNERSHIP_SQL = """
SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, $1::text)
  FROM pg_namespace n
 WHERE n.nspname = ANY($2::text[]) AND n.nspowner <> $1::regrole
UNION ALL
SELECT format('ALTER %s %s OWNER TO %I',
              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                             WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
              c.oid::regclass, $1::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY($2::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relowner <> $1::regrole
   -- a serial's sequence moves with its table; an extension's objects stay the extension's
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                               AND d.deptype IN ('a', 'i', 'e'))
UNION ALL
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $1::text)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY($2::text[]) AND p.proowner <> $1::regrole
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                               AND d.deptype = 'e')
"""


async def _hand_over(conn: Conn, owner: str, service: str) -> int:
    """Make `owner` the owner of the database and of every object of the application's schemas
    (an install of one role, or objects a superuser made); leave the service owning nothing."""
    database = await conn.fetchval("SELECT current_database()")
    await _run(conn, "ALTER DATABASE %I OWNER TO %I", database, owner)
    statements = [str(r[0]) for r in await conn.fetch(_OWNERSHIP_SQL, owner, list(APP_SCHEMAS))]
    for sql in statements:
        await conn.execute(sql)
    # Anything else of the service's in this database (and a database it owned) goes too.
    await _run(conn, "REASSIGN OWNED BY %I TO %I", service, owner)
    return len(statements)


async def setup_roles(conn: Conn, *, owner: str = DEFAULT_OWNER, service: str = DEFAULT_SERVICE,
                      owner_password: str | None = None, service_password: str | None = None) -> RolesReport:
    """Create or update both roles for the connected database, hand everything to the owner,
    migrate as the owner and grant the service exactly what it needs (see the module's steps).
    `conn` must be a superuser's (or hold CREATEROLE and the current owners' rights)."""
    for role in (owner, service):
        if not _ROLE_RE.match(role):
            raise RoleError(f"role name {role!r} is not valid: use lower-case letters, digits and '_'")
    if owner == service:
        raise RoleError("the owner and the service role must be two roles")
    me = await conn.fetchrow("SELECT current_user AS name, rolsuper, rolcreaterole FROM pg_roles "
                             "WHERE rolname = current_user")
    assert me is not None  # current_user is a role
    if me["name"] in (owner, service):
        raise RoleError(f"connect as a superuser (e.g. postgres), not as {me['name']!r}, to set up the roles")
    if not (me["rolsuper"] or me["rolcreaterole"]):
        raise RoleError(f"role {me['name']!r} may not create roles: connect as a superuser (e.g. postgres)")
    database = str(await conn.fetchval("SELECT current_database()"))
    report = RolesReport(database=database, owner=owner, service=service)
    try:
        await _ensure_role(conn, owner, owner_password, report)
        await _ensure_role(conn, service, service_password, report)
        for member, of in ((service, owner), (owner, service)):
            if await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", member, of):
                await _run(conn, "REVOKE %I FROM %I", of, member)
        report.reassigned = await _hand_over(conn, owner, service)
        await _run(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
        await _run(conn, "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I", database, service)
        await _run(conn, "REVOKE ALL ON SCHEMA public FROM PUBLIC")
        for what in ("GRANT USAGE ON SCHEMAS", "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES",
                     "GRANT USAGE ON SEQUENCES"):
            await _run(conn, f"ALTER DEFAULT PRIVILEGES FOR ROLE %I {what} TO %I", owner, service)
        await _run(conn, "SET ROLE %I", owner)
        try:
            report.migrated = await migrate.migrate(conn)
            await conn.execute("INSERT INTO service_roles (role) VALUES ($1) ON CONFLICT DO NOTHING", service)
            await migrate.grant_services(conn)
        finally:
            await conn.execute("RESET ROLE")
    except asyncpg.InsufficientPrivilegeError as err:
        raise RoleError(f"not allowed: {err}; connect as a superuser (e.g. postgres)") from None
    return report


async def service_privileges(conn: Conn, role: str, table: str) -> set[str]:
    """The privileges `role` holds on `table` (for tests and `db roles --check`)."""
    kinds = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    held = set()
    for kind in kinds:
        if await conn.fetchval("SELECT has_table_privilege($1, $2, $3)", role, table, kind):
            held.add(kind)
    return held
