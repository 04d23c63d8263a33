"""Relay benchmark: a township office hands a restored center the events its backup lacks.

A village's backlog (20,000 events; 2,000 with --quick) is committed by a first center and fanned
out to the township office's agent with the center's seals. Then a second, empty center stands
for one restored from a backup that lacks all of it, and the office's `relay_round` hands the
sealed copies back (service/relay.py: seal check, then ingest's commit as if the village had sent
them): events/s from its first request to its last answer. Beside it, in the same run, the peer
it stands in for: the village's own agent resending the same events to a third such center
(watermark went back, resend, receipts), events/s from its first publish to its last receipt, as
the catchup suite measures it.

The suite deletes and recreates the CARE_UP / CARE_DOWN streams on the NATS server it is given:
never point it at a server that carries real traffic.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

import nats

from bench.catchup import drafts
from bench.ingest import clean_streams
from bench.report import Figure, figure
from bench.servers import fresh_database
from events.types import SiteKind
from events.wire import inbox_prefix
from runtime.db import create_pool
from service.center import run_center
from service.seals import RelaySettings
from service.sites import register_site
from sync_agent.agent import Agent
from sync_agent.config import SiteConfig, log_path, write_config
from sync_agent.locallog import LocalLog
from sync_agent.relay import relay_round

SITE = "bench.relay.v01"
OFFICE = "bench.relay.office"
KEY = RelaySettings(relay_key="bench-relay-key-" * 4)
PARTS = ("ingest", "receipts", "deadletters")


def _record(data: Path, n: int) -> None:
    rng = random.Random(n)
    with LocalLog(log_path(data), SITE) as log:
        done = 0
        while done < n:
            done += len(log.record(drafts(min(5000, n - done), rng), default_actor="station"))


async def _registered(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        await register_site(pool, SITE, "village", "bench")
        await register_site(pool, OFFICE, "township", "bench")
    finally:
        await pool.close()


async def _relay(admin_url: str, nats_url: str, n: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="shouwang-relay-") as tmp:
        village, office = Path(tmp) / SITE, Path(tmp) / OFFICE
        write_config(village, SiteConfig(site_id=SITE, kind=SiteKind.VILLAGE, name="bench", nats_url=nats_url))
        write_config(office, SiteConfig(site_id=OFFICE, kind=SiteKind.TOWNSHIP, name="bench", nats_url=nats_url))
        await asyncio.to_thread(_record, village, n)
        await clean_streams(nats_url)
        # The center before its restore: the village's events committed, sealed copies at the office.
        async with fresh_database(admin_url) as db_url:
            await _registered(db_url)
            async with run_center(db_url, nats_url, parts=(*PARTS, "fanout"), relay=KEY):
                agents = [Agent(village), Agent(office)]
                try:
                    await agents[0].start()
                    await agents[1].start(parts=("download",))
                    if not await agents[0].wait_synced(600):
                        raise RuntimeError(f"the village did not sync {n} events")
                    deadline = time.monotonic() + 600
                    while agents[1].log.inbox_count() < n:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"the office received {agents[1].log.inbox_count()} of {n}")
                        await asyncio.sleep(0.2)
                finally:
                    for a in agents:
                        await a.stop()
        # A center restored from a backup that lacks every one of them: the office relays.
        async with fresh_database(admin_url) as db_url:
            await _registered(db_url)
            async with run_center(db_url, nats_url, parts=PARTS, relay=KEY):
                # as the office's agent connects: the center answers only below the site's own inbox
                nc = await nats.connect(nats_url, connect_timeout=5, inbox_prefix=inbox_prefix(OFFICE))
                try:
                    with LocalLog(log_path(office), OFFICE) as log:
                        t = time.perf_counter()
                        report = await relay_round(nc, log, OFFICE, 120)
                        relay_rate = n / (time.perf_counter() - t)
                finally:
                    await nc.close()
                if report.stored != n:
                    raise RuntimeError(f"the relay stored {report.stored} of {n}: {report}")
        # The same events resent by the village itself to another such center (the peer).
        async with fresh_database(admin_url) as db_url:
            await _registered(db_url)
            async with run_center(db_url, nats_url, parts=PARTS):
                agent = Agent(village)
                await agent.start(parts=("upload", "download"))
                try:
                    if not await agent.wait_synced(600):
                        raise RuntimeError(f"the village's resend of {n} events did not finish")
                    up = agent.uploader
                    assert up.first_publish_at is not None and up.last_progress_at is not None
                    resend_rate = n / (up.last_progress_at - up.first_publish_at)
                finally:
                    await agent.stop()
        await clean_streams(nats_url)
    return [figure(f"office relays {n:,} events a restored center lacks, first request to last answer", relay_rate,
                   "events/s", "the village resending the same events itself (first publish to last receipt)",
                   resend_rate, note="relay: 500 sealed copies a request, each seal checked, then ingest's commit "
                                     "as if the village sent them; 1 ingester on the peer's side")]


async def run(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    return await _relay(admin_url, nats_url, 2_000 if quick else 20_000)
