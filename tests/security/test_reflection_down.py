"""A reply-subject trick on the way down: a school pulls its own care.down consumer with the
reply subject care.down.<a village>, so JetStream puts the school's messages (a township visit of
the school's own child) into the village's subject. Within JetStream's duplicate window the copy
is dropped as a repeat of its message id; after it, the copy lands, exactly as the center sent it
to the school. The village's agent sees it was sent to another site (the fan-out's message id
names it) and drops it: nothing of a child outside its scope is kept or shown."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest

from events import catalogue as c
from events.envelope import encode_event
from events.samples import SampleSite, sample_registration
from events.types import SiteKind
from events.wire import DOWN_STREAM, KIND_EVENT, KIND_HEADER, down_consumer, down_subject
from service.center import run_center
from service.sites import register_site
from sync_agent.agent import Agent
from sync_agent.config import load_config, log_path
from sync_agent.locallog import LocalLog
from sync_agent.record import record_json
from sync_agent.tuning import SyncTuning
from testbed.embedded import EmbeddedNats
from tests.agent_support import eventually, make_site
from tests.center_kit import publish

FAST = SyncTuning(resend_after=1.0, resend_cap=4.0, retry_base=0.05, retry_cap=0.5, idle_poll=0.1, ack_timeout=3.0,
                  connect_timeout=0.5, fetch_timeout=0.3)
SCHOOL, VILLAGE, OFFICE = "gx-lp.xy.s01", "gx-lp.xy.v01", "gx-lp.xy.office"


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


async def test_another_sites_messages_reflected_onto_a_stations_subject_are_dropped(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, private_nats: EmbeddedNats) -> None:
    """The school's pending care.down messages, pulled with reply care.down.<village>, land on the
    village's subject; the village agent drops them (counted as foreign) and keeps nothing of the child."""
    await register_site(pool, SCHOOL, "school", "中心小学")
    await register_site(pool, VILLAGE, "village", "青石村")
    await register_site(pool, OFFICE, "township", "镇办")
    school = make_site(tmp_path, SCHOOL, private_nats.url, SiteKind.SCHOOL)
    village = make_site(tmp_path, VILLAGE, private_nats.url)
    reg = sample_registration(random.Random(11), school_site=SCHOOL)  # the school's child, not the village's
    child = reg.child_id
    with LocalLog(log_path(school), SCHOOL) as log:
        record_json(log, load_config(school), json.dumps(
            {**msgspec.to_builtins(reg), "occurred_at": "2026-03-01T08:00:00Z"}).encode())
    async with run_center(database_url, private_nats.url) as center:
        async with Agent(school, tuning=FAST) as at_school:  # registers, syncs, creates its consumer
            assert await at_school.wait_synced(30)
        # While the school is offline, the township office visits its child: a care.down message
        # waits on the school's consumer.
        visit = SampleSite(OFFICE).write(c.HomeVisitMade(child_id=child, visitor="督导员"))
        await publish(center.js, visit)
        nc = await nats.connect(private_nats.url)
        try:
            js = nc.jetstream()

            async def waiting() -> bool:
                info = await js.consumer_info(DOWN_STREAM, down_consumer(SCHOOL))
                return info.num_pending + info.num_ack_pending > 0

            await eventually(waiting, what="the visit waiting on the school's consumer")
            async with Agent(village, tuning=FAST) as at_village:
                # The school's own pull, answered "on care.down.<village>" (within the window: a repeat).
                await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{DOWN_STREAM}.{down_consumer(SCHOOL)}",
                                 b'{"batch": 10, "no_wait": true}', reply=down_subject(VILLAGE))
                # After the window the copy lands on the village's subject as the center sent it to the
                # school: its kind, its body, its message id naming the school (here with a suffix,
                # so that this test need not wait out the two-minute window).
                await js.publish(down_subject(VILLAGE), encode_event(visit.event),
                                 headers={KIND_HEADER: KIND_EVENT,
                                          "Nats-Msg-Id": f"{visit.event.event_id}@{SCHOOL}#after-the-window"})
                await eventually(lambda: at_village.downloader.foreign > 0, what="the village dropping it")
                await asyncio.sleep(0.5)
                assert child not in at_village.log.children()
                assert at_village.log.inbox_count() == 0
        finally:
            await nc.close()
