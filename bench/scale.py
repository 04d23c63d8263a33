"""Scale run: many sites syncing at once, some flapping offline, against one center.

Each site is a real agent (sync_agent.agent.Agent) with its own NATS connection and its own
SQLite local log; the sites are multiplexed over a few worker processes. Every site starts with
a backlog (a night offline), then records one event every few seconds; a tenth of the sites
lose their line for a few seconds at a time. The center runs as its own process
(`shouwang center run`), so its CPU time is its own.

Figures: sustained events committed per second over the run, receipt latency (from recording
to the receipt that covers the event, at the site) p50/p99 for the steady events, and the
center's CPU seconds per 1,000 events committed. There is no raw ceiling for these; the ingest
suite puts the center beside raw JetStream and COPY.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.report import Figure, figure
from bench.servers import fresh_database

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _draft(child: str, i: int) -> bytes:
    return (b'{"type":"HomeVisitMade","occurred_at":"2026-03-02T10:00:00+08:00","child_id":"%s",'
            b'"visitor":"scale","findings":"visit %d"}' % (child.encode(), i))


async def _site_loop(agent: Any, log: Any, child: str, stop_at: float, interval: float, flap: bool,
                     rng: random.Random, pending: list[tuple[int, float]], make_agent: Any) -> Any:
    from events.envelope import parse_drafts

    i = 0
    await asyncio.sleep(rng.random() * interval)
    next_flap = time.monotonic() + rng.uniform(2, 6)
    while time.monotonic() < stop_at:
        i += 1
        [rec] = await asyncio.to_thread(log.record, parse_drafts(_draft(child, i)), default_actor="scale")
        pending.append((rec.site_seq, time.monotonic()))
        agent.uploader.notify()
        if flap and time.monotonic() > next_flap:
            await agent.stop()  # the line goes down for a few seconds
            await asyncio.sleep(rng.uniform(1, 4))
            agent = make_agent()
            await agent.start()
            next_flap = time.monotonic() + rng.uniform(3, 8)
        await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
    return agent


async def _worker_main(sites: list[str], root: str, nats_url: str, backlog: int, duration: float,
                       interval: float, seed: int) -> tuple[int, list[float], int]:
    from events.envelope import parse_drafts
    from sync_agent.agent import Agent
    from sync_agent.config import SiteConfig, log_path, write_config
    from sync_agent.locallog import LocalLog
    from sync_agent.tuning import SyncTuning

    rng = random.Random(seed)
    tuning = SyncTuning(resend_after=5.0, retry_cap=2.0)
    agents: list[Any] = []
    logs: list[Any] = []
    children = []
    for n, site in enumerate(sites):
        data = Path(root) / site
        config = SiteConfig(site_id=site, kind="village", name=f"scale {n}", nats_url=nats_url)  # type: ignore[arg-type]
        write_config(data, config)
        lg = LocalLog(log_path(data), site)
        child = f"c-{rng.getrandbits(128):032x}"
        reg = (b'{"type":"ChildRegistered","occurred_at":"2026-03-01T09:00:00+08:00","child_id":"%s","name":"\xe7\x9f'
               b'\xb3\xe6\x99\x93","sex":"female","birth_date":"2016-05-17","household_village":"\xe9\x9d\x92\xe7\x9f'
               b'\xb3\xe6\x9d\x91","reasons":["both_parents_away"],"guardian":{"type":"grandparents"}}'
               % child.encode())
        batch = b"[" + b",".join([reg] + [_draft(child, -k) for k in range(1, backlog)]) + b"]"
        lg.record(parse_drafts(batch), default_actor="scale")
        logs.append(lg)
        children.append(child)

    def maker(i: int) -> Any:
        return lambda: Agent(Path(root) / sites[i], tuning=tuning, rng=random.Random(seed * 1000 + i))

    for i in range(len(sites)):
        agent = maker(i)()
        await agent.start()
        agents.append(agent)
    stop_at = time.monotonic() + duration
    pendings: list[list[tuple[int, float]]] = [[] for _ in sites]
    latencies: list[float] = []

    async def watch() -> None:
        while True:
            now = time.monotonic()
            for i, lg in enumerate(logs):
                if not pendings[i]:
                    continue
                wm = (await asyncio.to_thread(lg.receipt_state)).watermark
                keep = []
                for seq, t in pendings[i]:
                    if seq <= wm:
                        latencies.append(now - t)
                    else:
                        keep.append((seq, t))
                pendings[i] = keep
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    loops = [_site_loop(agents[i], logs[i], children[i], stop_at, interval, flap=(i % 10 == 0),
                        rng=random.Random(seed + i), pending=pendings[i], make_agent=maker(i))
             for i in range(len(sites))]
    agents = list(await asyncio.gather(*loops))
    deadline = time.monotonic() + 120  # let everything be receipted (the watcher empties `pendings`)
    while any(pendings) and time.monotonic() < deadline:  # noqa: ASYNC110 - polled state, no event to wait on
        await asyncio.sleep(0.25)
    watcher.cancel()
    unreceipted = sum(len(p) for p in pendings)
    for agent in agents:
        await agent.stop()
    recorded = sum(lg.last_seq() for lg in logs)
    for lg in logs:
        lg.close()
    return recorded, latencies, unreceipted


def _worker(args: tuple[list[str], str, str, int, float, float, int]) -> tuple[int, list[float], int]:
    return asyncio.run(_worker_main(*args))


def _start_center(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "shouwang", "center", "run", "--ingesters", "2"],
                                env=env, stdout=out, stderr=out)


async def run(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    from service.sites import register_site

    n_sites = 60 if quick else 1000
    workers = 2 if quick else 4
    backlog = 20 if quick else 50
    duration = 10.0 if quick else 60.0
    interval = 2.0 if quick else 5.0
    sites = [f"scale.t{i // 50:03d}.v{i % 50:03d}" for i in range(n_sites)]
    async with fresh_database(admin_url) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        try:
            for s in sites:
                await register_site(pool, s, "village", s)
        finally:
            await pool.close()
        env = {**os.environ, "SHOUWANG_DATABASE_URL": url, "SHOUWANG_NATS_URL": nats_url,
               "SHOUWANG_LOG_LEVEL": "warning", "SHOUWANG_LOG_JSON": "true"}
        with tempfile.TemporaryDirectory(prefix="shouwang-scale-") as root:
            center_log = Path(root) / "center.log"
            center = await asyncio.to_thread(_start_center, env, center_log)
            try:
                await asyncio.sleep(2.0)  # streams and consumers are created at center start
                if center.poll() is not None:
                    raise RuntimeError("center exited: " + center_log.read_text()[-1000:])
                conn = await asyncpg.connect(url)
                before_events = int(await conn.fetchval("SELECT count(*) FROM event_index"))
                cpu_before = _cpu_seconds(center.pid)
                t0 = time.monotonic()
                chunks = [sites[i::workers] for i in range(workers)]
                ctx = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool_ex:
                    futures = [asyncio.wrap_future(pool_ex.submit(_worker, (chunk, root, nats_url, backlog, duration,
                                                                            interval, k)))
                               for k, chunk in enumerate(chunks)]
                    results = await asyncio.gather(*futures)
                elapsed = time.monotonic() - t0
                cpu = _cpu_seconds(center.pid) - cpu_before
                committed = int(await conn.fetchval("SELECT count(*) FROM event_index")) - before_events
                await conn.close()
            finally:
                center.terminate()
                center.wait(60)
    recorded = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[1])
    unreceipted = sum(r[2] for r in results)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
    note = f"{n_sites} sites in {workers} processes, {recorded} events recorded, {committed} committed, " \
           f"{unreceipted} not receipted at the end"
    return [
        figure(f"scale: sustained events committed/s, {n_sites} sites syncing at once", committed / elapsed,
               "events/s", note=note),
        figure(f"scale: receipt latency p50, {n_sites} sites", p50 * 1000, "ms"),
        figure(f"scale: receipt latency p99, {n_sites} sites", p99 * 1000, "ms"),
        figure("scale: center CPU per 1,000 events", cpu / max(1, committed) * 1000, "CPU-seconds"),
    ]
