"""Rollups: every figure the township counts, for a site or the township and a period.

The figures are the projections' (:func:`projections.rollups.compute`); this module checks
that the caller may see the scope, turns the period into dates and feeds the computation from
the read models.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Annotated, Any, Generic, TypeVar

import asyncpg
import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter, QueryParameter

from events.localtime import local_today
from projections import archive as pa
from projections import followups as pf
from projections import queries, tables
from projections import rollups as pr
from projections.facts import Fact
from projections.runner import NAME as CHECKPOINT
from service.api.archives import ARCHIVE
from service.api.auth import Caller
from service.api.batch import Batched
from service.api.errors import ApiError, bad
from service.api.scoping import READERS, allow, caller_of, may_see_site

SCOPE_PATTERN = r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}(\.[a-z0-9-]{1,24})?$"
PERIOD_PATTERN = r"^[0-9]{4}(-(0[1-9]|1[0-2]|S1|S2))?$"
MAX_RANGE_DAYS = 3 * 366

ScopeQuery = Annotated[str, QueryParameter(name="scope", pattern=SCOPE_PATTERN,
                                           description="a site id (region.township.site) or a township "
                                           "(region.township)")]
PeriodQuery = Annotated[str | None, Parameter(pattern=PERIOD_PATTERN, description="YYYY, YYYY-MM, YYYY-S1 (Feb-Jul) "
                                              "or YYYY-S2 (Aug-Jan); or give start and end")]
StartQuery = Annotated[dt.date | None, Parameter(description="first day of a date range")]
EndQuery = Annotated[dt.date | None, Parameter(description="last day of a date range (inclusive)")]




def check_scope(caller: Caller, scope: str) -> None:
    """A site the caller may see, or the caller's own township (township staff and auditors)."""
    allowed = may_see_site(caller, scope) if scope.count(".") == 2 else (
        caller.role in ("township", "auditor") and caller.township == scope)
    if not allowed:
        raise ApiError(404, f"scope {scope} was not found among the sites and townships you may see",
                       field="scope", value=scope)


def period_from(period: str | None, start: dt.date | None, end: dt.date | None) -> pf.Period:
    """A named period (month, semester, year), or a date range [start, end]."""
    if period is not None:
        if start is not None or end is not None:
            raise bad("period", period, "give either period or start and end, not both")
        try:
            return pf.parse_period(period)
        except ValueError as err:
            raise bad("period", period, str(err)) from None
    if start is None or end is None:
        raise ApiError(400, "give period (YYYY, YYYY-MM, YYYY-S1, YYYY-S2) or both start and end",
                       field="period", value="")
    if end < start:
        raise bad("end", end.isoformat(), f"is before start {start.isoformat()}")
    if (end - start).days > MAX_RANGE_DAYS:
        raise bad("end", end.isoformat(), f"a range is at most {MAX_RANGE_DAYS} days")
    return pf.Period(f"{start.isoformat()}..{end.isoformat()}", start, end + dt.timedelta(days=1))


T = TypeVar("T")


class Checkpointed(Generic[T]):
    """A small LRU of values computed from the read models, keyed by what they depend on, the
    projections' checkpoint included: read models change only when the checkpoint moves, so a
    hit is exactly what a fresh computation would give."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[object, ...], T] = OrderedDict()

    def get(self, key: tuple[object, ...]) -> T | None:
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
        return hit

    def put(self, key: tuple[object, ...], value: T) -> None:
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class RollupCache(Checkpointed[pr.Rollup]):
    """Computed rollups, keyed by scope, period, the day they are judged on and the checkpoint;
    freshness (from site_progress, which moves with ingest) is read live on every request."""

    def __init__(self, size: int = 256) -> None:
        super().__init__(size)


class ScopeArchives(Checkpointed[tuple[list[pa.ChildArchive], frozenset[str]]]):
    """The current archives of a scope (its children, merged stubs left out), decoded, keyed by the
    scope and the checkpoint: a range rollup not computed before then reads only its facts.
    Decoding the archives was a third of a computed rollup."""

    def __init__(self, size: int = 16) -> None:
        super().__init__(size)


def _in_scope(scope: str) -> str:
    """SQL over proj.archive: the child belongs to the site, or to a site of the township ($1)."""
    return "a.sites @> ARRAY[$1]::text[]" if scope.count(".") == 2 else "a.townships @> ARRAY[$1]::text[]"


async def _inputs(pool: asyncpg.Pool, scope: str, period: pf.Period, checkpoint: object = None,
                  archives: ScopeArchives | None = None) -> tuple[list[pa.ChildArchive], list[Fact]]:
    """The archives and facts a rollup of `scope` needs, read through indexes on the scope, so the
    cost follows the township's size, not the store's: its children, its work in the period, and
    the stubs of children merged away that this work names (to count each child once)."""
    facts = await queries.facts_in(pool, scope, period.start, period.end)
    key = (scope, checkpoint)
    cached = archives.get(key) if archives is not None and checkpoint is not None else None
    async with pool.acquire() as conn:
        if cached is None:
            rows = await conn.fetch(
                f"SELECT a.view FROM {ARCHIVE} a WHERE {_in_scope(scope)} AND a.root_id = a.child_id", scope)
            kids = [pa.decode_archive(r["view"]) for r in rows]
            cached = kids, frozenset(a.child_id for a in kids)
            if archives is not None and checkpoint is not None:
                archives.put(key, cached)
        kids, ids = cached
        # Children the work names that are not the scope's own: stubs of merged children (others
        # belong to other scopes and are not counted; compute() leaves them out either way).
        named = sorted({c for f in facts for c in f.children} - ids)
        stubs = [pa.decode_archive(r["view"]) for r in await conn.fetch(
            f"SELECT a.view FROM {ARCHIVE} a WHERE a.child_id = ANY($1::text[]) AND a.root_id <> a.child_id",
            named)] if named else []
    return [*kids, *stubs], facts


class Heads(msgspec.Struct, frozen=True):
    """What a rollup of a scope reads live on every request: the projections' checkpoint (which
    says whether a computed rollup still holds) and the freshness of the scope's sites."""

    checkpoint: tuple[int, int]
    freshness: list[pr.Freshness]


async def rollup_heads(pool: asyncpg.Pool, scopes: list[str]) -> dict[str, Heads]:
    """The heads of several scopes in one statement (one snapshot, one round trip)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT s.scope, (SELECT c.tx FROM {tables.SCHEMA}.checkpoint c WHERE c.name = $2) AS tx,
                       (SELECT c.pos FROM {tables.SCHEMA}.checkpoint c WHERE c.name = $2) AS pos,
                       p.site_id, p.last_committed_at, p.newest_occurred_at
                FROM unnest($1::text[]) s (scope)
                LEFT JOIN site_progress p ON p.site_id = s.scope OR starts_with(p.site_id, s.scope || '.')
                ORDER BY s.scope, p.site_id""", scopes, CHECKPOINT)
    out: dict[str, Heads] = {}
    for r in rows:
        heads = out.get(r["scope"])
        if heads is None:
            heads = out[r["scope"]] = Heads((r["tx"] or 0, r["pos"] or 0), [])
        if r["site_id"] is not None:
            heads.freshness.append(pr.Freshness(site_id=r["site_id"], last_committed_at=r["last_committed_at"],
                                                newest_occurred_at=r["newest_occurred_at"]))
    return out


async def rollup(pool: asyncpg.Pool, caller: Caller, scope: str, period: pf.Period,
                 cache: RollupCache | None = None, archives: ScopeArchives | None = None,
                 heads: Batched[str, Heads] | None = None) -> pr.Rollup:
    """The figures of `scope` (checked against the caller by :func:`check_scope`) from the read models."""
    today = local_today()
    # Read on every request, in a query started after it arrived (shared with concurrent ones).
    now = await heads.get(scope) if heads is not None else (await rollup_heads(pool, [scope])).get(scope)
    assert now is not None  # unnest gives every scope a row
    key = (scope, period.label, period.start, period.end, today, now.checkpoint)
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        kids, facts = await _inputs(pool, scope, period, now.checkpoint, archives)
        hit = pr.compute(scope, period, kids, facts, today=today)
        if cache is not None:
            cache.put(key, hit)
    return msgspec.structs.replace(hit, freshness=list(now.freshness))


class RollupsController(Controller):
    path = "/rollups"
    tags = ["rollups"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow(*READERS)]  # noqa: RUF012 (as above)

    @get("/", summary="Every figure the township counts, for a site or the township and a period",
         description="Children are counted for the sites they belong to, work for the site that recorded it.")
    async def get_rollup(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> pr.Rollup:
        caller = caller_of(request)
        check_scope(caller, area)
        return await rollup(request.app.state.pool, caller, area, period_from(period, start, end),
                            request.app.state.rollup_cache, request.app.state.scope_archives,
                            request.app.state.get("rollup_heads"))
