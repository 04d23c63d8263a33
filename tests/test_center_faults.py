"""Bad input at the center: each kind is refused loudly, kept in quarantine byte for byte, told
to the sending site in its receipt, and never stops the good events around it."""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from events.catalogue import HomeVisitMade
from events.envelope import DecodedEvent, Event, encode_event, encode_event_msgpack, event_hash
from events.wire import CONTENT_TYPE_HEADER, MSGPACK, Receipt, up_subject
from service.center import Center, run_center
from service.quarantine import get_row, list_rows, replay
from service.sites import disable_site, register_site
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import SiteInbox, client, own_nats, publish, publish_raw, wait_for
from tests.factory import SiteWriter

__all__ = ["client", "own_nats"]

SITE = "gx-lp.xy.v01"
OTHER = "gx-lp.xy.v02"
CHILD = "c-" + "a" * 32


def visit(site: SiteWriter) -> DecodedEvent:
    return site.write(HomeVisitMade(child_id=CHILD, visitor="石晓", findings="学习有进步"))


def chained(site: SiteWriter, type_name: str, payload: dict[str, object], schema_version: int = 1) -> DecodedEvent:
    """An event the catalogue may not know, chained into the site's log like any other."""
    site.seq += 1
    event = Event(
        event_id=visit(SiteWriter("x.y.z")).event.event_id, type=type_name, schema_version=schema_version,
        site_id=site.site_id, site_seq=site.seq, actor="staff-01",
        occurred_at=dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC), recorded_at=site.clock.now(), prev_hash=site.prev,
        children=[CHILD], payload=msgspec.Raw(msgspec.json.encode({"type": type_name, **payload})),
    )
    d = DecodedEvent(event, None, event_hash(event), False)
    site.prev = d.hash
    return d


async def _held(pool: asyncpg.Pool, n: int) -> bool:
    return len(await list_rows(pool)) >= n


async def _stored(pool: asyncpg.Pool, n: int) -> bool:
    return await EventStore(pool).count() == n


def _refused(r: Receipt) -> bool:
    return bool(r.refused)


@pytest.fixture
async def center(database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats) -> Center:  # type: ignore[misc]
    await register_site(pool, SITE, "village", "青石村维权站")
    await register_site(pool, OTHER, "village", "柳湾村维权站")
    async with run_center(database_url, own_nats.url) as c:
        yield c


async def test_forged_site_is_quarantined_and_told(center: Center, pool: asyncpg.Pool, client: NATS) -> None:
    """An event whose envelope names another site than its subject is refused, kept, and reported to the sender."""
    nc = client
    js = nc.jetstream()
    forged = visit(SiteWriter(OTHER))
    good = visit(SiteWriter(SITE))
    await publish(js, forged, subject_site=SITE)
    await publish(js, good)
    receipt = await SiteInbox(js, SITE).wait_receipt(_refused)
    assert receipt.refused[0].event_id == forged.event.event_id
    assert "forged site" in receipt.refused[0].reason
    await wait_for(lambda: _stored(pool, 1))
    [row] = await list_rows(pool)
    _, raw, _ = await get_row(pool, row.id)
    assert raw == encode_event(forged.event) and row.subject == up_subject(SITE) and row.site_id == SITE
    assert await EventStore(pool).get(forged.event.event_id) is None


async def test_unregistered_site_is_quarantined_then_replayed(center: Center, pool: asyncpg.Pool,
                                                              client: NATS) -> None:
    """Events of a site not registered yet are held; after registering it, a replay stores them in order."""
    late = "gx-lp.xy.s09"
    nc = client
    js = nc.jetstream()
    writer = SiteWriter(late)
    events = [visit(writer) for _ in range(3)]
    await publish(js, events)
    await wait_for(lambda: _held(pool, 3))
    rows = await list_rows(pool, site_id=late)
    assert all("not registered" in r.reason for r in rows) and {r.event_id for r in rows} == {
        d.event.event_id for d in events}
    assert await EventStore(pool).count() == 0
    await register_site(pool, late, "school", "中心小学")
    results = [await replay(pool, r.id) for r in rows]
    assert [r.outcome for r in results] == ["stored"] * 3
    assert (await EventStore(pool).progress(late)).watermark == 3
    assert await list_rows(pool) == [] and len(await list_rows(pool, include_replayed=True)) == 3


async def test_disabled_site_is_refused(center: Center, pool: asyncpg.Pool, client: NATS) -> None:
    """After a site is disabled its events are quarantined, not stored."""
    await disable_site(pool, SITE)
    nc = client
    await publish(nc.jetstream(), visit(SiteWriter(SITE)))
    await wait_for(lambda: _held(pool, 1))
    [row] = await list_rows(pool)
    assert "disabled" in row.reason and await EventStore(pool).count() == 0


async def test_truncated_random_and_oversize_bytes(center: Center, pool: asyncpg.Pool, client: NATS) -> None:
    """Truncated JSON, random bytes, bad MessagePack and an oversize message are each kept with a reason; good events
    in between are stored."""
    nc = client
    js = nc.jetstream()
    writer = SiteWriter(SITE)
    good = [visit(writer) for _ in range(3)]
    truncated = encode_event(visit(SiteWriter(SITE)).event)[:-25]
    noise = random.Random(7).randbytes(300)
    big = encode_event(visit(SiteWriter(SITE)).event)[:-2] + b', "padding": "' + b"x" * 70_000 + b'"}'
    await publish(js, good[0])
    await publish_raw(js, up_subject(SITE), truncated)
    await publish_raw(js, up_subject(SITE), noise)
    await publish(js, good[1])
    await publish_raw(js, up_subject(SITE), noise[:50], headers={CONTENT_TYPE_HEADER: MSGPACK})
    await publish_raw(js, up_subject(SITE), big)
    await publish(js, good[2])
    await wait_for(lambda: _held(pool, 4))
    await wait_for(lambda: _stored(pool, 3))
    rows = await list_rows(pool)
    raws = [(await get_row(pool, r.id))[1] for r in rows]
    assert raws == [truncated, noise, noise[:50], big]
    assert "malformed JSON" in rows[0].reason and "invalid event" in rows[1].reason
    assert "invalid event" in rows[2].reason and "limit is" in rows[3].reason


async def test_msgpack_events_are_accepted(center: Center, pool: asyncpg.Pool, client: NATS) -> None:
    """An event sent as MessagePack (with its Content-Type header) is stored like a JSON one, with the same hash."""
    nc = client
    d = visit(SiteWriter(SITE))
    await publish_raw(nc.jetstream(), up_subject(SITE), encode_event_msgpack(d.event),
                      headers={CONTENT_TYPE_HEADER: MSGPACK})
    await wait_for(lambda: _stored(pool, 1))
    stored = await EventStore(pool).get(d.event.event_id)
    assert stored is not None and stored.hash == d.hash


async def test_duplicate_id_with_other_content_is_refused(center: Center, pool: asyncpg.Pool,
                                                          client: NATS) -> None:
    """A second event with a stored event_id but different content is quarantined and refused in the receipt;
    the stored event is unchanged."""
    nc = client
    js = nc.jetstream()
    writer = SiteWriter(SITE)
    original = visit(writer)
    await publish(js, original)
    await wait_for(lambda: _stored(pool, 1))
    altered_event = msgspec.structs.replace(
        original.event, payload=msgspec.Raw(msgspec.json.encode(
            {"type": "HomeVisitMade", "child_id": CHILD, "visitor": "别人", "findings": "改过"})))
    await publish(js, DecodedEvent(altered_event, None, event_hash(altered_event), True), msg_id=False)
    receipt = await SiteInbox(js, SITE).wait_receipt(_refused)
    assert receipt.refused[0].event_id == original.event.event_id and receipt.watermark == 1
    assert "different content" in receipt.refused[0].reason or "already used" in receipt.refused[0].reason
    stored = await EventStore(pool).get(original.event.event_id)
    assert stored is not None and stored.hash == original.hash
    [row] = await list_rows(pool)
    assert (await get_row(pool, row.id))[1] == encode_event(altered_event)


async def test_unknown_type_and_future_version_are_stored_not_understood(
        center: Center, pool: asyncpg.Pool, client: NATS) -> None:
    """An event type this center does not know, and a known type at a newer schema version, are stored unchanged,
    marked not understood (so projections skip them), and counted for the site."""
    nc = client
    writer = SiteWriter(SITE)
    unknown = chained(writer, "HomeworkChecked", {"child_id": CHILD, "pages": 3})
    future = chained(writer, "HomeVisitMade", {"child_id": CHILD, "visitor": "石晓", "mood": "good"}, 2)
    await publish(nc.jetstream(), [unknown, future, visit(writer)])
    await wait_for(lambda: _stored(pool, 3))
    for d in (unknown, future):
        stored = await EventStore(pool).get(d.event.event_id)
        assert stored is not None and stored.understood is False and stored.hash == d.hash
    assert (await EventStore(pool).progress(SITE)).watermark == 3
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT not_understood FROM sites WHERE site_id = $1", SITE) == 2
    assert center.stats()["not_understood"] == 2


async def test_event_the_database_refuses_is_isolated(center: Center, pool: asyncpg.Pool,
                                                      client: NATS) -> None:
    """An event that passes validation but that PostgreSQL refuses (a NUL in jsonb text) is quarantined alone;
    the other events of its batch are stored."""
    nc = client
    writer = SiteWriter(SITE)
    events = [visit(writer) for _ in range(4)]
    poison = writer.write(HomeVisitMade(child_id=CHILD, visitor="石晓", findings="bad\u0000byte"))
    events += [poison] + [visit(writer) for _ in range(4)]
    await publish(nc.jetstream(), events)
    await wait_for(lambda: _stored(pool, 8))
    await wait_for(lambda: _held(pool, 1))
    [row] = await list_rows(pool)
    assert row.event_id == poison.event.event_id and "event store refused" in row.reason
    progress = await EventStore(pool).progress(SITE)
    assert progress.watermark == 4 and progress.holes == [(5, 5)]
