"""Follow-up rules as data: what a township holds its sites and children to, and its school calendar.

A township office sets its rules (`FollowUpRule`) and its school calendar (`SchoolCalendar`) with
events (`events.catalogue.FollowUpRuleSet`, `FollowUpRuleRetired`, `SchoolCalendarSet`), so that
each rule has a history, reaches the township's stations, and "as of" a past day answers with the
rules then in force. A township that never set a rule is held to `DEFAULT_RULES`, the rules the
year-end summaries of docs/DOMAIN.md write down; one that never set a calendar uses
`national_calendar` (the national pattern of two terms a year).

A rule says:
- whom it applies to (`Applies`): archived children, narrowed by an active pairing of some
  kinds, a grade band, a reason for being on the register, the kinds of site that hold them;
  or sites (`target = "site"`: the site obligations), of some kinds or named ones;
- what counts (`Counts`): event types, an optional filter on the one field of each type a rule
  may filter on (`FILTER_FIELDS`: a letter's direction, a call's channel, an activity's or a
  meeting's kind), optionally only work that covers a child with one of some reasons;
- how many per period (`at_least`) and the period (`PeriodKind`): a week (Monday to Sunday), a
  calendar month, a school month (a month at least half in term: the summer and winter breaks
  are not due), a semester (February-July, August-January), a half year (January-June,
  July-December) or a school year (August-July).

Nothing here imports anything of the project but the types: the catalogue carries these Structs
in its payloads, the projections evaluate them (projections/rules.py).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated

import msgspec

from events.types import ActivityKind, CallChannel, LetterDirection, MeetingKind, PartnerKind, Reason, SiteId, SiteKind

RuleId = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$",
                                     description="A rule's id within its township: lower-case letters, digits, _.")]
TownshipId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}$",
                                         description="A township: 'region.township', e.g. 'gx-lp.xy'.")]
RuleName = Annotated[str, msgspec.Meta(min_length=1, max_length=60)]


class PeriodKind(enum.StrEnum):
    WEEK = "week"
    MONTH = "month"
    SCHOOL_MONTH = "school_month"  # a calendar month at least half in term (the calendar's)
    SEMESTER = "semester"  # February-July ("YYYY-S1"), August-January ("YYYY-S2")
    HALF_YEAR = "half_year"  # January-June ("YYYY-H1"), July-December ("YYYY-H2")
    SCHOOL_YEAR = "school_year"  # August-July ("YYYY-SY", named by the year it starts in)


class Target(enum.StrEnum):
    CHILD = "child"  # each archived child the rule applies to
    SITE = "site"  # each site the rule applies to (a site obligation)


# Event types a rule may count, and the one payload field of each a rule may filter on (None: no
# filter), with the values the field takes and its value when the payload omits it.
COUNTABLE: dict[str, tuple[str | None, tuple[str, ...], str | None]] = {
    "HomeVisitMade": (None, (), None),
    "ParentCallMade": ("channel", tuple(CallChannel), str(CallChannel.PHONE)),
    "LetterWritten": ("direction", tuple(LetterDirection), str(LetterDirection.TO_PARENTS)),
    "TalkHeld": (None, (), None),
    "TutoringGiven": (None, (), None),
    "CounsellingGiven": (None, (), None),
    "GuardianTrained": (None, (), None),
    "MeetingHeld": ("kind", tuple(MeetingKind), None),
    "AidGiven": (None, (), None),
    "CondolenceVisitMade": (None, (), None),
    "ActivityHeld": ("kind", tuple(ActivityKind), None),
    "ChildTransferred": (None, (), None),
}
FILTER_FIELDS: dict[str, str] = {t: f for t, (f, _, _) in COUNTABLE.items() if f is not None}

EventTypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Values = Annotated[list[str], msgspec.Meta(max_length=10)]


class Applies(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Whom a rule applies to. Every condition given must hold (empty lists: no condition)."""

    target: Target = Target.CHILD
    # Children: an active pairing of one of these kinds (e.g. proxy_parent for the 三个一).
    pairing_kinds: Annotated[list[PartnerKind], msgspec.Meta(max_length=len(PartnerKind))] = []
    # Children: the grade band, inclusive (grade 0 is not in school).
    grade_min: Annotated[int, msgspec.Meta(ge=0, le=12)] | None = None
    grade_max: Annotated[int, msgspec.Meta(ge=0, le=12)] | None = None
    # Children: on the register for one of these reasons (e.g. poverty).
    reasons: Annotated[list[Reason], msgspec.Meta(max_length=len(Reason))] = []
    # Children: held by a site of one of these kinds, and counted for those sites only; sites:
    # the kinds of site held to the obligation. At most as many as there are kinds (the limits
    # follow the enumerations: a fourth kind, community, came after this one was written as 3).
    site_kinds: Annotated[list[SiteKind], msgspec.Meta(max_length=len(SiteKind))] = []
    # Sites only: these sites by id (empty: every site of `site_kinds`).
    sites: Annotated[list[SiteId], msgspec.Meta(max_length=200)] = []


class Counts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What counts towards a rule, how many, per which period."""

    event_types: Annotated[list[EventTypeName], msgspec.Meta(min_length=1, max_length=6)]
    # The filter field of the types (FILTER_FIELDS) -> the values that count.
    where: dict[Annotated[str, msgspec.Meta(max_length=20)], Values] = {}
    # Only work that covers a child on the register for one of these reasons.
    child_reasons: Annotated[list[Reason], msgspec.Meta(max_length=len(Reason))] = []
    at_least: Annotated[int, msgspec.Meta(ge=1, le=31)] = 1
    period: PeriodKind = PeriodKind.MONTH


class FollowUpRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One rule of a township: its id, its names, whom it applies to and what counts."""

    rule_id: RuleId
    zh: RuleName
    en: RuleName
    applies: Applies
    counts: Counts


class Term(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """A school term, both days included."""

    first_day: dt.date
    last_day: dt.date


class SchoolCalendar(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The terms of one school year (August to July, named by the year it starts in: terms may
    run from 1 August to 31 August of the next year); everything outside a term is a holiday."""

    school_year: Annotated[int, msgspec.Meta(ge=2000, le=2100)]
    terms: Annotated[list[Term], msgspec.Meta(min_length=1, max_length=4)]


def national_calendar(school_year: int) -> SchoolCalendar:
    """The national pattern: the autumn term from 1 September to 20 January, the spring term from
    20 February to 10 July (the Spring Festival moves the winter break; a township that knows its
    dates sets them with `SchoolCalendarSet`)."""
    y = school_year
    return SchoolCalendar(school_year=y, terms=[Term(dt.date(y, 9, 1), dt.date(y + 1, 1, 20)),
                                                Term(dt.date(y + 1, 2, 20), dt.date(y + 1, 7, 10))])


def rule_problems(rule: FollowUpRule) -> list[str]:
    """What is wrong with a rule beyond its types, each naming the field and the value."""
    out = []
    a, k = rule.applies, rule.counts
    for t in k.event_types:
        if t not in COUNTABLE:
            out.append(f"counts.event_types: {t!r} is not a type a rule can count (one of {', '.join(COUNTABLE)})")
    for f, values in k.where.items():
        types = [t for t in k.event_types if FILTER_FIELDS.get(t) == f]
        if not types:
            out.append(f"counts.where: field {f!r} is not the filter field of any of {k.event_types}")
            continue
        allowed = set(COUNTABLE[types[0]][1])
        bad = [v for v in values if v not in allowed]
        if bad:
            out.append(f"counts.where.{f}: {bad} not among {sorted(allowed)}")
    if a.grade_min is not None and a.grade_max is not None and a.grade_min > a.grade_max:
        out.append(f"applies.grade_min {a.grade_min} is above applies.grade_max {a.grade_max}")
    if a.target is Target.SITE and (a.pairing_kinds or a.reasons or a.grade_min is not None
                                    or a.grade_max is not None):
        out.append("applies: a site rule takes only site_kinds and sites (pairing_kinds, grades and reasons are "
                   "for children)")
    if a.target is Target.SITE and not (a.site_kinds or a.sites):
        out.append("applies: a site rule names site_kinds or sites")
    if a.target is Target.CHILD and a.sites:
        out.append("applies.sites: a child rule takes site_kinds, not sites")
    return out


def calendar_problems(cal: SchoolCalendar) -> list[str]:
    out = []
    start, end = dt.date(cal.school_year, 9, 1) - dt.timedelta(days=31), dt.date(cal.school_year + 1, 9, 1)
    prev: dt.date | None = None
    for i, t in enumerate(cal.terms):
        if t.last_day < t.first_day:
            out.append(f"terms[{i}]: last day {t.last_day} is before first day {t.first_day}")
        if not (start <= t.first_day and t.last_day < end):
            out.append(f"terms[{i}]: {t.first_day}..{t.last_day} is outside school year {cal.school_year} "
                       f"({start}..{end - dt.timedelta(days=1)})")
        if prev is not None and t.first_day <= prev:
            out.append(f"terms[{i}]: first day {t.first_day} is not after the previous term's last day {prev}")
        prev = t.last_day
    return out


_PROXY = Applies(pairing_kinds=[PartnerKind.PROXY_PARENT])
_MONTH, _SCHOOL_MONTH, _SEMESTER = PeriodKind.MONTH, PeriodKind.SCHOOL_MONTH, PeriodKind.SEMESTER

# The rules the seed's summaries write down (docs/DOMAIN.md "The rules people are held to").
DEFAULT_RULES: tuple[FollowUpRule, ...] = (
    # 三个一, one school's rule for its proxy parents (代管家长): only children who have one.
    FollowUpRule(rule_id="proxy_visit", zh="代管家长每月家访一次", en="proxy parent: a home visit a month",
                 applies=_PROXY, counts=Counts(event_types=["HomeVisitMade"], period=_MONTH)),
    FollowUpRule(rule_id="proxy_call", zh="代管家长每月与家长通话一次",
                 en="proxy parent: a call with the parents a month",
                 applies=_PROXY,
                 counts=Counts(event_types=["ParentCallMade"], where={"channel": ["phone", "video"]}, period=_MONTH)),
    FollowUpRule(rule_id="proxy_letter", zh="代管家长每学期给家长写一封信",
                 en="proxy parent: a letter to the parents a semester", applies=_PROXY,
                 counts=Counts(event_types=["LetterWritten"], where={"direction": ["to_parents"]}, period=_SEMESTER)),
    # The class teacher's monthly talk, for pupils, in school months.
    FollowUpRule(rule_id="teacher_talk", zh="班主任每月与留守儿童谈心一次", en="class teacher: a talk a school month",
                 applies=Applies(grade_min=1, grade_max=12, site_kinds=[SiteKind.SCHOOL]),
                 counts=Counts(event_types=["TalkHeld"], period=_SCHOOL_MONTH)),
    # Site obligations.
    FollowUpRule(rule_id="guardian_meeting", zh="每学期召开一次座谈会", en="a meeting (座谈会) a semester",
                 applies=Applies(target=Target.SITE, site_kinds=[SiteKind.SCHOOL]),
                 counts=Counts(event_types=["MeetingHeld"], period=_SEMESTER)),
    FollowUpRule(rule_id="safety_lecture", zh="每学期一至二次安全与法制教育讲座",
                 en="one or two safety and legal lectures a semester",
                 applies=Applies(target=Target.SITE, site_kinds=[SiteKind.SCHOOL]),
                 counts=Counts(event_types=["ActivityHeld"], where={"kind": ["safety_lecture", "legal_lecture"]},
                               period=_SEMESTER)),
    FollowUpRule(rule_id="poor_children_visit", zh="每半年慰问一次贫困留守儿童",
                 en="a visit to poor children every half year",
                 applies=Applies(target=Target.SITE, site_kinds=[SiteKind.TOWNSHIP]),
                 counts=Counts(event_types=["CondolenceVisitMade"], child_reasons=[Reason.POVERTY],
                               period=PeriodKind.HALF_YEAR)),
    FollowUpRule(rule_id="childrens_home", zh="留守儿童之家每周开放两次", en="the children's home open twice a week",
                 applies=Applies(target=Target.SITE, site_kinds=[SiteKind.SCHOOL]),
                 counts=Counts(event_types=["ActivityHeld"], where={"kind": ["childrens_home"]}, at_least=2,
                               period=PeriodKind.WEEK)),
    FollowUpRule(rule_id="year_end_handover", zh="每学年末做好交接工作",
                 en="the hand-over at the end of each school year",
                 applies=Applies(target=Target.SITE, site_kinds=[SiteKind.SCHOOL]),
                 counts=Counts(event_types=["ChildTransferred"], period=PeriodKind.SCHOOL_YEAR)),
)
