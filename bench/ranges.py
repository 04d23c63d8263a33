"""Where a computed range rollup's time goes, in one process (no HTTP): a scope's 30-day ranges
computed child by child as the API did before range indexes (the daily rows summed by
PostgreSQL, the rules' figures from the cached rule inputs, `rollups.compute_from_rows`), beside
the same ranges read from the scope's range index (projections/ranges.py), in the same run;
and what the index costs to build once per checkpoint, beside decoding the scope's archives.

The store is bench/api.py's county (townships of 10k events, 200 children each): a township's
ranges, and with more than one township the region's (every township of it).

Runnable alone: ``python -m bench.ranges [--sizes 10000,200000] [--pg URL]`` (not a suite of
``python -m bench``; the api and county suites time the same code through HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
import time
from collections.abc import AsyncIterator

import asyncpg

from bench.api import START, populate
from bench.report import Figure, figure
from bench.servers import fresh_database
from projections import queries, rule_queries
from projections.followups import Period
from projections.rollups import compute_from_rows
from runtime.db import create_pool

TODAY = dt.date(2026, 12, 5)


def _ranges(n: int) -> list[Period]:
    out = []
    for i in range(n):
        start = START.date() + dt.timedelta(days=10 + (i * 7) % 250)
        out.append(Period(f"{start}..{start + dt.timedelta(days=29)}", start, start + dt.timedelta(days=30)))
    return out


async def measure(pool: asyncpg.Pool, scope: str, size: str, n: int) -> list[Figure]:
    """Per-range time before and after for `n` ranges of `scope`, and the one-off costs."""
    t = time.perf_counter()
    children = await queries.scope_children(pool, scope)
    t_archives = time.perf_counter() - t
    inputs = await rule_queries.rule_inputs(pool, scope)
    ranges = _ranges(n)
    parts = {"work (daily rows summed in SQL)": 0.0, "rules' figures": 0.0, "children and assembly": 0.0}
    before = []
    for p in ranges:
        as_of = min(p.last_day, TODAY)
        t = time.perf_counter()
        kids, work = await queries.rollup_work(pool, scope, p, children)
        t1 = time.perf_counter()
        rules = rule_queries.figures_of(inputs, scope, p, as_of)
        t2 = time.perf_counter()
        before.append(compute_from_rows(scope, p, kids, work, rules=rules, today=TODAY))
        t3 = time.perf_counter()
        parts["work (daily rows summed in SQL)"] += t1 - t
        parts["rules' figures"] += t2 - t1
        parts["children and assembly"] += t3 - t2
    t = time.perf_counter()
    index = await queries.range_index(pool, scope, children)
    t_index = time.perf_counter() - t
    t = time.perf_counter()
    rule_index = rule_queries.rule_index(inputs, scope, TODAY)
    t_rules = time.perf_counter() - t
    t = time.perf_counter()
    after = [index.rollup(p, TODAY, rule_index.totals(p, min(p.last_day, TODAY))) for p in ranges]
    t_after = time.perf_counter() - t
    if after != before:
        raise RuntimeError(f"{scope}: a range read from the index differs from the one computed child by child")
    per_before = sum(parts.values()) / n * 1000
    where = f"{scope} ({len(children[0]):,} children) @ {size}"
    out = [figure(f"ranges: 30-day range from the index, per range, {where}", t_after / n * 1000, "ms",
                  "the same range computed child by child", per_before)]
    for name, secs in parts.items():
        out.append(figure(f"ranges: before, {name}, per range, {where}", secs / n * 1000, "ms",
                          "the whole range computed child by child", per_before))
    out.append(figure(f"ranges: index built once per checkpoint (children and work), {where}", t_index * 1000, "ms",
                      "the scope's archives decoded (kept per checkpoint before too)", t_archives * 1000))
    out.append(figure(f"ranges: rules' index built once per checkpoint, {where}", t_rules * 1000, "ms",
                      "the same range computed child by child", per_before))
    return out


async def run(admin_url: str, sizes: list[int]) -> list[Figure]:
    figures: list[Figure] = []
    for n in sizes:
        async with fresh_database(admin_url) as url:
            t = time.perf_counter()
            townships, _ = await populate(url, n)
            print(f"[bench] ranges: {n:,} events in {len(townships)} township(s) loaded in "
                  f"{time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            size = f"{n // 1000}k events"
            pool = await create_pool(url, min_size=1, max_size=4)
            try:
                figures += await measure(pool, townships[0].id, size, 40)
                if len(townships) > 1:
                    figures += await measure(pool, townships[0].id.split(".")[0], size, 8)
            finally:
                await pool.close()
    return figures


@contextlib.asynccontextmanager
async def _servers(pg: str | None) -> AsyncIterator[str]:
    from bench.servers import bench_servers

    async with bench_servers(pg, "nats://unused") as (pg_url, _):
        yield pg_url


async def _main(argv: list[str]) -> int:
    from bench import report

    parser = argparse.ArgumentParser(prog="python -m bench.ranges")
    parser.add_argument("--pg", help="PostgreSQL admin URL (default: an embedded server)")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[10_000, 200_000],
                        help="event counts (default 10000,200000)")
    args = parser.parse_args(argv)
    async with _servers(args.pg) as pg_url:
        figures = await run(pg_url, args.sizes)
    print(report.table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
