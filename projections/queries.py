"""Reads of the live read models: what the HTTP API calls.

Scopes: '' (everything), a region, a township ('region.township') or a site id; the API
decides which scope a user may ask for. Every function takes the pool and returns Structs.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from events.localtime import day_start, local_today
from projections import tables
from projections.archive import ChildArchive, TimelineItem, decode_archive
from projections.facts import Fact, township_of
from projections.followups import MonthCheck, Overdue, month_checks, overdue_list, parse_period
from projections.rollups import Freshness, Rollup, compute


async def get_archive(pool: asyncpg.Pool, child_id: str) -> ChildArchive | None:
    """The child's current merged archive; a merged child's row names the kept one (`merged_into`)."""
    async with pool.acquire() as conn:
        view = await conn.fetchval(f"SELECT view FROM {tables.SCHEMA}.archive WHERE child_id = $1", child_id)
    return decode_archive(view) if view is not None else None


def _scope_clause(scope: str, column: str = "sites") -> str:
    if not scope:
        return "true"
    parts = scope.count(".")
    if parts == 2:
        return f"{column} @> ARRAY[$1]::text[]"
    if parts == 1:
        return "townships @> ARRAY[$1]::text[]"
    return "EXISTS (SELECT 1 FROM unnest(townships) t WHERE t LIKE $1 || '.%')"


async def archives_in(pool: asyncpg.Pool, scope: str, *, include_merged: bool = False) -> list[ChildArchive]:
    """Every archive whose child belongs to a site in `scope` (and, with include_merged, the
    stubs of every merged child, which name the archive they joined)."""
    where = f"({_scope_clause(scope)}) AND root_id = child_id"
    if include_merged:
        where = f"({where}) OR root_id <> child_id"
    async with pool.acquire() as conn:
        rows = await conn.fetch(f"SELECT view FROM {tables.SCHEMA}.archive WHERE {where} ORDER BY child_id",
                                *([scope] if scope else []))
    return [decode_archive(r["view"]) for r in rows]


async def timeline(pool: asyncpg.Pool, child_id: str) -> list[TimelineItem]:
    """Every event of the child's merged history, originals and corrections, now."""
    from projections.asof import timeline_asof

    return await timeline_asof(pool, child_id)


async def followups(pool: asyncpg.Pool, child_id: str, period: str) -> list[MonthCheck]:
    """Per month of `period` ('2026', '2026-S1', '2026-03'): due, done, which rules were met."""
    a = await get_archive(pool, child_id)
    if a is None or a.merged_into is not None:
        return []
    return month_checks(a, parse_period(period))


async def overdue(pool: asyncpg.Pool, scope: str, today: dt.date | None = None) -> list[Overdue]:
    """Children in `scope` overdue for a rule on `today`, most days overdue first."""
    today = today or local_today()
    return overdue_list(await archives_in(pool, scope), today, scope)


async def facts_in(pool: asyncpg.Pool, scope: str, start: dt.date, end: dt.date) -> list[Fact]:
    if scope.count(".") >= 1:
        where, args = "township = $3", [township_of(scope) if scope.count(".") == 2 else scope]
    elif scope:
        where, args = "township LIKE $3 || '.%'", [scope]
    else:
        where, args = "true", []
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT {', '.join(tables.FACT_COLS)} FROM {tables.SCHEMA}.fact
                 WHERE occurred_at >= $1 AND occurred_at < $2 AND {where}""",
            day_start(start), day_start(end), *args)
    return [Fact(event_id=r["event_id"], kind=r["kind"], site_id=r["site_id"], occurred_at=r["occurred_at"],
                 children=list(r["children"]), amount_fen=r["amount_fen"], count=r["count"], source=r["source"],
                 detail=r["detail"]) for r in rows]


async def freshness(pool: asyncpg.Pool) -> list[Freshness]:
    """For each site: its last committed event and the newest occurred_at it has sent."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT site_id, last_committed_at, newest_occurred_at FROM site_progress")
    return [Freshness(site_id=r["site_id"], last_committed_at=r["last_committed_at"],
                      newest_occurred_at=r["newest_occurred_at"]) for r in rows]


async def rollup(pool: asyncpg.Pool, scope: str, period: str, today: dt.date | None = None) -> Rollup:
    """Every township figure for `scope` and `period` from the live read models."""
    p = parse_period(period)
    today = today or local_today()
    return compute(scope, p, await archives_in(pool, scope, include_merged=True),
                   await facts_in(pool, scope, p.start, p.end), today=today, freshness=await freshness(pool))


def to_builtins(value: object) -> object:
    """JSON-ready form of any result here (for the API and the CLI)."""
    return msgspec.to_builtins(value)
