"""The traits of every event type: one row per type of the `CareEvent` union, in one table.

A row says, for one kind of event:
- how people call it (`zh`, `en`): the label of the timeline, the forms and the exports;
- who may record it (`authority`, enforced by the center at ingest) and which kinds of site show
  a form for it on their station pages (`station_form`);
- whether the township counts it (`fact`: the kind of its fact row, and `measure`: the amount,
  count, source and detail the rollups read from its payload; `contact`: which of the archive's
  monthly contact counts it adds to);
- how the projection runner folds it (`fold`): additively onto a stored archive, by
  re-deriving the archive's structural part, or by re-deriving the whole merge group;
- which section of the child's archive shows it (`section`).

Adding a kind of care work is: its class in `events.catalogue` (and the union), its row here, its
sample in `events.samples`, its tests. `tests/test_traits.py` fails when a type of the union has
no row, and the projections fail their own completeness tests when a row asks for a handler they
do not have. Nothing here imports anything of the project but the catalogue.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from events import catalogue as c
from events.types import SiteKind


class Fold(enum.StrEnum):
    """How the projection runner applies an event that nothing corrects."""

    ADDITIVE = "additive"  # adds a count, a last date or an aid line to a stored archive; sets no field
    STRUCTURAL = "structural"  # sets fields, open/closed history, pairings or rights cases
    FULL = "full"  # merges and corrections: the whole merge group is derived again


class Section(enum.StrEnum):
    """The part of a child's archive page that shows the event."""

    IDENTITY = "identity"  # registration and archive updates
    STATUS = "status"  # the five areas and the individual plan
    GUARDIAN = "guardian"  # guardian and contact card
    MOVES = "moves"  # transfers, closing and reopening
    MERGES = "merges"
    CORRECTIONS = "corrections"
    CONFLICTS = "conflicts"
    PAIRINGS = "pairings"
    CONTACTS = "contacts"  # visits, calls, letters, talks
    SUPPORT = "support"  # tutoring, counselling, guardian training, meetings
    AID = "aid"  # aid and condolence visits
    ACTIVITIES = "activities"
    INCIDENTS = "incidents"
    RIGHTS_CASES = "rights_cases"
    RULES = "rules"  # the township's follow-up rules and school calendar: on no child's archive


class Authority(enum.StrEnum):
    """Who may record an event of this type (decided by the center at ingest, in commit order)."""

    WORK = "work"  # a site about a child that is, or was, in its scope
    REGISTER = "register"  # any site, for a child id that does not exist yet
    HOLDER = "holder"  # the site that holds the child (hand-over to a site of its township), or the township office
    TOWNSHIP = "township"  # the township office of the children's township only
    CORRECTION = "correction"  # the site that recorded the corrected event; another site's: the township office
    RULES = "rules"  # the township office of the township the rule or calendar is for, only


class Measure(NamedTuple):
    """What a fact row carries besides its kind and children (see projections/FIGURES.md)."""

    amount_fen: int = 0  # aid: the amount; condolence: the money for all children covered
    quantity: int = 0  # the fact's count: attendees, participants, guardians, minutes of tutoring or counselling
    source: str | None = None  # aid source
    # aid kind, occasion, activity or meeting kind, severity, case kind or outcome, partner, a
    # call's channel, a letter's direction
    detail: str | None = None


class Traits(NamedTuple):
    zh: str
    en: str
    section: Section
    fold: Fold
    authority: Authority
    # Kinds of site whose station pages offer a form for this type (empty: recorded by the API or
    # a command only).
    station_form: frozenset[SiteKind] = frozenset()
    fact: str | None = None  # the kind of the fact row the township counts; None: not counted
    # The fact's measure, read from the payload; None: a plain fact (one child, nothing but its kind).
    measure: Callable[[Any], Measure] | None = None
    contact: str | None = None  # "visit", "call", "letter" or "talk": the archive's monthly contact counts


_STATION_FORMS = frozenset(SiteKind)  # every kind of site records this work on its own pages
# Who does which work (docs/DOMAIN.md, "Who works, where"): the village rights station surveys,
# visits, coaches guardians and takes rights cases; the school talks, tutors, pairs, counsels,
# writes letters, holds meetings, activities and lectures; the township office matches proxy
# parents, funds children and takes rights cases. The archive's life (updates, assessments,
# hand-overs, closing, reopening) and corrections of a site's own entries belong to every site.
# The township's decisions (merges, unmerges, conflicts, duplicates) are made on the center's
# dashboard, with both sides shown, and have no station form.
# A community (社区) does a village station's work for the children living in it.
_VILLAGE, _SCHOOL, _TOWNSHIP, _COMMUNITY = SiteKind.VILLAGE, SiteKind.SCHOOL, SiteKind.TOWNSHIP, SiteKind.COMMUNITY
_AT_SCHOOL = frozenset({_SCHOOL})
_VILLAGE_SCHOOL = frozenset({_VILLAGE, _COMMUNITY, _SCHOOL})
_PLAIN = Measure()


def _tutoring(e: c.TutoringGiven) -> Measure:
    return Measure(quantity=e.minutes, detail=e.subject)


def _counselling(e: c.CounsellingGiven) -> Measure:
    return Measure(quantity=e.minutes)


def _training(e: c.GuardianTrained) -> Measure:
    return Measure(quantity=e.guardians_attended)


def _call(e: c.ParentCallMade) -> Measure:
    return Measure(detail=str(e.channel))  # a rule counts calls by channel (亲情电话 is the child's own)


def _letter(e: c.LetterWritten) -> Measure:
    return Measure(detail=str(e.direction))  # a rule counts letters to the parents, not from them


def _meeting(e: c.MeetingHeld) -> Measure:
    return Measure(quantity=e.attendees, detail=str(e.kind))


def _aid(e: c.AidGiven) -> Measure:
    return Measure(amount_fen=e.amount_fen, source=str(e.source), detail=str(e.kind))


def _condolence(e: c.CondolenceVisitMade) -> Measure:
    return Measure(amount_fen=e.money_fen_each * len(e.child_ids()), source=str(e.source), detail=str(e.occasion))


def _activity(e: c.ActivityHeld) -> Measure:
    return Measure(quantity=e.participants_total, detail=str(e.kind))


def _incident(e: c.SafetyIncidentReported) -> Measure:
    return Measure(detail=str(e.severity))


def _case_opened(e: c.RightsCaseOpened) -> Measure:
    return Measure(detail=str(e.kind))


def _case_closed(e: c.RightsCaseClosed) -> Measure:
    return Measure(detail=str(e.outcome))


def _pairing(e: c.PairingStarted) -> Measure:
    return Measure(detail=str(e.partner_kind))


S, F, A = Section, Fold, Authority
TRAITS: dict[type[c.CareEventBase], Traits] = {
    # registration and the archive
    c.ChildRegistered: Traits("建档登记", "registered", S.IDENTITY, F.STRUCTURAL, A.REGISTER, _STATION_FORMS),
    c.ArchiveUpdated: Traits("档案更新", "archive updated", S.IDENTITY, F.STRUCTURAL, A.WORK, _STATION_FORMS),
    c.StatusAssessed: Traits("状况评估", "status assessed", S.STATUS, F.STRUCTURAL, A.WORK, _STATION_FORMS),
    c.GuardianChanged: Traits("监护人变更", "guardian changed", S.GUARDIAN, F.STRUCTURAL, A.WORK, _STATION_FORMS),
    c.ContactCardUpdated: Traits("联系卡更新", "contact card updated", S.GUARDIAN, F.STRUCTURAL, A.WORK,
                                 _STATION_FORMS),
    c.ChildTransferred: Traits("转学/迁移交接", "transferred", S.MOVES, F.STRUCTURAL, A.HOLDER, _STATION_FORMS),
    c.ArchiveClosed: Traits("档案关闭", "archive closed", S.MOVES, F.STRUCTURAL, A.HOLDER, _STATION_FORMS),
    c.ArchiveReopened: Traits("档案重开", "archive reopened", S.MOVES, F.STRUCTURAL, A.HOLDER, _STATION_FORMS),
    c.ArchivesMerged: Traits("档案合并", "archives merged", S.MERGES, F.FULL, A.TOWNSHIP),
    c.ArchivesUnmerged: Traits("撤销合并", "merge undone", S.MERGES, F.FULL, A.TOWNSHIP),
    c.DuplicateDismissed: Traits("确认非同一儿童", "not the same child", S.MERGES, F.STRUCTURAL, A.TOWNSHIP),
    c.EventCorrected: Traits("更正", "correction", S.CORRECTIONS, F.FULL, A.CORRECTION, _STATION_FORMS),
    c.ConflictResolved: Traits("冲突处理", "conflict resolved", S.CONFLICTS, F.STRUCTURAL, A.TOWNSHIP),
    # pairing
    c.PairingStarted: Traits("结对帮扶", "pairing started", S.PAIRINGS, F.STRUCTURAL, A.WORK,
                             frozenset({_SCHOOL, _TOWNSHIP}), fact="pairing_started", measure=_pairing),
    c.PairingEnded: Traits("结对结束", "pairing ended", S.PAIRINGS, F.STRUCTURAL, A.WORK,
                           frozenset({_SCHOOL, _TOWNSHIP}), fact="pairing_ended"),
    # contact with the child and the family
    c.HomeVisitMade: Traits("家访", "home visit", S.CONTACTS, F.ADDITIVE, A.WORK, _STATION_FORMS,
                            fact="visit", contact="visit"),
    c.ParentCallMade: Traits("与父母通话", "call with parents", S.CONTACTS, F.ADDITIVE, A.WORK, _STATION_FORMS,
                             fact="call", measure=_call, contact="call"),
    c.LetterWritten: Traits("书信", "letter", S.CONTACTS, F.ADDITIVE, A.WORK, _AT_SCHOOL, fact="letter",
                            measure=_letter, contact="letter"),
    c.TalkHeld: Traits("谈心", "talk", S.CONTACTS, F.ADDITIVE, A.WORK, _STATION_FORMS, fact="talk",
                       contact="talk"),
    c.TutoringGiven: Traits("辅导", "tutoring", S.SUPPORT, F.ADDITIVE, A.WORK, _AT_SCHOOL, fact="tutoring",
                            measure=_tutoring),
    c.CounsellingGiven: Traits("心理辅导", "counselling", S.SUPPORT, F.ADDITIVE, A.WORK, _AT_SCHOOL, fact="counselling",
                               measure=_counselling),
    c.GuardianTrained: Traits("监护人培训", "guardian training", S.SUPPORT, F.ADDITIVE, A.WORK,
                              _VILLAGE_SCHOOL, fact="guardian_training", measure=_training),
    c.MeetingHeld: Traits("座谈会", "meeting", S.SUPPORT, F.ADDITIVE, A.WORK, _VILLAGE_SCHOOL, fact="meeting",
                          measure=_meeting),
    # aid, condolence, activities
    c.AidGiven: Traits("资助", "aid", S.AID, F.ADDITIVE, A.WORK, _STATION_FORMS, fact="aid", measure=_aid),
    c.CondolenceVisitMade: Traits("慰问", "condolence visit", S.AID, F.ADDITIVE, A.WORK, _STATION_FORMS,
                                  fact="condolence", measure=_condolence),
    c.ActivityHeld: Traits("活动", "activity", S.ACTIVITIES, F.ADDITIVE, A.WORK, _VILLAGE_SCHOOL, fact="activity",
                           measure=_activity),
    c.SafetyIncidentReported: Traits("安全事件", "safety incident", S.INCIDENTS, F.ADDITIVE, A.WORK,
                                     _STATION_FORMS, fact="incident", measure=_incident),
    c.RightsCaseOpened: Traits("维权立案", "rights case opened", S.RIGHTS_CASES, F.STRUCTURAL, A.WORK,
                               frozenset({_VILLAGE, _COMMUNITY, _TOWNSHIP}), fact="case_opened",
                               measure=_case_opened),
    c.RightsCaseClosed: Traits("维权结案", "rights case closed", S.RIGHTS_CASES, F.STRUCTURAL, A.WORK,
                               frozenset({_VILLAGE, _COMMUNITY, _TOWNSHIP}), fact="case_closed",
                               measure=_case_closed),
    # the township's rules (set on the center's dashboard or by the API; about no child)
    c.FollowUpRuleSet: Traits("设定工作规则", "follow-up rule set", S.RULES, F.STRUCTURAL, A.RULES),
    c.FollowUpRuleRetired: Traits("停用工作规则", "follow-up rule retired", S.RULES, F.STRUCTURAL, A.RULES),
    c.SchoolCalendarSet: Traits("设定校历", "school calendar set", S.RULES, F.STRUCTURAL, A.RULES),
}
del S, F, A

# Every type of the union, in the union's order (a type missing a row is a test failure, and a
# KeyError here at import: nobody can forget one silently).
UNION_TYPES: tuple[type[c.CareEventBase], ...] = typing.get_args(c.CareEvent)
BY_NAME: dict[str, Traits] = {cls.__name__: TRAITS[cls] for cls in UNION_TYPES}


def traits_of(event_type: str | type[c.CareEventBase]) -> Traits:
    """The row of an event type, by class or by its tag (the class name)."""
    return BY_NAME[event_type] if isinstance(event_type, str) else TRAITS[event_type]


def measure(care: c.CareEventBase) -> Measure:
    """The fact measure of a counted payload (all zeros for a plain one)."""
    m = TRAITS[type(care)].measure
    return _PLAIN if m is None else m(care)


def types_where(predicate: Callable[[Traits], bool]) -> frozenset[str]:
    """The names of the event types whose row satisfies `predicate` (e.g. every additive type)."""
    return frozenset(name for name, t in BY_NAME.items() if predicate(t))
