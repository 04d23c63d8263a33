"""Reads of the live read models: what the HTTP API calls.

Scopes: '' (everything), a region, a township ('region.township') or a site id; the API
decides which scope a user may ask for. Every function takes the pool and returns Structs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import asyncpg
import msgspec

from events.localtime import day_start, local_day, local_today
from projections import daily, tables
from projections.archive import ChildArchive, TimelineItem, decode_archive
from projections.daily import WorkRow
from projections.facts import Fact, township_of
from projections.followups import Period, parse_period
from projections.ranges import RangeIndex
from projections.rollups import Freshness, Rollup, compute_from_rows
from projections.rules import RuleFigures
from projections.runner import NAME as CHECKPOINT
from store.conn import Conn

ScopeChildren = tuple[list[ChildArchive], frozenset[str]]
"""The current archives of a scope's children (merged stubs left out) and their ids."""


async def get_archive(pool: asyncpg.Pool, child_id: str) -> ChildArchive | None:
    """The child's current merged archive; a merged child's row names the kept one (`merged_into`)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT view, work FROM {tables.SCHEMA}.archive WHERE child_id = $1", child_id)
    return decode_archive(row["view"], row["work"]) if row is not None else None


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
        rows = await conn.fetch(f"SELECT view, work FROM {tables.SCHEMA}.archive WHERE {where} ORDER BY child_id",
                                *([scope] if scope else []))
    return [decode_archive(r["view"], r["work"]) for r in rows]


async def _scope_children(conn: Conn, scope: str) -> ScopeChildren:
    rows = await conn.fetch(
        f"SELECT view, work FROM {tables.SCHEMA}.archive WHERE ({_scope_clause(scope)}) AND root_id = child_id",
        *([scope] if scope else []))
    kids = [decode_archive(r["view"], r["work"]) for r in rows]
    return kids, frozenset(a.child_id for a in kids)


async def timeline(pool: asyncpg.Pool, child_id: str) -> list[TimelineItem]:
    """Every event of the child's merged history, originals and corrections, now."""
    from projections.asof import timeline_asof

    return await timeline_asof(pool, child_id)


async def facts_in(pool: asyncpg.Pool, scope: str, start: dt.date, end: dt.date) -> list[Fact]:
    if scope.count(".") >= 1:
        where, args = "township = $3", [township_of(scope) if scope.count(".") == 2 else scope]
    elif scope:  # a region: its townships from the registry, so the (township, occurred_at) index serves
        where, args = ("township = ANY(ARRAY(SELECT DISTINCT substring(s.site_id FROM '^[^.]+[.][^.]+') FROM sites s "
                       "WHERE starts_with(s.site_id, $3 || '.')))"), [scope]
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


async def latest_work_day(pool: asyncpg.Pool, scope: str) -> dt.date | None:
    """The reporting day of the newest work (a counted fact) recorded by the sites of `scope`, or
    None: the year-end summary opens on the period holding it, not on today's (a summary of a
    school year that has not started yet is all zeros). Registrations, merges and decisions are not
    work, so a supervisor settling a conflict today does not move it."""
    if scope.count(".") == 2:
        where, args = "site_id = $1", [scope]
    elif scope.count(".") == 1:
        where, args = "township = $1", [scope]
    elif scope:
        where, args = "township LIKE $1 || '.%'", [scope]
    else:
        where, args = "true", []
    async with pool.acquire() as conn:
        newest = await conn.fetchval(f"SELECT max(occurred_at) FROM {tables.SCHEMA}.fact WHERE {where}", *args)
    return local_day(newest) if newest is not None else None


class Heads(msgspec.Struct, frozen=True):
    """What a rollup of a scope reads live on every request: the projections' checkpoint (which
    says whether a computed rollup still holds) and the freshness of the scope's sites."""

    checkpoint: tuple[int, int]
    freshness: list[Freshness]
    # The newest rule event below the readers' horizon (`rule_queries.inputs_key` reads the same):
    # with the checkpoint, what the rules' inputs of the scope depend on.
    rules: int | None = None


def heads_select(scopes: str, name: str) -> str:
    """The heads of the scopes in the text[] parameter `scopes` (e.g. "$1") with the checkpoint
    named by the parameter `name`: one row per site of each scope (scope, tx, pos, rules, site_id,
    last_committed_at, newest_occurred_at), or one row without a site for a scope without any
    (:func:`heads_of_rows` reads them). Unordered: the statement orders by scope and site id."""
    return f"""SELECT s.scope, (SELECT c.tx FROM {tables.SCHEMA}.checkpoint c WHERE c.name = {name}) AS tx,
                       (SELECT c.pos FROM {tables.SCHEMA}.checkpoint c WHERE c.name = {name}) AS pos,
                       (SELECT events_rules_head()) AS rules,  -- once per statement (migration 0039)
                       p.site_id, p.last_committed_at, p.newest_occurred_at
                FROM unnest({scopes}::text[]) s (scope)
                LEFT JOIN LATERAL (
                    SELECT q.site_id, q.last_committed_at, q.newest_occurred_at
                      FROM site_progress q WHERE s.scope = ''
                    UNION ALL
                    SELECT q.site_id, q.last_committed_at, q.newest_occurred_at
                      FROM site_progress q WHERE q.site_id = s.scope
                    UNION ALL  -- the ids starting with 'scope.': a range in byte order (migration 0036)
                    SELECT q.site_id, q.last_committed_at, q.newest_occurred_at
                      FROM site_progress q WHERE q.site_id ~>=~ (s.scope || '.') AND q.site_id ~<~ (s.scope || '/')
                ) p ON true"""


def heads_of_rows(rows: Iterable[asyncpg.Record]) -> dict[str, Heads]:
    """The heads of the rows of :func:`heads_select`, ordered by scope and site id (rows whose
    scope is NULL, from another part of a statement, are passed over)."""
    out: dict[str, Heads] = {}
    for r in rows:
        scope = r["scope"]
        if scope is None:
            continue
        heads = out.get(scope)
        if heads is None:
            heads = out[scope] = Heads((r["tx"] or 0, r["pos"] or 0), [], r["rules"])
        if r["site_id"] is not None:
            heads.freshness.append(Freshness(site_id=r["site_id"], last_committed_at=r["last_committed_at"],
                                             newest_occurred_at=r["newest_occurred_at"]))
    return out


async def rollup_heads(pool: asyncpg.Pool, scopes: list[str]) -> dict[str, Heads]:
    """The heads of several scopes in one statement (one snapshot, one round trip); every scope
    asked for gets an entry."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(heads_select("$1", "$2") + " ORDER BY s.scope, p.site_id", scopes, CHECKPOINT)
    return heads_of_rows(rows)


async def freshness(pool: asyncpg.Pool, scope: str = "") -> list[Freshness]:
    """For each site of `scope`: its last committed event and the newest occurred_at it has sent."""
    return (await rollup_heads(pool, [scope]))[scope].freshness


async def scope_children(pool: asyncpg.Pool, scope: str) -> ScopeChildren:
    """The current archives of the children of `scope` (merged stubs left out) and their ids: the
    part of a rollup's input that depends on the scope alone, not the period (the API keeps it)."""
    async with pool.acquire() as conn:
        return await _scope_children(conn, scope)


async def rollup_inputs(pool: asyncpg.Pool, scope: str, period: Period, children: ScopeChildren | None = None
                        ) -> tuple[list[ChildArchive], list[Fact]]:
    """The archives and facts a rollup of `scope` needs, read through indexes on the scope, so the
    cost follows the township's size, not the store's: its children (`children`, if already in
    hand), its work in the period, and the stubs of children merged away that this work names
    (to count each child once). The reference the daily rows are checked against
    (tests/test_projections_daily.py); the live figures read :func:`rollup_work`."""
    facts = await facts_in(pool, scope, period.start, period.end)
    async with pool.acquire() as conn:
        kids, ids = children if children is not None else await _scope_children(conn, scope)
        # Children the work names that are not the scope's own: stubs of merged children (others
        # belong to other scopes and are not counted; compute() leaves them out either way).
        stubs = await _stubs(conn, {c for f in facts for c in f.children} - ids)
    return [*kids, *stubs], facts


async def _stubs(conn: Conn, named: set[str]) -> list[ChildArchive]:
    """The archives of the children among `named` that are merged into another (they name it)."""
    if not named:
        return []
    return [decode_archive(r["view"], r["work"]) for r in await conn.fetch(
        f"""SELECT view, work FROM {tables.SCHEMA}.archive
             WHERE child_id = ANY($1::text[]) AND root_id <> child_id""", sorted(named))]


async def rollup_work(pool: asyncpg.Pool, scope: str, period: Period, children: ScopeChildren | None = None
                      ) -> tuple[list[ChildArchive], list[WorkRow]]:
    """What a rollup of `scope` reads live: its children (`children`, if already in hand), its
    work in the period summed from the daily rows (`projections.daily`: a few rows per site and
    day, whatever the range), and the stubs of merged children the work names."""
    async with pool.acquire() as conn:
        work = await daily.work_rows(conn, tables.SCHEMA, scope, period.start, period.end)
        kids, ids = children if children is not None else await _scope_children(conn, scope)
        stubs = await _stubs(conn, {c for r in work for c in r.children} - ids)
    return [*kids, *stubs], work


async def range_index(pool: asyncpg.Pool, scope: str, children: ScopeChildren | None = None) -> RangeIndex:
    """The children and work of `scope` as functions of the day (projections.ranges) from
    :func:`range_inputs`. Built once per checkpoint by the API, then any range is a look-up."""
    archives, rows = await range_inputs(pool, scope, children)
    return RangeIndex(scope, archives, [(day, r) for _, day, r in rows])


async def range_inputs(pool: asyncpg.Pool, scope: str, children: ScopeChildren | None = None
                       ) -> tuple[list[ChildArchive], list[tuple[str, dt.date, WorkRow]]]:
    """What :func:`range_index` reads (the county splits it by township): the scope's children
    and the stubs of the merged children its daily rows name, and those rows (township, day, row)."""
    async with pool.acquire() as conn:
        rows = await daily.day_rows(conn, tables.SCHEMA, scope)
        kids, ids = children if children is not None else await _scope_children(conn, scope)
        stubs = await _stubs(conn, {c for _, _, r in rows for c in r.children} - ids)
    return [*kids, *stubs], rows


async def rollup_figures(pool: asyncpg.Pool, scope: str, period: str | Period, today: dt.date | None = None, *,
                         children: ScopeChildren | None = None, rules: list[RuleFigures] | None = None) -> Rollup:
    """Every township figure for `scope` and `period` from the live read models, judged on `today`,
    without the freshness (which moves with ingest, not with the read models: see :func:`rollup`).
    `rules`: the rules' figures of the scope for the period judged on the rollup's day, if already
    in hand (else read live, `projections.rule_queries.rule_figures_live`)."""
    from projections.rule_queries import rule_figures_live

    p = parse_period(period) if isinstance(period, str) else period
    today = today or local_today()
    kids, work = await rollup_work(pool, scope, p, children)
    if rules is None:
        rules = await rule_figures_live(pool, scope, p, min(p.last_day, today))
    return compute_from_rows(scope, p, kids, work, rules=rules, today=today)


def with_freshness(figures: Rollup, heads: Heads) -> Rollup:
    """The figures with the freshness of the scope's sites read at `heads`."""
    return msgspec.structs.replace(figures, freshness=list(heads.freshness))


async def rollup(pool: asyncpg.Pool, scope: str, period: str | Period, today: dt.date | None = None) -> Rollup:
    """Every township figure for `scope` and `period` from the live read models, with the freshness
    of its sites: what the API serves (which keeps computed figures while the checkpoint stands)."""
    heads = (await rollup_heads(pool, [scope]))[scope]
    return with_freshness(await rollup_figures(pool, scope, period, today), heads)


def to_builtins(value: object) -> object:
    """JSON-ready form of any result here (for the API and the CLI)."""
    return msgspec.to_builtins(value)
