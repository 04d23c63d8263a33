"""`shouwang demo`: the whole system on embedded servers, for a newcomer with only Python."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from runtime.cli import CliError, emit_json, positive_int, run_async
from runtime.settings import Settings
from testbed.demo import DEMO_PASSWORD, MAX_TOWNSHIPS, Demo, prepare


def township_count(text: str) -> int:
    """An argparse type: how many townships the demo runs, 1 to MAX_TOWNSHIPS (refused naming the value)."""
    value = positive_int(text)
    if value > MAX_TOWNSHIPS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_TOWNSHIPS} (the demo has {MAX_TOWNSHIPS} "
                                         "made-up townships)")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a simulated township on embedded PostgreSQL and NATS (dashboard included)")
    p.add_argument("--data", type=Path, default=Path(".shouwang/demo"), help="data folder (kept between runs)")
    p.add_argument("--fresh", action="store_true", help="delete the data folder first")
    p.add_argument("--once", action="store_true", help="run the scenario to the end, print the result, exit")
    p.add_argument("--json", action="store_true", help="print one JSON document (with --once)")
    p.add_argument("--children", type=positive_int, default=120, help="children in the township (default 120)")
    p.add_argument("--villages", type=positive_int, default=4, help="village stations (default 4)")
    p.add_argument("--schools", type=positive_int, default=2, help="schools (default 2)")
    p.add_argument("--communities", type=int, default=1, choices=range(0, 4), metavar="N",
                   help="communities (社区), 0 to 3 (default 1)")
    p.add_argument("--townships", type=township_count, default=1,
                   help=f"townships of the county, each with --villages, --schools and --children (1 to "
                        f"{MAX_TOWNSHIPS}, default 1); log in as 'county' to compare them")
    p.add_argument("--days", type=positive_int, default=120, help="days of care work to simulate (default 120)")
    p.add_argument("--seed", type=int, default=2026, help="seed of the simulated township (same seed, same township)")
    p.add_argument("--port", type=int, default=8800, help="the center's HTTP port for the dashboard (default 8800)")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    quiet = bool(args.json)

    def progress(msg: str) -> None:
        if not quiet:
            print(f"[demo] {msg}", flush=True)

    data: Path = args.data.resolve()
    prepare(data, args.fresh, progress)
    return run_async(_run(args, data, progress))


async def _run(args: argparse.Namespace, data: Path, progress: Any) -> int:
    demo = Demo(data, children=args.children, villages=args.villages, schools=args.schools, days=args.days,
                seed=args.seed, progress=progress, http_port=args.port, townships=args.townships,
                communities=args.communities)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await demo.start()
        marker = data / "scenario-recorded.json"
        if not marker.exists():
            await demo.record_all()
            marker.write_text(json.dumps({"refused_at_station": demo.refused_at_station,
                                          "townships": args.townships}) + "\n")
        else:
            kept = json.loads(marker.read_text())
            if int(kept.get("townships", 1)) != args.townships:
                raise CliError(f"--townships {args.townships}: the data folder {data} holds a demo of "
                               f"{kept.get('townships', 1)} township(s); use --fresh to start over")
            progress("the scenario was recorded in an earlier run (use --fresh to start over)")
            demo.refused_at_station = int(kept["refused_at_station"])
        async with demo.phase("settle", "waiting until every site has nothing pending and projections caught up"):
            await demo.settle()
        result = await demo.result()
        if args.json:
            emit_json(result)
        else:
            ev = result["events"]
            progress(f"recorded {ev['recorded']} events; the center stored {ev['stored']} exactly once; "
                     f"{ev['duplicates_refused']} resends recognised; {ev['refused_at_station']} refused at a station")
            progress(f"detected: {result['detected']['duplicate_pairs']} duplicate archive pair(s), "
                     f"{result['detected']['open_conflicts']} open conflict(s)")
            progress(("township figures equal the generator's ground truth" if len(result["townships"]) == 1 else
                      f"the figures of each of the {len(result['townships'])} townships, and the county's total, "
                      "equal the generator's ground truth")
                     if not result["mismatches"] else f"MISMATCHES: {result['mismatches']}")
        if not args.once:
            print(f"\n  dashboard:  {result['dashboard']}\n  log in as supervisor, auditor, admin, director1 or county "
                  f"(password {DEMO_PASSWORD})\n  station pages, each with its own account (password "
                  f"{DEMO_PASSWORD}): " +
                  ", ".join(f"{s.url}/ ({s.spec.name}, log in as {s.account})" for s in demo.stations.values()) +
                  "\n  Ctrl-C stops everything.", flush=True)
            await stop.wait()
        return 0 if result["ok"] else 1
    finally:
        await demo.stop()
        sys.stdout.flush()
