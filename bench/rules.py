"""The cost of a rule change: a township office changes a follow-up rule, and the figures of
every rule are computed again (`projections.rule_queries.rule_figures_live`: read the township's
archives, facts, registrations, transfers and rules, evaluate), in events/s of the log they
cover, beside a rebuild of every read model from zero over the same log in the same run
(`projections.rebuild.rebuild`, the other way to make figures follow new rules).

The log is the projections suite's made-up county (`bench.projections.World`: 4 townships of 8
villages and 3 schools, the whole mix of care work, a fiftieth of it pairings); each township
gets its office. Figures: one township's rules after its change (the dashboard's page), and every
township of the region (the county's view), each the median of three.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time

import asyncpg

from bench.projections import load_world
from bench.report import Figure, figure
from bench.servers import fresh_database
from events import catalogue as c
from events.rules import DEFAULT_RULES, Counts, FollowUpRule
from events.samples import SampleSite
from projections import rule_queries
from projections.rebuild import rebuild
from runtime.db import create_pool
from store.postgres import EventStore

EVENTS_ENV = "SHOUWANG_BENCH_RULES_EVENTS"
TOWNSHIPS = 4  # bench.projections.World's default


async def _register_sites(pool: asyncpg.Pool) -> None:
    """Every site of the made-up county in the registry (the rules read kinds from it)."""
    async with pool.acquire() as conn:
        for t in range(TOWNSHIPS):
            rows = [(f"bench.t{t}.v{v:02d}", "village") for v in range(8)]
            rows += [(f"bench.t{t}.s{s:02d}", "school") for s in range(3)]
            rows.append((f"bench.t{t}.office", "township"))
            await conn.executemany(
                "INSERT INTO sites (site_id, kind, name, nats_password, registered_at) VALUES ($1, $2, $1, 'x', $3)",
                [(s, k, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) for s, k in rows])


async def _timed(pool: asyncpg.Pool, scope: str) -> tuple[float, int]:
    """Median seconds of three computations of the rules' figures of `scope`, and rules computed."""
    seconds, count = [], 0
    for _ in range(3):
        t = time.perf_counter()
        out = await rule_queries.rule_figures_live(pool, scope, "2025", dt.date(2025, 12, 31))
        seconds.append(time.perf_counter() - t)
        count = len(out)
    return statistics.median(seconds), count


async def run(admin_url: str, quick: bool) -> list[Figure]:
    n = int(os.environ.get(EVENTS_ENV) or (20_000 if quick else 300_000))
    figures: list[Figure] = []
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=6)
        try:
            _, stored = await load_world(pool, n)
            await _register_sites(pool)
            office = SampleSite("bench.t0.office")
            old = DEFAULT_RULES[0]
            change = c.FollowUpRuleSet(township="bench.t0", effective_from=dt.date(2025, 3, 1), rule=FollowUpRule(
                rule_id=old.rule_id, zh="代管家长每月家访两次", en="proxy parent: two home visits a month",
                applies=old.applies, counts=Counts(event_types=["HomeVisitMade"], at_least=2)))
            await EventStore(pool).append([office.write(change, dt.datetime(2025, 2, 20, 2, tzinfo=dt.UTC))])
            stored += 1
            async with pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE events")
            report = await rebuild(pool, page=5000, database_url=url, workers=1)
            assert report.events == stored
            async with pool.acquire() as conn:
                town_events = await conn.fetchval("SELECT count(*) FROM events WHERE site_id LIKE 'bench.t0.%'")
            one, rules_one = await _timed(pool, "bench.t0")
            every, rules_all = await _timed(pool, "bench")
            note = f"{stored:,} events in {TOWNSHIPS} townships; figures for 2025 judged on 2025-12-31"
            figures.append(figure(
                f"rule change: one township's {rules_one} rules recomputed ({town_events:,} of its events)",
                town_events / one, "events/s", "projections rebuild from zero, the same log", report.events_per_second,
                note=note))
            figures.append(figure(
                f"rule change: every township's rules recomputed ({rules_all} rules, {stored:,} events)",
                stored / every, "events/s", "projections rebuild from zero, the same log", report.events_per_second,
                note=note))
            figures.append(figure("rule change: one township's figures, wall time", one * 1000, "ms",
                                  "projections rebuild from zero, wall time", report.seconds * 1000, note=note))
        finally:
            await pool.close()
    return figures
