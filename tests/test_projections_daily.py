"""The daily per-site aggregates (`proj.daily`, projections/daily.py): a rollup of any date range
read from them equals the rollup computed from the facts one by one, and the runner's rows equal
a rebuild's, byte for byte, after work arrived in any order with corrections and merges."""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import msgspec

from events import catalogue as c
from events.envelope import DecodedEvent
from events.localtime import local_day
from events.samples import sample_registration, samples
from projections import queries, rule_queries, tables
from projections.followups import Period
from projections.rollups import compute
from projections.runner import Runner
from service.sites import register_site
from store.postgres import EventStore
from tests.factory import SiteWriter
from tests.test_projections_runner import deliver, dump, shadow_rebuild

T0 = dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.UTC)
SITES = ("r.t1.v01", "r.t1.s01", "r.t2.v01", "r.t2.s01")
KIDS = [f"c-{i:032x}" for i in range(1, 9)]
SCOPES = ("r.t1", "r.t2", "r.t1.v01", "r.t2.s01", "r", "")
COUNTED = ("HomeVisitMade", "ParentCallMade", "LetterWritten", "TalkHeld", "TutoringGiven", "CounsellingGiven",
           "GuardianTrained", "MeetingHeld", "AidGiven", "CondolenceVisitMade", "ActivityHeld",
           "SafetyIncidentReported", "RightsCaseOpened", "RightsCaseClosed", "PairingStarted", "PairingEnded")


def _when(rng: random.Random) -> dt.datetime:
    """A time in 60 days, often within an hour of a reporting day's edge (16:00 UTC)."""
    day = T0 + dt.timedelta(days=rng.randrange(60))
    if rng.random() < 0.4:
        return day + dt.timedelta(hours=16, minutes=rng.randint(-45, 45))
    return day + dt.timedelta(minutes=rng.randrange(24 * 60))


def world(seed: int, n: int) -> list[DecodedEvent]:
    """Children of two townships and n pieces of counted work of every kind, corrections that
    retract work or move it to another day, and merges."""
    rng = random.Random(seed)
    writers = {s: SiteWriter(s) for s in SITES}
    home = {k: SITES[2 * (i % 2)] for i, k in enumerate(KIDS)}
    out = [writers[home[k]].write(sample_registration(rng, k, village_site=home[k]), T0) for k in KIDS]
    for _ in range(n):
        kid = rng.choice(KIDS)
        site = rng.choice(SITES)
        r = rng.random()
        if r < 0.08 and len(out) > len(KIDS):
            target = rng.choice(out[len(KIDS):])
            repl = samples(rng, kid)["HomeVisitMade"] if rng.random() < 0.5 else None
            care: c.CareEventBase = c.EventCorrected(
                corrected_event_id=target.event.event_id, reason="填错", child_ids_list=list(target.event.children),
                replacement=repl, replacement_occurred_at=_when(rng) if repl is not None else None)
            site = target.event.site_id
        elif r < 0.1:
            other = rng.choice([k for k in KIDS if k != kid])
            care = c.ArchivesMerged(kept_child_id=kid, merged_child_id=other)
        else:
            care = samples(rng, kid)[rng.choice(COUNTED)]
            if hasattr(care, "child_ids_list"):
                care = msgspec.structs.replace(care, child_ids_list=sorted(set(rng.sample(KIDS, rng.randint(1, 4)))))
        out.append(writers[site].write(care, _when(rng)))
    return out


async def _same_figures(pool: asyncpg.Pool, rng: random.Random, today: dt.date) -> dict[str, int]:
    """Random ranges of random scopes: the live rollup (daily rows) equals the one computed from
    facts. Returns how many ranges had work of a few kinds (so the comparison is not vacuous)."""
    seen = {"aid_children": 0, "activity_children": 0, "by_source": 0, "by_detail": 0, "visits": 0, "moved": 0}
    for i in range(40):
        start = (T0 + dt.timedelta(days=rng.randrange(-2, 60))).date()
        end = start + dt.timedelta(days=1 if i % 5 == 0 else rng.randint(1, 40))
        scope = rng.choice(SCOPES)
        period = Period(f"{start}..{end}", start, end)
        live = await queries.rollup_figures(pool, scope, period, today)
        archives, facts = await queries.rollup_inputs(pool, scope, period)
        rules = await rule_queries.rule_figures_live(pool, scope, period, min(period.last_day, today))
        assert live == compute(scope, period, archives, facts, rules=rules, today=today), (scope, start, end)
        seen["aid_children"] += live.aid_children > 0
        seen["activity_children"] += live.activity_children > 0
        seen["by_source"] += bool(live.aid_by_source)
        seen["by_detail"] += len(live.activities_by_kind) + len(live.incidents_by_severity) > 0
        seen["visits"] += live.home_visits > 0
        seen["moved"] += any(local_day(f.occurred_at) != f.occurred_at.date() for f in facts)
    return seen


async def test_any_range_from_daily_rows_equals_the_rollup_from_facts(store: EventStore, pool: asyncpg.Pool) -> None:
    for site in SITES:
        await register_site(pool, site, "village" if ".v" in site else "school", site)
    events = world(3, 400)
    runner = Runner(pool, batch_size=7)
    await deliver(store, events, random.Random(3), runner)
    await runner.catch_up()
    async with pool.acquire() as conn:
        assert await conn.fetchval(f"SELECT count(*) FROM {tables.SCHEMA}.daily") > 50
        merged = await conn.fetchval(f"SELECT count(*) FROM {tables.SCHEMA}.archive WHERE root_id <> child_id")
    assert merged, "the world merges archives (a child counted once as the archive it joined)"
    seen = await _same_figures(pool, random.Random(4), today=dt.date(2026, 6, 1))
    assert all(v >= 3 for v in seen.values()), seen
    # the runner's rows are the rebuild's
    await shadow_rebuild(pool)
    live, rebuilt = await dump(pool, tables.SCHEMA), await dump(pool, tables.SHADOW)
    assert live["daily"] == rebuilt["daily"]
    assert live == rebuilt


async def test_daily_rows_follow_corrections_that_move_or_retract_work(store: EventStore, pool: asyncpg.Pool) -> None:
    """A visit counted on one day moves to another when a correction replaces its time, and
    leaves the sums when retracted; the day it left is rewritten too (no stale row remains)."""
    site = SiteWriter("r.t1.v01")
    kid = KIDS[0]
    rng = random.Random(1)
    reg = site.write(sample_registration(rng, kid, village_site="r.t1.v01"), T0)
    visit = site.write(c.HomeVisitMade(child_id=kid, visitor="石晓"), dt.datetime(2026, 3, 3, 15, 30, tzinfo=dt.UTC))
    aid = site.write(c.AidGiven(child_id=kid, amount_fen=700, source=c.AidSource.CHARITY),
                     dt.datetime(2026, 3, 3, 16, 30, tzinfo=dt.UTC))
    await store.append([reg, visit, aid])
    runner = Runner(pool)
    await runner.catch_up()

    async def rows() -> list[tuple[object, ...]]:
        async with pool.acquire() as conn:
            return [tuple(r) for r in await conn.fetch(
                f"SELECT day, kind, facts, amount_fen, children FROM {tables.SCHEMA}.daily ORDER BY day, kind")]

    assert await rows() == [(dt.date(2026, 3, 3), "visit", 1, 0, []), (dt.date(2026, 3, 4), "aid", 1, 700, [kid])]
    moved = site.write(c.EventCorrected(corrected_event_id=visit.event.event_id, reason="日期填错",
                                        child_ids_list=[kid], replacement=c.HomeVisitMade(child_id=kid, visitor="石晓"),
                                        replacement_occurred_at=dt.datetime(2026, 3, 9, 1, 0, tzinfo=dt.UTC)))
    await store.append([moved])
    await runner.catch_up()
    assert await rows() == [(dt.date(2026, 3, 4), "aid", 1, 700, [kid]), (dt.date(2026, 3, 9), "visit", 1, 0, [])]
    gone = site.write(c.EventCorrected(corrected_event_id=aid.event.event_id, reason="重复", child_ids_list=[kid]))
    await store.append([gone])
    await runner.catch_up()
    assert await rows() == [(dt.date(2026, 3, 9), "visit", 1, 0, [])]
    await _same_figures(pool, random.Random(2), today=dt.date(2026, 6, 1))
