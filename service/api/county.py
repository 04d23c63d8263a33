"""The county's comparison of its townships: every figure per township side by side, the region's
own figures, and each township's freshness (projections.county).

Only the ``county`` role asks for it, for its own region; any other region is a 404, the same as
a region that does not exist. Figures are kept per projections checkpoint (as the township
rollups are, service.api.rollups.Checkpointed); the checkpoint, the townships, their names and
their freshness are read on every request by a query started after it arrived, shared by the
requests that arrive together (service.api.batch.Batched).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from typing import Annotated, Any

import asyncpg
from litestar import Controller, Request, get
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from events.localtime import local_today
from projections import county as pc
from projections import rollups as pr
from projections import rule_queries
from projections.facts import township_of
from projections.followups import Period
from projections.queries import range_inputs
from service.api.errors import ApiError
from service.api.rollups import (
    PERIOD_RULES,
    Checkpointed,
    EndQuery,
    IndexPolicy,
    PeriodQuery,
    RuleInputsCache,
    StartQuery,
    period_from,
    rule_inputs,
)
from service.api.scoping import allow, caller_of, may_see_region

RegionQuery = Annotated[str, QueryParameter(
    name="region", pattern=pc.REGION_PATTERN, min_length=1, max_length=24,
    description="the county's region: the first part of its site ids (region.township.site)",
    examples=[Example(value="gx-lp")])]


class CountyIndexes(Checkpointed[pc.CountyIndex]):
    """A region's range indexes (projections.county.CountyIndex), keyed by region, the set of
    townships and the projections' checkpoint: built once, then any range is a look-up."""

    def __init__(self, size: int = 4) -> None:
        super().__init__(size)


class CountyCache(Checkpointed[tuple[pr.Rollup, dict[str, pr.Rollup]]]):
    """Computed county figures, keyed by region, period, the day they are judged on, the set of
    townships and the projections' checkpoint."""

    def __init__(self, size: int = 32) -> None:
        super().__init__(size)


async def build_county_index(pool: asyncpg.Pool, indexes: CountyIndexes, inputs: rule_queries.RuleInputs,
                             region: str, townships: list[str], key: tuple[object, ...], today: dt.date) -> None:
    """Build a region's range indexes and its rules' index (kept with `inputs`) and keep them under
    `key`: the rows read on the event loop, the indexes built in a thread (service.api.rollups.IndexPolicy)."""
    archives, rows = await range_inputs(pool, region, None)
    index = await asyncio.to_thread(pc.CountyIndex, region, archives, rows, townships)
    await asyncio.to_thread(rule_queries.rule_index, inputs, region, today)
    indexes.put(key, index)


async def figures_of(pool: asyncpg.Pool, region: str, p: Period, townships: list[str], checkpoint: object,
                     today: dt.date, indexes: CountyIndexes | None, inputs: RuleInputsCache | None,
                     policy: IndexPolicy | None) -> tuple[pr.Rollup, dict[str, pr.Rollup]]:
    """The region's and its townships' figures at `checkpoint`: from the region's index when it is
    built for the checkpoint, else directly (`policy` says when an index is built; without one, by
    the first request at a checkpoint, in the request)."""
    if indexes is None or inputs is None:
        return await pc.county_figures(pool, region, p, townships, today)
    ikey = (region, tuple(townships), checkpoint)
    region_inputs = await rule_inputs(pool, inputs, region)
    index = indexes.get(ikey)
    if index is None and policy is None:
        index = await pc.county_index(pool, region, townships)
        indexes.put(ikey, index)
    elif index is None and policy is not None and await policy.ready(
            ("county", region), ikey, functools.partial(build_county_index, pool, indexes, region_inputs, region,
                                                        townships, ikey, today)):
        index = indexes.get(ikey)
    rule_index = rule_queries.rule_index(region_inputs, region, today) if index is not None else None
    if index is not None and rule_index is not None and rule_index.supported:
        if policy is not None:
            policy.hit()
        return index.figures(p, today, rule_index)
    t = time.perf_counter()
    rules = rule_queries.figures_of(region_inputs, region, p, min(p.last_day, today))
    hit = await pc.county_figures(pool, region, p, townships, today, rules=rules)
    if index is None and policy is not None:
        policy.took(("county", region), ikey, time.perf_counter() - t)
    return hit


async def county_rollup(request: Request[Any, Any, Any], region: str, period: str | None, start: Any,
                        end: Any) -> pc.CountyRollup:
    """The comparison a request asks for, once the caller may see the region."""
    caller = caller_of(request)
    if not may_see_region(caller, region):
        raise ApiError(404, f"region {region} was not found among the regions you may see", field="region",
                       value=region)
    p = period_from(period, start, end)
    pool = request.app.state.pool
    # Read on every request, by a query started after it arrived (shared with concurrent ones).
    shared = request.app.state.get("region_sites")
    found = await shared.get(region) if shared is not None else await pc.sites_of_region(pool, region)
    assert found is not None  # every region asked for gets an answer
    checkpoint, sites = found
    townships = sorted({township_of(s.site_id) for s in sites})
    today = local_today()
    cache: CountyCache = request.app.state.county_cache
    key = (region, p.label, p.start, p.end, today, tuple(townships), checkpoint)
    hit = cache.get(key)
    if hit is None:
        hit = await figures_of(pool, region, p, townships, checkpoint, today, request.app.state.get("county_indexes"),
                               request.app.state.get("rule_inputs"), request.app.state.get("index_policy"))
        cache.put(key, hit)
    total, figures = hit
    return pc.assemble(region, total, figures, sites)


class CountyController(Controller):
    path = "/county"
    tags = ["county"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow("county")]  # noqa: RUF012 (as above)

    @get("/rollups", summary="Every figure of the county's region and of each of its townships, side by side",
         description="For the county role, its own region only (any other is a 404). `total` is the region's own "
                     "rollup; `townships` holds each township's rollup (as /rollups?scope=<township> gives it, "
                     "without per-site freshness), its name and freshness: its active sites, how many the center "
                     "has heard from, and the oldest and newest last contact. Give period, or start and end.",
         opt=PERIOD_RULES)
    async def rollups(
        self, request: Request[Any, Any, Any], region: RegionQuery, period: PeriodQuery = None,
        start: StartQuery = None, end: EndQuery = None,
    ) -> pc.CountyRollup:
        return await county_rollup(request, region, period, start, end)
