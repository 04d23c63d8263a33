"""A dishonest station packs other sites' events into a batch of its own (events/batch.py): each
event of the batch is judged on its own at ingest as if it had come alone. An event whose
envelope names another site is refused as forged, an event about a child the station never held
is refused as unauthorized, and the station's own good events are stored; nothing is counted
against or receipted to the site it tried to write for. Real NATS and PostgreSQL, run_center."""

from __future__ import annotations

import random

import asyncpg

from events.batch import batch_msg_id, pack
from events.catalogue import HomeVisitMade
from events.envelope import encode_event
from events.samples import SampleSite, sample_registration
from events.wire import up_subject
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import SiteInbox, connect, own_nats, publish_raw

__all__ = ["own_nats"]

T = "gx-lp.xy"
A, B = f"{T}.v01", f"{T}.v02"
K, MINE = "c-" + "b" * 32, "c-" + "a" * 32  # K: village B's child; MINE: village A's child


async def test_a_batch_of_another_sites_events_is_refused_event_by_event(database_url: str, pool: asyncpg.Pool,
                                                                          own_nats: EmbeddedNats) -> None:
    for s in (A, B):
        await register_site(pool, s, "village", s)
    a, b = SampleSite(A), SampleSite(B)
    rng = random.Random(5)
    b_reg = b.write(sample_registration(rng, K))
    a_reg = a.write(sample_registration(rng, MINE))
    a_visit = a.write(HomeVisitMade(child_id=MINE, visitor="石晓"))
    forged = b.write(HomeVisitMade(child_id=K, visitor="冒名"))  # B's envelope, B's chain: sent by A
    theft = a.write(HomeVisitMade(child_id=K, visitor="越权"))  # A's own envelope about B's child
    a_after = a.write(HomeVisitMade(child_id=MINE, visitor="石晓"))
    async with run_center(database_url, own_nats.url, parts=("ingest", "receipts", "deadletters")):
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        b_inbox, a_inbox = SiteInbox(js, B), SiteInbox(js, A)
        body, headers = pack([encode_event(b_reg.event)])
        await publish_raw(js, up_subject(B), body, {**headers, "Nats-Msg-Id": batch_msg_id([b_reg.event.event_id])})
        await b_inbox.wait_receipt(lambda r: r.watermark == 1)
        batch = [a_reg, forged, a_visit, theft, a_after]
        body, headers = pack([encode_event(d.event) for d in batch])
        headers["Nats-Msg-Id"] = batch_msg_id([d.event.event_id for d in batch])
        await publish_raw(js, up_subject(A), body, headers)
        receipt = await a_inbox.wait_receipt(lambda r: r.max_seq == 4 and len(r.refused) == 2)
        await b_inbox.drain()
        await nc.close()
    store = EventStore(pool)
    assert (receipt.watermark, receipt.holes) == (2, [[3, 3]])
    reasons = {r.event_id: r.reason for r in receipt.refused}
    assert reasons[forged.event.event_id].startswith("forged site")
    assert reasons[theft.event.event_id].startswith("not authorized")
    rows = await pool.fetch("SELECT site_id, event_id::text, reason, raw FROM quarantine ORDER BY id")
    assert {r["event_id"]: (r["site_id"], bytes(r["raw"])) for r in rows} == {
        forged.event.event_id: (A, encode_event(forged.event)),
        theft.event.event_id: (A, encode_event(theft.event)),
    }
    b_progress = await store.progress(B)
    assert (b_progress.watermark, b_progress.max_seq) == (1, 1)  # B's log untouched by A's batch
    assert {e.event.event_id for e in await store.read_site(A, 1, 100)} == \
        {a_reg.event.event_id, a_visit.event.event_id, a_after.event.event_id}
    assert all(r.site_id == B and not r.refused for r in b_inbox.receipts)  # B is told nothing of it
