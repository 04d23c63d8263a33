"""Range rollups as look-ups (projections/ranges.py): for random date ranges, scopes and days, the
figures read from a scope's range index equal the rollup computed child by child as before
(`rollups.compute_from_rows` over the read models, the rules' figures from `rules.rule_figures`),
in a made-up county of two townships whose children are registered, transferred within and across
townships, paired with proxy parents and teachers, closed (dropped out among other reasons),
reopened and merged, with rule versions set, changed and retired over the months and a school
calendar of their own."""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import msgspec

from events import catalogue as c
from events.envelope import DecodedEvent
from events.rules import DEFAULT_RULES, SchoolCalendar, Term
from events.samples import sample_registration, samples
from events.types import ClosingReason, PartnerKind
from projections import county as pc
from projections import queries, rule_queries, rules
from projections.followups import Period, parse_period
from projections.ranges import RuleIndex
from projections.rollups import rule_totals
from projections.runner import Runner
from service.sites import register_site
from store.postgres import EventStore
from tests.factory import SiteWriter

T0 = dt.datetime(2025, 8, 20, 2, 0, tzinfo=dt.UTC)
DAYS = 300
VILLAGES = ("r.t1.v01", "r.t1.v02", "r.t2.v01")
SCHOOLS = ("r.t1.s01", "r.t2.s01")
OFFICES = ("r.t1.office", "r.t2.office")
KINDS = {**dict.fromkeys(VILLAGES, "village"), **dict.fromkeys(SCHOOLS, "school"),
         **dict.fromkeys(OFFICES, "township")}
SCOPES = ("r.t1", "r.t2", "r.t1.v01", "r.t1.s01", "r.t2.s01", "r")
KIDS = [f"c-{i:032x}" for i in range(1, 41)]


def _rule(rule_id: str) -> rules.FollowUpRule:
    return next(r for r in DEFAULT_RULES if r.rule_id == rule_id)


def county(seed: int, rule_changes: bool = True) -> list[DecodedEvent]:
    """The county's events in the order the sites wrote them (module docstring); without
    `rule_changes`, every rule stays as it is by default (the calendar is still set)."""
    rng = random.Random(seed)
    w = {s: SiteWriter(s) for s in KINDS}
    out: list[DecodedEvent] = []

    def when(day: int) -> dt.datetime:
        return T0 + dt.timedelta(days=day, minutes=rng.randrange(24 * 60))

    home: dict[str, tuple[str, str]] = {}
    for i, k in enumerate(KIDS):
        t = "r.t1" if i % 3 else "r.t2"
        v = rng.choice([s for s in VILLAGES if s.startswith(t + ".")])
        s = rng.choice([s for s in SCHOOLS if s.startswith(t + ".")])
        home[k] = (v, s)
        out.append(w[v].write(sample_registration(rng, k, village_site=v, school_site=s), when(rng.randrange(40))))
    # rule versions: a stricter visit rule from November in t1, a retired letter rule from March,
    # a weekly rule changed in t2, and t1's own school calendar
    o1, o2 = w["r.t1.office"], w["r.t2.office"]
    strict = msgspec.structs.replace(_rule("proxy_visit"), counts=msgspec.structs.replace(
        _rule("proxy_visit").counts, at_least=2))
    weekly = msgspec.structs.replace(_rule("childrens_home"), counts=msgspec.structs.replace(
        _rule("childrens_home").counts, at_least=1))
    if rule_changes:
        out.append(o1.write(c.FollowUpRuleSet(township="r.t1", rule=strict, effective_from=dt.date(2025, 11, 1)),
                            when(60)))
        out.append(o1.write(c.FollowUpRuleRetired(township="r.t1", rule_id="proxy_letter",
                                                  effective_from=dt.date(2026, 3, 1)), when(150)))
        out.append(o2.write(c.FollowUpRuleSet(township="r.t2", rule=weekly, effective_from=dt.date(2025, 12, 15)),
                            when(100)))
    out.append(o1.write(c.SchoolCalendarSet(township="r.t1", calendar=SchoolCalendar(school_year=2025, terms=[
        Term(first_day=dt.date(2025, 9, 1), last_day=dt.date(2026, 1, 15)),
        Term(first_day=dt.date(2026, 3, 1), last_day=dt.date(2026, 7, 5))])), when(30)))
    for n in range(900):
        day = 10 + rng.randrange(DAYS - 10)
        k = rng.choice(KIDS)
        v, s = home[k]
        r = rng.random()
        care: c.CareEventBase
        site = v
        kinds = ("HomeVisitMade", "ParentCallMade", "TalkHeld", "LetterWritten", "ActivityHeld", "MeetingHeld",
                 "AidGiven")
        if r < 0.70:
            name = kinds[sum(r >= x for x in (0.25, 0.40, 0.50, 0.56, 0.62, 0.65))]
            care = samples(rng, k)[name]
            if name in ("TalkHeld", "LetterWritten", "ActivityHeld", "MeetingHeld"):
                site = s
            elif name == "AidGiven":
                site = rng.choice(OFFICES)
            if name == "ActivityHeld":
                care = msgspec.structs.replace(care, child_ids_list=sorted(rng.sample(KIDS, 3)))
        elif r < 0.76:
            care = c.PairingStarted(pairing_id=f"p-{n:032x}", child_id=k, partner_name="云晓",
                                    partner_kind=rng.choice(list(PartnerKind)))
        elif r < 0.79:
            started = [e.care for e in out if isinstance(e.care, c.PairingStarted) and e.care.child_id == k]
            if not started:
                continue
            care = c.PairingEnded(pairing_id=rng.choice(started).pairing_id, child_id=k)
        elif r < 0.82:
            care = c.ArchiveClosed(child_id=k, reason=rng.choice(list(ClosingReason)))
        elif r < 0.85:
            care = c.ArchiveReopened(child_id=k, reason="父母再次外出")
        elif r < 0.88:
            to_v = rng.choice(VILLAGES)
            to_s = rng.choice([x for x in SCHOOLS if x.rsplit(".", 1)[0] == to_v.rsplit(".", 1)[0]])
            care = c.ChildTransferred(child_id=k, to_village_site=to_v, to_school_site=to_s)
            home[k] = (to_v, to_s)
        elif r < 0.89:
            other = rng.choice([x for x in KIDS if x != k])
            site, care = rng.choice(OFFICES), c.ArchivesMerged(kept_child_id=k, merged_child_id=other)
        elif r < 0.92:
            care = samples(rng, k)["RightsCaseOpened"]
        else:
            site, care = rng.choice(OFFICES), msgspec.structs.replace(
                samples(rng, k)["CondolenceVisitMade"], child_ids_list=sorted({k, rng.choice(KIDS)}))
        out.append(w[site].write(care, when(day)))
    return out


def _periods(rng: random.Random) -> list[Period]:
    """Named periods and ranges of every length, some before the data, some past it."""
    out = [parse_period(p) for p in ("2025-09", "2025-11", "2026-01", "2026-03", "2025-S2", "2026-S1", "2025-SY",
                                     "2026")]
    for i in range(40):
        start = (T0 + dt.timedelta(days=rng.randrange(-20, DAYS + 20))).date()
        end = start + dt.timedelta(days=(0, 6, 29, 30, 95, 200)[i % 6] + rng.randrange(3))
        out.append(Period(f"{start}..{end}", start, end + dt.timedelta(days=1)))
    return out


def _days(rng: random.Random) -> list[dt.date]:
    """Days the figures are judged on: within the data (ranges reaching past `today` are judged on it), and after."""
    return [(T0 + dt.timedelta(days=rng.randrange(20, DAYS))).date() for _ in range(3)] + [dt.date(2026, 12, 5)]


def test_rule_index_totals_equal_the_rules_figures() -> None:
    """Pure: for every scope, day and period, `RuleIndex.totals` equals `rule_totals` of
    `rule_figures` over the same inputs, and of one township of a region (the county's split)."""
    events = county(1)
    sites = {s: rules.SiteInfo(k, dt.date(2025, 8, 1)) for s, k in KINDS.items()}
    inputs = rules.inputs_from(((d.event, d.care) for d in events), sites)
    rng = random.Random(2)
    seen = {"overdue": 0, "children": 0, "due": 0, "done": 0}
    for today in _days(rng):
        for scope in SCOPES:
            index = RuleIndex(inputs.book, inputs.archives, inputs.work, sites, scope, today)
            assert index.supported
            for period in _periods(rng)[::3]:
                as_of = min(period.last_day, today)
                figures = rules.rule_figures(inputs.book, inputs.archives, inputs.work, sites, scope, period, as_of)
                want = rule_totals(figures)
                assert index.totals(period, as_of) == want, (scope, period, today)
                if scope == "r":
                    for town in ("r.t1", "r.t2"):
                        assert index.totals(period, as_of, town) == rule_totals(
                            [f for f in figures if f.township == town]), (town, period, today)
                seen["overdue"] += any(f.overdue for f in want[0].values())
                seen["children"] += want[1] > 0
                seen["due"] += any(f.due for f in want[0].values())
                seen["done"] += any(f.done for f in want[0].values())
    assert all(v >= 10 for v in seen.values()), seen


def test_rule_totals_as_vectors_per_day_equal_the_rules_figures() -> None:
    """Pure: with rules that never changed, `RuleIndex.totals` answers from its vectors per day
    (ranges before the data, past it, and judged on any day up to `today`), equal to `rule_totals`
    of `rule_figures` and to the totals taken rule by rule."""
    events = county(3, rule_changes=False)
    sites = {s: rules.SiteInfo(k, dt.date(2025, 8, 1)) for s, k in KINDS.items()}
    inputs = rules.inputs_from(((d.event, d.care) for d in events), sites)
    rng = random.Random(4)
    seen = {"overdue": 0, "children": 0, "due": 0, "met": 0, "done": 0, "vectors": 0}
    for today in _days(rng):
        for scope in SCOPES:
            index = RuleIndex(inputs.book, inputs.archives, inputs.work, sites, scope, today)
            assert index.supported and index.vectors is not None, scope
            for period in _periods(rng)[::2]:
                for as_of in {min(period.last_day, today), min(period.start, today), today}:
                    figures = rules.rule_figures(inputs.book, inputs.archives, inputs.work, sites, scope, period,
                                                 as_of)
                    want = rule_totals(figures)
                    assert index.totals(period, as_of) == want, (scope, period, as_of, today)
                    assert index.totals_by_rule(period, as_of) == want, (scope, period, as_of, today)
                    seen["vectors"] += index.vectors.totals(period, as_of) is not None
                    seen["overdue"] += any(f.overdue for f in want[0].values())
                    seen["children"] += want[1] > 0
                    seen["due"] += any(f.due for f in want[0].values())
                    seen["met"] += any(f.met for f in want[0].values())
                    seen["done"] += any(f.done for f in want[0].values())
    assert all(v >= 10 for v in seen.values()), seen


def test_a_site_rule_without_the_sites_registration_day_is_not_kept() -> None:
    """A site whose registration day is unknown starts a site rule's clock with the range asked:
    the index says so, and the API computes the rules' figures as before."""
    events = county(3)
    sites = {s: rules.SiteInfo(k) for s, k in KINDS.items()}
    inputs = rules.inputs_from(((d.event, d.care) for d in events), sites)
    assert not RuleIndex(inputs.book, inputs.archives, inputs.work, sites, "r.t1", dt.date(2026, 6, 1)).supported


async def test_any_range_from_the_index_equals_the_rollup_computed_child_by_child(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """From the read models: every figure of the range index (children, work, rules) equals the
    live rollup the API computed before it, for random ranges, scopes and days, after half the
    events and again after all of them (the index is built again for the new checkpoint)."""
    for site, kind in KINDS.items():
        await register_site(pool, site, kind, site)
    events = county(5)
    runner = Runner(pool, batch_size=50)
    rng = random.Random(6)
    seen = {"archived": 0, "closed": 0, "dropped": 0, "paired": 0, "aid_children": 0, "overdue": 0, "cases": 0}
    for part in (events[:len(events) // 2], events[len(events) // 2:]):
        await store.append(part)
        await runner.catch_up()
        for scope in SCOPES:
            inputs = await rule_queries.rule_inputs(pool, scope)
            index = await queries.range_index(pool, scope)
            for today in _days(rng)[:2]:
                rule_index = rule_queries.rule_index(inputs, scope, today)
                assert rule_index.supported
                for period in _periods(rng)[::4]:
                    as_of = min(period.last_day, today)
                    figures = rule_queries.figures_of(inputs, scope, period, as_of)
                    want = await queries.rollup_figures(pool, scope, period, today, rules=figures)
                    got = index.rollup(period, today, rule_index.totals(period, as_of))
                    assert got == want, (scope, period, today)
                    seen["archived"] += want.children_archived > 0
                    seen["closed"] += bool(want.closed_by_reason)
                    seen["dropped"] += want.dropped_out > 0
                    seen["paired"] += bool(want.paired_by)
                    seen["aid_children"] += want.aid_children > 0
                    seen["overdue"] += want.overdue_children > 0
                    seen["cases"] += want.rights_cases_open > 0
    assert all(v >= 3 for v in seen.values()), seen


async def test_a_county_range_from_the_index_equals_the_county_figures(store: EventStore, pool: asyncpg.Pool) -> None:
    """The county's comparison from its range indexes (the region's and each township's, split
    from the region's archives and rows) equals `county.county_figures` computed as before."""
    for site, kind in KINDS.items():
        await register_site(pool, site, kind, site)
    await store.append(county(7))
    await Runner(pool, batch_size=200).catch_up()
    rng = random.Random(8)
    townships = ["r.t1", "r.t2"]
    index = await pc.county_index(pool, "r", townships)
    inputs = await rule_queries.rule_inputs(pool, "r")
    seen = 0
    for today in _days(rng)[:2]:
        rule_index = rule_queries.rule_index(inputs, "r", today)
        for period in _periods(rng)[::5]:
            want = await pc.county_figures(pool, "r", period, townships, today)
            assert index.figures(period, today, rule_index) == want, (period, today)
            seen += all(r.children_archived and r.rules for r in (want[0], *want[1].values()))
    assert seen >= 5


async def test_the_index_policy_serves_the_same_figures_directly_and_from_the_index(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """The API's policy (service.api.rollups.IndexPolicy, 2 misses before a build, costs not
    weighed): the same request answered directly at a checkpoint (twice) and then from the index
    built for that checkpoint by the third gives the same figures, for township, site and region
    scopes and for the county's comparison; after the checkpoint moves, requests go direct again
    until the new checkpoint's index is built. With the costs weighed, whichever path a request
    takes, the figures are the same."""
    from service.api import county as api_county
    from service.api import rollups as api_rollups
    from service.api.auth import Caller

    for site, kind in KINDS.items():
        await register_site(pool, site, kind, site)
    events = county(9)
    runner = Runner(pool, batch_size=100)
    caller = Caller(username="u", role="township", site_id=None, township="r.t1", token_id="t")
    policy = api_rollups.IndexPolicy(build_after=2, adaptive=False)
    indexes, inputs = api_rollups.RangeIndexes(), api_rollups.RuleInputsCache()
    county_indexes = api_county.CountyIndexes()
    rng = random.Random(10)
    for part in (events[:len(events) // 2], events[len(events) // 2:]):
        await store.append(part)
        await runner.catch_up()
        checkpoint = (await pc.sites_of_region(pool, "r"))[0]
        today = _days(rng)[0]
        for scope in ("r.t1", "r.t2.s01", "r"):
            period = _periods(rng)[0]
            served = []
            for _ in range(3):
                before = dict(policy.counts)
                served.append(await api_rollups.rollup(pool, caller, scope, period, None, None, None, inputs,
                                                       indexes, policy))
                await policy.settled()
                served_from = "index" if policy.counts["index"] > before["index"] else "direct"
                served[-1] = (served_from, served[-1])
            assert [how for how, _ in served] == ["direct", "direct", "index"], scope
            assert served[0][1] == served[1][1] == served[2][1], (scope, period)
        period = _periods(rng)[1]
        county_served = []
        for _ in range(3):
            before = dict(policy.counts)
            county_served.append(await api_county.figures_of(pool, "r", period, ["r.t1", "r.t2"], checkpoint, today,
                                                             county_indexes, inputs, policy))
            await policy.settled()
            assert (policy.counts["index"] > before["index"]) == (len(county_served) == 3)
        assert county_served[0] == county_served[1] == county_served[2], period
    weighed = api_rollups.IndexPolicy(build_after=1, first_build=1.0)
    period = _periods(rng)[2]
    first = await api_rollups.rollup(pool, caller, "r.t1", period, None, None, None, inputs, api_rollups.RangeIndexes(),
                                     weighed)
    for _ in range(4):
        assert await api_rollups.rollup(pool, caller, "r.t1", period, None, None, None, inputs, indexes,
                                        weighed) == first
    assert weighed.counts["index"] + weighed.counts["direct"] == 5


async def test_the_rules_head_moves_with_each_rule_event(store: EventStore, pool: asyncpg.Pool) -> None:
    """The heads' and the rules' inputs' newest rule event (`events_rules_head()`, migration 0039,
    whose plan PostgreSQL keeps) is the newest rule event's transaction below the horizon: none
    before any, then each rule event's as it is stored, whatever else is stored after it."""
    events = county(7)
    is_rule = (c.FollowUpRuleSet, c.FollowUpRuleRetired, c.SchoolCalendarSet)
    seen: list[int | None] = []
    async with pool.acquire() as conn:
        for lo, hi in ((0, 3), (3, 40), (40, 41), (41, 300), (300, len(events))):
            await store.append(events[lo:hi])
            want = await conn.fetchval(
                "SELECT max(tx_id) FROM events WHERE type IN ('FollowUpRuleSet', 'FollowUpRuleRetired', "
                "'SchoolCalendarSet') AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            heads = await queries.rollup_heads(pool, ["r.t1", "r"])
            key = await rule_queries.inputs_key(conn, "r.t1")
            assert heads["r.t1"].rules == heads["r"].rules == want == key[-1], (want, heads, key)
            assert (want is None) == (not any(isinstance(e.care, is_rule) for e in events[:hi]))
            seen.append(want)
    assert seen[0] is None and len({s for s in seen if s is not None}) >= 2, seen
