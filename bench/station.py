"""The station's own pages at a township office that holds a whole township offline: a child's
page, the children list (roster) and "this week", beside a constant page of the same server in
the same run; and the agent process's peak RSS.

The office's local log is filled the way the agent fills it: every village's and school's
events sealed with their own hash chains (`events.samples.SampleSite`) and kept as received from
the center (`LocalLog.apply_inbound`, the downloader's path), 2,000 children and 200,000 events
over the last ten months (200 and 10,000 with ``--quick``). The server is the real station app
(`sync_agent.serve.create_app`, behind its door, no sync loop) under uvicorn in a child process
run by `bench.rss`, with one route added: a constant HTML page behind the same door (log-in
cookie checked). One client on a keep-alive connection (`bench.api.load`): a station's pages
serve one person at a time; each page is timed over many requests, p50 and p99.

Also runnable alone: ``python -m bench.station [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

from bench.api import load
from bench.report import Figure, figure
from events import catalogue as c
from events.envelope import encode_event, parse_drafts
from events.samples import SampleSite, sample_registration
from events.types import CallChannel, StatusLevel
from testbed.embedded import free_port

OFFICE = "bench.t01.office"
USER = "bench-office"
DAYS = 300


def fill(data: Path, children: int, events: int, seed: int = 7) -> list[str]:
    """A township office's data directory whose log holds the township: returns the child ids."""
    from sync_agent.config import log_path
    from sync_agent.locallog import LocalLog

    init = subprocess.run([sys.executable, "-m", "shouwang", "agent", "init", "--site", OFFICE, "--kind",
                           "township", "--name", "镇儿童关爱办公室", "--data", str(data), "--nats",
                           f"nats://127.0.0.1:{free_port()}"], capture_output=True, text=True, check=False)
    if init.returncode:
        raise RuntimeError(init.stderr)
    rng = random.Random(seed)
    villages = [SampleSite(f"bench.t01.v{i:02d}", actor=f"staff-v{i:02d}") for i in range(1, 11)]
    schools = [SampleSite(f"bench.t01.s{i:02d}", actor=f"teacher-s{i:02d}") for i in range(1, 5)]
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    start = now - dt.timedelta(days=DAYS)
    homes: dict[str, tuple[SampleSite, SampleSite]] = {}
    ids: list[str] = []
    with LocalLog(log_path(data), OFFICE) as log:
        batch: list[tuple[c.Event, bytes]] = []  # type: ignore[name-defined]

        def put(site: SampleSite, care: c.CareEventBase, when: dt.datetime) -> None:
            d = site.write(care, when)
            site.written.clear()
            batch.append((d.event, encode_event(d.event)))
            if len(batch) >= 5000:
                log.apply_inbound(batch)
                batch.clear()

        for _ in range(children):
            v, s = rng.choice(villages), rng.choice(schools)
            reg = sample_registration(rng, village_site=v.site_id, school_site=s.site_id)
            homes[reg.child_id] = (v, s)
            ids.append(reg.child_id)
            put(v, reg, start + dt.timedelta(hours=rng.randint(0, 24 * 10)))
        work = []
        for _ in range(events - children):
            cid = rng.choice(ids)
            v, s = homes[cid]
            when = start + dt.timedelta(days=11 + rng.random() * (DAYS - 12))
            kind = rng.random()
            care: c.CareEventBase
            if kind < 0.35:
                site, care = v, c.HomeVisitMade(child_id=cid, visitor="张老师", findings="情况良好")
            elif kind < 0.6:
                site, care = v, c.ParentCallMade(child_id=cid, parent="母亲", channel=CallChannel.VIDEO, minutes=10)
            elif kind < 0.8:
                site, care = s, c.TalkHeld(child_id=cid, teacher="李老师", record_card="谈心记录：学习认真")
            elif kind < 0.9:
                site, care = s, c.LetterWritten(child_id=cid, summary="给爸爸的一封信")
            else:
                site, care = s, c.StatusAssessed(child_id=cid, study=rng.choice(list(StatusLevel)))
            work.append((when, site, care))
        work.sort(key=lambda w: w[0])
        for when, site, care in work:
            put(site, care, when)
        if batch:
            log.apply_inbound(batch)
    return ids


def _session(data: Path) -> str:
    """A log-in cookie for the bench user (as POST /login would open it)."""
    from sync_agent.accounts import Accounts
    from sync_agent.config import load_config
    from sync_agent.door import cookie_name

    with Accounts(data) as accounts:
        user = accounts.add_user(USER, "director", "bench password 1")
        sid = accounts.open_session(user, dt.timedelta(hours=4))
    return f"{cookie_name(load_config(data).site_id)}={sid}"


def _record_visit(data: Path, child_id: str) -> None:
    """A home visit recorded by the office (another connection): the log changed."""
    from sync_agent.config import log_path
    from sync_agent.locallog import LocalLog

    draft = {"type": "HomeVisitMade", "child_id": child_id, "visitor": "镇干部",
             "occurred_at": dt.datetime.now(dt.UTC).isoformat()}
    with LocalLog(log_path(data), OFFICE) as log:
        log.record(parse_drafts(msgspec.json.encode(draft)), default_actor=USER)


class _Server:
    """The station app in a child process under `bench.rss` (its peak RSS written at exit)."""

    def __init__(self, data: Path, rss_out: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.rss", str(rss_out), "bench.station", "--serve",
                                      str(self.port), str(data)], env={**os.environ, "SHOUWANG_LOG_LEVEL": "warning"})

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.base}/login", timeout=1)
                return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the station server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        # SIGINT: uvicorn shuts down, then raises KeyboardInterrupt, and bench.rss writes the peak on
        # its way out (uvicorn re-raises SIGTERM with the default action, which would skip that).
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve(port: int, data: Path) -> None:
    import uvicorn
    from litestar import MediaType, get

    from sync_agent.serve import create_app

    @get("/bench/constant", include_in_schema=False, media_type=MediaType.HTML)
    async def constant() -> str:
        return "<!doctype html><html lang=\"zh-CN\"><title>守望</title><main><h1>守望</h1></main></html>"

    door = create_app(data, sync=False)
    door.app.register(constant)  # type: ignore[attr-defined]
    uvicorn.run(door, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=60)


async def run(quick: bool) -> list[Figure]:
    children, events = (200, 10_000) if quick else (2_000, 200_000)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="shouwang-bench-station-") as tmp:
        data = Path(tmp) / "office"
        t = time.perf_counter()
        ids = fill(data, children, events)
        print(f"[bench] station: {events:,} events of {children:,} children in the office's log in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        headers = {"Cookie": _session(data)}
        rss_out = Path(tmp) / "rss.json"
        server = _Server(data, rss_out)
        try:
            server.wait()
            rng = random.Random(3)
            child_paths = [f"/child/{rng.choice(ids)}" for _ in range(500)]
            seconds = 3.0 if quick else 10.0
            const = await load(server.base, ["/bench/constant"], headers, seconds, clients=1)
            child = await load(server.base, child_paths, headers, seconds, clients=1)
            week = await load(server.base, ["/this-week"], headers, seconds, clients=1)
            roster = await load(server.base, ["/"], headers, seconds * (2 if quick else 6), clients=1)
            # "This week" just after the log changed: its archives are rebuilt (the roster's cost).
            cold: list[float] = []
            async with httpx.AsyncClient(base_url=server.base, headers=headers, timeout=600) as client:
                for i in range(3):
                    await asyncio.to_thread(_record_visit, data, ids[i])
                    t = time.perf_counter()
                    response = await client.get("/this-week")
                    cold.append((time.perf_counter() - t) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"/this-week answered {response.status_code}")
        finally:
            server.stop()
        errors = {n: m.errors for n, m in (("constant", const), ("child", child), ("this week", week),
                                           ("roster", roster)) if m.errors}
        if errors:
            raise RuntimeError(f"station pages failed under load: {errors}")
        await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bench.rss", str(Path(tmp) / "base.json"),
                                                 "--import", "sync_agent.serve", "uvicorn"], check=True)
        peak = json.loads(rss_out.read_text())["peak_rss_kib"] / 1024
        base_peak = json.loads((Path(tmp) / "base.json").read_text())["peak_rss_kib"] / 1024
    size = f"{children:,} children, {events // 1000}k events"
    for name, m in (("a child's page", child), ("this week (archives kept)", week), ("children list (roster)", roster)):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            figures.append(figure(f"station {name} {label} @ {size}", m.pct(q), "ms",
                                  f"constant page of the same server {label}", const.pct(q),
                                  note=f"{len(m.latencies)} requests, 1 client"))
    cold.sort()
    figures.append(figure(f"station this week, first view after the log changed (median of 3) @ {size}",
                          cold[1], "ms", "constant page of the same server p50", const.pct(0.5)))
    figures.append(figure(f"station agent peak RSS serving these pages @ {size}", peak, "MiB",
                          "same code imported, idle", base_peak))
    print(f"[bench] station @ {size}: constant p50 {const.pct(0.5):.1f} ms; child p50 {child.pct(0.5):.1f} "
          f"p99 {child.pct(0.99):.1f}; this week p50 {week.pct(0.5):.1f}; roster p50 {roster.pct(0.5):.0f} ms "
          f"({len(roster.latencies)} requests); this week after a change {cold[1]:.0f} ms; peak RSS {peak:.0f} MiB",
          file=sys.stderr, flush=True)
    return figures


async def _main(argv: list[str]) -> int:
    from bench import report

    parser = argparse.ArgumentParser(prog="python -m bench.station")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(report.table(await run(args.quick)))
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        i = sys.argv.index("--serve")
        _serve(int(sys.argv[i + 1]), Path(sys.argv[i + 2]))
    else:
        sys.exit(asyncio.run(_main(sys.argv[1:])))
