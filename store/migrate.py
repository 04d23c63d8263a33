"""Versioned SQL migrations: `store/migrations/NNNN_name.sql`, applied in order, once.

Safe to run at every start-up and from several processes at once: a session-level advisory
lock serializes runners, and each migration commits together with its row in
`schema_migrations`, so a crash leaves either all of a migration or none of it.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass

import asyncpg

_LOCK_KEY = 0x5348_4F55_5741_4E47 & 0x7FFF_FFFF_FFFF_FFFF  # "SHOUWANG"
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply every pending migration; returns the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in available():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
                )
            applied_now.append(mig.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def current_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
