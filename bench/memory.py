"""Memory: peak resident set size (the kernel's high-water mark) of

1. a site agent catching up a backlog of 100,000 events (10,000 with --quick): ``shouwang agent
   sync --once`` in a process of its own, against the real center (1 ingester, in this process);
2. a projections rebuild from zero (``shouwang projections rebuild all``) in a process of its own,
   over 100k and 300k events (10k and 30k with --quick);

each beside the same command over a smaller log (the agent: 1,000 events; the rebuild: a third) in the same
run, so the ratio says how memory grows with the log. The agent pages its backlog, so it should
not grow; the rebuild holds each child's archive while it folds, so it grows with children (a
hundredth of the events here). The projections suite adds the rebuild's peak at 1M events.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

from bench.catchup import PARTS, SITE, drafts
from bench.ingest import clean_streams
from bench.projections import load_world
from bench.report import Figure, figure
from bench.servers import fresh_database
from events.types import SiteKind
from runtime.db import create_pool
from service.center import run_center
from service.sites import register_site
from sync_agent.config import SiteConfig, log_path, write_config
from sync_agent.locallog import LocalLog


async def peak_rss_mib(args: list[str], limit: float = 1800) -> float:
    """Run ``python -m bench.rss OUT <args>`` and return the child's peak RSS in MiB."""
    with tempfile.TemporaryDirectory(prefix="shouwang-rss-") as tmp:
        out = Path(tmp) / "rss.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.rss", str(out), *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{' '.join(args)} did not finish within {limit:.0f} s") from None
        if proc.returncode != 0 or not out.exists():
            tail = err.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}: {tail}")
        return int(json.loads(out.read_text())["peak_rss_kib"]) / 1024


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


async def rebuild(admin_url: str, n: int) -> tuple[float, int]:
    """(peak RSS of `projections rebuild all` over a store of about n events in MiB, events stored)."""
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=4)
        try:
            _, stored = await load_world(pool, n)
        finally:
            await pool.close()
        peak = await peak_rss_mib(["shouwang", "projections", "rebuild", "all", "--database-url", url])
    return peak, stored


async def run(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    backlog, small_backlog = (10_000, 1_000) if quick else (100_000, 1_000)
    small, large = (10_000, 30_000) if quick else (100_000, 300_000)
    agent_peak = await agent_backlog(admin_url, nats_url, backlog)
    agent_small = await agent_backlog(admin_url, nats_url, small_backlog)
    rebuild_small, stored_small = await rebuild(admin_url, small)
    rebuild_large, stored_large = await rebuild(admin_url, large)
    floor = await peak_rss_mib(["--import", "shouwang.cli"])
    note = f"a bare interpreter with shouwang's CLI imported peaks at {floor:.0f} MiB"
    return [
        figure(f"agent peak RSS, catching up a {backlog:,}-event backlog", agent_peak, "MiB",
               f"same, {small_backlog:,}-event backlog", agent_small,
               note="`shouwang agent sync --once` in its own process, real center; " + note),
        figure(f"projections rebuild peak RSS, {stored_large:,} events", rebuild_large, "MiB",
               f"same, {stored_small:,} events", rebuild_small,
               note="`shouwang projections rebuild all` in its own process; children are a hundredth of the "
                    "events at both sizes; " + note),
    ]
