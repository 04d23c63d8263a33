"""The derived archive: what a person sees of a child (`ChildArchive`), from its events.

`derive` first sorts the events by their stamp (recorded_at HLC, site_id, site_seq: a total
order, since (site_id, site_seq) is unique) and never depends on arrival order. `add_work` adds
one piece of uncorrected work to a stored archive with the same arithmetic (the runner's fast path).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from events import catalogue as c
from events import traits
from events.localtime import local_day
from events.types import PartnerKind
from projections.archive.corrections import Effective, effective
from projections.archive.registers import Conflict, FieldSource, registers
from projections.archive.state import Entry, Stamp

# Contacts with the family (the `contact` trait): counted per month and dated in the archive.
CONTACT_TYPES: dict[str, str] = {name: t.contact for name, t in traits.BY_NAME.items() if t.contact is not None}
PROXY_KINDS = (PartnerKind.PROXY_PARENT, PartnerKind.LOVING_MOTHER)
_CONTACT_NAMES = ("visit", "call", "letter", "talk")  # the order of MonthWork's counts
_CONTACT_SLOT: dict[type, int] = {c.EVENT_TYPES[name]: _CONTACT_NAMES.index(kind)
                                  for name, kind in CONTACT_TYPES.items()}


class Pairing(msgspec.Struct, frozen=True, kw_only=True):
    pairing_id: str
    partner_kind: str
    partner_name: str
    started_on: dt.date
    ended_on: dt.date | None = None
    site_id: str


class AidItem(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    occurred_on: dt.date
    kind: str  # "aid" or "condolence"
    amount_fen: int
    source: str
    detail: str


class RightsCase(msgspec.Struct, frozen=True, kw_only=True):
    case_id: str
    kind: str
    opened_on: dt.date
    closed_on: dt.date | None = None
    outcome: str | None = None


class MonthWork(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Contacts with one child in one calendar month ("YYYY-MM"), after corrections."""

    month: str
    visits: int = 0
    calls: int = 0
    letters: int = 0
    talks: int = 0


class ChildArchive(msgspec.Struct, frozen=True, kw_only=True):
    """One child's merged, current archive, derived from its events."""

    child_id: str
    merged_into: str | None = None
    merged_from: list[str] = []
    registered: bool = False
    open: bool = False
    registered_on: dt.date | None = None
    registered_by: str | None = None
    closed_on: dt.date | None = None
    closing_reason: str | None = None
    # Open intervals [opened, closed) in occurred dates; the last may be open-ended.
    intervals: list[tuple[dt.date, dt.date | None]] = []
    name: str | None = None
    sex: str | None = None
    birth_date: dt.date | None = None
    resident_id: str | None = None
    household_village: str | None = None
    school: str | None = None
    grade: int | None = None
    class_name: str | None = None
    reasons: list[str] = []
    guardian: c.Guardian | None = None
    guardian_phone: str | None = None
    parents: list[c.ParentContact] = []
    status: dict[str, str] = {}
    individual_plan: bool = False
    village_site: str | None = None
    school_site: str | None = None
    sites: list[str] = []
    pairings: list[Pairing] = []
    last_visit: dt.date | None = None
    last_call: dt.date | None = None
    last_letter: dt.date | None = None
    last_talk: dt.date | None = None
    months: list[MonthWork] = []
    aid: list[AidItem] = []
    rights_cases: list[RightsCase] = []
    incidents: int = 0
    conflicts: list[Conflict] = []
    sources: dict[str, FieldSource] = {}
    events: int = 0
    # Children the township checked and found to be another child (`DuplicateDismissed`): never
    # proposed as a duplicate of this one again.
    not_same_as: list[str] = []
    # Every closing of the archive (occurred day, ClosingReason), oldest first: the year-end
    # figures count closings of a period by reason (drop-outs above all), and `closing_reason`
    # keeps only the last one. (Fold version 3: read models built before it are rebuilt.)
    closings: list[tuple[dt.date, str]] = []

    @property
    def current_pairings(self) -> list[Pairing]:
        return [p for p in self.pairings if p.ended_on is None]

    @property
    def open_conflicts(self) -> list[Conflict]:
        return [x for x in self.conflicts if x.resolved_by is None]

    def open_on(self, day: dt.date) -> bool:
        """Was the archive open on this day (registered on or before it and not closed)?"""
        return any(lo <= day and (hi is None or day < hi) for lo, hi in self.intervals)



def month_key(day: dt.date | dt.datetime) -> str:
    return f"{day.year:04d}-{day.month:02d}"


_day = local_day  # the reporting day (UTC+8)


class Gathered:
    """What one pass over a group's events (in stamp order) collects for `derive_full`."""

    __slots__ = ("aid", "case_close", "case_open", "incidents", "last", "marks", "months", "not_same", "pair_end",
                 "pair_start", "registered_by")

    def __init__(self) -> None:
        # Open/closed history, by occurred time (then stamp), so a late-arriving closing from an
        # offline station lands where it happened.
        self.marks: list[tuple[dt.datetime, Stamp, bool, Effective]] = []
        self.registered_by: str | None = None
        self.pair_start: dict[str, Effective] = {}
        self.pair_end: dict[str, Effective] = {}
        self.case_open: dict[str, Effective] = {}
        self.case_close: dict[str, Effective] = {}
        self.last: dict[str, dt.date] = {}
        self.months: dict[int, list[int]] = {}  # year * 100 + month -> [visits, calls, letters, talks]
        self.aid: list[AidItem] = []
        self.incidents = 0
        self.not_same: set[str] = set()


Gatherer = Callable[[Gathered, Effective], None]
# One handler per event type (tests/test_traits.py checks that every type of the union has one):
# what `derive_full` gathers from an event besides the field values `registers` reads.
GATHER: dict[type[c.CareEventBase], Gatherer] = {}


def gathers(*types: type[c.CareEventBase]) -> Callable[[Gatherer], Gatherer]:
    def register(fn: Gatherer) -> Gatherer:
        for t in types:
            assert t not in GATHER, f"two gatherers for {t.__name__}"
            GATHER[t] = fn
        return fn
    return register


@gathers(*(c.EVENT_TYPES[name] for name in CONTACT_TYPES))
def _contact(g: Gathered, x: Effective) -> None:
    slot = _CONTACT_SLOT[type(x.care)]
    day = _day(x.occurred_at)
    name = _CONTACT_NAMES[slot]
    prev = g.last.get(name)
    if prev is None or day > prev:
        g.last[name] = day
    month = day.year * 100 + day.month
    counts = g.months.get(month)
    if counts is None:
        counts = g.months[month] = [0, 0, 0, 0]
    counts[slot] += 1


@gathers(c.ChildRegistered)
def _registered(g: Gathered, x: Effective) -> None:
    g.marks.append((x.occurred_at, x.entry.stamp, True, x))
    if g.registered_by is None:
        g.registered_by = x.entry.site_id


@gathers(c.ArchiveReopened)
def _reopened(g: Gathered, x: Effective) -> None:
    g.marks.append((x.occurred_at, x.entry.stamp, True, x))


@gathers(c.ArchiveClosed)
def _closed(g: Gathered, x: Effective) -> None:
    g.marks.append((x.occurred_at, x.entry.stamp, False, x))


@gathers(c.PairingStarted)
def _pairing_started(g: Gathered, x: Effective) -> None:
    g.pair_start.setdefault(x.care.pairing_id, x)  # type: ignore[attr-defined]


@gathers(c.PairingEnded)
def _pairing_ended(g: Gathered, x: Effective) -> None:
    g.pair_end.setdefault(x.care.pairing_id, x)  # type: ignore[attr-defined]


@gathers(c.RightsCaseOpened)
def _case_opened(g: Gathered, x: Effective) -> None:
    g.case_open.setdefault(x.care.case_id, x)  # type: ignore[attr-defined]


@gathers(c.RightsCaseClosed)
def _case_closed(g: Gathered, x: Effective) -> None:
    g.case_close.setdefault(x.care.case_id, x)  # type: ignore[attr-defined]


@gathers(c.AidGiven, c.CondolenceVisitMade)
def _aid(g: Gathered, x: Effective) -> None:
    item = _aid_item(x.counts_as, x.care, x.occurred_at)
    assert item is not None
    g.aid.append(item)


@gathers(c.SafetyIncidentReported)
def _incident(g: Gathered, x: Effective) -> None:
    g.incidents += 1


@gathers(c.DuplicateDismissed)
def _not_same(g: Gathered, x: Effective) -> None:
    g.not_same.update(x.care.child_ids())


@gathers(
    # Fields only: `registers` reads their values.
    c.ArchiveUpdated, c.StatusAssessed, c.GuardianChanged, c.ContactCardUpdated, c.ChildTransferred,
    c.ConflictResolved,
    # Merges and corrections act before `derive` (merge groups; `effective`).
    c.ArchivesMerged, c.ArchivesUnmerged, c.EventCorrected,
    # Work the archive counts only in `events` (the township counts it from facts).
    c.TutoringGiven, c.CounsellingGiven, c.GuardianTrained, c.MeetingHeld, c.ActivityHeld,
    # The township's rules: about no child (projections/rules.py reads them).
    c.FollowUpRuleSet, c.FollowUpRuleRetired, c.SchoolCalendarSet,
)
def _nothing_to_gather(g: Gathered, x: Effective) -> None:
    pass


def derive(child_id: str, entries: Iterable[Entry], merged_from: Iterable[str] = ()) -> ChildArchive:
    """The archive of a child from the set of its events (and those of children merged into it)."""
    return derive_full(child_id, entries, merged_from)[0]


def derive_full(child_id: str, entries: Iterable[Entry], merged_from: Iterable[str] = ()
                ) -> tuple[ChildArchive, list[Effective]]:
    """`derive`, and the group's events as they count (for facts: projections.facts.facts_from)."""
    unique = {e.event_id: e for e in entries}
    members = {child_id, *merged_from}
    # A replacement may move an event to another child: count only what concerns this group.
    all_effs, corrected = effective(unique.values())
    effs = [x for x in all_effs if x.corrected_by is None or members.intersection(x.care.child_ids())
            ] if corrected else all_effs
    values, conflicts = registers(child_id, effs)
    v: dict[str, Any] = {f: w.value for f, w in values.items()}
    sources = {f: FieldSource(event_id=w.event_id, site_id=w.site_id, actor=w.actor, recorded_at=w.stamp[0])
               for f, w in values.items()}

    g = Gathered()
    for x in effs:
        GATHER[type(x.care)](g, x)
    marks, registered_by, pair_start, pair_end = g.marks, g.registered_by, g.pair_start, g.pair_end
    case_open, case_close, last, months, aid, incidents = (g.case_open, g.case_close, g.last, g.months, g.aid,
                                                          g.incidents)
    marks.sort(key=lambda m: (m[0], m[1]))
    intervals: list[tuple[dt.date, dt.date | None]] = []
    is_open = False
    registered_on: dt.date | None = None
    closed_on: dt.date | None = None
    closing_reason: str | None = None
    closings: list[tuple[dt.date, str]] = []
    for when, _, opens, x in marks:
        day = _day(when)
        if opens and isinstance(x.care, c.ChildRegistered) and registered_on is None:
            registered_on = day
        if opens and not is_open and registered_on is not None:
            intervals.append((day, None))
            is_open, closed_on, closing_reason = True, None, None
        elif not opens and is_open:
            intervals[-1] = (intervals[-1][0], day)
            is_open = False
            closed_on = day
            assert isinstance(x.care, c.ArchiveClosed)
            closing_reason = str(x.care.reason)
            closings.append((day, closing_reason))

    pairings = []
    for pid in sorted(pair_start):
        s = pair_start[pid]
        assert isinstance(s.care, c.PairingStarted)
        e = pair_end.get(pid)
        pairings.append(Pairing(pairing_id=pid, partner_kind=str(s.care.partner_kind), partner_name=s.care.partner_name,
                                started_on=_day(s.occurred_at), ended_on=_day(e.occurred_at) if e else None,
                                site_id=s.entry.site_id))
    cases = []
    for cid in sorted(case_open):
        o = case_open[cid]
        assert isinstance(o.care, c.RightsCaseOpened)
        cl = case_close.get(cid)
        outcome = str(cl.care.outcome) if cl and isinstance(cl.care, c.RightsCaseClosed) else None
        cases.append(RightsCase(case_id=cid, kind=str(o.care.kind), opened_on=_day(o.occurred_at),
                                closed_on=_day(cl.occurred_at) if cl else None, outcome=outcome))
    aid.sort(key=lambda a: (a.occurred_on, a.event_id))

    village_site = v.get("village_site")
    school_site = v.get("school_site")
    sites = sorted({s for s in (village_site, school_site) if s}) or ([registered_by] if registered_by else [])
    guardian: c.Guardian | None = v.get("guardian")
    guardian_phone = v.get("guardian_phone")
    if guardian is not None and (guardian_phone is None or sources["guardian"].recorded_at > sources[
            "guardian_phone"].recorded_at):
        guardian_phone = guardian.phone or guardian_phone
    return ChildArchive(
        child_id=child_id,
        merged_from=sorted(members - {child_id}),
        registered=registered_on is not None,
        open=is_open,
        registered_on=registered_on,
        registered_by=registered_by,
        closed_on=closed_on,
        closing_reason=closing_reason,
        closings=closings,
        intervals=intervals,
        name=v.get("name"),
        sex=str(v["sex"]) if v.get("sex") is not None else None,
        birth_date=v.get("birth_date"),
        resident_id=v.get("resident_id"),
        household_village=v.get("household_village"),
        school=v.get("school"),
        grade=v.get("grade"),
        class_name=v.get("class_name"),
        reasons=[str(r) for r in v.get("reasons") or []],
        guardian=guardian,
        guardian_phone=guardian_phone,
        parents=list(v.get("parents") or []),
        status={a: str(v[f"status.{a}"]) for a in c.STATUS_AREAS if v.get(f"status.{a}") is not None},
        individual_plan=bool(v.get("individual_plan") or False),
        village_site=village_site,
        school_site=school_site,
        sites=sites,
        pairings=pairings,
        last_visit=last.get("visit"),
        last_call=last.get("call"),
        last_letter=last.get("letter"),
        last_talk=last.get("talk"),
        months=[MonthWork(month=f"{k // 100:04d}-{k % 100:02d}", visits=m[0], calls=m[1], letters=m[2], talks=m[3])
                for k, m in sorted(months.items())],
        aid=aid,
        rights_cases=cases,
        incidents=incidents,
        conflicts=sorted(conflicts, key=lambda x: (x.field, x.heads, x.resolved_by or "")),
        sources=sources,
        events=len(unique),
        not_same_as=sorted(g.not_same - members),
    ), all_effs


def _aid_item(event_id: str, care: c.CareEventBase, occurred_at: dt.datetime) -> AidItem | None:
    if isinstance(care, c.AidGiven):
        return AidItem(event_id=event_id, occurred_on=_day(occurred_at), kind="aid", amount_fen=care.amount_fen,
                       source=str(care.source), detail=str(care.kind))
    if isinstance(care, c.CondolenceVisitMade):
        return AidItem(event_id=event_id, occurred_on=_day(occurred_at), kind="condolence",
                       amount_fen=care.money_fen_each, source=str(care.source), detail=str(care.occasion))
    return None


Adder = Callable[[ChildArchive, str, Any, dt.datetime], dict[str, Any]]
# One handler per additive type (Fold.ADDITIVE in events.traits; tests/test_traits.py checks the
# two agree): the archive's changes for one more piece of that work.
ADD_WORK: dict[type[c.CareEventBase], Adder] = {}


def adds(*types: type[c.CareEventBase]) -> Callable[[Adder], Adder]:
    def register(fn: Adder) -> Adder:
        for t in types:
            assert t not in ADD_WORK, f"two adders for {t.__name__}"
            ADD_WORK[t] = fn
        return fn
    return register


@adds(*(c.EVENT_TYPES[name] for name in CONTACT_TYPES))
def _add_contact(a: ChildArchive, event_id: str, care: Any, occurred_at: dt.datetime) -> dict[str, Any]:
    kind = CONTACT_TYPES[type(care).__name__]
    changes: dict[str, Any] = {}
    day = _day(occurred_at)
    attr = f"last_{kind}"
    last = getattr(a, attr)
    if last is None or day > last:
        changes[attr] = day
    key = month_key(day)
    months = {m.month: m for m in a.months}
    m = months.get(key) or MonthWork(month=key)
    plural = {"visit": "visits", "call": "calls", "letter": "letters", "talk": "talks"}[kind]
    months[key] = msgspec.structs.replace(m, **{plural: getattr(m, plural) + 1})
    changes["months"] = [months[k] for k in sorted(months)]
    return changes


@adds(c.AidGiven, c.CondolenceVisitMade)
def _add_aid(a: ChildArchive, event_id: str, care: Any, occurred_at: dt.datetime) -> dict[str, Any]:
    item = _aid_item(event_id, care, occurred_at)
    assert item is not None
    return {"aid": sorted([*a.aid, item], key=lambda x: (x.occurred_on, x.event_id))}


@adds(c.SafetyIncidentReported)
def _add_incident(a: ChildArchive, event_id: str, care: Any, occurred_at: dt.datetime) -> dict[str, Any]:
    return {"incidents": a.incidents + 1}


@adds(c.TutoringGiven, c.CounsellingGiven, c.GuardianTrained, c.MeetingHeld, c.ActivityHeld)
def _add_counted_only(a: ChildArchive, event_id: str, care: Any, occurred_at: dt.datetime) -> dict[str, Any]:
    return {}  # the archive counts it in `events` only; the township counts it from facts


def add_work(a: ChildArchive, event_id: str, care: c.CareEventBase, occurred_at: dt.datetime) -> ChildArchive:
    """The archive with one more piece of uncorrected work that sets no field (a visit, a call,
    aid, an activity...): exactly what `derive` gives with that event added to the set."""
    changes = ADD_WORK[type(care)](a, event_id, care, occurred_at)
    return msgspec.structs.replace(a, events=a.events + 1, **changes)


archive_encoder = msgspec.msgpack.Encoder(order="deterministic")
_archive_decoder = msgspec.msgpack.Decoder(ChildArchive)


def encode_archive(a: ChildArchive) -> bytes:
    return archive_encoder.encode(a)


class ArchiveWork(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The parts of an archive that a visit, a call, a letter, a talk, an incident or an activity
    changes (`add_work`), stored apart from the rest (`proj.archive.work` beside `view`): the
    projector adds such work to nearly every archive a batch touches, and rewriting these few
    hundred bytes in the row instead of the whole ~5 KB view (out of line, in TOAST) is what
    keeps a batch's write small. Aid stays in the view: it changes with 3% of events."""

    events: int = 0
    last_visit: dt.date | None = None
    last_call: dt.date | None = None
    last_letter: dt.date | None = None
    last_talk: dt.date | None = None
    months: list[MonthWork] = []
    incidents: int = 0


WORK_FIELDS: tuple[str, ...] = ArchiveWork.__struct_fields__
_NO_WORK = ArchiveWork()
_NO_WORK_FIELDS = {f: getattr(_NO_WORK, f) for f in WORK_FIELDS}
VIEW_FIELDS: tuple[str, ...] = tuple(f for f in ChildArchive.__struct_fields__ if f not in WORK_FIELDS)
_work_decoder = msgspec.msgpack.Decoder(ArchiveWork)


def encode_parts(a: ChildArchive) -> tuple[bytes, bytes]:
    """The archive as stored: (view, work). The view holds every part but the work's, which it
    holds at their defaults; `decode_archive(view, work)` is the archive again."""
    work = ArchiveWork(**{f: getattr(a, f) for f in WORK_FIELDS})
    return archive_encoder.encode(msgspec.structs.replace(a, **_NO_WORK_FIELDS)), archive_encoder.encode(work)


def encode_work(a: ChildArchive) -> bytes:
    """The work part alone (`encode_parts(a)[1]`), for an archive whose view did not change."""
    return archive_encoder.encode(ArchiveWork(**{f: getattr(a, f) for f in WORK_FIELDS}))


def view_changed(before: ChildArchive, after: ChildArchive) -> bool:
    """Whether `after` differs from `before` outside the work part, for an `after` made from
    `before` by `add_work` (which replaces what it changes and keeps every other part as it is)."""
    return any(getattr(before, f) is not getattr(after, f) for f in VIEW_FIELDS)


def decode_archive(data: bytes, work: bytes | None = None) -> ChildArchive:
    """The archive stored as `data` (its view) and `work` (None for a row written before the work
    was stored apart, whose view holds everything)."""
    a = _archive_decoder.decode(data)
    if work is None:
        return a
    w = _work_decoder.decode(work)
    return msgspec.structs.replace(a, **{f: getattr(w, f) for f in WORK_FIELDS})

