"""The rules' figures at the center (projections/rule_queries.py), on real PostgreSQL: the live read
models give the figures counted by hand in tests/test_rules.py, and the same as the pure
evaluation of the events; "as of" a commit time answers with the rules the center held then."""

from __future__ import annotations

import datetime as dt

import asyncpg

from events import catalogue as c
from events.localtime import local_today
from events.rules import DEFAULT_RULES, Counts
from events.types import CallChannel, LetterDirection, PartnerKind
from projections import rule_queries, rules
from projections.followups import parse_period
from projections.runner import Runner
from store.postgres import EventStore
from tests.test_rules import OFFICE, S1, S2, SITES, TOWNSHIP, V1, Town, at, kid, late


async def _sites(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for site, info in SITES.items():
            await conn.execute(
                "INSERT INTO sites (site_id, kind, name, nats_password, registered_at) VALUES ($1, $2, $3, 'x', $4)",
                site, info.kind, "测试站点", dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        # another township's school: never named in gx.xy's figures
        await conn.execute("INSERT INTO sites (site_id, kind, name, nats_password) VALUES ('gx.zz.s01', 'school', "
                           "'别的学校', 'x')")


def _town() -> tuple[Town, str, str]:
    t = Town()
    paired, moved = kid(21), kid(22)
    t.register(S1, paired, at(2026, 1, 10), school=S1)
    t.write(S1, c.PairingStarted(pairing_id="p-" + "b" * 32, child_id=paired, partner_kind=PartnerKind.PROXY_PARENT,
                                 partner_name="云晓"), at(2026, 1, 10))
    for m, d in ((2, 3), (3, 4), (4, 2), (4, 20), (5, 5)):
        t.write(S1, c.HomeVisitMade(child_id=paired, visitor="云晓"), at(2026, m, d))
    t.write(S1, c.ParentCallMade(child_id=paired, parent="父亲", channel=CallChannel.FAMILY_PHONE), at(2026, 2, 5))
    t.write(S1, c.LetterWritten(child_id=paired, direction=LetterDirection.FROM_PARENTS), at(2026, 3, 1))
    t.register(S1, moved, at(2026, 1, 5), school=S1, village=V1, grade=5)
    for m in (1, 3):
        t.write(S1, c.TalkHeld(child_id=moved, teacher="柏安", record_card="好"), at(2026, m, 10))
    t.write(S1, c.ChildTransferred(child_id=moved, to_school_site=S2), at(2026, 4, 15))
    return t, paired, moved


async def test_live_figures_are_the_hand_counted_ones(pool: asyncpg.Pool) -> None:
    """Transfer, proxy-parent rules, call channel and letter direction, from the read models."""
    await _sites(pool)
    t, paired, moved = _town()
    await EventStore(pool).append(t.events)
    await Runner(pool).catch_up()
    june = dt.date(2026, 6, 30)
    registry = {s: rules.SiteInfo(i.kind, dt.date(2025, 1, 1), "测试站点") for s, i in SITES.items()}
    registry["gx.zz.s01"] = rules.SiteInfo("school", local_today(), "别的学校")
    inputs = rules.inputs_from(((d.event, d.care) for d in t.events), registry)
    for scope in (TOWNSHIP, S1, S2, V1, "gx", ""):
        live = await rule_queries.rule_figures_live(pool, scope, "2026", june)
        pure = rules.rule_figures(inputs.book, inputs.archives, inputs.work, registry, scope, parse_period("2026"),
                                  june)
        assert live == pure, scope
    f = {x.rule_id: x for x in await rule_queries.rule_figures_live(pool, TOWNSHIP, "2026", june)}
    # talks: the moved child Mar, Apr at s01 and May, Jun at s02 (March met); the paired pupil
    # (grade 3 at s01, never talked to) Mar-Jun, due by 31 March: 91 days overdue
    assert (f["teacher_talk"].due, f["teacher_talk"].met) == (8, 1)
    assert late(f["teacher_talk"]) == {moved: 30, paired: 91}
    # visits Feb-Jun due, Feb-May met (June none yet: due by 30 June, not overdue on it); calls:
    # the family phone is the child's own, none met, due by 28 February: 122 days overdue
    assert (f["proxy_visit"].due, f["proxy_visit"].met, late(f["proxy_visit"])) == (5, 4, {})
    assert (f["proxy_call"].due, f["proxy_call"].met, late(f["proxy_call"])) == (5, 0, {paired: 122})
    s2 = {x.rule_id: x for x in await rule_queries.rule_figures_live(pool, S2, "2026", june)}
    assert (s2["teacher_talk"].due, late(s2["teacher_talk"])) == (2, {moved: 30})
    assert late(s2["proxy_call"]) == {}  # the paired child is s01's
    everything = await rule_queries.rule_figures_live(pool, "", "2026", june)
    assert {x.township for x in everything} == {"gx.xy", "gx.zz"}
    assert all(not x.overdue for x in everything if x.township == "gx.zz" and x.target == "child")


async def test_a_rule_set_at_the_center_counts_from_its_day_and_as_of_before_it_the_old_one(pool: asyncpg.Pool
                                                                                           ) -> None:
    """The township office sets two visits a month from 1 April: April on follows it; asked as of
    a commit time before the rule was stored, the figures are the old rule's."""
    await _sites(pool)
    t, paired, _ = _town()
    store = EventStore(pool)
    await store.append(t.events)
    await Runner(pool).catch_up()
    june = dt.date(2026, 6, 15)
    async with pool.acquire() as conn:
        before_rule = await conn.fetchval("SELECT max(committed_at) FROM events")
    old = DEFAULT_RULES[0]
    rule = c.FollowUpRuleSet(township=TOWNSHIP, effective_from=dt.date(2026, 4, 1), rule=rules.FollowUpRule(
        rule_id=old.rule_id, zh="代管家长每月家访两次", en="proxy parent: two home visits a month",
        applies=old.applies, counts=Counts(event_types=["HomeVisitMade"], at_least=2)))
    t.events.clear()
    t.write(OFFICE, rule, at(2026, 3, 20))
    await store.append(t.events)
    now = {x.rule_id: x for x in await rule_queries.rule_figures_live(pool, S1, "2026", june)}
    assert (now["proxy_visit"].due, now["proxy_visit"].met, now["proxy_visit"].at_least) == (4, 3, 2)
    assert late(now["proxy_visit"]) == {paired: 15}
    then = {x.rule_id: x for x in await rule_queries.rule_figures_asof(pool, S1, "2026", june,
                                                                      committed_at=before_rule)}
    assert (then["proxy_visit"].due, then["proxy_visit"].met, then["proxy_visit"].at_least) == (4, 4, 1)
    assert then["proxy_visit"].zh == old.zh


async def test_a_corrected_rule_counts_as_corrected(pool: asyncpg.Pool) -> None:
    """The office set two visits a month by mistake and corrected it to one from 1 May; then
    retracted the correction's target altogether: the figures follow each time."""
    await _sites(pool)
    t, _, _ = _town()
    store = EventStore(pool)
    old = DEFAULT_RULES[0]
    two = rules.FollowUpRule(rule_id=old.rule_id, zh="代管家长每月家访两次", en="proxy parent: two home visits a month",
                             applies=old.applies, counts=Counts(event_types=["HomeVisitMade"], at_least=2))
    t.write(OFFICE, c.FollowUpRuleSet(township=TOWNSHIP, effective_from=dt.date(2026, 4, 1), rule=two), at(2026, 3, 20))
    await store.append(t.events)
    await Runner(pool).catch_up()
    june = dt.date(2026, 6, 15)
    f = {x.rule_id: x for x in await rule_queries.rule_figures_live(pool, S1, "2026", june)}["proxy_visit"]
    assert (f.due, f.met, f.at_least) == (4, 3, 2)
    set_event = t.events[-1].event.event_id
    t.events.clear()
    t.write(OFFICE, c.EventCorrected(corrected_event_id=set_event, reason="填错了", replacement=c.FollowUpRuleSet(
        township=TOWNSHIP, effective_from=dt.date(2026, 5, 1), rule=two)), at(2026, 3, 21))
    await store.append(t.events)
    f = {x.rule_id: x for x in await rule_queries.rule_figures_live(pool, S1, "2026", june)}["proxy_visit"]
    assert (f.due, f.met, f.effective_from) == (4, 3, dt.date(2026, 5, 1))  # April met under the old rule now
    t.events.clear()
    t.write(OFFICE, c.EventCorrected(corrected_event_id=set_event, reason="不该设"), at(2026, 3, 22))
    await store.append(t.events)
    f = {x.rule_id: x for x in await rule_queries.rule_figures_live(pool, S1, "2026", june)}["proxy_visit"]
    assert (f.due, f.met, f.at_least, f.effective_from) == (4, 4, 1, None)
