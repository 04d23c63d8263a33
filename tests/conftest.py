from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from runtime import log
from runtime.db import create_pool
from store.postgres import EventStore
from tests.servers import TestServers

log.configure("warning", json=True)


@pytest.fixture(scope="session")
def servers() -> Iterator[TestServers]:
    """PostgreSQL and NATS with JetStream for the whole run (the machine's, or embedded)."""
    s = TestServers()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
async def template(servers: TestServers) -> AsyncIterator[TestServers]:
    await servers.make_template()
    yield servers
    await servers.drop_all()


@pytest.fixture
async def database_url(template: TestServers) -> str:
    """A fresh, migrated, empty database for this test."""
    return await template.fresh_database()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=1, max_size=12)
    yield p
    await p.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)


@pytest.fixture
def nats_url(servers: TestServers) -> str:
    return servers.nats_url
