"""Site agent benchmark: catch-up of a site that was offline with a backlog of 10,000 and 100,000
events (2,000 and 10,000 with --quick): events per second from the agent's first publish to
the last receipt from the real center (ingest into PostgreSQL, receipts back on care.down),
beside the same bytes published raw to JetStream (publish_async, no center) in the same run.

The suite deletes and recreates the CARE_UP / CARE_DOWN streams on the NATS server it is given:
never point it at a server that carries real traffic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from bench.ingest import clean_streams
from bench.pipeline import raw_pipeline
from bench.report import Figure, figure
from bench.servers import fresh_database
from events.envelope import Draft
from events.samples import child_id, samples
from events.types import SiteKind
from runtime.db import create_pool
from service.center import run_center
from service.sites import register_site
from sync_agent.agent import Agent
from sync_agent.config import SiteConfig, log_path, write_config
from sync_agent.locallog import LocalLog

SITE = "bench.catchup.v01"
KINDS = ("HomeVisitMade", "ParentCallMade", "LetterWritten", "TalkHeld", "CounsellingGiven")
# The center's parts a catch-up needs (no fan-out: nothing comes back but receipts).
PARTS = ("ingest", "receipts", "deadletters")
RAW_STREAM = "BENCH_CATCHUP_RAW"


def drafts(n: int, rng: random.Random) -> list[Draft]:
    children = [child_id(rng) for _ in range(200)]
    occurred = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
    return [Draft(care=samples(rng, children[i % 200])[KINDS[i % len(KINDS)]], occurred_at=occurred)
            for i in range(n)]


def _record_backlog(data: Path, n: int) -> tuple[float, float]:
    """Record n drafts through the agent's log; then the same bytes as plain SQLite inserts (WAL,
    synchronous=FULL, 5000 per transaction) into a scratch file: (ours, baseline) in events/s."""
    rng = random.Random(n)
    t = time.perf_counter()
    with LocalLog(log_path(data), SITE) as log:
        done = 0
        while done < n:
            done += len(log.record(drafts(min(5000, n - done), rng), default_actor="station"))
        ours = n / (time.perf_counter() - t)
        rows = [(o.site_seq, o.event_id, o.body) for o in log.read_range(1, 10**12, 10**9)]
    conn = sqlite3.connect(data / "baseline.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, event_id TEXT UNIQUE, body BLOB)")
    t = time.perf_counter()
    for i in range(0, len(rows), 5000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows[i:i + 5000])
        conn.execute("COMMIT")
    baseline = n / (time.perf_counter() - t)
    conn.close()
    return ours, baseline


async def _raw_publish(url: str, data: Path) -> float:
    """The same event bytes, with the same Nats-Msg-Id, published raw into a plain file stream."""
    with LocalLog(log_path(data), SITE) as log:
        messages = [(o.body, o.event_id) for o in log.read_range(1, 10**12, 10**9)]
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(publish_async_max_pending=2000)
        await js.add_stream(StreamConfig(name=RAW_STREAM, subjects=["bench.catchup.raw"],
                                         storage=StorageType.FILE))
        t = time.perf_counter()
        futures = [await js.publish_async("bench.catchup.raw", body, headers={"Nats-Msg-Id": eid})
                   for body, eid in messages]
        await asyncio.gather(*futures)
        rate = len(messages) / (time.perf_counter() - t)
        await js.delete_stream(RAW_STREAM)
        return rate
    finally:
        await nc.close()


async def _catch_up(admin_url: str, nats_url: str, n: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="shouwang-catchup-") as tmp:
        data = Path(tmp) / SITE
        write_config(data, SiteConfig(site_id=SITE, kind=SiteKind.VILLAGE, name="bench", nats_url=nats_url))
        record_rate, record_base = await asyncio.to_thread(_record_backlog, data, n)
        await clean_streams(nats_url, RAW_STREAM)
        async with fresh_database(admin_url) as db_url:
            pool = await create_pool(db_url, min_size=1, max_size=2)
            await register_site(pool, SITE, "village", "bench")
            async with run_center(db_url, nats_url, parts=PARTS):
                agent = Agent(data)
                t = time.perf_counter()
                await agent.start()  # verifies the whole hash chain first
                verify_s = time.perf_counter() - t
                try:
                    if not await agent.wait_synced(600):
                        raise RuntimeError(f"catch-up of {n} events did not finish: {agent.pending()} pending")
                    up = agent.uploader
                    assert up.first_publish_at is not None and up.last_progress_at is not None
                    rate = n / (up.last_progress_at - up.first_publish_at)
                finally:
                    await agent.stop()
            await pool.close()
        raw = await _raw_publish(nats_url, data)
        with LocalLog(log_path(data), SITE) as log:
            same_bytes = [(SITE, o.body, o.event_id) for o in log.read_range(1, 10**12, 10**9)]
        pipe = await raw_pipeline(admin_url, nats_url, same_bytes)
        await clean_streams(nats_url, RAW_STREAM)
    return [
        figure(f"agent catch-up of {n:,} events, first publish to last receipt", rate, "events/s",
               "raw pipeline of the same bytes: publish, fetch, COPY, ack (no decoding)", pipe,
               note="the pipeline sends no receipts back"),
        figure(f"agent catch-up of {n:,} events, first publish to last receipt", rate, "events/s",
               "raw JetStream publish_async of the same bytes", raw,
               note=f"center: 1 ingester into PostgreSQL; start-up chain check {verify_s:.1f} s"),
        figure(f"agent recording {n:,} events into the local log (batches of 5000)", record_rate, "events/s",
               "plain SQLite INSERT of the same bytes (WAL, FULL)", record_base,
               note="ours parses nothing but seals, hashes and re-validates each event as the center will"),
    ]


async def run(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    for n in (2_000, 10_000) if quick else (10_000, 100_000):
        figures += await _catch_up(admin_url, nats_url, n)
    return figures
