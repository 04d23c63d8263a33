"""A center restored from a backup: every site hears at once what the center holds now."""

from __future__ import annotations

import asyncpg
from nats.aio.client import Client as NATS

from service.center import run_center
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import SiteInbox, client, own_nats
from tests.test_center_crash import make_events, register_all

__all__ = ["client", "own_nats"]


async def test_a_starting_center_tells_every_active_site_its_watermark(
        database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats, client: NATS) -> None:
    """With no new commit at all, each active site gets a receipt of what is committed when the
    center starts, so a site whose events a restored center forgot (and that records nothing
    new) sees its watermark go back and resends them."""
    events = make_events(6)
    await register_all(pool)
    await EventStore(pool).append(events)
    sites = sorted({d.event.site_id for d in events})
    async with run_center(database_url, own_nats.url, parts=("receipts",)):
        js = client.jetstream()
        for site in sites:
            mine = sum(1 for d in events if d.event.site_id == site)
            receipt = await SiteInbox(js, site).wait_receipt(lambda r, n=mine: r.watermark == n)
            assert (receipt.max_seq, receipt.holes, receipt.refused) == (mine, [], [])
