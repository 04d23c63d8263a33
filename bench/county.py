"""The county's comparison (GET /county/rollups): a region of 50 townships, 1,000 sites and 1M
events, beside a township's rollup and a constant route on the same server, in the same run.

The store holds one county (region ``cty``): 50 townships of 20 sites each (an office, 14 village
stations, 5 schools), 400 children and 20k events per township, entered through the center's own
ingest function and projected by the runner, as bench/api.py does for townships. ``--quick``: 4
townships of 2,000 events, a smoke run that CI times nothing of.

Measured, each beside the constant route of the same run:
* the county comparison for a month, as the API serves it once computed for the projections'
  checkpoint (the usual case: a county office opening its page), 50 clients, p50/p99;
* a township's rollup for a month, the same way: what the county's figure is compared with;
* the county comparison of a date range not asked before, one request at a time, p50 and the
  slowest: read from the region's range index (projections/ranges.py) once the ranges and months
  answered directly at the checkpoint have paid for its build (service.api.rollups.IndexPolicy;
  here the cached months' first requests usually have), else computed directly.

Also runnable alone: ``python -m bench.county [--quick] [--pg URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import time

import httpx

from bench.api import CLIENTS, START, Township, load, populate, server
from bench.report import Figure, figure
from bench.servers import fresh_database
from runtime.db import create_pool

REGION = "cty"


async def _county_token(url: str) -> str:
    from service.api import auth

    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await auth.add_user(pool, "bench.county", "county", "bench password", region=REGION)
        return (await auth.issue_token(pool, "bench.county", hours=2)).token
    finally:
        await pool.close()


async def _one_at_a_time(base: str, paths: list[str], headers: dict[str, str]) -> list[float]:
    """Each path once, in turn, on one connection: seconds per request (a non-200 is an error)."""
    out = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        for path in paths:
            t = time.perf_counter()
            r = await client.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
            out.append(time.perf_counter() - t)
    return out


def _p50(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] * 1000


async def run(admin_url: str, quick: bool) -> list[Figure]:
    n_townships, per, villages, schools, children = (4, 2_000, 14, 5, 100) if quick else (50, 20_000, 14, 5, 400)
    seconds = 3.0 if quick else 10.0
    fresh = 3 if quick else 8
    rng = random.Random(17)
    townships = [Township(i, rng, region=REGION, villages=villages, schools=schools, children=children)
                 for i in range(n_townships)]
    events = n_townships * per
    sites = sum(len(t.sites) for t in townships)
    async with fresh_database(admin_url) as url:
        t0 = time.perf_counter()
        townships, token = await populate(url, events, townships=townships)
        county_token = await _county_token(url)
        print(f"[bench] county: {events:,} events in {n_townships} townships, {sites} sites, loaded and projected "
              f"in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        own = {"Authorization": f"Bearer {token}"}
        county = {"Authorization": f"Bearer {county_token}"}
        months = (1, 3, 4, 5)
        township_paths = [f"/rollups?scope={townships[0].id}&period=2026-{m:02d}" for m in months]
        county_paths = [f"/county/rollups?region={REGION}&period=2026-{m:02d}" for m in months]
        # Distinct ranges, each computed afresh (the cache keeps what it computed per checkpoint).
        cold_paths = [f"/county/rollups?region={REGION}&start={START.date() + dt.timedelta(days=10 + 7 * i)}"
                      f"&end={START.date() + dt.timedelta(days=40 + 7 * i)}" for i in range(fresh)]
        cold_township = [p.replace(f"/county/rollups?region={REGION}", f"/rollups?scope={townships[0].id}")
                         for p in cold_paths]
        with server(url) as base:
            const = await load(base, ["/bench/constant"], {}, seconds)
            township = await load(base, township_paths, own, seconds)
            whole = await load(base, county_paths, county, seconds)
            const1 = await _one_at_a_time(base, ["/bench/constant"] * 50, {})
            cold_t = await _one_at_a_time(base, cold_township, own)
            cold_c = await _one_at_a_time(base, cold_paths, county)
        if any(m.errors > 0.01 * max(1, len(m.latencies)) for m in (township, whole)):
            raise RuntimeError(f"API errors under load: township {township.errors}, county {whole.errors}")
    size = f"{n_townships} townships, {sites} sites, {events // 1000}k events"
    base_name = f"constant route, {CLIENTS} clients"
    figures = []
    for name, m in (("county rollup (month, cached)", whole), ("township rollup (month, cached)", township)):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            figures.append(figure(f"api {name} {label} @ {size}", m.pct(q), "ms", f"{base_name} {label}",
                                  const.pct(q)))
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        figures.append(figure(f"api county rollup (month, cached) {label} @ {size}", whole.pct(q), "ms",
                              f"township rollup (month, cached) {label}", township.pct(q)))
    figures.append(figure(f"api county rollup (range, computed) p50, 1 client @ {size}", _p50(cold_c), "ms",
                          "township rollup (range, computed) p50, 1 client", _p50(cold_t)))
    figures.append(figure(f"api county rollup (range, computed) slowest of {fresh}, 1 client @ {size}",
                          max(cold_c) * 1000, "ms", "constant route p50, 1 client", _p50(const1)))
    print(f"[bench] county @ {size}: constant p50 {const.pct(0.5):.1f} p99 {const.pct(0.99):.1f} ms; township "
          f"{township.rate:.0f}/s p50 {township.pct(0.5):.1f} p99 {township.pct(0.99):.1f} ms; county "
          f"{whole.rate:.0f}/s p50 {whole.pct(0.5):.1f} p99 {whole.pct(0.99):.1f} ms; computed afresh, 1 client: "
          f"county p50 {_p50(cold_c):.0f} ms (slowest {max(cold_c) * 1000:.0f}), township {_p50(cold_t):.0f} ms",
          file=sys.stderr, flush=True)
    return figures


async def _main(argv: list[str]) -> int:
    from bench import report

    parser = argparse.ArgumentParser(prog="python -m bench.county")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pg", help="PostgreSQL admin URL (default: an embedded server)")
    args = parser.parse_args(argv)
    from bench.servers import postgres_only

    async with postgres_only(args.pg) as pg_url:
        figures = await run(pg_url, args.quick)
    print(report.table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
