"""The agent's upload and download against a center played by the test on real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from events.samples import SampleSite, sample_registration
from events.wire import Receipt
from store.postgres import EventStore
from sync_agent import view
from sync_agent.agent import Agent
from sync_agent.locallog import LocalLog
from sync_agent.tuning import SyncTuning
from testbed.embedded import EmbeddedNats
from tests.agent_support import TestCenter, drafts, eventually, make_site

FAST = SyncTuning(resend_after=1.0, resend_cap=4.0, retry_base=0.05, retry_cap=0.5, idle_poll=0.1, ack_timeout=3.0,
                  connect_timeout=0.5, fetch_timeout=0.3)


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A NATS server of this module's own, so its streams never meet another suite's."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def center(own_nats: EmbeddedNats, store: EventStore) -> AsyncIterator[TestCenter]:
    async with TestCenter(own_nats.url, store) as c:
        yield c


def site_id(rng: random.Random) -> str:
    return f"gx-lp.xy.v{rng.getrandbits(32):08x}"


async def test_recorded_events_reach_the_center_once_in_order_and_are_receipted(
        tmp_path: Path, own_nats: EmbeddedNats, center: TestCenter, store: EventStore) -> None:
    """Recorded events are published in order, stored once, and the receipt empties the pending count."""
    rng = random.Random(1)
    site = site_id(rng)
    data = make_site(tmp_path, site, own_nats.url)
    async with Agent(data, tuning=FAST) as agent:
        recorded = agent.log.record(drafts(300, rng), default_actor="station")
        agent.uploader.notify()
        assert await agent.wait_synced(30)
    stored = await store.read_site(site, 1, 1000)
    assert [s.event.event_id for s in stored] == [r.event_id for r in recorded]
    assert (await store.verify_chain(site)).ok
    with LocalLog(data / "log.sqlite", site) as log:
        assert log.pending() == (0, None)
        assert log.receipt_state().watermark == 300


async def test_fanned_out_events_build_the_offline_view(
        tmp_path: Path, own_nats: EmbeddedNats, center: TestCenter) -> None:
    """Events of a child from another site, fanned out by the center, show in the site's local view."""
    rng = random.Random(2)
    site = site_id(rng)
    data = make_site(tmp_path, site, own_nats.url)
    school = SampleSite("gx-lp.xy.s01")
    reg = school.write(sample_registration(rng))
    child = reg.event.children[0]
    async with Agent(data, tuning=FAST) as agent:
        await center.fan_out(site, [reg, reg])  # delivered twice: kept once
        await eventually(lambda: agent.log.inbox_count() == 1, what="the inbox")
        v = view.build_view(child, agent.log.child_events(child))
        assert v.sources["name"].event_id == reg.event.event_id
        # An update recorded here is based on what the site has seen of the child.
        upd = msgspec.json.encode({"type": "ArchiveUpdated", "child_id": child, "grade": 6,
                                   "occurred_at": "2026-03-03T10:00:00Z"})
        from events.envelope import parse_drafts
        [rec] = agent.log.record(parse_drafts(upd), default_actor="station")
        ev = next(e for e in agent.log.child_events(child) if e.event_id == rec.event_id)
        assert ev.based_on == {"grade": reg.event.event_id}
        assert ev.recorded_at > reg.event.recorded_at


async def test_a_lower_watermark_makes_the_agent_resend(
        tmp_path: Path, own_nats: EmbeddedNats, center: TestCenter, store: EventStore) -> None:
    """A receipt whose watermark went backwards (center restored from a backup) makes the agent resend from it."""
    rng = random.Random(3)
    site = site_id(rng)
    data = make_site(tmp_path, site, own_nats.url)
    async with Agent(data, tuning=FAST) as agent:
        agent.log.record(drafts(50, rng), default_actor="station")
        agent.uploader.notify()
        assert await agent.wait_synced(30)
        before, duplicates_before = agent.uploader.published, center.duplicates
        # The center "forgets" 20 events: its next receipt says 30.
        center.watermark_override = lambda r: Receipt(site_id=r.site_id, watermark=30, max_seq=30)
        agent.log.record(drafts(1, rng), default_actor="station")
        agent.uploader.notify()
        # They reach the center (one-off Nats-Msg-Ids past JetStream's duplicate window), which
        # already has them: duplicates.
        await eventually(lambda: agent.uploader.published - before >= 21, what="the resend of 31..51")
        await eventually(lambda: center.duplicates - duplicates_before >= 20, what="the center's duplicates")
        center.watermark_override = None
        await center.send_receipt(site)
        assert await agent.wait_synced(30)
    assert len(await store.read_site(site, 1, 1000)) == 51


async def test_the_upload_window_bounds_what_is_sent_ahead_of_receipts(
        tmp_path: Path, own_nats: EmbeddedNats, center: TestCenter, store: EventStore) -> None:
    """Without receipts the agent never publishes past the center's watermark plus its window; once receipts
    flow again the rest follows."""
    rng = random.Random(4)
    site = site_id(rng)
    data = make_site(tmp_path, site, own_nats.url)
    center.drop_receipts = True
    tuning = SyncTuning(**{**{f: getattr(FAST, f) for f in FAST.__slots__}, "window": 200, "page": 50})
    async with Agent(data, tuning=tuning) as agent:
        agent.log.record(drafts(1000, rng), default_actor="station")
        agent.uploader.notify()
        await eventually(lambda: center.received >= 200, what="the first window")
        await asyncio.sleep(2.5)  # at least one resend round (resend_after = 1 s)
        assert center.received == 200
        assert agent.uploader.next_seq <= 201
        center.drop_receipts = False
        await center.send_receipt(site)
        assert await agent.wait_synced(30)
    assert len(await store.read_site(site, 1, 2000)) == 1000
