"""Batches on the way down (service/fanout.py `batched`, sync_agent/download.py): a site whose agent
said it reads them gets its fanned-out events many to a message, compressed; a site that said
nothing (an agent from before batches) still gets one event per message; an agent keeps only the
entries addressed to its own site. Real NATS, PostgreSQL and center."""

from __future__ import annotations

import random
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest

from events import catalogue as c
from events.batch import batch_msg_id, is_batch, pack, unpack
from events.envelope import encode_event
from events.samples import SampleSite, sample_registration
from events.types import SiteKind
from events.wire import DOWN_STREAM, KIND_EVENT, KIND_EVENTS, KIND_HEADER, DownEntry, down_entry_encoder, down_subject
from service.center import run_center
from service.sites import register_site
from sync_agent.agent import Agent
from sync_agent.tuning import SyncTuning
from testbed.embedded import EmbeddedNats
from tests.agent_support import eventually, make_site
from tests.center_kit import SiteInbox, connect, own_nats, publish

__all__ = ["own_nats"]
pytestmark = pytest.mark.slow
FAST = SyncTuning(resend_after=1.0, retry_base=0.05, retry_cap=0.5, idle_poll=0.1, ack_timeout=3.0,
                  connect_timeout=0.5, fetch_timeout=0.3)
VILLAGE, SCHOOL, OFFICE = "gx-lp.xy.v01", "gx-lp.xy.s01", "gx-lp.xy.office"
OTHER = "gx-lp.xy.v02"


async def _stream_kinds(url: str, site: str) -> list[str]:
    """The Shouwang-Kind of every message the center put on care.down.<site>, in order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(down_subject(site), ordered_consumer=True)
        kinds = []
        info = await js.stream_info(DOWN_STREAM, subjects_filter=down_subject(site))
        total = (info.state.subjects or {}).get(down_subject(site), 0)
        for _ in range(total):
            msg = await sub.next_msg(timeout=5)
            kinds.append((msg.headers or {}).get(KIND_HEADER, ""))
            if kinds[-1] == KIND_EVENTS:
                assert is_batch(msg.headers) and (msg.headers or {})["Nats-Msg-Id"].endswith("@" + site)
        await sub.unsubscribe()
        return kinds
    finally:
        await nc.close()


async def test_batches_go_only_to_agents_that_read_them(tmp_path: Path, database_url: str, pool: asyncpg.Pool,
                                                       own_nats: EmbeddedNats) -> None:
    """The township office's agent says it reads batches: its 40 events of the village's child come
    in batches and all reach its inbox; the school (read as an agent from before batches reads:
    one kind of message it knows per event) gets the same 40 one per message."""
    for site, kind in ((VILLAGE, "village"), (SCHOOL, "school"), (OFFICE, "township")):
        await register_site(pool, site, kind, site)
    village = SampleSite(VILLAGE)
    reg = village.write(sample_registration(random.Random(7), school_site=SCHOOL))
    child = reg.care.child_ids()[0]  # type: ignore[union-attr]
    events = [reg] + [village.write(c.HomeVisitMade(child_id=child, visitor="石晓")) for _ in range(39)]
    office = make_site(tmp_path, OFFICE, own_nats.url, SiteKind.TOWNSHIP)
    async with run_center(database_url, own_nats.url, parts=("ingest", "receipts", "fanout", "deadletters")):
        agent = Agent(office, tuning=FAST)
        await agent.start()
        try:
            assert await agent.wait_synced(30)  # its receipt request said what it reads
            assert await pool.fetchval("SELECT down_batches FROM sites WHERE site_id = $1", OFFICE) == ["care-1"]
            nc = await connect(own_nats.url)
            js = nc.jetstream()
            await publish(js, events)
            school = SiteInbox(js, SCHOOL)
            got = await school.wait_events(40)
            await eventually(lambda: agent.log.inbox_count() == 40, what="40 events in the office's inbox")
            await nc.close()
        finally:
            await agent.stop()
    assert {e.event_id for e in got} == {d.event.event_id for d in events}
    school_kinds = await _stream_kinds(own_nats.url, SCHOOL)
    assert KIND_EVENTS not in school_kinds and school_kinds.count(KIND_EVENT) == 40
    office_kinds = await _stream_kinds(own_nats.url, OFFICE)
    assert KIND_EVENT not in office_kinds and 1 <= office_kinds.count(KIND_EVENTS) < 40


async def test_an_agent_keeps_only_the_entries_addressed_to_it(tmp_path: Path, database_url: str,
                                                               pool: asyncpg.Pool, own_nats: EmbeddedNats) -> None:
    """Batches on a village's subject, as a reply-subject trick could put them there
    (docs/SECURITY.md): one whose message id names another site is dropped whole; in one addressed
    to the village, an entry addressed to another site is dropped and the village's own is kept."""
    await register_site(pool, VILLAGE, "village", VILLAGE)
    other = SampleSite(OTHER)
    rng = random.Random(9)
    theirs = other.write(sample_registration(rng))
    mine_too = other.write(c.HomeVisitMade(child_id=theirs.care.child_ids()[0], visitor="石晓"))  # type: ignore[union-attr]
    kept = other.write(c.HomeVisitMade(child_id=theirs.care.child_ids()[0], visitor="石晓"))  # type: ignore[union-attr]

    def entry(d: object, to: str) -> bytes:
        eid = d.event.event_id  # type: ignore[attr-defined]
        return down_entry_encoder.encode(DownEntry(id=f"{eid}@{to}", event=msgspec.Raw(encode_event(d.event))))  # type: ignore[attr-defined]

    data = make_site(tmp_path, VILLAGE, own_nats.url)
    async with run_center(database_url, own_nats.url, parts=("ingest", "receipts", "deadletters")):
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        for entries, msg_to in (([entry(theirs, OTHER), entry(mine_too, OTHER)], OTHER),
                                ([entry(mine_too, OTHER), entry(kept, VILLAGE)], VILLAGE)):
            body, headers = pack(entries)
            digest = batch_msg_id([str(len(entries)), msg_to]).partition(":")[2]
            headers.update({KIND_HEADER: KIND_EVENTS, "Nats-Msg-Id": f"b{digest}@{msg_to}"})
            await js.publish(down_subject(VILLAGE), body, headers=headers)
        assert [len(unpack(body, headers))] == [2]
        await nc.close()
        agent = Agent(data, tuning=FAST)
        await agent.start()
        try:
            await eventually(lambda: agent.downloader.foreign == 2, what="the batch and the entry for another site")
            await eventually(lambda: agent.log.inbox_count() == 1, what="the village's own entry kept")
            assert await agent.wait_synced(30)
            ids = set(agent.log.redacted_copies()) | {e.event_id for e in agent.log.child_events(
                theirs.care.child_ids()[0])}  # type: ignore[union-attr]
        finally:
            await agent.stop()
    assert ids == {kept.event.event_id}
