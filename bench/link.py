"""The village link (`python -m bench --only link`): what syncing costs on the wire, and how long
a station back on a weak line takes to be fully receipted.

Every site talks to the center's NATS through its own :class:`testbed.proxy.TcpProxy`, which
counts the bytes each way (what the station's mobile contract pays). Two measures:

* **Bytes per event over a simulated school term** (`testbed.simulation`, a township office,
  village stations and schools; each week every site records its week's work, then the sites sync
  until the center and every site are quiet; free line). For one village station, one school and
  the township office: bytes sent and received per event that crossed the site's line (its own
  events plus those the center sent it), beside the **floor**: the same events compressed as one
  zstd stream (level 3, no dictionary), per event. What the floor leaves out (receipts, acks,
  NATS framing) is the protocol's overhead.
* **Catch-up over a weak line**: a village station records a backlog offline (50 registrations,
  then visits, calls and letters), then the agent (default tuning, as `agent sync --once` runs it)
  syncs through a shaped line until the center confirms every event: 64 kbit/s each way, 300 ms
  round trip, the line cut every 20-40 s; and a GPRS-class line (16 kbit/s, 600 ms, no cuts).
  Beside the **floor**: the backlog's compressed bytes over that bandwidth, plus a round trip
  for the first exchange and one per cut. A run that is not receipted within the cap reports the
  cap (a lower bound) and says so in its note.

All figures are ratios to a floor computed in the same run; `--quick` runs small sizes and times
nothing that CI checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import nats
import zstandard

from bench.ingest import clean_streams
from bench.report import Figure, figure
from bench.servers import fresh_database
from events.envelope import Draft, parse_drafts
from events.samples import child_id, sample_registration, samples
from events.types import SiteKind
from events.wire import DOWN_STREAM, down_consumer
from runtime.db import create_pool
from service.center import Center, run_center
from service.sites import register_site
from sync_agent.agent import Agent
from sync_agent.config import SiteConfig, log_path, write_config
from sync_agent.locallog import LocalLog
from testbed.proxy import LineShape, TcpProxy
from testbed.simulation import Scenario, generate

CENTER_PARTS = ("ingest", "receipts", "fanout", "deadletters", "restore")
WEAK = LineShape(bandwidth=64_000, rtt=0.3)
GPRS = LineShape(bandwidth=16_000, rtt=0.6)
CUTS = (20.0, 40.0)
OCCURRED = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


def floor_bytes(bodies: Sequence[bytes]) -> int:
    """The events compressed as one zstd stream (level 3, no dictionary): the floor."""
    return len(zstandard.ZstdCompressor(level=3).compress(b"".join(bodies)))


def backlog(n: int, rng: random.Random) -> list[Draft]:
    """A village station's weeks offline: 50 registrations, then visits, calls and letters."""
    regs = min(50, max(1, n // 6))
    children = [child_id(rng) for _ in range(regs)]
    out = [Draft(care=sample_registration(rng, c), occurred_at=OCCURRED) for c in children]
    kinds = ("HomeVisitMade", "ParentCallMade", "LetterWritten")
    for i in range(n - regs):
        out.append(Draft(care=samples(rng, children[i % regs])[kinds[i % 3]], occurred_at=OCCURRED))  # type: ignore[arg-type]
    return out


def _own_bodies(data: Path, site: str) -> list[bytes]:
    with LocalLog(log_path(data), site) as log:
        return [o.body for o in log.read_range(1, 10**12, 10**9)]


def _inbox_bodies(data: Path, site: str) -> list[bytes]:
    with LocalLog(log_path(data), site) as log, log._lock:
        return [bytes(r[0]) for r in log._conn.execute("SELECT body FROM inbox ORDER BY event_id")]


# --- catch-up over a weak line ----------------------------------------------------------


async def _catch_up(admin_url: str, nats_url: str, n: int, shape: LineShape, cuts: bool, cap: float,
                    label: str) -> list[Figure]:
    site = "bench.link.v01"
    with tempfile.TemporaryDirectory(prefix="shouwang-link-") as tmp:
        data = Path(tmp) / site
        await clean_streams(nats_url)
        proxy = await TcpProxy("127.0.0.1", _port(nats_url), shape=shape).start()
        write_config(data, SiteConfig(site_id=site, kind=SiteKind.VILLAGE, name="bench", nats_url=proxy.url))
        with LocalLog(log_path(data), site) as log:
            log.record(backlog(n, random.Random(n)), default_actor="station")
        bodies = _own_bodies(data, site)
        floor = floor_bytes(bodies)
        async with fresh_database(admin_url) as db_url:
            pool = await create_pool(db_url, min_size=1, max_size=2)
            await register_site(pool, site, "village", "bench")
            cutter: asyncio.Task[None] | None = None
            try:
                async with run_center(db_url, nats_url, parts=CENTER_PARTS):
                    agent = Agent(data)
                    t = time.perf_counter()
                    if cuts:
                        cutter = asyncio.create_task(proxy.cut_every(*CUTS, random.Random(7)))
                    await agent.start()
                    try:
                        done = await agent.wait_synced(cap)
                        took = time.perf_counter() - t
                        pending = agent.pending()
                        last_error = agent.log.meta("last_error") or "-"
                    finally:
                        if cutter is not None:
                            cutter.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await cutter
                        up, down = proxy.bytes_up, proxy.bytes_down
                        cuts, connections = proxy.cut_count, proxy.connections
                        await agent.stop()
            finally:
                await proxy.close()
                await pool.close()
    line = f"{shape.bandwidth // 1000} kbit/s, {shape.rtt * 1000:.0f} ms" + (", cut every 20-40 s" if cuts else "")
    floor_s = floor / shape.bytes_per_second + shape.rtt * (1 + cuts)
    status = "receipted" if done else f"NOT receipted within {cap:g} s ({pending} pending; last error: {last_error})"
    note = f"{status}; {cuts} cuts while syncing, {connections} connections"
    return [
        figure(f"link: {label} {n} events over {line}: time to fully receipted", took if done else cap, "s",
               "floor: zstd bytes over the bandwidth + a round trip per cut and one more", floor_s, note=note),
        figure(f"link: {label} {n} events over {line}: bytes sent per event", up / n, "bytes/event",
               "floor: the same events as one zstd stream", floor / n, note=note),
        figure(f"link: {label} {n} events over {line}: bytes received per event", down / n, "bytes/event",
               "floor: the same events as one zstd stream", floor / n, note=note),
    ]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# --- a school term ------------------------------------------------------------------------


async def _quiet(center: Center, agents: dict[str, Agent], nc: Any, within: float) -> None:
    """Until every agent has nothing pending, the fan-out has sent everything stored and every
    site's consumer has delivered and seen acked everything (twice in a row, 0.3 s apart)."""
    js = nc.jetstream()
    deadline = time.monotonic() + within
    calm = 0
    while calm < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the township did not settle: " + ", ".join(
                f"{s}: {a.pending()} pending" for s, a in agents.items()))
        await asyncio.sleep(0.3)
        ok = all(a.pending() == 0 for a in agents.values())
        if ok and center.fanout is not None:
            ok = center.fanout.position == await center.store.head()
        if ok:
            for site in agents:
                info = await js.consumer_info(DOWN_STREAM, down_consumer(site))
                if info.num_pending or info.num_ack_pending:
                    ok = False
                    break
        calm = calm + 1 if ok else 0


async def _term(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    sc: Scenario = generate(children=40, villages=3, schools=1, days=35, seed=19) if quick else \
        generate(children=120, villages=4, schools=2, days=126, seed=19)
    await clean_streams(nats_url)
    watched = {s.site_id: s for s in sc.sites}
    with tempfile.TemporaryDirectory(prefix="shouwang-term-") as tmp:
        proxies = {s: await TcpProxy("127.0.0.1", _port(nats_url)).start() for s in watched}
        dirs: dict[str, Path] = {}
        for s, spec in watched.items():
            dirs[s] = Path(tmp) / s
            write_config(dirs[s], SiteConfig(site_id=s, kind=SiteKind(spec.kind), name=spec.name,
                                             nats_url=proxies[s].url))
        async with fresh_database(admin_url) as db_url:
            pool = await create_pool(db_url, min_size=1, max_size=2)
            for s, spec in watched.items():
                await register_site(pool, s, spec.kind, spec.name)
            nc = await nats.connect(nats_url)
            agents: dict[str, Agent] = {}
            try:
                async with run_center(db_url, nats_url, parts=CENTER_PARTS) as center:
                    for s in watched:
                        agents[s] = Agent(dirs[s])
                        await agents[s].start()
                    for week_start in range(0, sc.days, 7):
                        for s in watched:
                            plans = [p for p in sc.for_site(s) if not p.refused
                                     and week_start <= p.day < week_start + 7]
                            if plans:
                                drafts = parse_drafts(msgspec.json.encode([p.draft for p in plans]))
                                await asyncio.to_thread(_record, dirs[s], s, drafts)
                                agents[s].uploader.notify()
                        await _quiet(center, agents, nc, 300)
                    counts = {s: (agents[s].log.last_seq(), agents[s].log.inbox_count()) for s in watched}
                    sent = {s: (p.bytes_up, p.bytes_down) for s, p in proxies.items()}
                    for a in agents.values():
                        await a.stop()
                    agents = {}
            finally:
                for a in agents.values():
                    await a.stop()
                await nc.close()
                for p in proxies.values():
                    await p.close()
                await pool.close()
        picks = [next(s for s in watched if watched[s].kind == kind) for kind in ("village", "school", "township")]
        figures: list[Figure] = []
        for s in picks:
            own, inbox = counts[s]
            crossed = own + inbox
            floor = floor_bytes(_own_bodies(dirs[s], s) + _inbox_bodies(dirs[s], s)) / max(1, crossed)
            up, down = sent[s]
            kind = watched[s].kind
            note = f"{own} own events, {inbox} received, {sc.days} days synced weekly"
            figures += [
                figure(f"link: a {kind}'s term, bytes sent per event crossing its line", up / crossed, "bytes/event",
                       "floor: the same events as one zstd stream", floor, note=note),
                figure(f"link: a {kind}'s term, bytes received per event crossing its line", down / crossed,
                       "bytes/event", "floor: the same events as one zstd stream", floor, note=note),
            ]
    return figures


def _record(data: Path, site: str, drafts: list[Draft]) -> None:
    with LocalLog(log_path(data), site) as log:
        for i in range(0, len(drafts), 500):
            log.record(drafts[i:i + 500], default_actor="station")


async def run(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    figures = await _term(admin_url, nats_url, quick)
    if quick:
        cases: list[tuple[int, LineShape, bool, float, str]] = [
            (60, WEAK, True, 40.0, "station back from weeks offline,"),
            (60, GPRS, False, 40.0, "station back from weeks offline,")]
    else:
        cases = [(300, WEAK, True, 180.0, "station back from six weeks offline,"),
                 (1000, WEAK, True, 180.0, "station back from six weeks offline,"),
                 (3000, WEAK, True, 180.0, "a busy station back from six weeks offline,"),
                 (300, GPRS, False, 180.0, "station back from six weeks offline,")]
    for n, shape, cuts, cap, label in cases:
        figures += await _catch_up(admin_url, nats_url, n, shape, cuts, cap, label)
    return figures
