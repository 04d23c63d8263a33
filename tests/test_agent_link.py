"""The agent over a village line (testbed.proxy.TcpProxy, shaped): a cut in the middle of a batch
resends nothing the center already has and loses nothing, and a GPRS-class line (16 kbit/s, 600 ms
round trip) completes `agent sync --once` with no timeout, within a bounded number of bytes.
Real NATS, PostgreSQL and center (run_center); nothing here is timed."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
import zstandard

from events.batch import is_batch, unpack
from events.envelope import decode_event
from events.wire import UP_STREAM, up_subject
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from sync_agent.agent import Agent
from sync_agent.config import log_path
from sync_agent.locallog import LocalLog
from sync_agent.tuning import SyncTuning
from testbed.embedded import EmbeddedNats
from testbed.proxy import LineShape, TcpProxy
from tests.agent_support import drafts, eventually, make_site
from tests.center_kit import own_nats
from tests.test_agent_faults import assert_exactly_once, record

__all__ = ["own_nats"]
pytestmark = pytest.mark.slow
SITE = "gx-lp.xy.v01"
PARTS = ("ingest", "receipts", "deadletters")
TUNING = SyncTuning(resend_after=5.0, retry_base=0.05, retry_cap=0.5, idle_poll=0.1, connect_timeout=5.0)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class Watch:
    """What reaches the center's NATS on care.up.<site> (a subscriber beside the stream), each
    message's site_seqs, marked with the phase the test was in when it arrived."""

    def __init__(self) -> None:
        self.phase = "before"
        self.seen: list[tuple[str, list[int]]] = []

    async def on_msg(self, msg: Any) -> None:
        items = unpack(msg.data, msg.headers) if is_batch(msg.headers) else [msg.data]
        self.seen.append((self.phase, [decode_event(i).event.site_seq for i in items]))


async def test_a_cut_mid_batch_resends_nothing_receipted_and_loses_nothing(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats) -> None:
    """The line is cut the moment a batch has reached the center, while its PubAck is still on the
    way back (1 s round trip) and later batches are still on the line. After the line is back, no
    message carries an event the center held when the line was cut, and every event is stored
    exactly once."""
    await register_site(pool, SITE, "village", "青石村")
    proxy = await TcpProxy("127.0.0.1", _port(own_nats.url), shape=LineShape(64_000, 1.0)).start()
    data = make_site(tmp_path, SITE, proxy.url)
    ids = await record(data, SITE, 600, seed=3)
    watch = Watch()
    observer = await nats.connect(own_nats.url)
    await observer.subscribe(up_subject(SITE), cb=watch.on_msg)
    store = EventStore(pool)
    try:
        async with run_center(database_url, own_nats.url, parts=PARTS) as center:
            agent = Agent(data, tuning=TUNING)
            await agent.start()
            try:
                await eventually(lambda: len(watch.seen) >= 2, seconds=60, what="two batches at the center")
                await proxy.cut()
                watch.phase = "cut"
                first_arrived = max(watch.seen[0][1])
                js = center.nc.jetstream()

                async def drained() -> bool:
                    return (await js.stream_info(UP_STREAM)).state.messages == 0

                await eventually(drained, what="the center has ingested what reached it")
                held = await store.progress(SITE)
                assert held.max_seq >= first_arrived and held.holes == []
                assert agent.pending() > 0  # the cut came mid-upload
                watch.phase = "after"
                await proxy.restore()
                assert await agent.wait_synced(120)
            finally:
                await agent.stop()
    finally:
        await observer.close()
        await proxy.close()
    await assert_exactly_once(store, pool, SITE, ids)
    after = [seqs for phase, seqs in watch.seen if phase == "after"]
    assert after, "nothing was sent after the line came back"
    assert all(min(seqs) > held.max_seq for seqs in after), (held.max_seq, after)
    sent_after = sorted(s for seqs in after for s in seqs)
    assert sent_after == list(range(held.max_seq + 1, 601))  # the rest, each once


async def test_agent_sync_once_completes_on_a_gprs_line(tmp_path: Path, database_url: str, pool: asyncpg.Pool,
                                                      own_nats: EmbeddedNats) -> None:
    """300 events recorded offline, then `shouwang agent sync --once` over 16 kbit/s and 600 ms:
    exit 0 with every event receipted, no timeout error on the way, and the bytes each way within
    1.5x of the events compressed as one zstd stream."""
    await register_site(pool, SITE, "village", "青石村")
    proxy = await TcpProxy("127.0.0.1", _port(own_nats.url), shape=LineShape(16_000, 0.6)).start()
    data = make_site(tmp_path, SITE, proxy.url)
    ids = await record(data, SITE, 300, seed=4)
    with LocalLog(log_path(data), SITE) as log:
        floor = len(zstandard.ZstdCompressor(level=3).compress(b"".join(o.body for o in log.read_range(1, 300, 300))))
    try:
        async with run_center(database_url, own_nats.url, parts=PARTS):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shouwang", "agent", "sync", "--once", "--timeout", "300", "--data", str(data),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
    finally:
        await proxy.close()
    text = out.decode() + err.decode()
    assert proc.returncode == 0, text
    assert "in sync: all 300 events" in out.decode()
    assert "timeout" not in text.lower(), text
    with LocalLog(log_path(data), SITE) as log:
        last_error = log.meta("last_error") or ""
    assert "timeout" not in last_error.lower(), last_error
    await assert_exactly_once(EventStore(pool), pool, SITE, ids)
    assert proxy.bytes_up <= 1.5 * floor, (proxy.bytes_up, floor)
    assert proxy.bytes_down <= 1.5 * floor, (proxy.bytes_down, floor)


__all__ += ["drafts", "random"]
