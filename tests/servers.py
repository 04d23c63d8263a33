"""Real servers for the test suite: the build machine's when SHOUWANG_TEST_* say so, else embedded.

A fresh database per test comes from a migrated template, so each test starts from an empty
store in a few tens of milliseconds. Tests that kill or restart a server start their own with
`testbed.embedded` and never touch the shared ones.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

import asyncpg

from store import migrate
from testbed.embedded import EmbeddedNats, EmbeddedPostgres


class TestServers:
    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="shouwang-test-")
        self.tmp = Path(self._tmp.name)
        self.pg: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.admin_url = os.environ.get("SHOUWANG_TEST_DATABASE_URL", "")
        self.nats_url = os.environ.get("SHOUWANG_TEST_NATS_URL", "")
        self.template = f"shouwang_tmpl_{uuid.uuid4().hex[:8]}"
        self.databases: list[str] = []

    def start(self) -> None:
        if not self.admin_url:
            self.pg = EmbeddedPostgres(self.tmp / "pg").start()
            self.admin_url = self.pg.url
        if not self.nats_url:
            self.nats = EmbeddedNats(self.tmp / "nats").start()
            self.nats_url = self.nats.url

    def url_for(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    async def make_template(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.url_for(self.template))
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    async def fresh_database(self, migrated: bool = True) -> str:
        name = f"shouwang_t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            template = f' TEMPLATE "{self.template}"' if migrated else ""
            for attempt in range(20):
                try:
                    await conn.execute(f'CREATE DATABASE "{name}"{template}')
                    break
                except asyncpg.ObjectInUseError:  # template briefly in use by another CREATE
                    await asyncio.sleep(0.05 * (attempt + 1))
        finally:
            await conn.close()
        self.databases.append(name)
        return self.url_for(name)

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for name in [*self.databases, self.template]:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.nats:
            self.nats.stop()
        if self.pg:
            self.pg.stop()
        self._tmp.cleanup()
