"""One chaos run: start the township, record the scenario while faults are injected on the
seeded schedule, stop the faults, throw bad input at every door, record the rest, let it
settle, check everything (tests/chaos/checks.py) and return one summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from testbed.simulation import Planned
from tests.chaos import badinput, checks
from tests.chaos.faults import Injector, schedule
from tests.chaos.town import Town

Progress = Callable[[str], None]


def sizes(minutes: float) -> dict[str, int]:
    """How big a township for a run of this length (the CI run is the smallest)."""
    if minutes <= 2:
        return {"children": 16, "villages": 2, "schools": 2, "days": 70}
    if minutes <= 10:
        return {"children": 40, "villages": 3, "schools": 2, "days": 120}
    return {"children": 80, "villages": 4, "schools": 2, "days": 180}


async def run(minutes: float, seed: int, *, data: Path | None = None, progress: Progress = print,
              settle_within: float | None = None, nats_nodes: int = 1) -> dict[str, Any]:
    """One run; with `nats_nodes=3` the center's NATS is a JetStream cluster of three servers
    (streams kept 3 times) and the schedule adds the cluster's faults (tests/chaos/faults.py)."""
    owned = data is None
    data = data or Path(tempfile.mkdtemp(prefix=f"shouwang-chaos-{seed}-"))
    try:
        return await _run(minutes, seed, data, progress, settle_within, nats_nodes)
    finally:
        if owned:
            shutil.rmtree(data, ignore_errors=True)


async def _run(minutes: float, seed: int, data: Path, progress: Progress,
               settle_within: float | None, nats_nodes: int) -> dict[str, Any]:
    size = sizes(minutes)
    fault_seconds = max(20.0, minutes * 60 * 0.7)
    town = Town(data, seed=seed, progress=progress, nats_nodes=nats_nodes, **size)
    sc = town.scenario
    sites = [s.site_id for s in sc.sites]
    faults = schedule(seed, fault_seconds, sites, cluster=nats_nodes > 1)
    write_schedule(data, faults)
    progress(f"seed {seed}: {len(sc.records)} planned records at {len(sites)} sites over {sc.days} days; "
             f"{len(faults)} faults in {fault_seconds:.0f} s (schedule in {data / 'schedule.json'})")
    summary: dict[str, Any] = {"seed": seed, "minutes": minutes, "size": size, "nats_nodes": nats_nodes}
    injector = Injector(town, data, progress)
    try:
        await town.start()
        town.start_supervisor()
        # The last tenth of the records is held back until after the bad input (so a refusal
        # that names a sequence number the site has not used yet would show as a loss).
        cut = int(len(sc.records) * 0.9)
        head, tail = sc.records[:cut], sc.records[cut:]
        loop = asyncio.get_running_loop()
        started = loop.time()
        feeder = asyncio.create_task(feed(town, head, fault_seconds * 0.9, seed), name="chaos-feeder")
        inject = asyncio.create_task(injector.run(faults, started), name="chaos-faults")
        await asyncio.gather(feeder, inject)
        faults_ended = time.monotonic()
        progress(f"faults over: {injector.done}; {injector.duplicates_sent} duplicate deliveries; "
                 f"restarts {town.restarts}, exits by themselves {town.unexpected_exits}")
        for station in town.stations.values():
            await station.proxy.restore()
        await asyncio.gather(*(town.wait_agent(s) for s in town.stations))
        await quiet(town)
        progress("bad input at every door")
        summary["bad_input"] = await badinput.run_all(town)
        await feed(town, tail, 0.0, seed)
        progress("settling")
        ok, state = await checks.settle(town, settle_within or max(240.0, minutes * 60), progress)
        converge = time.monotonic() - faults_ended
        progress(f"settled in {converge:.1f} s" if ok else f"NOT settled after {converge:.0f} s: {state}")
        result = await checks.check_all(town, sc.truth, progress)
        if not ok:
            result["mismatches"].insert(0, f"did not converge: {state}")
        result["mismatches"] += summary["bad_input"].pop("problems")
        result["mismatches"] += injector.errors
        alive = [n for n in town.all_names() if not town.alive(n)]
        if alive:
            result["mismatches"].append(f"not running at the end: {alive}")
        summary.update({
            "faults": dict(sorted(injector.done.items())),
            "duplicate_deliveries": injector.duplicates_sent,
            **({"nats_node_kills": dict(sorted(injector.node_kills.items())),
                "catchup_backlogs": injector.catchup_backlogs} if nats_nodes > 1 else {}),
            "restarts": town.restarts,
            "exited_by_themselves": town.unexpected_exits,
            "recorded_via_cli": town.recorded_by_cli,
            **result,
            "converged": ok,
            "converge_seconds": round(converge, 1),
            "ok": ok and not result["mismatches"] and result["lost"] == 0 and result["duplicated"] == 0,
        })
        if not summary["ok"]:
            summary["schedule"] = [msgspec.to_builtins(f) for f in faults]
            summary["data"] = str(data)
        return summary
    finally:
        await town.stop_supervisor()
        await town.stop()


async def quiet(town: Town, seconds: float = 5.0, within: float = 120.0) -> None:
    """Wait until every process has run `seconds` without exiting and the database answers, so
    an after-effect of the last fault (a runner dying on a database still starting up) is not
    blamed on the bad input that comes next."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        exits = dict(town.unexpected_exits)
        await asyncio.sleep(seconds)
        if exits != town.unexpected_exits or not all(town.alive(n) for n in town.all_names()):
            continue
        try:
            conn = await asyncpg.connect(town.db_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            continue
        await conn.close()
        return


async def feed(town: Town, plans: list[Planned], seconds: float, seed: int) -> None:
    """Record `plans` day by day through the stations, spread over `seconds`; a seeded tenth
    of the batches goes through `shouwang agent record` instead of HTTP."""
    rng = random.Random(f"chaos-feed-{seed}-{len(plans)}")
    by_day: dict[int, dict[str, list[Planned]]] = {}
    for p in plans:
        by_day.setdefault(p.day, {}).setdefault(p.site_id, []).append(p)
    days = sorted(by_day)
    if not days:
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    step = seconds / len(days)
    async with httpx.AsyncClient(timeout=60) as client:
        for i, day in enumerate(days):
            wait = start + i * step - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            batches = [(site, ps, rng.random() < 0.1) for site, ps in sorted(by_day[day].items())]
            await asyncio.gather(*(town.record(client, site, ps, via_cli=cli) for site, ps, cli in batches))


def write_schedule(data: Path, faults: list[Any]) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "schedule.json").write_bytes(msgspec.json.format(msgspec.json.encode(faults)))


def main_sync(minutes: float, seed: int, data: Path | None, progress: Progress,
              nats_nodes: int = 1) -> dict[str, Any]:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(minutes, seed, data=data, progress=progress, nats_nodes=nats_nodes))
    raise SystemExit(130)
