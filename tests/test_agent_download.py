"""Download end to end: the real center's fan-out brings a child's events recorded at another site into
the station's local view, so the archive shows offline with what the school recorded."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from events.samples import sample_registration
from events.types import SiteKind
from service.center import run_center
from service.sites import register_site
from sync_agent.agent import Agent
from sync_agent.config import load_config, log_path
from sync_agent.locallog import LocalLog
from sync_agent.record import record_json
from sync_agent.tuning import SyncTuning
from sync_agent.view import as_json
from testbed.embedded import EmbeddedNats
from tests.agent_support import eventually, make_site

FAST = SyncTuning(resend_after=1.0, resend_cap=4.0, retry_base=0.05, retry_cap=0.5, idle_poll=0.1, ack_timeout=3.0,
                  connect_timeout=0.5, fetch_timeout=0.3)
SCHOOL, VILLAGE = "gx-lp.xy.s01", "gx-lp.xy.v01"


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


async def test_a_childs_events_from_the_school_reach_the_village_station(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, private_nats: EmbeddedNats) -> None:
    """A child registered at the school for this village, and a talk the school recorded, arrive through the
    center's fan-out and show in the village station's offline archive beside its own home visit."""
    await register_site(pool, SCHOOL, "school", "中心小学")
    await register_site(pool, VILLAGE, "village", "青石村")
    school = make_site(tmp_path, SCHOOL, private_nats.url, SiteKind.SCHOOL)
    village = make_site(tmp_path, VILLAGE, private_nats.url)
    reg = sample_registration(random.Random(1), village_site=VILLAGE)
    child = reg.child_id
    registration = {**msgspec.to_builtins(reg), "occurred_at": "2026-03-01T08:00:00Z"}
    talk = {"type": "TalkHeld", "child_id": child, "teacher": "柏老师", "record_card": "情绪稳定",
            "occurred_at": "2026-03-02T08:00:00Z"}
    visit = {"type": "HomeVisitMade", "child_id": child, "visitor": "石晓", "occurred_at": "2026-03-03T08:00:00Z"}
    with LocalLog(log_path(school), SCHOOL) as log:
        record_json(log, load_config(school), json.dumps([registration, talk]).encode())
    async with run_center(database_url, private_nats.url), \
            Agent(school, tuning=FAST) as at_school, Agent(village, tuning=FAST) as at_village:
        assert await at_school.wait_synced(30)
        await eventually(lambda: at_village.log.inbox_count() == 2, what="the fan-out to the village")
        record_json(at_village.log, load_config(village), json.dumps(visit).encode())
        at_village.uploader.notify()
        assert await at_village.wait_synced(30)
        doc = as_json(child, at_village.log.child_events(child))
    assert doc["registered"] and doc["name"] == reg.name
    assert [t["type"] for t in doc["timeline"]] == ["ChildRegistered", "TalkHeld", "HomeVisitMade"]
    assert {t["site_id"] for t in doc["timeline"]} == {SCHOOL, VILLAGE}
