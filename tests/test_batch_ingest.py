"""Batches on care.up (events/batch.py) through the center's real ingest (run_center on real NATS
and PostgreSQL): each event of a batch is judged on its own, an old agent's one-event message is
still accepted, and a batch that cannot be read is kept in quarantine with the reason."""

from __future__ import annotations

import asyncpg
import zstandard

from events.batch import BATCH_CONTENT_TYPE, DICT_HEADER, MAX_BATCH_BYTES, batch_msg_id, pack
from events.catalogue import HomeVisitMade
from events.envelope import DecodedEvent, encode_event
from events.wire import up_subject
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import SiteInbox, connect, own_nats, publish, publish_raw, wait_for
from tests.factory import SiteWriter

__all__ = ["own_nats"]

SITE = "gx-lp.xy.v01"
CHILD = "c-" + "0" * 31 + "1"
PARTS = ("ingest", "receipts", "deadletters")


def visits(site: SiteWriter, n: int) -> list[DecodedEvent]:
    return [site.write(HomeVisitMade(child_id=CHILD, visitor="石晓", findings="一切正常")) for _ in range(n)]


async def send_batch(js: object, subject: str, bodies: list[bytes], ids: list[str]) -> None:
    body, headers = pack(bodies)
    headers["Nats-Msg-Id"] = batch_msg_id(ids)
    await publish_raw(js, subject, body, headers)  # type: ignore[arg-type]


async def quarantine_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT site_id, event_id::text, site_seq, reason, raw FROM quarantine ORDER BY id"))


async def test_a_batch_with_one_bad_event_keeps_the_others(database_url: str, pool: asyncpg.Pool,
                                                           own_nats: EmbeddedNats) -> None:
    """Five events in one batch, the third with a payload the catalogue refuses: four are stored,
    the third is quarantined with its own bytes and a reason naming the field, and the receipt
    tells the site which one (a hole where it was, refused by id and site_seq)."""
    await register_site(pool, SITE, "village", "青石村维权站")
    events = visits(SiteWriter(SITE), 5)
    bodies = [encode_event(d.event) for d in events]
    bad = bodies[2].replace(b'"visitor":"\xe7\x9f\xb3\xe6\x99\x93"', b'"visitor":""')
    assert bad != bodies[2]
    bodies[2] = bad
    async with run_center(database_url, own_nats.url, parts=PARTS):
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        inbox = SiteInbox(js, SITE)
        await send_batch(js, up_subject(SITE), bodies, [d.event.event_id for d in events])
        receipt = await inbox.wait_receipt(lambda r: r.max_seq == 5 and bool(r.refused))
        await nc.close()
    assert (receipt.watermark, receipt.holes) == (2, [[3, 3]])
    [refusal] = receipt.refused
    assert (refusal.event_id, refusal.site_seq) == (events[2].event.event_id, 3)
    store = EventStore(pool)
    assert await store.count() == 4
    [row] = await quarantine_rows(pool)
    assert (row["site_id"], row["event_id"], row["site_seq"]) == (SITE, events[2].event.event_id, 3)
    assert "payload.visitor" in row["reason"] and bytes(row["raw"]) == bad  # the event's own bytes, kept


async def test_an_old_agents_single_event_message_is_still_accepted(database_url: str, pool: asyncpg.Pool,
                                                                    own_nats: EmbeddedNats) -> None:
    """Agents from before batches send one event per message (JSON, Nats-Msg-Id = event id): stored
    as before, beside a batch of the same site's next events."""
    await register_site(pool, SITE, "village", "青石村维权站")
    events = visits(SiteWriter(SITE), 6)
    async with run_center(database_url, own_nats.url, parts=PARTS):
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        inbox = SiteInbox(js, SITE)
        await publish(js, events[:3])  # old style
        await send_batch(js, up_subject(SITE), [encode_event(d.event) for d in events[3:]],
                         [d.event.event_id for d in events[3:]])
        receipt = await inbox.wait_receipt(lambda r: r.watermark == 6)
        await nc.close()
    assert receipt.refused == [] and await EventStore(pool).count() == 6
    assert await quarantine_rows(pool) == []


async def test_an_unreadable_batch_is_kept_whole_with_its_reason(database_url: str, pool: asyncpg.Pool,
                                                                 own_nats: EmbeddedNats) -> None:
    """A batch naming a dictionary this center does not have, one that is not zstd, one that
    would decompress beyond the limit, and one that is not a JSON array: each quarantined whole
    (its bytes as sent) with a reason naming the header or the body; the ingester carries on and
    stores the next good batch."""
    await register_site(pool, SITE, "village", "青石村维权站")
    events = visits(SiteWriter(SITE), 2)
    good, headers = pack([encode_event(d.event) for d in events])
    bomb = zstandard.ZstdCompressor().compress(b" " * (MAX_BATCH_BYTES + 1))
    not_array = zstandard.ZstdCompressor().compress(b'{"event_id": 1}')
    bad = [
        (good, {**headers, DICT_HEADER: "care-999"}, "Shouwang-Dict: dictionary 'care-999' is not known"),
        (b"not zstd at all", {"Content-Type": BATCH_CONTENT_TYPE}, "body: "),
        (bomb, {"Content-Type": BATCH_CONTENT_TYPE}, f"the limit of a batch is {MAX_BATCH_BYTES}"),
        (not_array, {"Content-Type": BATCH_CONTENT_TYPE}, "body: not a JSON array of events"),
    ]
    async with run_center(database_url, own_nats.url, parts=PARTS):
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        inbox = SiteInbox(js, SITE)
        for i, (data, h, _) in enumerate(bad):
            await publish_raw(js, up_subject(SITE), data, {**h, "Nats-Msg-Id": f"bad-{i}"})
        await send_batch(js, up_subject(SITE), [encode_event(d.event) for d in events],
                         [d.event.event_id for d in events])
        await inbox.wait_receipt(lambda r: r.watermark == 2)
        await wait_for(lambda: _rows(pool, 4), what="four quarantined batches")
        await nc.close()
    rows = await quarantine_rows(pool)
    for row, (data, _, words) in zip(rows, bad, strict=True):
        assert row["site_id"] == SITE and row["event_id"] is None
        assert row["reason"].startswith("invalid batch: ") and words in row["reason"], row["reason"]
        assert bytes(row["raw"]) == data
    assert await EventStore(pool).count() == 2


async def _rows(pool: asyncpg.Pool, n: int) -> bool:
    return len(await quarantine_rows(pool)) == n
