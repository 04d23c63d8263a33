"""Where a computed range rollup's time goes, in one process (no HTTP): a scope's 30-day ranges
computed child by child as the API did before range indexes (the daily rows summed by
PostgreSQL, the rules' figures from the cached rule inputs, `rollups.compute_from_rows`), beside
the same ranges read from the scope's range index (projections/ranges.py), in the same run;
and what the index costs to build once per checkpoint, beside decoding the scope's archives.

The store is bench/api.py's county (townships of 10k events, 200 children each): a township's
ranges, and with more than one township the region's (every township of it).

Live: the same township's and region's computed ranges through the API's own code
(`service.api.rollups.rollup`, no HTTP) while the projections' checkpoint moves before every
round of requests, as it does while a center ingests: before (the index built by the first
request at a checkpoint, in the request: the API before `IndexPolicy`), after (`IndexPolicy`:
direct until a scope's direct answers at one checkpoint cost as much as its last build, at least
two of them, then built in the request) and the direct computation alone, in the same run,
interleaved. The checkpoint is moved by advancing its row's position (the read models stay as
they are, so all three answer the same figures, which is checked): what every request then pays
is what a moved checkpoint costs it, the caches keyed by the checkpoint (archives, rules' inputs,
indexes) missing; the projection's own work is no part of any of the three.

Runnable alone: ``python -m bench.ranges [--sizes 10000,200000] [--pg URL]``; as a suite,
``python -m bench --only ranges [--quick]`` (20k events, or 200k: two townships, or twenty).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time

import asyncpg

from bench.api import START, populate
from bench.report import Figure, figure
from bench.servers import fresh_database
from projections import queries, rule_queries
from projections.followups import Period
from projections.rollups import Rollup, compute_from_rows
from projections.runner import NAME as CHECKPOINT
from projections.tables import SCHEMA
from runtime.db import create_pool
from service.api import rollups as api
from service.api.auth import Caller

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


async def live(pool: asyncpg.Pool, scope: str, size: str, rounds: int, per: int) -> list[Figure]:
    """Per request, `rounds` rounds of `per` different ranges each, the checkpoint moved before
    every round: before (index built in the request), after (IndexPolicy) and direct."""
    caller = Caller(username="bench", role="township", site_id=None, township=None, token_id="bench")
    policy = api.IndexPolicy(build_after=2)
    modes: dict[str, tuple[api.RangeIndexes | None, api.IndexPolicy | None]] = {
        "before": (api.RangeIndexes(), None), "after": (api.RangeIndexes(), policy), "direct": (None, None)}
    caches = {m: (api.ScopeArchives(), api.RuleInputsCache()) for m in modes}
    secs = dict.fromkeys(modes, 0.0)
    ranges = _ranges(rounds * per)
    for r in range(rounds):
        for mode, (indexes, pol) in modes.items():
            async with pool.acquire() as conn:
                await conn.execute(f"UPDATE {SCHEMA}.checkpoint SET pos = pos + 1 WHERE name = $1", CHECKPOINT)
            archives, inputs = caches[mode]
            served: list[Rollup] = []
            t = time.perf_counter()
            for p in ranges[r * per:(r + 1) * per]:
                served.append(await api.rollup(pool, caller, scope, p, None, archives, None, inputs, indexes, pol))
            await policy.settled()  # a build the round started is paid by the round (after)
            secs[mode] += time.perf_counter() - t
            if mode == "before":
                want = served
            elif served != want:
                raise RuntimeError(f"{scope}: the {mode} ranges differ from the ones read from the index")
    n = rounds * per
    where = f"{scope} @ {size}, {per} range(s) per checkpoint"
    direct = secs["direct"] / n * 1000
    return [figure(f"ranges live: before (index built in the request), per request, {where}",
                   secs["before"] / n * 1000, "ms", "the direct computation, same requests", direct),
            figure(f"ranges live: after (IndexPolicy, rent or buy), per request, {where}",
                   secs["after"] / n * 1000, "ms", "the direct computation, same requests", direct),
            figure(f"ranges live: after's index look-ups and builds, {where}", policy.counts["index"], "requests",
                   "requests in all (builds: " + str(policy.counts["builds"]) + ")", n)]


async def run(admin_url: str, sizes: list[int], rounds: int = 6) -> list[Figure]:
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
                for per in (1, 3, 10):
                    figures += await live(pool, townships[0].id, size, rounds, per)
                    if len(townships) > 1:
                        figures += await live(pool, townships[0].id.split(".")[0], size, max(2, rounds // 2), per)
            finally:
                await pool.close()
    return figures


async def run_suite(admin_url: str, quick: bool) -> list[Figure]:
    """`python -m bench --only ranges`: 20k events (two townships) quick, else 200k (twenty)."""
    return await run(admin_url, [20_000] if quick else [200_000], 3 if quick else 6)


async def _main(argv: list[str]) -> int:
    from bench import report

    parser = argparse.ArgumentParser(prog="python -m bench.ranges")
    parser.add_argument("--pg", help="PostgreSQL admin URL (default: an embedded server)")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[10_000, 200_000],
                        help="event counts (default 10000,200000)")
    args = parser.parse_args(argv)
    from bench.servers import postgres_only

    async with postgres_only(args.pg) as pg_url:
        figures = await run(pg_url, args.sizes)
    print(report.table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
