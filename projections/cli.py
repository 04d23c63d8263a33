"""`shouwang projections run|rebuild|status` and `shouwang audit asof ...`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
from typing import Any

from runtime.cli import CliError, cli_errors, database_url, emit, emit_json, run_async
from runtime.db import pool_for
from runtime.settings import Settings

NAMES = ("all", "archive", "followups", "rollups", "conflicts", "duplicates")


def register(sub: Any) -> None:
    p = sub.add_parser("projections", help="read models: run the projector, rebuild them, show their lag")
    psub = p.add_subparsers(dest="projections_command", metavar="ACTION", required=True)
    run = psub.add_parser("run", help="catch up, then follow new events until interrupted")
    run.add_argument("--database-url", help="PostgreSQL URL (default SHOUWANG_DATABASE_URL)")
    run.add_argument("--batch", type=int, default=1000, help="events per transaction (default 1000)")
    run.add_argument("--cache-archives", type=int, default=None, metavar="N",
                     help="decoded archives kept between batches (default 10000, about 190 MB at 100 events "
                          "an archive; 0: none)")
    run.set_defaults(handler=_run)
    rb = psub.add_parser("rebuild", help="replay the whole log into shadow tables and swap them in (live ones serve)")
    rb.add_argument("name", nargs="?", default="all", choices=NAMES,
                    help="all projections share one fold and one checkpoint, so any name rebuilds them all")
    rb.add_argument("--database-url")
    rb.add_argument("--page", type=int, default=5000, help="events read per page (default 5000)")
    rb.add_argument("--workers", type=int, default=None,
                    help="processes that derive and write after the fold (fork; default 1 for a log folded at once: "
                         "on a busy 2-core machine more did not help; 2 for a partitioned one, each reading and "
                         "folding its own partitions)")
    rb.add_argument("--partition-events", type=int, default=None, metavar="N",
                    help="fold a log of more than N events in partitions of at most about N rows each (an "
                         "event naming children of several partitions is a row in each; rows of the log's mean "
                         "size), so memory follows N, not the log (default 250000: ~400 MB a process; the rows "
                         "are spilled by partition to local temporary files, ~300 bytes a row, removed after)")
    rb.set_defaults(handler=_rebuild)
    st = psub.add_parser("status", help="checkpoint, events applied and skipped, lag in events and seconds")
    st.add_argument("--database-url")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=_status)


def register_audit(asub: Any) -> None:
    """Adds `asof` under `shouwang audit` (called from service.cli_db)."""
    a = asub.add_parser("asof", help="a child's archive and timeline, or a rollup, as of a past time")
    what = a.add_mutually_exclusive_group(required=True)
    what.add_argument("--child", help="child id: its archive and timeline")
    what.add_argument("--rollup", metavar="SCOPE", help="rollup scope: site id, township 'region.township', "
                      "region, or 'all'")
    a.add_argument("--period", help="for --rollup: YYYY, YYYY-S1, YYYY-S2, YYYY-SY or YYYY-MM")
    clock = a.add_mutually_exclusive_group(required=True)
    clock.add_argument("--committed", metavar="TIME", help="as the center had committed it by TIME (ISO 8601)")
    clock.add_argument("--occurred", metavar="TIME", help="as things had happened by TIME (ISO 8601)")
    a.add_argument("--database-url")
    a.set_defaults(handler=_asof)


def _time(text: str, flag: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag} must be an ISO 8601 time such as 2026-06-30T23:59:59+08:00, got {text!r}") from None
    if value.tzinfo is None:
        raise CliError(f"{flag} needs a time zone (e.g. +08:00 or Z), got {text!r}")
    return value


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from projections.collector import QuietCollector
    from projections.runner import CACHE_ARCHIVES, Runner, lag
    from runtime.log import get

    cache = CACHE_ARCHIVES if args.cache_archives is None else args.cache_archives
    if cache < 0:
        raise CliError(f"--cache-archives must be 0 or more, got {cache}")

    async def go() -> int:
        with QuietCollector() as collector:
            return await follow(collector)

    async def follow(collector: QuietCollector) -> int:
        log = get("projections")
        async with pool_for(database_url(args, settings), max_size=3) as pool:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            runner = Runner(pool, batch_size=args.batch, max_batch=16 * args.batch,  # a process of its own
                            cache_archives=cache, collector=collector)
            task = asyncio.create_task(runner.run(stop), name="projection-runner")
            try:
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=10)
                    except TimeoutError:
                        status = await lag(pool)
                        held = runner.cache
                        log.info("projection lag", events=status.events_behind,
                                 seconds=round(status.seconds_behind, 3), applied=status.applied,
                                 skipped=status.skipped, cached=len(held) if held else 0,
                                 cache_hits=held.hits if held else 0, cache_misses=held.misses if held else 0,
                                 gc_passes=collector.passes, gc_longest_ms=round(collector.longest * 1000))
                    if task.done():
                        break
            finally:
                stop.set()
                await task  # before the pool closes: the runner may be mid-batch
        return 0

    return run_async(go())


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from projections.rebuild import rebuild, terminal_progress

    async def go() -> int:
        url = database_url(args, settings)
        async with pool_for(url, max_size=3) as pool:
            report = await rebuild(pool, page=args.page, progress=terminal_progress(), database_url=url,
                                   workers=args.workers, partition_events=args.partition_events)
        print(f"rebuilt all projections: {report.events} events ({report.skipped} not understood), "
              f"{report.children} archives, {report.facts} facts in {report.seconds:.1f} s "
              f"({report.events_per_second:,.0f} events/s); swapped in"
              + (f"; workers' peak RSS {report.worker_peak_mib:,.0f} MiB" if report.worker_peak_mib else ""))
        return 0

    return run_async(go())


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from projections.runner import lag

    async def go() -> int:
        async with pool_for(database_url(args, settings), max_size=2) as pool:
            status = await lag(pool)
        emit(status, args.json, lambda: [
            f"checkpoint {status.checkpoint}: {status.applied} events applied, {status.skipped} not understood; "
            f"behind by {status.events_behind} events, {status.seconds_behind:.1f} s"])
        return 0

    return run_async(go())


def _asof(args: argparse.Namespace, settings: Settings) -> int:
    from projections import asof

    committed = _time(args.committed, "--committed") if args.committed else None
    occurred = _time(args.occurred, "--occurred") if args.occurred else None
    if args.rollup and not args.period:
        raise CliError("--rollup needs --period (YYYY, YYYY-S1, YYYY-S2, YYYY-SY or YYYY-MM)")

    async def go() -> int:
        async with pool_for(database_url(args, settings), max_size=2) as pool:
            doc: object
            if args.child:
                archive = await asof.archive_asof(pool, args.child, committed_at=committed, occurred_at=occurred)
                if archive is None:
                    raise CliError(f"child {args.child} has no events up to that time")
                items = await asof.timeline_asof(pool, args.child, committed_at=committed, occurred_at=occurred)
                doc = {"archive": archive, "timeline": items}
            else:
                scope = "" if args.rollup == "all" else args.rollup
                with cli_errors(ValueError):
                    doc = await asof.rollup_asof(pool, scope, args.period, committed_at=committed,
                                                 occurred_at=occurred)
        emit_json(doc)
        return 0

    return run_async(go())
