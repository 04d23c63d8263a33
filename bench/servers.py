"""Servers for a benchmark run: embedded (default) or the ones named on the command line."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from store import migrate
from testbed.embedded import EmbeddedNats, EmbeddedPostgres


@contextlib.asynccontextmanager
async def bench_servers(pg_url: str | None, nats_url: str | None) -> AsyncIterator[tuple[str, str]]:
    """Yields (admin PostgreSQL URL, NATS URL); starts embedded servers for what is not given."""
    with tempfile.TemporaryDirectory(prefix="shouwang-bench-") as tmp:
        pg = nats = None
        try:
            if pg_url is None:
                pg = EmbeddedPostgres(Path(tmp) / "pg").start()
                pg_url = pg.url
            if nats_url is None:
                nats = EmbeddedNats(Path(tmp) / "nats").start()
                nats_url = nats.url
            yield pg_url, nats_url
        finally:
            if nats:
                nats.stop()
            if pg:
                pg.stop()


@contextlib.asynccontextmanager
async def postgres_only(pg_url: str | None) -> AsyncIterator[str]:
    """Yields an admin PostgreSQL URL, an embedded server's unless one is given (for the suites
    that need no NATS)."""
    async with bench_servers(pg_url, "nats://unused") as (url, _):
        yield url


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, migrated: bool = True) -> AsyncIterator[str]:
    name = f"shouwang_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base = admin_url.rpartition("/")[0]
    url = f"{base}/{name}"
    try:
        if migrated:
            c = await asyncpg.connect(url)
            await migrate.migrate(c)
            await c.close()
        yield url
    finally:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
