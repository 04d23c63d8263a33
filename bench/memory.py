"""Memory: peak resident set size (the kernel's high-water mark) of

1. a site agent catching up a backlog of 100,000 events (10,000 with --quick): ``shouwang agent
   sync --once`` in a process of its own, against the real center (1 ingester, in this process),
   beside the same over a 1,000-event backlog;
2. a projections rebuild from zero (``shouwang projections rebuild all``) in a process of its own,
   over 1M and 3M events (10k and 30k with --quick; other sizes with SHOUWANG_BENCH_MEMORY_EVENTS,
   e.g. ``300000,1000000``), folded partition by partition (projections/partitioned.py;
   partitions of at most about 250,000 rows of the log's mean size, 5,000 with --quick; an event
   naming children of several partitions is a row in each), the larger beside the smaller; and the
   smaller folded at once, as before partitions, beside it. Each rebuild's rate as the command
   reports it, beside a raw ordered scan of the same store, and the partitioned rate at the
   smaller size beside the fold at once of the same store.

The agent pages its backlog and the rebuild folds one partition at a time, so neither should grow
with the log; the rebuild folded at once holds every event's entry (~1.4 KB each).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import tempfile
from pathlib import Path

import msgspec

from bench.catchup import PARTS, SITE, drafts
from bench.ingest import clean_streams
from bench.projections import load_world, raw_scan
from bench.report import Figure, figure
from bench.servers import fresh_database
from events.types import SiteKind
from projections.partitioned import PARTITION_EVENTS
from runtime.db import create_pool
from service.center import run_center
from service.sites import register_site
from sync_agent.config import SiteConfig, log_path, write_config
from sync_agent.locallog import LocalLog

EVENTS_ENV = "SHOUWANG_BENCH_MEMORY_EVENTS"  # "SMALL,LARGE": the rebuilds' two sizes (default 1M,3M; quick 10k,30k)


async def peak_rss_mib(args: list[str], limit: float = 1800) -> float:
    """Run ``python -m bench.rss OUT <args>`` and return the child's peak RSS in MiB."""
    return (await measured(args, limit))[0]


async def measured(args: list[str], limit: float = 3600) -> tuple[float, str]:
    """Run ``python -m bench.rss OUT <args>``: (the child's peak RSS in MiB, what it printed)."""
    with tempfile.TemporaryDirectory(prefix="shouwang-rss-") as tmp:
        out = Path(tmp) / "rss.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.rss", str(out), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            printed, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{' '.join(args)} did not finish within {limit:.0f} s") from None
        if proc.returncode != 0 or not out.exists():
            tail = err.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}: {tail}")
        return int(json.loads(out.read_text())["peak_rss_kib"]) / 1024, printed.decode(errors="replace")


async def agent_backlog(admin_url: str, nats_url: str, n: int) -> float:
    """Peak RSS of `agent sync --once` over an n-event backlog, MiB."""
    with tempfile.TemporaryDirectory(prefix="shouwang-mem-agent-") as tmp:
        data = Path(tmp) / SITE
        write_config(data, SiteConfig(site_id=SITE, kind=SiteKind.VILLAGE, name="bench", nats_url=nats_url))

        def record() -> None:
            rng = random.Random(n)
            with LocalLog(log_path(data), SITE) as log:
                done = 0
                while done < n:
                    done += len(log.record(drafts(min(5000, n - done), rng), default_actor="station"))

        await asyncio.to_thread(record)
        await clean_streams(nats_url)
        async with fresh_database(admin_url) as db_url:
            pool = await create_pool(db_url, min_size=1, max_size=2)
            try:
                await register_site(pool, SITE, "village", "bench")
            finally:
                await pool.close()
            async with run_center(db_url, nats_url, parts=PARTS):
                peak = await peak_rss_mib(["shouwang", "agent", "sync", "--once", "--timeout", "1200",
                                           "--data", str(data)])
        await clean_streams(nats_url)
    return peak


class Rebuilt(msgspec.Struct, frozen=True):
    events: int
    peak_mib: float  # the command's process and, for a partitioned fold, its forked worker's, added up
    rate: float  # events/s, as the command reports it
    raw_scan: float  # events/s of the raw ordered scan of the same store, just before


_RATE = re.compile(r"\(([0-9,]+) events/s\)")
_WORKERS_PEAK = re.compile(r"workers' peak RSS ([0-9,]+) MiB")


async def rebuilds(admin_url: str, n: int, partition_sizes: list[int | None]) -> list[Rebuilt]:
    """`projections rebuild all` in its own process over one store of about n events, once per
    partition size (None: the default): peak RSS and rate of each, beside a raw ordered scan of the
    same store just before it."""
    out = []
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=4)
        try:
            _, stored = await load_world(pool, n)
            async with pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE events")
            for size in partition_sizes:
                async with pool.acquire() as conn:
                    raw, _ = await raw_scan(conn)
                extra = ["--partition-events", str(size)] if size else []
                peak, printed = await measured(["shouwang", "projections", "rebuild", "all", "--database-url", url,
                                                *extra])
                rate = _RATE.search(printed)
                if rate is None:
                    raise RuntimeError(f"no rate in the rebuild's output: {printed[-500:]}")
                workers = _WORKERS_PEAK.search(printed)
                if workers is not None:
                    peak += float(workers.group(1).replace(",", ""))
                out.append(Rebuilt(stored, peak, float(rate.group(1).replace(",", "")), raw))
        finally:
            await pool.close()
    return out


async def run(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    backlog, small_backlog = (10_000, 1_000) if quick else (100_000, 1_000)
    # Rebuilds: the partitioned fold at two sizes (partitions of 5,000 rows when quick, the
    # default 250,000 in full), and the smaller size folded at once, as before partitions.
    small, large, per_part = (10_000, 30_000, 5_000) if quick else (1_000_000, 3_000_000, None)
    if sizes := os.environ.get(EVENTS_ENV):
        small, large = (int(x) for x in sizes.split(","))
    agent_peak = await agent_backlog(admin_url, nats_url, backlog)
    agent_small = await agent_backlog(admin_url, nats_url, small_backlog)
    at_once, rebuilt_small = await rebuilds(admin_url, small, [10**12, per_part])
    (rebuilt_large,) = await rebuilds(admin_url, large, [per_part])
    floor = await peak_rss_mib(["--import", "shouwang.cli"])
    note = f"a bare interpreter with shouwang's CLI imported peaks at {floor:.0f} MiB"
    parts = f"partitions of {per_part or PARTITION_EVENTS:,} rows, 2 processes"
    figures = [
        figure(f"agent peak RSS, catching up a {backlog:,}-event backlog", agent_peak, "MiB",
               f"same, {small_backlog:,}-event backlog", agent_small,
               note="`shouwang agent sync --once` in its own process, real center; " + note),
        figure(f"projections rebuild peak RSS, {rebuilt_large.events:,} events ({parts})", rebuilt_large.peak_mib,
               "MiB", f"same, {rebuilt_small.events:,} events", rebuilt_small.peak_mib,
               note="`shouwang projections rebuild all` in its own process, plus its forked worker's peak (each "
                    "folds its own partitions); children are a hundredth of the events at both sizes; " + note),
        figure(f"projections rebuild peak RSS, {rebuilt_small.events:,} events ({parts})", rebuilt_small.peak_mib,
               "MiB", "same events folded at once (no partitions)", at_once.peak_mib, note=note),
    ]
    for r, how in ((at_once, "folded at once"), (rebuilt_small, parts), (rebuilt_large, parts)):
        figures.append(figure(f"projections rebuild rate, {r.events:,} events, {how} (own process)", r.rate,
                              "events/s", "raw ordered keyset scan with JSON decode", r.raw_scan))
    figures.append(figure(f"projections rebuild rate, {rebuilt_small.events:,} events, {parts}", rebuilt_small.rate,
                          "events/s", "same store folded at once, same run", at_once.rate))
    return figures
