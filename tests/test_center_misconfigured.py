"""A center whose database setup is broken (a table renamed, as a half-applied migration or a
hand edit would leave it) holds its batches instead of quarantining every event for its own
fault, and stores them once the setup is fixed."""

from __future__ import annotations

import asyncpg
from nats.aio.client import Client as NATS

from events.catalogue import HomeVisitMade
from service.center import run_center
from service.quarantine import list_rows
from service.sites import register_site
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import client, own_nats, publish, wait_for
from tests.factory import SiteWriter

__all__ = ["client", "own_nats"]

SITE = "gx-lp.xy.v05"


async def test_a_broken_schema_holds_the_batch_and_quarantines_nothing(
        database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats, client: NATS) -> None:
    await register_site(pool, SITE, "village", SITE)
    site = SiteWriter(SITE)
    events = [site.write(HomeVisitMade(child_id="c-" + "6" * 32, visitor="石晓")) for _ in range(5)]
    await pool.execute("ALTER TABLE event_index RENAME TO event_index_away")
    async with run_center(database_url, own_nats.url) as center:
        await publish(client.jetstream(), events)

        async def retried() -> bool:
            return sum(i.stats.db_retries for i in center.ingesters) >= 2

        await wait_for(retried, what="the ingester to hit the broken schema twice")
        assert await list_rows(pool) == []  # no event blamed for the center's fault
        assert await pool.fetchval("SELECT count(*) FROM events") == 0
        await pool.execute("ALTER TABLE event_index_away RENAME TO event_index")

        async def stored() -> bool:
            return await EventStore(pool).count() == 5

        await wait_for(stored, within=60, what="the held batch stored once the schema is back")
    assert await list_rows(pool) == []
