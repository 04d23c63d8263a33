"""Versioned SQL migrations: `store/migrations/NNNN_name.sql`, applied in order, once.

Safe to run at every start-up and from several processes at once: a session-level advisory
lock serializes runners, and each migration commits together with its row in
`schema_migrations`, so a crash leaves either all of a migration or none of it.

Run them as the database's owner role (docs/SECURITY.md, "Database roles and the demo's NATS"):
`shouwang db migrate` with SHOUWANG_DATABASE_OWNER_URL. The services call `migrate` at start as
the service role; with nothing pending that only reads `schema_migrations`, and with something
pending it refuses with MigrationRefused, naming the command to run. Each migration's
transaction ends by re-granting the recorded service roles (`shouwang_grant_service`, migration
0007), so a new table never stays with a wrong grant.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass

import asyncpg

from store.conn import Conn

_LOCK_KEY = 0x5348_4F55_5741_4E47 & 0x7FFF_FFFF_FFFF_FFFF  # "SHOUWANG"
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationRefused(Exception):
    """Migrations are pending but this role may not apply them (the service role): run
    `shouwang db migrate` as the owner role."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    out = []
    for entry in importlib.resources.files("store.migrations").iterdir():
        m = _NAME_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return out


async def migrate(conn: Conn, upto: int | None = None) -> list[int]:
    """Apply every pending migration (or those up to version `upto`: a test that fills an older
    schema before the next migration moves its data); returns the versions applied now."""
    applied_now: list[int] = []
    # current_user names the role in a refusal
    user = str(await conn.fetchval("SELECT current_user FROM pg_advisory_lock($1)", _LOCK_KEY))
    try:
        # Checked first: CREATE ... IF NOT EXISTS needs the CREATE privilege even when the table
        # is there, which the service role has not.
        if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            await _as_owner(conn, user, [], """CREATE TABLE schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        pending = [mig for mig in available()
                   if mig.version not in done and (upto is None or mig.version <= upto)]
        for mig in pending:
            async with conn.transaction():
                await _as_owner(conn, user, [m.version for m in pending], mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
                )
                await grant_services(conn)
            applied_now.append(mig.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def _as_owner(conn: Conn, user: str, pending: list[int], sql: str) -> None:
    try:
        await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as err:
        what = f"migrations {pending} are pending" if pending else "the schema is not created yet"
        raise MigrationRefused(
            f"{what} and role {user!r} may not apply them ({err}): run `shouwang db migrate` as the "
            "database's owner role (SHOUWANG_DATABASE_OWNER_URL or --database-url), then start again") from None


async def grant_services(conn: Conn) -> list[str]:
    """Give every service role recorded by `shouwang db roles` its exact privileges again
    (migration 0007's `shouwang_grant_service`); nothing before 0007 or with one role. Returns
    the roles granted."""
    if not await conn.fetchval("SELECT to_regclass('service_roles') IS NOT NULL"):
        return []
    roles = [str(r["role"]) for r in await conn.fetch("SELECT role FROM service_roles ORDER BY role")]
    for role in roles:
        await conn.execute("SELECT shouwang_grant_service($1)", role)
    return roles


async def current_version(conn: Conn) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
