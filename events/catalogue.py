"""The catalogue of care events: every kind of work docs/DOMAIN.md describes, as frozen Structs.

Each event is a fact in the past tense. ``CareEvent`` is the tagged union of all of them; its
tag field is ``type`` and each tag is the class name. A payload travels inside an envelope
(:mod:`events.envelope`) that says who recorded it, where, when and in which place of the
site's hash chain.

Schema evolution follows msgspec's rule: a new field goes at the end with a default. A change
that cannot be expressed that way bumps ``SCHEMA_VERSION`` of the class and registers an
upcaster in :mod:`events.upcasters`; stored payloads are never rewritten, they are upcast when
read.

Archive fields. Events that change the child's archive name the fields they set
(``fields_set``). Those names are the keys of the envelope's ``based_on`` map, which says
which earlier event last set that field as the recording site knew it; two updates of one
field with the same base that disagree are a conflict (projections.conflicts).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar

import msgspec

from events.rules import FollowUpRule, RuleId, SchoolCalendar, TownshipId
from events.types import (
    ActivityKind,
    AidKind,
    AidSource,
    CallChannel,
    CaseKind,
    CaseOutcome,
    ChildId,
    ChildList,
    ClosingReason,
    Count,
    EventId,
    Fen,
    Grade,
    GuardianshipType,
    IncidentKind,
    LetterDirection,
    LongText,
    MeetingKind,
    Minutes,
    Name,
    Occasion,
    PartnerKind,
    Phone,
    Reason,
    RefId,
    ResidentId,
    Severity,
    Sex,
    ShortText,
    SiteId,
    StatusLevel,
)

Reasons = Annotated[list[Reason], msgspec.Meta(min_length=1, max_length=7)]
OptionalChildList = Annotated[list[ChildId], msgspec.Meta(max_length=500)]
RequiredText = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
Relation = Annotated[str, msgspec.Meta(min_length=1, max_length=20, description="e.g. 祖父, 外婆, 姑姑")]

# Archive field names, the keys of an envelope's `based_on` map.
ARCHIVE_FIELDS: tuple[str, ...] = (
    "name",
    "sex",
    "birth_date",
    "resident_id",
    "household_village",
    "school",
    "grade",
    "class_name",
    "reasons",
    "guardian",
    "parents",
    "guardian_phone",
    "status.study",
    "status.life",
    "status.psychology",
    "status.safety",
    "status.health",
    "individual_plan",
    "village_site",
    "school_site",
)
STATUS_AREAS: tuple[str, ...] = ("study", "life", "psychology", "safety", "health")


class Guardian(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Who looks after the child day to day (监护人) and how to reach them."""

    type: GuardianshipType
    name: Name | None = None
    relation: Relation | None = None
    phone: Phone | None = None


class ParentContact(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A migrant parent on the contact card (联系卡): where they work and how to reach them."""

    relation: Relation
    work_place: ShortText
    phone: Phone | None = None
    calls_per_month: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None


Parents = Annotated[list[ParentContact], msgspec.Meta(max_length=4)]


class CareEventBase(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True, tag_field="type"
):
    """Common behaviour of every care event payload."""

    SCHEMA_VERSION: ClassVar[int] = 1
    # The archive fields this event sets (keys of `based_on`); empty for non-archive events.
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def child_ids(self) -> tuple[str, ...]:
        """The children this event concerns, which decides where it is fanned out to."""
        child = getattr(self, "child_id", None)
        many = getattr(self, "child_ids_list", None)
        if many is not None:
            return tuple(dict.fromkeys(many))
        return (child,) if child is not None else ()

    def fields_set(self) -> tuple[str, ...]:
        return self.FIELDS


# --- registration and the archive -------------------------------------------------------


class ChildRegistered(CareEventBase, tag=True, frozen=True):
    """A child was surveyed (排摸) and an archive opened."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "name", "sex", "birth_date", "resident_id", "household_village", "school", "grade",
        "class_name", "reasons", "guardian", "parents", "individual_plan", "village_site", "school_site",
    )

    child_id: ChildId
    name: Name
    sex: Sex
    birth_date: dt.date
    household_village: Name
    reasons: Reasons
    guardian: Guardian
    resident_id: ResidentId | None = None
    village_site: SiteId | None = None
    school_site: SiteId | None = None
    school: Name | None = None
    grade: Grade = 0
    class_name: ShortText | None = None
    parents: Parents = []
    individual_plan: bool = False


class ArchiveUpdated(CareEventBase, tag=True, frozen=True):
    """Identity or schooling details of an archive changed (动态管理); absent fields are unchanged."""

    child_id: ChildId
    name: Name | None = None
    sex: Sex | None = None
    birth_date: dt.date | None = None
    resident_id: ResidentId | None = None
    household_village: Name | None = None
    school: Name | None = None
    grade: Grade | None = None
    class_name: ShortText | None = None
    reasons: Reasons | None = None
    note: ShortText | None = None

    def fields_set(self) -> tuple[str, ...]:
        names = ("name", "sex", "birth_date", "resident_id", "household_village", "school", "grade",
                 "class_name", "reasons")
        return tuple(n for n in names if getattr(self, n) is not None)


class StatusAssessed(CareEventBase, tag=True, frozen=True):
    """The child's situation in the five areas was assessed (学习、生活、心理、安全、健康)."""

    child_id: ChildId
    study: StatusLevel | None = None
    life: StatusLevel | None = None
    psychology: StatusLevel | None = None
    safety: StatusLevel | None = None
    health: StatusLevel | None = None
    individual_plan: bool | None = None  # needs an individual education plan (个别教育方案)
    note: LongText | None = None

    def fields_set(self) -> tuple[str, ...]:
        out = [f"status.{a}" for a in STATUS_AREAS if getattr(self, a) is not None]
        if self.individual_plan is not None:
            out.append("individual_plan")
        return tuple(out)


class GuardianChanged(CareEventBase, tag=True, frozen=True):
    """The child's guardian or guardianship type changed."""

    FIELDS: ClassVar[tuple[str, ...]] = ("guardian",)

    child_id: ChildId
    guardian: Guardian
    reason: ShortText | None = None


class ContactCardUpdated(CareEventBase, tag=True, frozen=True):
    """The contact card (联系卡) changed: parents' work places and phones, the guardian's phone."""

    child_id: ChildId
    parents: Parents | None = None
    guardian_phone: Phone | None = None

    def fields_set(self) -> tuple[str, ...]:
        out = []
        if self.parents is not None:
            out.append("parents")
        if self.guardian_phone is not None:
            out.append("guardian_phone")
        return tuple(out)


class ChildTransferred(CareEventBase, tag=True, frozen=True):
    """The child moved to another school or village (交接); its scope moves from this event on."""

    child_id: ChildId
    to_village_site: SiteId | None = None
    to_school_site: SiteId | None = None
    school: Name | None = None
    grade: Grade | None = None
    class_name: ShortText | None = None
    reason: ShortText | None = None

    def fields_set(self) -> tuple[str, ...]:
        pairs = (("village_site", self.to_village_site), ("school_site", self.to_school_site),
                 ("school", self.school), ("grade", self.grade), ("class_name", self.class_name))
        return tuple(n for n, v in pairs if v is not None)


class ArchiveClosed(CareEventBase, tag=True, frozen=True):
    """The child left the register (parents came home, aged out, moved away...)."""

    child_id: ChildId
    reason: ClosingReason
    note: ShortText | None = None


class ArchiveReopened(CareEventBase, tag=True, frozen=True):
    """A closed archive was opened again (the parents left again, the child came back)."""

    child_id: ChildId
    reason: ShortText


class ArchivesMerged(CareEventBase, tag=True, frozen=True):
    """Two archives were found to be the same child; the merged one's history joins the kept one."""

    kept_child_id: ChildId
    merged_child_id: ChildId
    note: ShortText | None = None

    def child_ids(self) -> tuple[str, ...]:
        return (self.kept_child_id, self.merged_child_id)


class ArchivesUnmerged(CareEventBase, tag=True, frozen=True):
    """A merge was a mistake: the two archives are separate again from this event on."""

    merge_event_id: EventId
    kept_child_id: ChildId
    merged_child_id: ChildId
    note: ShortText | None = None

    def child_ids(self) -> tuple[str, ...]:
        return (self.kept_child_id, self.merged_child_id)


class DuplicateDismissed(CareEventBase, tag=True, frozen=True):
    """Two archives proposed as the same child were checked: they are two different children, so
    the pair is not proposed as a duplicate again."""

    child_ids_list: Annotated[list[ChildId], msgspec.Meta(min_length=2, max_length=2)] = msgspec.field(
        name="child_ids")
    note: ShortText | None = None


class EventCorrected(CareEventBase, tag=True, frozen=True):
    """An earlier entry was wrong. History is not erased: this event says which entry, why, and
    what it should have said (``replacement``, a payload of the same type, and its occurred
    time); with no replacement the entry is retracted (it did not happen)."""

    corrected_event_id: EventId
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    child_ids_list: OptionalChildList = msgspec.field(name="child_ids", default_factory=list)
    replacement: CareEvent | None = None
    replacement_occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None

    def child_ids(self) -> tuple[str, ...]:
        inner = self.replacement.child_ids() if self.replacement is not None else ()
        return tuple(dict.fromkeys([*self.child_ids_list, *inner]))


class ConflictResolved(CareEventBase, tag=True, frozen=True):
    """A person settled a conflict between concurrent updates of one archive field."""

    child_id: ChildId
    field: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    chosen_event_id: EventId
    note: ShortText | None = None


# --- pairing -----------------------------------------------------------------------------


class PairingStarted(CareEventBase, tag=True, frozen=True):
    """The child was paired (结对帮扶) with a teacher, classmate, proxy parent or volunteer."""

    pairing_id: RefId
    child_id: ChildId
    partner_kind: PartnerKind
    partner_name: Name
    partner_phone: Phone | None = None


class PairingEnded(CareEventBase, tag=True, frozen=True):
    pairing_id: RefId
    child_id: ChildId
    reason: ShortText | None = None


# --- contact with the child and the family ------------------------------------------------


class HomeVisitMade(CareEventBase, tag=True, frozen=True):
    """A home visit (家访)."""

    child_id: ChildId
    visitor: Name
    guardian_met: bool = True
    findings: LongText = ""


class ParentCallMade(CareEventBase, tag=True, frozen=True):
    """A call with a migrant parent (with the child, or about the child)."""

    child_id: ChildId
    parent: Relation
    channel: CallChannel = CallChannel.PHONE
    minutes: Minutes = 0
    summary: LongText = ""


class LetterWritten(CareEventBase, tag=True, frozen=True):
    """A letter between the child (or the school) and the parents."""

    child_id: ChildId
    direction: LetterDirection = LetterDirection.TO_PARENTS
    summary: LongText = ""


class TalkHeld(CareEventBase, tag=True, frozen=True):
    """A talk (谈心) between the class teacher and the child, with its record card."""

    child_id: ChildId
    teacher: Name
    record_card: RequiredText


class TutoringGiven(CareEventBase, tag=True, frozen=True):
    child_ids_list: ChildList = msgspec.field(name="child_ids")
    tutor: Name
    subject: ShortText
    minutes: Minutes = 0


class CounsellingGiven(CareEventBase, tag=True, frozen=True):
    """Psychological counselling (心理辅导)."""

    child_id: ChildId
    counsellor: Name
    minutes: Minutes = 0
    summary: LongText = ""


class GuardianTrained(CareEventBase, tag=True, frozen=True):
    """Guardians were coached (监护人培训); the children are those whose guardians attended."""

    child_ids_list: ChildList = msgspec.field(name="child_ids")
    topic: ShortText
    guardians_attended: Count = 0


class MeetingHeld(CareEventBase, tag=True, frozen=True):
    """A meeting (座谈会) of teachers, children and/or guardians."""

    kind: MeetingKind
    topic: ShortText
    child_ids_list: OptionalChildList = msgspec.field(name="child_ids", default_factory=list)
    attendees: Count = 0


# --- aid, condolence, activities ----------------------------------------------------------


class AidGiven(CareEventBase, tag=True, frozen=True):
    """Aid (资助) given to one child. Version 2: the amount is in fen (v1 had whole yuan)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    child_id: ChildId
    amount_fen: Fen
    source: AidSource
    kind: AidKind = AidKind.MONEY
    note: ShortText | None = None


class CondolenceVisitMade(CareEventBase, tag=True, frozen=True):
    """A holiday condolence visit (慰问) covering many children, with gifts and/or money."""

    child_ids_list: ChildList = msgspec.field(name="child_ids")
    occasion: Occasion
    gifts: ShortText | None = None
    money_fen_each: Fen = 0
    source: AidSource = AidSource.TOWNSHIP


class ActivityHeld(CareEventBase, tag=True, frozen=True):
    """An activity (performance, contest, the children's home, a lecture) and who took part."""

    activity_id: RefId
    kind: ActivityKind
    title: ShortText
    child_ids_list: OptionalChildList = msgspec.field(name="child_ids", default_factory=list)
    participants_total: Count = 0


class SafetyIncidentReported(CareEventBase, tag=True, frozen=True):
    child_id: ChildId
    kind: IncidentKind
    severity: Severity
    description: LongText = ""


class RightsCaseOpened(CareEventBase, tag=True, frozen=True):
    """A rights case (维权) opened at a station."""

    case_id: RefId
    child_id: ChildId
    kind: CaseKind
    summary: LongText = ""


class RightsCaseClosed(CareEventBase, tag=True, frozen=True):
    case_id: RefId
    child_id: ChildId
    outcome: CaseOutcome
    summary: LongText = ""


# --- the township's rules ---------------------------------------------------------------


class FollowUpRuleSet(CareEventBase, tag=True, frozen=True):
    """A township office set one of its follow-up rules (a new one, or a new version of one) from
    a day on: every period starting on or after `effective_from` is judged by it (events.rules)."""

    township: TownshipId
    rule: FollowUpRule
    effective_from: dt.date
    note: ShortText | None = None


class FollowUpRuleRetired(CareEventBase, tag=True, frozen=True):
    """A township office stopped holding its sites to a rule (a default one included) from a day on."""

    township: TownshipId
    rule_id: RuleId
    effective_from: dt.date
    note: ShortText | None = None


class SchoolCalendarSet(CareEventBase, tag=True, frozen=True):
    """A township office set the terms of a school year; school-month rules skip the holidays."""

    township: TownshipId
    calendar: SchoolCalendar
    note: ShortText | None = None


CareEvent = (
    ChildRegistered
    | ArchiveUpdated
    | StatusAssessed
    | GuardianChanged
    | ContactCardUpdated
    | ChildTransferred
    | ArchiveClosed
    | ArchiveReopened
    | ArchivesMerged
    | ArchivesUnmerged
    | DuplicateDismissed
    | EventCorrected
    | ConflictResolved
    | PairingStarted
    | PairingEnded
    | HomeVisitMade
    | ParentCallMade
    | LetterWritten
    | TalkHeld
    | TutoringGiven
    | CounsellingGiven
    | GuardianTrained
    | MeetingHeld
    | AidGiven
    | CondolenceVisitMade
    | ActivityHeld
    | SafetyIncidentReported
    | RightsCaseOpened
    | RightsCaseClosed
    | FollowUpRuleSet
    | FollowUpRuleRetired
    | SchoolCalendarSet
)

EVENT_TYPES: dict[str, type[CareEventBase]] = {
    cls.__name__: cls for cls in CareEventBase.__subclasses__()
}
