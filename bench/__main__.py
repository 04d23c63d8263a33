"""`python -m bench [--quick] [--pg URL] [--nats URL] [--only NAME]`: run the benchmarks.

Servers are embedded (started here, on free ports) unless URLs are given. Prints one table and
writes bench/results/<date>.json and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from bench import report
from bench.servers import bench_servers

SUITES = ("store", "projections", "lag", "api", "ingest", "catchup", "relay", "memory", "scale", "station", "link",
          "rules", "cluster", "county", "county_store", "ranges")


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    parser.add_argument("--pg", help="PostgreSQL admin URL (default: start an embedded server)")
    parser.add_argument("--nats", help="NATS URL (default: start an embedded server)")
    parser.add_argument("--only", choices=SUITES, action="append", help="run only these suites")
    args = parser.parse_args(argv)
    figures: list[report.Figure] = []
    timings: dict[str, float] = {}
    for suite in args.only or SUITES:
        # Each suite gets servers of its own (when embedded): one suite's leftovers (streams,
        # consumers, a server's caches) must not change the next one's figures or stall it.
        async with bench_servers(args.pg, args.nats) as (pg_url, nats_url):
            print(f"[bench] {suite} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            figures += await _suite(suite, pg_url, nats_url, args.quick)
            timings[suite] = round(time.perf_counter() - t, 1)
    print(report.table(figures))
    path = report.write(figures, {"quick": args.quick, "suite_seconds": timings,
                                  "servers": "given" if args.pg else "embedded"})
    print(f"\nwritten {path} and {path.parent / 'latest.json'}", file=sys.stderr)
    return 0


async def _suite(suite: str, pg_url: str, nats_url: str, quick: bool) -> list[report.Figure]:
    if suite == "store":
        from bench import store

        return await store.run(pg_url, quick)
    if suite == "projections":
        from bench import projections

        return await projections.run(pg_url, quick)
    if suite == "lag":
        from bench import lag

        return await lag.run(pg_url, quick)
    if suite == "ingest":
        from bench import ingest

        return await ingest.run(pg_url, nats_url, quick)
    if suite == "api":
        from bench import api

        return await api.run(pg_url, quick)
    if suite == "catchup":
        from bench import catchup

        return await catchup.run(pg_url, nats_url, quick)
    if suite == "relay":
        from bench import relay

        return await relay.run(pg_url, nats_url, quick)
    if suite == "memory":
        from bench import memory

        return await memory.run(pg_url, nats_url, quick)
    if suite == "scale":
        from bench import scale

        return await scale.run(pg_url, nats_url, quick)
    if suite == "station":
        from bench import station

        return await station.run(quick)
    if suite == "county_store":
        from bench import county_store

        return await county_store.run(pg_url, quick)
    if suite == "ranges":
        from bench import ranges

        return await ranges.run_suite(pg_url, quick)
    if suite == "county":
        from bench import county

        return await county.run(pg_url, quick)
    if suite == "rules":
        from bench import rules

        return await rules.run(pg_url, quick)
    if suite == "link":
        from bench import link

        return await link.run(pg_url, nats_url, quick)
    if suite == "cluster":
        from bench import cluster  # its own three NATS servers; nats_url is not used

        return await cluster.run(pg_url, quick)
    raise ValueError(f"unknown suite {suite!r}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
