"""Follow-up rules as data (events/rules.py, projections/rules.py), each figure counted by hand
beside its expected value.

Township gx.xy (made up): village v01, schools s01 and s02, the township office. Calendar: the
national pattern (autumn term 1 September - 20 January, spring term 20 February - 10 July), so
the school months are January, March-June, September-December.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from events import catalogue as c
from events.envelope import DecodedEvent
from events.rules import DEFAULT_RULES, Applies, Counts, FollowUpRule, SchoolCalendar, Target, Term
from events.types import (
    ActivityKind,
    CallChannel,
    ClosingReason,
    GuardianshipType,
    LetterDirection,
    MeetingKind,
    Occasion,
    PartnerKind,
    Reason,
    Sex,
    SiteKind,
)
from events.validation import semantic_problems
from projections import rules
from projections.followups import parse_period
from tests.factory import SiteWriter

V1, S1, S2, OFFICE, TOWNSHIP = "gx.xy.v01", "gx.xy.s01", "gx.xy.s02", "gx.xy.office", "gx.xy"
SITES = {V1: rules.SiteInfo("village"), S1: rules.SiteInfo("school"), S2: rules.SiteInfo("school"),
         OFFICE: rules.SiteInfo("township")}


def kid(n: int) -> str:
    return f"c-{n:032x}"


def at(y: int, m: int, d: int) -> dt.datetime:
    return dt.datetime(y, m, d, 2, 0, tzinfo=dt.UTC)  # 10:00 in China


class Town:
    """The township's sites writing events; `figures` evaluates the rules over all of them."""

    def __init__(self) -> None:
        self.w = {s: SiteWriter(s) for s in SITES}
        self.events: list[DecodedEvent] = []

    def write(self, site: str, care: c.CareEventBase, when: dt.datetime) -> None:
        self.events.append(self.w[site].write(care, when))

    def register(self, site: str, child: str, when: dt.datetime, *, grade: int = 3, school: str | None = None,
                 village: str | None = None, reasons: tuple[Reason, ...] = (Reason.BOTH_PARENTS_AWAY,)) -> None:
        self.write(site, c.ChildRegistered(
            child_id=child, name="石小雨", sex=Sex.FEMALE, birth_date=dt.date(2017, 5, 1), household_village="青石村",
            reasons=list(reasons), guardian=c.Guardian(type=GuardianshipType.GRANDPARENTS), grade=grade,
            school_site=school, village_site=village), when)

    def figures(self, scope: str, period: str, as_of: dt.date) -> dict[str, rules.RuleFigures]:
        inputs = rules.inputs_from(((d.event, d.care) for d in self.events), SITES)
        out = rules.rule_figures(inputs.book, inputs.archives, inputs.work, SITES, scope, parse_period(period), as_of)
        return {f.rule_id: f for f in out}


def late(f: rules.RuleFigures) -> dict[str, int]:
    return {o.subject: o.days_overdue for o in f.overdue}


def test_the_three_ones_apply_only_to_children_with_a_proxy_parent() -> None:
    """A visit, a call with the parents and a letter to the parents count for a child paired with
    a proxy parent; a child without one is held to none of them."""
    t = Town()
    k1, k2 = kid(1), kid(2)
    t.register(S1, k1, at(2026, 1, 10), school=S1)
    t.register(S1, k2, at(2026, 1, 12), school=S1)
    t.write(S1, c.PairingStarted(pairing_id="p-" + "1" * 32, child_id=k1, partner_kind=PartnerKind.PROXY_PARENT,
                                 partner_name="云晓"), at(2026, 1, 20))
    t.write(S1, c.PairingStarted(pairing_id="p-" + "2" * 32, child_id=k2, partner_kind=PartnerKind.TEACHER,
                                 partner_name="柏安"), at(2026, 1, 20))
    for m, d in ((2, 3), (3, 4)):
        t.write(S1, c.HomeVisitMade(child_id=k1, visitor="云晓"), at(2026, m, d))
    t.write(S1, c.HomeVisitMade(child_id=k2, visitor="柏安"), at(2026, 2, 5))
    # the child's own family-phone call does not count; a call the proxy parent makes does
    t.write(S1, c.ParentCallMade(child_id=k1, parent="母亲", channel=CallChannel.FAMILY_PHONE), at(2026, 2, 5))
    t.write(S1, c.ParentCallMade(child_id=k1, parent="母亲", channel=CallChannel.PHONE), at(2026, 3, 5))
    # a letter from the parents is not a letter to them
    t.write(S1, c.LetterWritten(child_id=k1, direction=LetterDirection.FROM_PARENTS), at(2026, 3, 1))

    f = t.figures(S1, "2026", dt.date(2026, 5, 15))
    # visits: Feb, Mar, Apr due (paired 20 Jan: January not due; May not ended); Feb and Mar met
    assert (f["proxy_visit"].applies_to, f["proxy_visit"].due, f["proxy_visit"].met) == (1, 3, 2)
    # last visit 4 Mar: due by 30 Apr, 15 days overdue on 15 May
    assert late(f["proxy_visit"]) == {k1: 15}
    # calls: Feb, Mar, Apr due; only March's phone call counts
    assert (f["proxy_call"].due, f["proxy_call"].met) == (3, 1)
    assert late(f["proxy_call"]) == {k1: 15}
    # the letter: 2026-S1 not ended on 15 May; clock from the pairing (2025-S2), due by 31 July
    assert (f["proxy_letter"].due, f["proxy_letter"].met, late(f["proxy_letter"])) == (0, 0, {})
    f = t.figures(S1, "2026", dt.date(2026, 9, 15))
    # 2026-S1 due and not met (a letter from the parents only): 46 days overdue on 15 September
    assert (f["proxy_letter"].due, f["proxy_letter"].met, late(f["proxy_letter"])) == (1, 0, {k1: 46})
    t.write(S1, c.LetterWritten(child_id=k1, direction=LetterDirection.TO_PARENTS), at(2026, 6, 1))
    f = t.figures(S1, "2026", dt.date(2026, 9, 15))
    assert (f["proxy_letter"].due, f["proxy_letter"].met, late(f["proxy_letter"])) == (1, 1, {})


def test_the_monthly_talk_skips_children_not_in_school_and_the_holidays() -> None:
    """Grade 0 is not held to the class teacher's talk; a talk in July is due again by the end of
    September (August is the summer break), a talk in January by the end of March."""
    t = Town()
    pre, pupil = kid(3), kid(4)
    t.register(S1, pre, at(2026, 2, 15), school=S1, grade=0)
    t.register(S1, pupil, at(2026, 2, 15), school=S1, grade=3)
    for m in (3, 4, 5, 6, 7, 9, 10, 12):  # none in November; July's is in the holidays
        t.write(S1, c.TalkHeld(child_id=pupil, teacher="柏安", record_card="情绪稳定"), at(2026, m, 5))
    f = t.figures(S1, "2026", dt.date(2026, 12, 31))["teacher_talk"]
    # the preschooler is not counted at all; the pupil: school months Mar-Jun, Sep-Dec due (8),
    # all met but November (7)
    assert (f.applies_to, f.due, f.met) == (1, 8, 7)
    assert late(f) == {}
    # on 1 September, with the July talk last: not overdue (due by 30 September)
    assert late(t.figures(S1, "2026", dt.date(2026, 9, 1))["teacher_talk"]) == {}
    t2 = Town()
    t2.register(S1, pupil, at(2025, 9, 15), school=S1, grade=3)
    t2.write(S1, c.TalkHeld(child_id=pupil, teacher="柏安", record_card="想念父母"), at(2026, 7, 5))
    assert late(t2.figures(S1, "2026", dt.date(2026, 10, 1))["teacher_talk"]) == {pupil: 1}
    t2.write(S1, c.TalkHeld(child_id=pupil, teacher="柏安", record_card="想念父母"), at(2027, 1, 8))
    assert late(t2.figures(S1, "2027", dt.date(2027, 3, 1))["teacher_talk"]) == {}  # February is the winter break
    assert late(t2.figures(S1, "2027", dt.date(2027, 4, 3))["teacher_talk"]) == {pupil: 3}


def test_a_township_calendar_moves_the_holidays() -> None:
    """With a spring term from 2 February, February is a school month and falls due."""
    t = Town()
    pupil = kid(5)
    t.register(S1, pupil, at(2025, 9, 15), school=S1, grade=2)
    t.write(S1, c.TalkHeld(child_id=pupil, teacher="柏安", record_card="好"), at(2026, 1, 8))
    assert late(t.figures(S1, "2026", dt.date(2026, 3, 1))["teacher_talk"]) == {}
    t.write(OFFICE, c.SchoolCalendarSet(township=TOWNSHIP, calendar=SchoolCalendar(school_year=2025, terms=[
        Term(dt.date(2025, 9, 1), dt.date(2026, 1, 16)), Term(dt.date(2026, 2, 2), dt.date(2026, 7, 3))])),
        at(2025, 8, 20))
    assert late(t.figures(S1, "2026", dt.date(2026, 3, 1))["teacher_talk"]) == {pupil: 1}


def test_a_reopened_archive_starts_its_clock_at_the_reopening() -> None:
    """Registered in March 2025, closed in April, reopened on 10 May 2026: not overdue the next
    day (not 406 days); the first school month due is June."""
    t = Town()
    k = kid(6)
    t.register(S1, k, at(2025, 3, 3), school=S1, grade=4)
    t.write(S1, c.ArchiveClosed(child_id=k, reason=ClosingReason.PARENTS_RETURNED), at(2025, 4, 1))
    t.write(S1, c.ArchiveReopened(child_id=k, reason="父母再次外出"), at(2026, 5, 10))
    f = t.figures(S1, "2026", dt.date(2026, 5, 11))["teacher_talk"]
    assert (f.applies_to, f.due, late(f)) == (1, 0, {})
    f = t.figures(S1, "2026", dt.date(2026, 7, 1))["teacher_talk"]
    # school months of 2026 ended by 1 July: Jan, Mar-Jun; open on the first day: June only
    assert (f.due, f.met, late(f)) == (1, 0, {k: 1})


def test_a_transfer_starts_the_new_sites_clock_and_leaves_the_old_sites_arrears() -> None:
    """Registered at s01 on 5 January, talked to on 10 January and 10 March, moved to s02 on
    15 April: s01 keeps March (met) and April (not met); s02 is due May and June, overdue from
    31 May (not from 30 April)."""
    t = Town()
    k = kid(7)
    t.register(S1, k, at(2026, 1, 5), school=S1, village=V1, grade=5)
    for m in (1, 3):
        t.write(S1, c.TalkHeld(child_id=k, teacher="柏安", record_card="好"), at(2026, m, 10))
    t.write(S1, c.ChildTransferred(child_id=k, to_school_site=S2), at(2026, 4, 15))
    june = dt.date(2026, 6, 30)
    old, new, town = (t.figures(s, "2026", june)["teacher_talk"] for s in (S1, S2, TOWNSHIP))
    assert (old.applies_to, old.due, old.met, late(old)) == (0, 2, 1, {})
    assert (new.applies_to, new.due, new.met, late(new)) == (1, 2, 0, {k: 30})
    assert (town.due, town.met, late(town)) == (4, 1, {k: 30})
    assert town.overdue[0].sites == [S2]
    # the village station holds the child too, but the talk is a school's rule
    assert t.figures(V1, "2026", june)["teacher_talk"].due == 0


def test_site_obligations() -> None:
    """A meeting a semester, lectures, the children's home twice a week and the visit to poor
    children every half year, per site of the kinds held to them."""
    t = Town()
    poor, other = kid(8), kid(9)
    t.register(V1, poor, at(2026, 1, 5), village=V1, reasons=(Reason.POVERTY,))
    t.register(V1, other, at(2026, 1, 5), village=V1)
    t.write(S1, c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="家校座谈"), at(2026, 3, 3))
    t.write(S1, c.ActivityHeld(activity_id="a-" + "1" * 32, kind=ActivityKind.LEGAL_LECTURE, title="法制讲座"),
            at(2026, 4, 1))
    t.write(S2, c.ActivityHeld(activity_id="a-" + "2" * 32, kind=ActivityKind.PERFORMANCE, title="六一演出"),
            at(2026, 6, 1))
    for i, d in enumerate((3, 5, 10)):  # week of 2 March twice, week of 9 March once
        t.write(S1, c.ActivityHeld(activity_id=f"a-{i + 3:032x}", kind=ActivityKind.CHILDRENS_HOME, title="读书会"),
                at(2026, 3, d))
    t.write(OFFICE, c.CondolenceVisitMade(child_ids_list=[other], occasion=Occasion.SPRING_FESTIVAL), at(2026, 2, 10))
    f = t.figures(TOWNSHIP, "2026", dt.date(2026, 8, 15))
    # 2026-S1 (ended 31 July): s01 met, s02 not; s02 overdue since 31 July
    assert (f["guardian_meeting"].applies_to, f["guardian_meeting"].due, f["guardian_meeting"].met) == (2, 2, 1)
    assert late(f["guardian_meeting"]) == {S2: 15}
    # a performance is no lecture
    assert (f["safety_lecture"].due, f["safety_lecture"].met, late(f["safety_lecture"])) == (2, 1, {S2: 15})
    # the condolence visit covered no poor child: the office's first half year is not met
    assert (f["poor_children_visit"].applies_to, f["poor_children_visit"].due,
            f["poor_children_visit"].met) == (1, 1, 0)
    assert late(f["poor_children_visit"]) == {OFFICE: 46}  # due by 30 June
    f = t.figures(TOWNSHIP, "2026-03", dt.date(2026, 3, 31))["childrens_home"]
    # weeks starting in March and ended by the 31st: 2, 9, 16, 23 March, for two schools; one met
    assert (f.applies_to, f.due, f.met) == (2, 8, 1)
    # s01: met the week of 2 March, so due again by 15 March; s02 never: by 8 March
    assert late(f) == {S1: 16, S2: 23}
    t.write(OFFICE, c.CondolenceVisitMade(child_ids_list=[poor, other], occasion=Occasion.CHILDRENS_DAY),
            at(2026, 6, 1))
    f = t.figures(TOWNSHIP, "2026", dt.date(2026, 8, 15))["poor_children_visit"]
    assert (f.due, f.met, late(f)) == (1, 1, {})
    # the hand-over: s01 hands a pupil over to s02 on 2 July, in school year 2025-SY (August 2025 -
    # July 2026); s02 handed nobody over (due by 31 July: judged on the year's last day, not overdue yet)
    pupil = kid(11)
    t.register(S1, pupil, at(2025, 9, 1), school=S1, grade=6)
    t.write(S1, c.ChildTransferred(child_id=pupil, to_school_site=S2), at(2026, 7, 2))
    f = t.figures(TOWNSHIP, "2025-SY", dt.date(2026, 8, 15))["year_end_handover"]
    assert (f.applies_to, f.due, f.met, late(f), f.on) == (2, 2, 1, {}, dt.date(2026, 7, 31))
    # a site sees its own obligations only
    assert late(t.figures(S1, "2026", dt.date(2026, 8, 15))["guardian_meeting"]) == {}
    assert "poor_children_visit" in t.figures(S1, "2026", dt.date(2026, 8, 15))
    assert t.figures(S1, "2026", dt.date(2026, 8, 15))["poor_children_visit"].applies_to == 0


def test_a_rule_changed_mid_year_counts_from_that_day_only() -> None:
    """From 1 April two visits a month: February and March are judged by the old rule, April on
    by the new; "as of" 31 March answers with the old rule."""
    t = Town()
    k = kid(10)
    t.register(S1, k, at(2026, 1, 10), school=S1)
    t.write(S1, c.PairingStarted(pairing_id="p-" + "a" * 32, child_id=k, partner_kind=PartnerKind.PROXY_PARENT,
                                 partner_name="云晓"), at(2026, 1, 10))
    for m, d in ((2, 3), (3, 4), (4, 2), (4, 20), (5, 5)):
        t.write(S1, c.HomeVisitMade(child_id=k, visitor="云晓"), at(2026, m, d))
    before = t.figures(S1, "2026", dt.date(2026, 6, 15))["proxy_visit"]
    assert (before.due, before.met, before.at_least, late(before)) == (4, 4, 1, {})
    old = DEFAULT_RULES[0]
    new = c.FollowUpRuleSet(township=TOWNSHIP, effective_from=dt.date(2026, 4, 1), rule=old.__class__(
        rule_id=old.rule_id, zh="代管家长每月家访两次", en="proxy parent: two home visits a month",
        applies=old.applies, counts=Counts(event_types=["HomeVisitMade"], at_least=2)))
    t.write(OFFICE, new, at(2026, 3, 20))
    after = t.figures(S1, "2026", dt.date(2026, 6, 15))["proxy_visit"]
    # Feb, Mar (one visit each, old rule: met), Apr (two: met), May (one: not met)
    assert (after.due, after.met, after.at_least, after.zh) == (4, 3, 2, "代管家长每月家访两次")
    assert after.effective_from == dt.date(2026, 4, 1)
    # last month with two visits: April, so due again by 31 May: 15 days overdue on 15 June
    assert late(after) == {k: 15}
    then = t.figures(S1, "2026", dt.date(2026, 3, 31))["proxy_visit"]
    assert (then.due, then.met, then.at_least, then.zh, then.effective_from) == (2, 2, 1, old.zh, None)
    t.write(OFFICE, c.FollowUpRuleRetired(township=TOWNSHIP, rule_id="proxy_visit", effective_from=dt.date(2026, 5, 1)),
            at(2026, 4, 25))
    assert "proxy_visit" not in t.figures(S1, "2026-06", dt.date(2026, 6, 30))
    # the year still shows it (in force during it), its periods up to the retirement, nobody overdue
    kept = t.figures(S1, "2026", dt.date(2026, 6, 15))["proxy_visit"]
    assert (kept.due, kept.met, kept.overdue) == (3, 3, [])


def test_bad_rules_are_refused_naming_the_field_and_value() -> None:
    """A rule that counts an unknown type or filters on a value the field never takes is refused."""
    bad = c.FollowUpRuleSet(township=TOWNSHIP, effective_from=dt.date(2026, 4, 1), rule=DEFAULT_RULES[0].__class__(
        rule_id="x", zh="坏规则", en="bad", applies=DEFAULT_RULES[0].applies,
        counts=Counts(event_types=["HomeVisitMade", "Nope"], where={"channel": ["pigeon"]})))
    problems = [str(p) for p in semantic_problems(bad, occurred_at=None, now=at(2026, 4, 1))]
    assert any("'Nope'" in p and "rule" in p for p in problems), problems
    assert any("field 'channel'" in p for p in problems), problems
    cal = c.SchoolCalendarSet(township=TOWNSHIP, calendar=SchoolCalendar(school_year=2026, terms=[
        Term(dt.date(2026, 9, 1), dt.date(2026, 8, 1))]))
    problems = [str(p) for p in semantic_problems(cal, occurred_at=None, now=at(2026, 4, 1))]
    assert any("calendar" in p and "2026-08-01" in p for p in problems), problems


@pytest.mark.parametrize("rule", DEFAULT_RULES, ids=lambda r: r.rule_id)
def test_the_default_rules_are_valid(rule: object) -> None:
    """Every default rule passes the checks a township's own rule must pass."""
    from events.rules import rule_problems
    assert rule_problems(rule) == []  # type: ignore[arg-type]


def test_facts_carry_what_the_rules_filter_on() -> None:
    """The center's facts give a call's channel and a letter's direction, so a rule counts from
    them what it counts from the events (the child's 亲情电话 call and a letter from the parents apart)."""
    from projections.facts import fact_of

    when = at(2026, 3, 5)
    for care, detail in ((c.ParentCallMade(child_id=kid(1), parent="母亲", channel=CallChannel.FAMILY_PHONE),
                          "family_phone"),
                         (c.LetterWritten(child_id=kid(1), direction=LetterDirection.FROM_PARENTS), "from_parents"),
                         (c.ActivityHeld(activity_id="a-" + "9" * 32, kind=ActivityKind.CHILDRENS_HOME, title="读书会"),
                          "childrens_home")):
        fact = fact_of(care, "e1", S1, when)
        assert fact is not None
        w = rules.work_of_fact(fact)
        assert w is not None and w == rules.work_of(care, "e1", S1, when)
        assert w.detail == detail


def test_a_township_names_the_site_of_its_childrens_home() -> None:
    """Set with `sites`, the children's home rule holds s01 only (where the home is), not every school."""
    t = Town()
    home = DEFAULT_RULES[7]
    assert home.rule_id == "childrens_home"
    t.write(OFFICE, c.FollowUpRuleSet(township=TOWNSHIP, effective_from=dt.date(2026, 3, 1), rule=FollowUpRule(
        rule_id=home.rule_id, zh=home.zh, en=home.en, applies=Applies(target=Target.SITE, sites=[S1]),
        counts=home.counts)), at(2026, 2, 20))
    for i, d in enumerate((3, 5)):
        t.write(S1, c.ActivityHeld(activity_id=f"a-{i + 20:032x}", kind=ActivityKind.CHILDRENS_HOME, title="读书会"),
                at(2026, 3, d))
    f = t.figures(TOWNSHIP, "2026-03", dt.date(2026, 3, 31))["childrens_home"]
    # weeks of 2, 9, 16 and 23 March at s01 only; the first met; due again by 15 March
    assert (f.applies_to, f.due, f.met, late(f), f.applies_zh) == (1, 4, 1, {S1: 16}, "指定站点：" + S1)


def test_whom_a_rule_applies_to_is_said_in_the_catalogues_words() -> None:
    """A rule naming every partner, reason and site kind says each in the words of events/labels.py (the figures,
    exports and station forms), in Chinese and English: 代理家长, not a word of its own."""
    from events.labels import ENUM_LABELS

    every = Applies(pairing_kinds=list(PartnerKind), reasons=list(Reason), site_kinds=list(SiteKind))
    rule = FollowUpRule(rule_id="every", zh="每月家访", en="a visit a month", applies=every,
                        counts=DEFAULT_RULES[0].counts)
    zh, en = rules.applies_text(rule)
    for kind, values in (("partner", PartnerKind), ("reason", Reason), ("site_kind", SiteKind)):
        for v in values:
            label_zh, label_en = ENUM_LABELS[kind][str(v)]
            assert label_zh in zh and label_en in en, (kind, v, zh, en)
    assert "代理家长" in zh and "父母一方外出" in zh
    assert "代管家长" not in zh and "单亲外出" not in zh
    site_rule = next(r for r in DEFAULT_RULES if r.applies.target is Target.SITE)
    zh, en = rules.applies_text(msgspec.structs.replace(
        site_rule, applies=msgspec.structs.replace(site_rule.applies, site_kinds=list(SiteKind))))
    assert zh == "、".join(ENUM_LABELS["site_kind"][str(k)][0] for k in SiteKind), zh
    # sites it names: by their registered names, an unregistered one by its id
    named = msgspec.structs.replace(site_rule, applies=msgspec.structs.replace(site_rule.applies, sites=[S1, S2]))
    assert rules.applies_text(named, {S1: rules.SiteInfo("school", name="青石小学")}) == (
        f"指定站点：青石小学、{S2}", f"sites 青石小学, {S2}")
