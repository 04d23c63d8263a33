"""Rollups: every figure the township counts, for a site or the township and a period.

The figures are read by the projections (:func:`projections.queries.rollup`, the one read path,
which the tests check); this module is the HTTP around it: it checks that the caller may see
the scope, turns the query into a period, keeps computed figures while the projections'
checkpoint stands, and adds the freshness read live.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Generic, TypeVar

import asyncpg
from litestar import Controller, Request, get
from litestar.params import Parameter, QueryParameter

from events.localtime import local_today
from projections import followups as pf
from projections import queries, rule_queries
from projections import rollups as pr
from projections.asof import rollup_asof
from projections.figures import LabelledFigure, labelled
from projections.names import scope_names
from projections.queries import Heads, ScopeChildren, rollup_heads
from projections.ranges import RangeIndex
from projections.rules import RuleFigures
from runtime import log
from service.api.auth import HEADS_OPT, Caller, prefetched_heads
from service.api.batch import Batched
from service.api.errors import ApiError, bad, broken_rule
from service.api.limits import PERIOD_PATTERN, SCOPE_PATTERN
from service.api.scoping import LISTERS, allow, caller_of, may_see_region, may_see_site, may_see_township

LangQuery = Annotated[str, Parameter(pattern=r"^(zh|en)$", description="label language: zh (default) or en")]
MAX_RANGE_DAYS = 3 * 366
# Rules between parameters that JSON Schema cannot state (the routes' 422 answers, docs/API.md).
PERIOD_OR_RANGE = "give period, or both start and end, and not both ways"
RANGE_ORDER = "end is not before start"
RANGE_LENGTH = f"a range is at most {MAX_RANGE_DAYS} days"
PERIOD_RULES = {"rules": [PERIOD_OR_RANGE, RANGE_ORDER, RANGE_LENGTH]}
ONE_CLOCK = "give exactly one of committed or occurred"

ScopeQuery = Annotated[str, QueryParameter(name="scope", pattern=SCOPE_PATTERN,
                                           description="a site id (region.township.site), a township "
                                           "(region.township) or, for the county, its region")]
PeriodQuery = Annotated[str | None, Parameter(pattern=PERIOD_PATTERN, description="YYYY, YYYY-MM, YYYY-S1 (Feb-Jul), "
                                              "YYYY-S2 (Aug-Jan) or YYYY-SY (the school year, Aug-Jul); or give "
                                              "start and end")]
StartQuery = Annotated[dt.date | None, Parameter(description="first day of a date range (give end too, and no "
                                                "period); reporting days are China Standard Time")]
EndQuery = Annotated[dt.date | None, Parameter(description="last day of a date range, inclusive: on or after start "
                                              f"and at most {MAX_RANGE_DAYS} days after it (else 422 naming end)")]




def check_scope(caller: Caller, scope: str) -> None:
    """A site the caller may see, the caller's own township (township staff and auditors), or for
    the county its region and every township and site in it."""
    dots = scope.count(".")
    allowed = (may_see_site(caller, scope) if dots == 2 else may_see_township(caller, scope) if dots == 1
               else may_see_region(caller, scope))
    if not allowed:
        raise ApiError(404, f"scope {scope} was not found among the sites and townships you may see",
                       field="scope", value=scope)


def period_from(period: str | None, start: dt.date | None, end: dt.date | None) -> pf.Period:
    """A named period (month, semester, year), or a date range [start, end]."""
    if period is not None:
        if start is not None or end is not None:
            raise broken_rule("period", period, PERIOD_OR_RANGE)
        try:
            return pf.parse_period(period)
        except ValueError as err:
            raise bad("period", period, str(err)) from None
    if start is None or end is None:
        raise ApiError(422, f"{PERIOD_OR_RANGE}: period is YYYY, YYYY-MM, YYYY-S1, YYYY-S2 or YYYY-SY",
                       field="period", value="")
    if end < start:
        raise broken_rule("end", end.isoformat(), f"{RANGE_ORDER} ({start.isoformat()})")
    if (end - start).days > MAX_RANGE_DAYS:
        raise broken_rule("end", end.isoformat(), RANGE_LENGTH)
    return pf.Period(f"{start.isoformat()}..{end.isoformat()}", start, end + dt.timedelta(days=1))


T = TypeVar("T")
_log = log.get("service.api.rollups")


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


class ScopeArchives(Checkpointed[ScopeChildren]):
    """The current archives of a scope (its children, merged stubs left out), decoded, keyed by the
    scope and the checkpoint: a range rollup not computed before then reads only its facts.
    Decoding the archives was a third of a computed rollup."""

    def __init__(self, size: int = 16) -> None:
        super().__init__(size)


class RangeIndexes(Checkpointed[RangeIndex]):
    """The children and work of a scope as functions of the day (projections.ranges), keyed by the
    scope and the checkpoint: built once, then a rollup of any range not computed before is a
    look-up (with the rules' index kept beside the rules' inputs)."""

    def __init__(self, size: int = 16) -> None:
        super().__init__(size)


class IndexPolicy:
    """When a scope's range index is built. Building one costs several direct computations of a
    range (bench/README.md), and a center that ingests moves the checkpoint every second or so, so
    on a miss for (scope, checkpoint) the request is answered by the direct computation, timed and
    counted. The index is built (in the request, its rows read on the event loop and the index
    built in a thread, so the loop is held no longer than by a direct computation) once at least
    `build_after` misses at that checkpoint have together cost as much as the scope's last build
    (before any, `first_build` direct computations): the rent-or-buy rule, so a checkpoint's
    requests cost at most about twice what the better of always building and never building
    would. Requests at the checkpoint of a build under way wait for it. `adaptive=False`: build
    on the miss after `build_after` misses, whatever the costs (the tests)."""

    def __init__(self, build_after: int = 2, *, adaptive: bool = True, first_build: float = 4.0,
                 size: int = 64) -> None:
        self.build_after = build_after
        self.adaptive = adaptive
        self.first_build = first_build
        self.size = size
        self.misses: OrderedDict[tuple[object, ...], float] = OrderedDict()  # key: seconds spent directly
        self.count: dict[tuple[object, ...], int] = {}
        self.direct: dict[object, float] = {}  # scope: the last direct computation's seconds
        self.build_cost: dict[object, float] = {}  # scope: the last build's seconds
        self.building: dict[tuple[object, ...], asyncio.Task[bool]] = {}
        self.counts = {"index": 0, "direct": 0, "builds": 0}

    def hit(self) -> None:
        self.counts["index"] += 1

    def took(self, scope: object, key: tuple[object, ...], secs: float) -> None:
        """A request at `key` answered directly in `secs`."""
        self.counts["direct"] += 1
        self.direct[scope] = secs
        self.misses[key] = self.misses.pop(key, 0.0) + secs
        self.count[key] = self.count.get(key, 0) + 1
        while len(self.misses) > self.size:
            old, _ = self.misses.popitem(last=False)
            self.count.pop(old, None)

    async def ready(self, scope: object, key: tuple[object, ...], build: Callable[[], Awaitable[None]]) -> bool:
        """Whether the index at `key` is built now (by this request or one under way): else the
        request answers directly and reports its time (:meth:`took`)."""
        task = self.building.get(key)
        if task is None:
            if self.count.get(key, 0) < self.build_after:
                return False
            if self.adaptive:
                d = self.direct.get(scope, 0.0)
                if self.misses.get(key, 0.0) < self.build_cost.get(scope, self.first_build * d):
                    return False
            self.counts["builds"] += 1
            task = self.building[key] = asyncio.create_task(self._build(scope, key, build))
        return await asyncio.shield(task)

    async def _build(self, scope: object, key: tuple[object, ...], build: Callable[[], Awaitable[None]]) -> bool:
        t = time.perf_counter()
        try:
            await build()
        except Exception as err:  # the requests go on being answered directly
            _log.warning("range index not built", scope=str(scope), error=type(err).__name__)
            return False
        finally:
            del self.building[key]
        self.build_cost[scope] = time.perf_counter() - t
        return True

    async def settled(self) -> None:
        """Wait for the builds under way (the tests and the benchmark)."""
        while self.building:
            await asyncio.gather(*self.building.values(), return_exceptions=True)


class RuleInputsCache(Checkpointed[rule_queries.RuleInputs]):
    """The follow-up rules' inputs of a township (or region), keyed by `rule_queries.inputs_key`
    (its townships, the checkpoint, the newest rule event): the rollups of several periods, each
    site's overdue list and the children list of one page read them once."""

    def __init__(self, size: int = 8) -> None:
        super().__init__(size)


async def rule_inputs(pool: asyncpg.Pool, cache: RuleInputsCache | None, scope: str) -> rule_queries.RuleInputs:
    """The rules' inputs of the townships `scope` touches, through the cache."""
    if cache is None:
        return await rule_queries.rule_inputs(pool, scope)
    async with pool.acquire() as conn:
        key = await rule_queries.inputs_key(conn, scope)
    inputs = cache.get(key)
    if inputs is None:
        inputs = await rule_queries.rule_inputs(pool, scope)
        cache.put(key, inputs)
    return inputs


async def rule_figures(pool: asyncpg.Pool, cache: RuleInputsCache | None, scope: str, period: pf.Period,
                       as_of: dt.date) -> list[RuleFigures]:
    """`rule_queries.rule_figures_live` through the cache of inputs (the same figures)."""
    if cache is None:
        return await rule_queries.rule_figures_live(pool, scope, period, as_of)
    return rule_queries.figures_of(await rule_inputs(pool, cache, scope), scope, period, as_of)


async def inputs_at(pool: asyncpg.Pool, cache: RuleInputsCache, scope: str, heads: Heads
                    ) -> rule_queries.RuleInputs:
    """The rules' inputs of `scope` through the cache, keyed by the `heads` read for the request
    (the checkpoint and the newest rule event), so a hit reads nothing more."""
    key = rule_queries.key_of(scope, heads.checkpoint, heads.rules)
    inputs = cache.get(key)
    if inputs is None:
        inputs = await rule_queries.rule_inputs(pool, scope)
        cache.put(key, inputs)
    return inputs


async def rule_totals(pool: asyncpg.Pool, cache: RuleInputsCache, scope: str, period: pf.Period, today: dt.date,
                      heads: Heads) -> tuple[dict[str, pr.RuleFigure], int]:
    """The rollup's `rules` and `overdue_children` for `period` judged on `today`, from the rules'
    index kept with the cached inputs (projections.ranges.RuleIndex; the same totals as
    `rollups.rule_totals` of :func:`rule_figures`)."""
    as_of = min(period.last_day, today)
    inputs = await inputs_at(pool, cache, scope, heads)
    index = rule_queries.rule_index(inputs, scope, today)
    if not index.supported:
        return pr.rule_totals(rule_queries.figures_of(inputs, scope, period, as_of))
    return index.totals(period, as_of)


async def build_range_index(pool: asyncpg.Pool, indexes: RangeIndexes, cache: RuleInputsCache, scope: str,
                            heads: Heads, today: dt.date, children: ScopeChildren | None) -> None:
    """Build `scope`'s range index and its rules' index at the checkpoint of `heads` and keep them
    (the index in `indexes`, the rules' index with the cached inputs): the rows are read on the
    event loop, the indexes built in a thread, so that requests go on being served meanwhile."""
    archives, rows = await queries.range_inputs(pool, scope, children)
    inputs = await inputs_at(pool, cache, scope, heads)
    index = await asyncio.to_thread(RangeIndex, scope, archives, [(day, r) for _, day, r in rows])
    await asyncio.to_thread(rule_queries.rule_index, inputs, scope, today)
    indexes.put((scope, heads.checkpoint), index)


async def rollup(pool: asyncpg.Pool, caller: Caller, scope: str, period: pf.Period,
                 cache: RollupCache | None = None, archives: ScopeArchives | None = None,
                 heads: Batched[str, Heads] | None = None, inputs: RuleInputsCache | None = None,
                 indexes: RangeIndexes | None = None, policy: IndexPolicy | None = None,
                 prefetched: Heads | None = None) -> pr.Rollup:
    """The figures of `scope` (checked against the caller by :func:`check_scope`) from the read
    models (:func:`projections.queries.rollup`), computed once per checkpoint: with `indexes` and
    `inputs`, from the scope's range index (projections.ranges) when it is built for the
    checkpoint, else directly; `policy` says when an index is built (without one, by the first
    request at a checkpoint, in the request)."""
    today = local_today()
    # Read on every request, in a query started after it arrived (shared with concurrent ones),
    # or read with the request's token (`prefetched`, service.api.auth.HEADS_OPT).
    now = prefetched or (await heads.get(scope) if heads is not None else
                         (await rollup_heads(pool, [scope])).get(scope))
    assert now is not None  # unnest gives every scope a row
    ikey = (scope, now.checkpoint)
    index = indexes.get(ikey) if indexes is not None else None
    if index is not None and inputs is not None:
        # Every figure from the scope's index, computed for this request: a look-up costs less
        # than keeping its answer would (answers are kept only when computed directly, below).
        return queries.with_freshness(await _from_index(pool, index, inputs, scope, period, today, now, policy), now)
    key = (scope, period.label, period.start, period.end, today, now.checkpoint)
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        children = archives.get(ikey) if archives is not None else None
        if children is None:
            children = await queries.scope_children(pool, scope)
            if archives is not None:
                archives.put(ikey, children)
        if indexes is not None and inputs is not None:
            if policy is None:
                index = await queries.range_index(pool, scope, children)
                indexes.put(ikey, index)
            elif await policy.ready(scope, ikey, functools.partial(build_range_index, pool, indexes, inputs, scope,
                                                                     now, today, children)):
                index = indexes.get(ikey)
        if index is not None and inputs is not None:
            return queries.with_freshness(await _from_index(pool, index, inputs, scope, period, today, now, policy),
                                          now)
        as_of = min(period.last_day, today)
        t = time.perf_counter()
        if inputs is None:
            rules = await rule_figures(pool, inputs, scope, period, as_of)
        else:
            in_hand = await inputs_at(pool, inputs, scope, now)
            t = time.perf_counter()  # the inputs are read at a new checkpoint by either path
            rules = rule_queries.figures_of(in_hand, scope, period, as_of)
        hit = await queries.rollup_figures(pool, scope, period, today, children=children, rules=rules)
        if policy is not None and indexes is not None and inputs is not None:
            policy.took(scope, ikey, time.perf_counter() - t)
        if cache is not None:
            cache.put(key, hit)
    return queries.with_freshness(hit, now)


async def _from_index(pool: asyncpg.Pool, index: RangeIndex, inputs: RuleInputsCache, scope: str, period: pf.Period,
                      today: dt.date, now: Heads, policy: IndexPolicy | None) -> pr.Rollup:
    if policy is not None:
        policy.hit()
    return index.rollup(period, today, await rule_totals(pool, inputs, scope, period, today, now))


async def caller_rollup(request: Request[Any, Any, Any], scope: str, period: str | None, start: dt.date | None,
                        end: dt.date | None) -> pr.Rollup:
    """The rollup a request asks for, once the caller may see the scope (the rollups and the exports)."""
    caller = caller_of(request)
    check_scope(caller, scope)
    state = request.app.state
    return await rollup(state.pool, caller, scope, period_from(period, start, end), state.rollup_cache,
                        state.scope_archives, state.get("rollup_heads"), state.get("rule_inputs"),
                        state.get("range_indexes"), state.get("index_policy"), prefetched_heads(request.scope, scope))


class RollupsController(Controller):
    path = "/rollups"
    tags = ["rollups"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow(*LISTERS)]  # noqa: RUF012 (as above)

    @get("/", summary="Every figure the township counts, for a site, a township or a region and a period",
         description="Children are counted for the sites they belong to, work for the site that recorded it. "
                     "Give period, or start and end (any range of days, end inclusive, at most "
                     f"{MAX_RANGE_DAYS} days): work is summed from the projections' daily per-site totals, so a "
                     "range costs about what a month does.", opt={**PERIOD_RULES, HEADS_OPT: "scope"})
    async def get_rollup(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> pr.Rollup:
        return await caller_rollup(request, area, period, start, end)

    @get("/figures", summary="Every figure for a site or the township and a period, labelled",
         description="The figures of GET /rollups as a list in the order of the year-end summary, each with its "
                     "key, its label (projections/figures.py, the catalogue the dashboard and the exports use), "
                     "its unit and, for shares, its percentage. Money in yuan.",
         opt={**PERIOD_RULES, HEADS_OPT: "scope"})
    async def get_figures(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
        lang: LangQuery = "zh",
    ) -> list[LabelledFigure]:
        r = await caller_rollup(request, area, period, start, end)
        names = await scope_names(request.app.state.pool, area, lang)
        return labelled(r, lang, now=dt.datetime.now(dt.UTC), sites=names.sites)

    @get("/as-of", guards=[allow("township", "auditor")], opt={"rules": [ONE_CLOCK]},
         summary="Every figure for a scope and period as the log said at a past time",
         description="Give exactly one of committed (what the center held then) or occurred (the work done by then, "
                     "as known now). Computed from the log up to that point with the live figures' own code.")
    async def get_rollup_asof(
        self, request: Request[Any, Any, Any], area: ScopeQuery,
        period: Annotated[str, Parameter(pattern=PERIOD_PATTERN,
                                         description="YYYY, YYYY-MM, YYYY-S1, YYYY-S2 or YYYY-SY")],
        committed: Annotated[dt.datetime | None, Parameter(description="as of this committed time")] = None,
        occurred: Annotated[dt.datetime | None, Parameter(description="as of this occurred time")] = None,
    ) -> pr.Rollup:
        caller = caller_of(request)
        check_scope(caller, area)
        if (committed is None) == (occurred is None):
            raise ApiError(422, ONE_CLOCK, field="committed", value=request.url.query or "")
        for name, value in (("committed", committed), ("occurred", occurred)):
            if value is not None and value.tzinfo is None:
                raise bad(name, value.isoformat(), "give a time zone, e.g. 2026-06-30T23:59:59+08:00")
        period_from(period, None, None)  # a period out of range is a 400 naming it, as for the live figures
        return await rollup_asof(request.app.state.pool, area, period, committed_at=committed, occurred_at=occurred)
