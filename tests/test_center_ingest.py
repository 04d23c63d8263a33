"""The center's ingest path on real NATS and PostgreSQL: store once, ack after commit, receipts."""

from __future__ import annotations

import asyncpg

from events.catalogue import HomeVisitMade
from events.samples import sample_registration
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import SiteInbox, connect, own_nats, publish, wait_for
from tests.factory import SiteWriter

__all__ = ["own_nats"]

SITE = "gx-lp.xy.v01"


def visits(site: SiteWriter, n: int, child: str = "c-" + "0" * 31 + "1") -> list:  # type: ignore[type-arg]
    return [site.write(HomeVisitMade(child_id=child, visitor="石晓", findings="一切正常")) for _ in range(n)]


async def test_events_are_stored_once_and_receipted(database_url: str, pool: asyncpg.Pool,
                                                    own_nats: EmbeddedNats) -> None:
    """Events published on care.up.<site> are committed once, and the site's receipt reports the watermark."""
    await register_site(pool, SITE, "village", "青石村维权站")
    site = SiteWriter(SITE)
    events = visits(site, 30)
    async with run_center(database_url, own_nats.url) as center:
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        inbox = SiteInbox(js, SITE)
        await publish(js, events)
        await publish(js, events[:10], msg_id=False)  # a resend: duplicates, not new events
        receipt = await inbox.wait_receipt(lambda r: r.watermark == 30)
        await wait_for(lambda: _count(center.store, 30), what="30 events stored")
        assert receipt.max_seq == 30 and receipt.holes == [] and receipt.refused == []
        await wait_for(lambda: _stat(center, "duplicates", 10), what="10 duplicates reported")
        await nc.close()
    progress = await EventStore(pool).progress(SITE)
    assert (progress.watermark, progress.events_stored, progress.duplicates_seen) == (30, 30, 10)


async def test_receipt_reports_holes(database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats) -> None:
    """A gap in a site's sequence shows in its receipt as a hole to resend, below max_seq."""
    await register_site(pool, SITE, "village", "青石村维权站")
    site = SiteWriter(SITE)
    events = visits(site, 10)
    async with run_center(database_url, own_nats.url):
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        inbox = SiteInbox(js, SITE)
        await publish(js, events[:3] + events[6:])
        receipt = await inbox.wait_receipt(lambda r: r.max_seq == 10)
        assert receipt.watermark == 3 and receipt.holes == [[4, 6]]
        await publish(js, events[3:6])
        receipt = await inbox.wait_receipt(lambda r: r.watermark == 10)
        assert receipt.holes == []
        await nc.close()


async def _count(store: EventStore, n: int) -> bool:
    return await store.count() == n


async def _stat(center: object, key: str, n: int) -> bool:
    return center.stats().get(key) == n  # type: ignore[attr-defined, no-any-return]


__all__ += ["sample_registration"]
