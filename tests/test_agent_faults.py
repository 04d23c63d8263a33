"""The agent against the real center (service.center.run_center) on real NATS and PostgreSQL, under faults:
the line down for the whole recording period, kill -9 of the agent mid-upload, the NATS server
crashing mid-upload, and receipts lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from events.wire import DOWN_STREAM, UP_STREAM, down_subject
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from sync_agent.agent import Agent
from sync_agent.config import log_path
from sync_agent.locallog import LocalLog
from sync_agent.tuning import SyncTuning
from testbed.embedded import EmbeddedNats, free_port
from tests.agent_support import drafts, eventually, make_site

SHOUWANG = str(Path(sys.executable).parent / "shouwang")
FAST = SyncTuning(resend_after=1.0, resend_cap=4.0, retry_base=0.05, retry_cap=0.5, idle_poll=0.1, ack_timeout=3.0,
                  connect_timeout=0.5, fetch_timeout=0.3)
# The center's parts these tests need (the fan-out has its own test in test_agent_download.py).
UPLOAD_PARTS = ("ingest", "receipts", "deadletters")
pytestmark = pytest.mark.slow


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A NATS server for this test alone (it may be killed and restarted)."""
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


async def record(data: Path, site: str, n: int, seed: int) -> list[str]:
    with LocalLog(log_path(data), site) as log:
        rng = random.Random(seed)
        ids: list[str] = []
        while len(ids) < n:
            ids += [r.event_id for r in log.record(drafts(min(5000, n - len(ids)), rng), default_actor="station")]
        return ids


async def assert_exactly_once(store: EventStore, pool: asyncpg.Pool, site: str, ids: list[str]) -> None:
    """The center holds each recorded event once, in site_seq order, and the chain verifies."""
    assert await store.count() == len(ids)  # this test's database holds this one site
    p = await store.progress(site)
    assert (p.watermark, p.max_seq, p.holes) == (len(ids), len(ids), [])
    stored = []
    seq = 1
    while batch := await store.read_site(site, seq, 5000):
        stored += [s.event.event_id for s in batch]
        seq = batch[-1].event.site_seq + 1
    assert stored == ids
    assert (await store.verify_chain(site)).ok


async def test_offline_for_the_whole_recording_period_then_back(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, store: EventStore) -> None:
    """Events recorded while NATS is unreachable all arrive once, in order, with the chain intact, when it is back."""
    site = "gx-lp.xy.v01"
    await register_site(pool, site, "village", "青石村")
    server = EmbeddedNats(tmp_path / "nats", port=free_port())  # not started: the line is down
    data = make_site(tmp_path, site, server.url)
    async with Agent(data, tuning=FAST) as agent:
        ids = await record(data, site, 1500, seed=1)
        await eventually(lambda: agent.log.meta("last_error"), what="a recorded connection error")
        assert "connect" in (agent.log.meta("last_error") or "").lower()
        ids += await record(data, site, 500, seed=2)
        assert agent.pending() == 2000
        server.start()
        try:
            async with run_center(database_url, server.url, parts=UPLOAD_PARTS):
                assert await agent.wait_synced(60)
        finally:
            await agent.stop()
            server.stop()
    await assert_exactly_once(store, pool, site, ids)


async def test_kill_9_of_the_agent_mid_upload_then_restart(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, store: EventStore,
        private_nats: EmbeddedNats) -> None:
    """An agent process killed with SIGKILL mid-way through a large upload loses and duplicates nothing after
    restart."""
    site = "gx-lp.xy.v02"
    await register_site(pool, site, "village", "柳湾村")
    data = make_site(tmp_path, site, private_nats.url)
    ids = await record(data, site, 20_000, seed=3)
    cmd = [SHOUWANG, "agent", "sync", "--data", str(data)]
    env = {**os.environ, "SHOUWANG_LOG_LEVEL": "warning"}
    async with run_center(database_url, private_nats.url, parts=UPLOAD_PARTS):
        # Subprocesses driven from the event loop: the center runs on it and must keep running.
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL, env=env)
        try:
            await eventually(lambda: _watermark(store, site, 1), seconds=60, what="the first commits")
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        at_kill = (await store.progress(site)).watermark
        assert 0 < at_kill < len(ids), "the kill must land in the middle of the upload"
        again = await asyncio.create_subprocess_exec(*cmd, "--once", "--timeout", "120", env=env,
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(again.communicate(), 180)
        assert again.returncode == 0, output.decode()[-2000:]
    await assert_exactly_once(store, pool, site, ids)
    with LocalLog(log_path(data), site) as log:
        assert log.pending() == (0, None)
        assert log.verify().events == len(ids)


async def _watermark(store: EventStore, site: str, at_least: int) -> bool:
    return (await store.progress(site)).watermark >= at_least


async def test_nats_server_crash_mid_upload(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, store: EventStore,
        private_nats: EmbeddedNats) -> None:
    """NATS killed and restarted in the middle of an upload: every event still arrives exactly once."""
    site = "gx-lp.xy.v03"
    await register_site(pool, site, "village", "桃源村")
    data = make_site(tmp_path, site, private_nats.url)
    ids = await record(data, site, 10_000, seed=4)
    async with run_center(database_url, private_nats.url, parts=UPLOAD_PARTS), Agent(data, tuning=FAST) as agent:
        await eventually(lambda: _watermark(store, site, 1), seconds=60, what="the first commits")
        private_nats.kill()
        await asyncio.sleep(0.3)
        private_nats.start()
        assert await agent.wait_synced(120)
    await assert_exactly_once(store, pool, site, ids)


async def test_lost_receipts_make_the_agent_resend_and_the_center_count_duplicates(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, store: EventStore,
        private_nats: EmbeddedNats) -> None:
    """Receipts lost after the center committed: the agent's fresh receipt on connecting (care.receipt) tells it
    everything is committed, so it resends nothing and counts stay right (it used to resend all 3000)."""
    site = "gx-lp.xy.v04"
    await register_site(pool, site, "village", "云岭村")
    data = make_site(tmp_path, site, private_nats.url)
    ids = await record(data, site, 3000, seed=5)
    async with run_center(database_url, private_nats.url, parts=UPLOAD_PARTS):
        # Upload only: the receipts pile up in care.down unread...
        agent = Agent(data, tuning=FAST)
        await agent.start(parts=("upload",))
        try:
            await eventually(lambda: _watermark(store, site, len(ids)), seconds=60, what="all committed")
        finally:
            await agent.stop()
        # ... and are lost with a NATS restart that did not keep them.
        private_nats.restart()
        nc = await nats.connect(private_nats.url)
        js = nc.jetstream()
        await js.purge_stream(DOWN_STREAM, subject=down_subject(site))

        async def ingested() -> bool:  # the first run's own resends (no receipts came) counted first
            return (await js.stream_info(UP_STREAM)).state.messages == 0

        await eventually(ingested, what="the center has ingested the first run's messages")
        await nc.close()
        duplicates_before = (await store.progress(site)).duplicates_seen
        async with Agent(data, tuning=FAST) as agent:
            assert agent.pending() == len(ids)
            assert await agent.wait_synced(60)
    assert (await store.progress(site)).duplicates_seen == duplicates_before
    await assert_exactly_once(store, pool, site, ids)
