"""County figures: every township of a region side by side, and the region's own figures.

A county is the same software with more sites: a **region** is the first part of every site id
(``region.township.site``, e.g. ``gx-lp`` in ``gx-lp.xy.v03``), so the county's figures are the
township figures of :func:`projections.rollups.compute` with the region as the scope. This
module adds the comparison: one :class:`~projections.rollups.Rollup` per township of the region,
computed by the same function from the same inputs, and each township's freshness (how recently
the center heard from its sites).

Use :func:`county_rollup` (live read models) for a whole comparison, or :func:`split` (pure) with
archives and facts in hand (:func:`split_rows` with work already summed by projections.daily, which
is what the live read uses, as a township's own rollup does). ``total`` is computed over the
region directly, not added up from the townships: ``tests/test_county.py`` checks that every
count of it equals the sum of the townships' own rollups, each read on its own through the API.
Percentages are of each scope's own whole, so they are not sums.

Which townships: every township with a registered site in the region (the ``sites`` registry),
so a township that has sent nothing yet shows as zeros beside the others, not as a gap. A
township's name is the ``township`` display name its sites were registered with (its office's
first), else its office's site name, else its id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import asyncpg
import msgspec

from events.localtime import local_today
from projections import daily
from projections.archive import ChildArchive
from projections.daily import WorkRow
from projections.facts import Fact, township_of
from projections.figures import label_of, labelled, unit_of, value_of
from projections.followups import Period, parse_period
from projections.queries import ScopeChildren, range_inputs, rollup_work
from projections.ranges import RangeIndex, RuleIndex
from projections.rollups import Rollup, compute, compute_from_rows
from projections.rule_queries import rule_figures_live
from projections.rules import RuleFigures
from projections.runner import NAME as CHECKPOINT
from projections.tables import SCHEMA

REGION_PATTERN = r"^[a-z0-9-]{1,24}$"


class SiteOfRegion(msgspec.Struct, frozen=True, kw_only=True):
    """A registered site of the region and when the center last heard from it."""

    site_id: str
    kind: str
    name: str
    township_name: str | None  # the township's display name given at registration, if any
    active: bool
    last_committed_at: dt.datetime | None
    newest_occurred_at: dt.datetime | None


class TownshipFreshness(msgspec.Struct, frozen=True, kw_only=True):
    """How fresh a township's figures are: its sites, how many the center has heard from, and
    the oldest and newest last contact among them (the oldest is the one to chase)."""

    sites: int  # active registered sites
    sites_heard: int  # of those, sites with at least one committed event
    oldest_contact: dt.datetime | None  # the least recent last commit among the sites heard from
    newest_contact: dt.datetime | None
    newest_occurred_at: dt.datetime | None  # the newest work any of its sites has sent


class TownshipFigures(msgspec.Struct, frozen=True, kw_only=True):
    township: str  # region.township
    name: str
    freshness: TownshipFreshness
    rollup: Rollup  # its figures, as /rollups?scope=<township> gives them (per-site freshness left out)


class CountyRollup(msgspec.Struct, frozen=True, kw_only=True):
    region: str
    period: str
    start: dt.date
    end: dt.date  # exclusive
    as_of: dt.date
    total: Rollup  # the region's own figures (per-site freshness left out: see each township's)
    townships: list[TownshipFigures]  # by township id


def township_names(sites: Sequence[SiteOfRegion]) -> dict[str, str]:
    """Each township of `sites` and the name it is shown by (module docstring)."""
    names: dict[str, str] = {}
    for s in sorted(sites, key=lambda s: (s.kind != "township", s.site_id)):  # offices first
        t = township_of(s.site_id)
        if t not in names and s.township_name:
            names[t] = s.township_name
    for s in sites:
        t = township_of(s.site_id)
        if t not in names and s.kind == "township":
            names[t] = s.name
    for s in sites:
        names.setdefault(township_of(s.site_id), township_of(s.site_id))
    return dict(sorted(names.items()))


def freshness_of(sites: Iterable[SiteOfRegion]) -> TownshipFreshness:
    active = [s for s in sites if s.active]
    heard = [s.last_committed_at for s in active if s.last_committed_at is not None]
    newest = [s.newest_occurred_at for s in active if s.newest_occurred_at is not None]
    return TownshipFreshness(sites=len(active), sites_heard=len(heard), oldest_contact=min(heard, default=None),
                             newest_contact=max(heard, default=None), newest_occurred_at=max(newest, default=None))


def archives_by_township(archives: Sequence[ChildArchive], townships: Iterable[str]
                         ) -> dict[str, list[ChildArchive]]:
    """Each township's archives of a region's: a child goes to the townships of its sites; merged
    stubs, which only map a merged child to its kept archive, go to every township."""
    kids: dict[str, list[ChildArchive]] = {t: [] for t in townships}
    stubs = [a for a in archives if a.merged_into is not None]
    for a in archives:
        if a.merged_into is None:
            for t in {township_of(s) for s in a.sites}:
                if t in kids:
                    kids[t].append(a)
    return {t: [*mine, *stubs] for t, mine in kids.items()}


def split(region: str, period: Period, archives: Sequence[ChildArchive], facts: Sequence[Fact],
          townships: Iterable[str], *, rules: Sequence[RuleFigures], today: dt.date | None = None
          ) -> tuple[Rollup, dict[str, Rollup]]:
    """The region's figures and each township's (pure): `compute` over the region, then over each
    township with the archives and facts that belong to it (a child goes to the townships of its
    sites, a fact to its recording site's township; merged stubs, which only map a merged child to
    its kept archive, go to every township). `rules`: the region's rules' figures
    (`projections.rules.rule_figures`), each township's its own."""
    total = compute(region, period, archives, facts, rules=rules, today=today)
    kids = archives_by_township(archives, townships)
    work: dict[str, list[Fact]] = {t: [] for t in kids}
    for f in facts:
        bucket = work.get(f.township)
        if bucket is not None:
            bucket.append(f)
    return total, {t: compute(t, period, kids[t], work[t], today=today,
                              rules=[f for f in rules if f.township == t]) for t in kids}


async def sites_of_region(pool: asyncpg.Pool, region: str) -> tuple[tuple[int, int], list[SiteOfRegion]]:
    """The projections' checkpoint and the region's registered sites with their last contact,
    in one statement (one snapshot)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT (SELECT c.tx FROM {SCHEMA}.checkpoint c WHERE c.name = $2) AS tx,
                       (SELECT c.pos FROM {SCHEMA}.checkpoint c WHERE c.name = $2) AS pos,
                       s.site_id, s.kind, s.name, s.township, s.active, p.last_committed_at, p.newest_occurred_at
                FROM (SELECT 1) one
                LEFT JOIN sites s ON starts_with(s.site_id, $1 || '.')
                LEFT JOIN site_progress p USING (site_id)
                ORDER BY s.site_id""", region, CHECKPOINT)
    checkpoint = (rows[0]["tx"] or 0, rows[0]["pos"] or 0) if rows else (0, 0)
    return checkpoint, [SiteOfRegion(site_id=r["site_id"], kind=r["kind"], name=r["name"],
                                     township_name=r["township"], active=r["active"],
                                     last_committed_at=r["last_committed_at"],
                                     newest_occurred_at=r["newest_occurred_at"])
                        for r in rows if r["site_id"] is not None]


async def sites_of_regions(pool: asyncpg.Pool, regions: list[str]
                           ) -> dict[str, tuple[tuple[int, int], list[SiteOfRegion]]]:
    """:func:`sites_of_region` for several regions (the API shares one look-up among the
    requests that arrive together: service.api.batch.Batched)."""
    return {r: await sites_of_region(pool, r) for r in regions}


def split_rows(region: str, period: Period, archives: Sequence[ChildArchive], work: Sequence[WorkRow],
               work_of: dict[str, list[WorkRow]], *, rules: Sequence[RuleFigures], today: dt.date | None = None
               ) -> tuple[Rollup, dict[str, Rollup]]:
    """:func:`split` from work already summed (projections.daily): `work` the region's, `work_of`
    each township's (its keys are the townships)."""
    total = compute_from_rows(region, period, archives, work, rules=rules, today=today)
    kids = archives_by_township(archives, work_of)
    return total, {t: compute_from_rows(t, period, kids[t], work_of[t], today=today,
                                        rules=[f for f in rules if f.township == t]) for t in kids}


async def county_figures(pool: asyncpg.Pool, region: str, period: Period, townships: Iterable[str],
                         today: dt.date, *, children: ScopeChildren | None = None,
                         rules: list[RuleFigures] | None = None) -> tuple[Rollup, dict[str, Rollup]]:
    """The region's and each township's figures from the live read models, without freshness
    (which moves with ingest, not with the read models; the API keeps these per checkpoint): the
    region's archives once, and the work of the region and of each township summed from the daily
    rows, as a township's own rollup reads them (projections.queries.rollup_work). `rules`: the
    region's rules' figures for the period judged on the rollup's day, if already in hand."""
    archives, work = await rollup_work(pool, region, period, children)
    async with pool.acquire() as conn:
        work_of = {t: await daily.work_rows(conn, SCHEMA, t, period.start, period.end) for t in townships}
    if rules is None:
        rules = await rule_figures_live(pool, region, period, min(period.last_day, today))
    return split_rows(region, period, archives, work, work_of, rules=rules, today=today)


class CountyIndex:
    """A region's range indexes (projections.ranges): the region's own, and each township's from
    the region's archives and daily rows split as :func:`split_rows` splits them; with the region's
    rules' index, the figures :func:`county_figures` gives for any period, as look-ups."""

    def __init__(self, region: str, archives: Sequence[ChildArchive], rows: Sequence[tuple[str, dt.date, WorkRow]],
                 townships: Iterable[str]) -> None:
        self.total = RangeIndex(region, archives, [(day, r) for _, day, r in rows])
        kids = archives_by_township(archives, townships)
        work: dict[str, list[tuple[dt.date, WorkRow]]] = {t: [] for t in kids}
        for town, day, r in rows:
            bucket = work.get(town)
            if bucket is not None:
                bucket.append((day, r))
        self.townships = {t: RangeIndex(t, kids[t], work[t]) for t in kids}

    def figures(self, period: Period, today: dt.date, rules: RuleIndex) -> tuple[Rollup, dict[str, Rollup]]:
        as_of = min(period.last_day, today)
        total = self.total.rollup(period, today, rules.totals(period, as_of))
        return total, {t: x.rollup(period, today, rules.totals(period, as_of, t)) for t, x in self.townships.items()}


async def county_index(pool: asyncpg.Pool, region: str, townships: Iterable[str],
                       children: ScopeChildren | None = None) -> CountyIndex:
    """The region's :class:`CountyIndex` from the live read models."""
    archives, rows = await range_inputs(pool, region, children)
    return CountyIndex(region, archives, rows, townships)


def assemble(region: str, total: Rollup, figures: dict[str, Rollup], sites: Sequence[SiteOfRegion]
             ) -> CountyRollup:
    """The comparison as served: figures with each township's name and freshness read now."""
    names = township_names(sites)
    by_township: dict[str, list[SiteOfRegion]] = {}
    for s in sites:
        by_township.setdefault(township_of(s.site_id), []).append(s)
    return CountyRollup(
        region=region, period=total.period, start=total.start, end=total.end, as_of=total.as_of, total=total,
        townships=[TownshipFigures(township=t, name=names.get(t, t), freshness=freshness_of(by_township.get(t, [])),
                                   rollup=figures[t]) for t in sorted(figures)])


async def county_rollup(pool: asyncpg.Pool, region: str, period: str | Period, today: dt.date | None = None
                        ) -> CountyRollup:
    """Every figure of `region` (e.g. 'gx-lp') and of each of its townships for `period` ('2026',
    '2026-S1', '2026-03' or a Period), judged on `today` (default: today in China Standard Time),
    from the live read models, with each township's name and freshness. The scope is not checked
    here: the API checks the caller may see the region (service.api.scoping.may_see_region)."""
    if not region or "." in region:
        raise ValueError(f"region {region!r} is not a region: give the first part of a site id, e.g. gx-lp")
    p = parse_period(period) if isinstance(period, str) else period
    _, sites = await sites_of_region(pool, region)
    townships = sorted({township_of(s.site_id) for s in sites})
    total, figures = await county_figures(pool, region, p, townships, today or local_today())
    return assemble(region, total, figures, sites)



class ComparisonRow(msgspec.Struct, frozen=True, kw_only=True):
    """One figure of the comparison: its key and label, then its value in each township (in the
    order of CountyRollup.townships) and in the whole region."""

    key: str
    label: str
    unit: str
    values: list[int | float | str]
    total: int | float | str


def comparison(cr: CountyRollup, lang: str = "zh") -> list[ComparisonRow]:
    """Every figure of the county side by side, labelled by the figure catalogue
    (projections.figures), in the order of the year-end summary, then each township's freshness.
    Per-site figures (children by site, each site's freshness) are left out: they name sites, and
    the drill-down to a township shows them by name."""
    keys: list[str] = []
    seen: set[str] = set()
    for r in (cr.total, *(t.rollup for t in cr.townships)):
        for f in labelled(r, lang):
            if f.key not in seen and not f.key.startswith(("by_site.", "freshness.")):
                seen.add(f.key)
                keys.append(f.key)

    def value(r: Rollup, key: str) -> int | float:
        try:
            return value_of(r, key)
        except (AttributeError, KeyError):  # a rule or member this scope has none of
            return 0

    rows = [ComparisonRow(key=k, label=label_of(k, lang), unit=unit_of(k, lang),
                          values=[value(t.rollup, k) for t in cr.townships], total=value(cr.total, k))
            for k in keys]
    never = "从未同步" if lang != "en" else "never"

    def when(d: dt.datetime | None) -> str:
        return d.astimezone(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M") if d else never

    fresh = [t.freshness for t in cr.townships]
    for key, zh, en, unit, get, total in (
        ("freshness.sites", "站点数", "sites", "个", [f.sites for f in fresh], sum(f.sites for f in fresh)),
        ("freshness.sites_heard", "已有数据的站点数", "sites heard from", "个", [f.sites_heard for f in fresh],
         sum(f.sites_heard for f in fresh)),
        ("freshness.oldest_contact", "最久未同步站点的最近同步时间", "oldest last contact of a site", "",
         [when(f.oldest_contact) for f in fresh],
         when(min((f.oldest_contact for f in fresh if f.oldest_contact), default=None))),
        ("freshness.newest_contact", "最近一次同步时间", "newest contact", "", [when(f.newest_contact) for f in fresh],
         when(max((f.newest_contact for f in fresh if f.newest_contact), default=None))),
    ):
        rows.append(ComparisonRow(key=key, label=en if lang == "en" else zh, unit="" if lang == "en" else unit,
                                  values=list(get), total=total))
    return rows
