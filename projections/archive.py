"""The merged child archive: a pure, order-independent reducer (no I/O).

The same code runs at the center (projections.runner) and in a site agent, so both show the
same archive for the same events (guarantee 6).

How convergence holds. A child's *state* (`ChildState`) is only the set of events that concern
it, keyed by event id: `apply` inserts, so applying the same events in any order, any number of
times, gives the same state. Everything a person sees (`ChildArchive`) is *derived* from that set
by `derive`, which first sorts the events by their stamp (recorded_at HLC, site_id, site_seq: a
total order, since (site_id, site_seq) is unique) and never depends on arrival order.

Field values. Each archive field (events.catalogue.ARCHIVE_FIELDS) is a register. An update
*knows* an earlier update of the same field when the earlier one is its `based_on` entry for
that field (transitively), or was recorded earlier at the same site (a site knows its own log).
The *heads* are the updates no other update knows. One head: it is the value. Several heads
that disagree: a conflict; the archive shows the head with the highest stamp (deterministic) and
the conflict stays open until a `ConflictResolved` event, which acts as an update of the field
with the chosen event's value that knows every update recorded before it (by HLC: a site's clock
observes every event it receives, so what the person saw when resolving is stamped earlier).

Corrections. `EventCorrected` never erases: the original stays in the timeline; its effect is
replaced by the correction's `replacement` (same event id for counting, replacement payload and
occurred time) or removed (retraction). When one event is corrected more than once, the
correction with the highest stamp wins. Corrections of corrections are not interpreted.

Merges. `ArchivesMerged` joins the merged child's events to the kept one (`groups`), and
`ArchivesUnmerged` naming that merge undoes it. Several merges are applied in stamp order; one
that would make a cycle or give a child a second parent is ignored.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from events import catalogue as c
from events.envelope import Event
from events.localtime import local_day
from events.types import PartnerKind

Stamp = tuple[int, str, int]
CONTACT_TYPES: dict[str, str] = {
    "HomeVisitMade": "visit",
    "ParentCallMade": "call",
    "LetterWritten": "letter",
    "TalkHeld": "talk",
}
PROXY_KINDS = (PartnerKind.PROXY_PARENT, PartnerKind.LOVING_MOTHER)
_CONTACT_NAMES = ("visit", "call", "letter", "talk")  # the order of MonthWork's counts
_CONTACT_SLOT: dict[type, int] = {c.EVENT_TYPES[name]: _CONTACT_NAMES.index(kind)
                                  for name, kind in CONTACT_TYPES.items()}


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the archive keeps it: the envelope facts and the typed payload."""

    event_id: str
    type: str
    site_id: str
    site_seq: int
    actor: str
    occurred_at: dt.datetime
    recorded_at: int
    based_on: dict[str, str] = {}
    care: c.CareEvent

    @property
    def stamp(self) -> Stamp:
        return (self.recorded_at, self.site_id, self.site_seq)


def entry_of(event: Event, care: c.CareEventBase) -> Entry:
    return Entry(
        event_id=event.event_id, type=event.type, site_id=event.site_id, site_seq=event.site_seq,
        actor=event.actor, occurred_at=event.occurred_at, recorded_at=event.recorded_at,
        based_on=event.based_on, care=care,  # type: ignore[arg-type]
    )


class ChildState(msgspec.Struct, kw_only=True):
    """The set of events concerning one child id, keyed by event id (the reducer's state)."""

    child_id: str
    entries: dict[str, Entry] = msgspec.field(default_factory=dict)


def apply(state: ChildState | None, event: Event, care: c.CareEventBase | None, child_id: str | None = None
          ) -> ChildState:
    """Add one event to one child's state. Idempotent and commutative. `care` None (an event
    this code does not understand) leaves the state unchanged; callers count those."""
    cid = child_id or (state.child_id if state is not None else None)
    if cid is None:
        ids = care.child_ids() if care is not None else tuple(event.children)
        if not ids:
            raise ValueError(f"event {event.event_id} concerns no child; pass child_id")
        cid = ids[0]
    if state is None:
        state = ChildState(child_id=cid)
    if care is not None and event.event_id not in state.entries:
        state.entries[event.event_id] = entry_of(event, care)
    return state


def keys_of(care: c.CareEventBase, event_id: str) -> tuple[str, ...]:
    """Which states an event goes to: its children, or for an event about no child the
    pseudo-key of the event it is about (so a correction meets what it corrects)."""
    children = care.child_ids()
    if children:
        return children
    target = care.corrected_event_id if isinstance(care, c.EventCorrected) else event_id
    return (f"ev:{target}",)


# --- the derived archive -----------------------------------------------------------------


class FieldSource(msgspec.Struct, frozen=True, kw_only=True):
    """Who set the value a field shows now: for an auditor's "who recorded each line"."""

    event_id: str
    site_id: str
    actor: str
    recorded_at: int


class Conflict(msgspec.Struct, frozen=True, kw_only=True):
    """Concurrent, disagreeing updates of one field. `heads` are the update event ids."""

    child_id: str
    field: str
    heads: list[str]
    winner: str
    resolved_by: str | None = None


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

    @property
    def current_pairings(self) -> list[Pairing]:
        return [p for p in self.pairings if p.ended_on is None]

    @property
    def open_conflicts(self) -> list[Conflict]:
        return [x for x in self.conflicts if x.resolved_by is None]

    def open_on(self, day: dt.date) -> bool:
        """Was the archive open on this day (registered on or before it and not closed)?"""
        return any(lo <= day and (hi is None or day < hi) for lo, hi in self.intervals)


class Effective(msgspec.Struct, frozen=True, kw_only=True):
    """An event as it counts after corrections: payload and occurred time may be replaced."""

    entry: Entry
    care: c.CareEventBase
    occurred_at: dt.datetime
    counts_as: str  # the event id it counts under: the original's
    corrected_by: str | None = None


_stamp_key = operator.attrgetter("recorded_at", "site_id", "site_seq")  # Entry.stamp, without the property call


def effective(entries: Iterable[Entry]) -> tuple[list[Effective], dict[str, tuple[str, bool]]]:
    """The events as they count, sorted by stamp, and for each corrected event id its winning
    correction (correction event id, retracted?)."""
    ordered = sorted(entries, key=_stamp_key)
    winning: dict[str, Entry] = {}
    for e in ordered:
        if isinstance(e.care, c.EventCorrected):
            winning[e.care.corrected_event_id] = e  # later stamps overwrite: highest stamp wins
    if not winning:  # the common case: nothing corrected, every event counts as it is
        return [Effective(entry=e, care=e.care, occurred_at=e.occurred_at, counts_as=e.event_id)
                for e in ordered], {}
    # A replacement counts only once its original is here too (family routing brings the
    # original to every child its correction concerns); a correction of a correction does nothing.
    out: list[Effective] = []
    for e in ordered:
        if isinstance(e.care, c.EventCorrected):
            continue
        corr = winning.get(e.event_id)
        if corr is None:
            out.append(Effective(entry=e, care=e.care, occurred_at=e.occurred_at, counts_as=e.event_id))
            continue
        cc = corr.care
        assert isinstance(cc, c.EventCorrected)
        if cc.replacement is not None:
            out.append(Effective(entry=e, care=cc.replacement, occurred_at=cc.replacement_occurred_at or e.occurred_at,
                                 counts_as=e.event_id, corrected_by=corr.event_id))
    # `out` follows `ordered`, so it is in stamp order already.
    corrections = {t: (corr.event_id, isinstance(corr.care, c.EventCorrected) and corr.care.replacement is None)
                   for t, corr in winning.items()}
    return out, corrections


_FIELD_ATTR: dict[str, dict[str, str]] = {
    "StatusAssessed": {f"status.{a}": a for a in c.STATUS_AREAS},
    "ChildTransferred": {"village_site": "to_village_site", "school_site": "to_school_site"},
}
_value_encoder = msgspec.json.Encoder(order="sorted")


def field_value(care: c.CareEventBase, field: str) -> Any:
    attr = _FIELD_ATTR.get(type(care).__name__, {}).get(field, field)
    return getattr(care, attr)


class _Write(msgspec.Struct, frozen=True):
    event_id: str
    stamp: Stamp
    site_id: str
    actor: str
    value: Any
    encoded: bytes
    bases: tuple[str, ...]
    resolution: bool = False


def _knows(writes: list[_Write]) -> dict[str, set[str]]:
    """For each write, the ids of the writes of the same field it knew (transitive closure of
    its base and its own site's earlier writes; a resolution knows every earlier-stamped write)."""
    by_id = {w.event_id: w for w in writes}
    known: dict[str, set[str]] = {}
    for w in writes:
        direct = {o.event_id for o in writes if o.event_id != w.event_id and (
            (o.site_id == w.site_id and o.stamp[2] < w.stamp[2]) or (w.resolution and o.stamp < w.stamp))}
        direct |= {b for b in w.bases if b in by_id and b != w.event_id}
        known[w.event_id] = direct
    changed = True
    while changed:  # fixpoint; a handful of writes per field, so the cost is nothing
        changed = False
        for k in known.values():
            extra = set().union(*(known[o] for o in k)) - k
            if extra:
                k |= extra
                changed = True
    return known


# Payload types that never set an archive field (visits, calls, aid...): most of the log.
_SETS_NO_FIELD = frozenset(
    cls for cls in c.EVENT_TYPES.values()
    if cls is not c.ConflictResolved and not cls.FIELDS and cls.fields_set is c.CareEventBase.fields_set)


def _registers(child_id: str, effs: list[Effective]) -> tuple[dict[str, _Write], list[Conflict]]:
    writes: dict[str, list[_Write]] = {}
    resolutions: list[Effective] = []
    for x in effs:
        kind = type(x.care)
        if kind in _SETS_NO_FIELD:
            continue
        if kind is c.ConflictResolved:
            resolutions.append(x)
            continue
        for f in x.care.fields_set():
            v = field_value(x.care, f)
            writes.setdefault(f, []).append(_Write(
                x.entry.event_id, x.entry.stamp, x.entry.site_id, x.entry.actor, v, _value_encoder.encode(v),
                tuple(b for b in (x.entry.based_on.get(f),) if b)))
    by_event: dict[str, Effective] = {x.entry.event_id: x for x in effs} if resolutions else {}
    for x in resolutions:
        care = x.care
        if isinstance(care, c.ConflictResolved) and care.field in writes:
            chosen = by_event.get(care.chosen_event_id)
            if chosen is None or care.field not in chosen.care.fields_set():
                continue  # the chosen update has not arrived (or sets no such field): wait for it
            v = field_value(chosen.care, care.field)
            writes[care.field].append(_Write(
                x.entry.event_id, x.entry.stamp, x.entry.site_id, x.entry.actor, v, _value_encoder.encode(v),
                tuple(b for b in (care.chosen_event_id, x.entry.based_on.get(care.field)) if b), resolution=True))
    values: dict[str, _Write] = {}
    conflicts: list[Conflict] = []
    for f in sorted(writes):
        ws = writes[f]
        known = _knows(ws)
        # A head is a write no other write knows without being known by it (bad based_on data
        # can make a cycle; its members are then all heads, never none).
        heads = sorted((w for w in ws if not any(w.event_id in known[o.event_id] and o.event_id not in known[
            w.event_id] for o in ws)), key=lambda w: w.stamp)
        winner = heads[-1]
        values[f] = winner
        if len({h.encoded for h in heads}) > 1:
            conflicts.append(Conflict(child_id=child_id, field=f, heads=sorted(h.event_id for h in heads),
                                      winner=winner.event_id))
        # Resolved conflicts: sets of concurrent disagreeing writes that a resolution knew.
        for r in ws:
            if not r.resolution:
                continue
            seen = known[r.event_id]
            before = [w for w in ws if w.event_id in seen and not w.resolution]
            old_heads = sorted(w.event_id for w in before if not any(
                w.event_id in known[o.event_id] and o.event_id not in known[w.event_id] for o in before))
            if len({w.encoded for w in before if w.event_id in old_heads}) > 1:
                old_winner = max((w for w in before if w.event_id in old_heads), key=lambda w: w.stamp)
                conflicts.append(Conflict(child_id=child_id, field=f, heads=old_heads, winner=old_winner.event_id,
                                          resolved_by=r.event_id))
    return values, conflicts


def month_key(day: dt.date | dt.datetime) -> str:
    return f"{day.year:04d}-{day.month:02d}"


_day = local_day  # the reporting day (UTC+8)


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
    values, conflicts = _registers(child_id, effs)
    v: dict[str, Any] = {f: w.value for f, w in values.items()}
    sources = {f: FieldSource(event_id=w.event_id, site_id=w.site_id, actor=w.actor, recorded_at=w.stamp[0])
               for f, w in values.items()}

    # Open/closed history, by occurred time (then stamp), so a late-arriving closing from an
    # offline station lands where it happened.
    marks: list[tuple[dt.datetime, Stamp, bool, Effective]] = []
    registered_by: str | None = None
    # Pairings, contacts, aid, cases: gathered in the same pass (one type lookup per event).
    pair_start: dict[str, Effective] = {}
    pair_end: dict[str, Effective] = {}
    case_open: dict[str, Effective] = {}
    case_close: dict[str, Effective] = {}
    last: dict[str, dt.date] = {}
    months: dict[int, list[int]] = {}  # year * 100 + month -> [visits, calls, letters, talks]
    aid: list[AidItem] = []
    incidents = 0
    for x in effs:
        care = x.care
        kind = type(care)
        slot = _CONTACT_SLOT.get(kind)
        if slot is not None:
            day = _day(x.occurred_at)
            name = _CONTACT_NAMES[slot]
            prev = last.get(name)
            if prev is None or day > prev:
                last[name] = day
            month = day.year * 100 + day.month
            counts = months.get(month)
            if counts is None:
                counts = months[month] = [0, 0, 0, 0]
            counts[slot] += 1
        elif kind is c.ChildRegistered:
            marks.append((x.occurred_at, x.entry.stamp, True, x))
            if registered_by is None:
                registered_by = x.entry.site_id
        elif kind is c.ArchiveReopened:
            marks.append((x.occurred_at, x.entry.stamp, True, x))
        elif kind is c.ArchiveClosed:
            marks.append((x.occurred_at, x.entry.stamp, False, x))
        elif isinstance(care, c.PairingStarted):
            pair_start.setdefault(care.pairing_id, x)
        elif isinstance(care, c.PairingEnded):
            pair_end.setdefault(care.pairing_id, x)
        elif isinstance(care, c.RightsCaseOpened):
            case_open.setdefault(care.case_id, x)
        elif isinstance(care, c.RightsCaseClosed):
            case_close.setdefault(care.case_id, x)
        elif isinstance(care, c.AidGiven | c.CondolenceVisitMade):
            item = _aid_item(x.counts_as, care, x.occurred_at)
            assert item is not None
            aid.append(item)
        elif isinstance(care, c.SafetyIncidentReported):
            incidents += 1
    marks.sort(key=lambda m: (m[0], m[1]))
    intervals: list[tuple[dt.date, dt.date | None]] = []
    is_open = False
    registered_on: dt.date | None = None
    closed_on: dt.date | None = None
    closing_reason: str | None = None
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
    ), all_effs


def _aid_item(event_id: str, care: c.CareEventBase, occurred_at: dt.datetime) -> AidItem | None:
    if isinstance(care, c.AidGiven):
        return AidItem(event_id=event_id, occurred_on=_day(occurred_at), kind="aid", amount_fen=care.amount_fen,
                       source=str(care.source), detail=str(care.kind))
    if isinstance(care, c.CondolenceVisitMade):
        return AidItem(event_id=event_id, occurred_on=_day(occurred_at), kind="condolence",
                       amount_fen=care.money_fen_each, source=str(care.source), detail=str(care.occasion))
    return None


def add_work(a: ChildArchive, event_id: str, care: c.CareEventBase, occurred_at: dt.datetime) -> ChildArchive:
    """The archive with one more piece of uncorrected work that sets no field (a visit, a call,
    aid, an activity...): exactly what `derive` gives with that event added to the set."""
    changes: dict[str, Any] = {"events": a.events + 1}
    kind = CONTACT_TYPES.get(type(care).__name__)
    if kind is not None:
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
    elif (item := _aid_item(event_id, care, occurred_at)) is not None:
        changes["aid"] = sorted([*a.aid, item], key=lambda x: (x.occurred_on, x.event_id))
    elif isinstance(care, c.SafetyIncidentReported):
        changes["incidents"] = a.incidents + 1
    return msgspec.structs.replace(a, **changes)


class TimelineItem(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the growth record: what happened, when, who recorded it where."""

    event_id: str
    type: str
    occurred_at: dt.datetime
    recorded_at: int
    site_id: str
    site_seq: int
    actor: str
    children: list[str]
    corrects: str | None = None  # for a correction: the event it corrects
    corrected_by: str | None = None  # the correction that now decides how this event counts
    retracted: bool = False


def timeline(entries: Iterable[Entry]) -> list[TimelineItem]:
    """Every event, the originals and their corrections both, by occurred time then stamp."""
    unique = {e.event_id: e for e in entries}
    _, corrections = effective(unique.values())
    items = []
    for e in sorted(unique.values(), key=lambda e: (e.occurred_at, e.stamp)):
        corr = corrections.get(e.event_id)
        items.append(TimelineItem(
            event_id=e.event_id, type=e.type, occurred_at=e.occurred_at, recorded_at=e.recorded_at,
            site_id=e.site_id, site_seq=e.site_seq, actor=e.actor, children=list(e.care.child_ids()),
            corrects=e.care.corrected_event_id if isinstance(e.care, c.EventCorrected) else None,
            corrected_by=corr[0] if corr else None, retracted=bool(corr and corr[1])))
    return items


# --- merges --------------------------------------------------------------------------------


class MergeEdge(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    merge_event_id: str
    kept: str
    merged: str
    stamp: tuple[int, str, int]
    undone: bool


def merge_edges(entries: Iterable[Entry]) -> list[MergeEdge]:
    """The merges these events record, each with whether a later event undid it."""
    effs, _ = effective(entries)
    merges: dict[str, Effective] = {}
    undone: set[str] = set()
    for x in effs:
        if isinstance(x.care, c.ArchivesMerged):
            merges[x.entry.event_id] = x
        elif isinstance(x.care, c.ArchivesUnmerged):
            undone.add(x.care.merge_event_id)
    out = []
    for eid, x in merges.items():
        assert isinstance(x.care, c.ArchivesMerged)
        out.append(MergeEdge(merge_event_id=eid, kept=x.care.kept_child_id, merged=x.care.merged_child_id,
                             stamp=x.entry.stamp, undone=eid in undone))
    return sorted(out, key=lambda e: e.stamp)


def roots(edges: Iterable[MergeEdge]) -> dict[str, str]:
    """child id -> the child it is merged into (transitively), for merged children only."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        seen = set()
        while x in parent and x not in seen:
            seen.add(x)
            x = parent[x]
        return x

    for e in sorted({e.merge_event_id: e for e in edges}.values(), key=lambda e: e.stamp):
        if e.undone or e.merged in parent or e.kept == e.merged or root(e.kept) == e.merged:
            continue
        parent[e.merged] = e.kept
    return {x: root(x) for x in parent}


def group(states: Mapping[str, ChildState], root_of: Mapping[str, str]) -> dict[str, list[str]]:
    """root child id -> every child id whose events make its archive (itself first)."""
    out: dict[str, list[str]] = {}
    for cid in sorted(states):
        if cid.startswith("ev:"):
            continue
        r = root_of.get(cid, cid)
        out.setdefault(r, [r])
        if cid != r:
            out[r].append(cid)
    return out


def derive_all(states: Mapping[str, ChildState], effs_out: list[list[Effective]] | None = None
               ) -> dict[str, ChildArchive]:
    """Every child's archive from every child's state: merged children get a stub naming the
    child they are merged into; the kept child's archive joins their events. With `effs_out`,
    also collects each group's (and each pseudo-key's) events as they count, for facts."""
    edges = merge_edges(e for s in states.values() for e in s.entries.values()
                        if e.type in _MERGE_TYPES)
    root_of = roots(edges)
    out: dict[str, ChildArchive] = {}
    for r, members in group(states, root_of).items():
        entries = [e for m in members if m in states for e in states[m].entries.values()]
        out[r], effs = derive_full(r, entries, members[1:])
        if effs_out is not None:
            effs_out.append(effs)
        for m in members[1:]:
            out[m] = ChildArchive(child_id=m, merged_into=r)
    if effs_out is not None:
        for k, st in states.items():
            if k.startswith("ev:"):
                effs_out.append(effective(st.entries.values())[0])
    return out


_MERGE_TYPES = frozenset(("ArchivesMerged", "ArchivesUnmerged", "EventCorrected"))


def family_of(care: c.CareEventBase, event_id: str) -> str:
    """The correction family an event belongs to: a correction's target, else the event itself.
    Every member of a family goes to every key of every member, so an original and its
    corrections always meet (a correction need not list the children of what it corrects)."""
    return care.corrected_event_id if isinstance(care, c.EventCorrected) else event_id


def _one_child(cls: type[c.CareEventBase]) -> bool:
    """Payloads whose keys_of is always (child_id,): one required child, not a correction."""
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    return (cls is not c.EventCorrected and cls.child_ids is c.CareEventBase.child_ids
            and "child_id" in fields and fields["child_id"].required and "child_ids_list" not in fields)


_ONE_CHILD = frozenset(cls for cls in c.EVENT_TYPES.values() if _one_child(cls))


class ArchiveBook:
    """Incremental, in-memory holder of child states (a site agent's or a rebuild's): `add`
    events in any order, any number of times; `archives()` derives every archive.

    It routes by correction family (`family_of`): every member goes to the keys of every member."""

    def __init__(self) -> None:
        self.states: dict[str, ChildState] = {}
        self.skipped: set[str] = set()
        # Families with a correction in them (keyed by the corrected event id): their keys and
        # members. An event nothing corrects (most of them) is a family of one and is kept only
        # in `_entry`; it joins these maps when its first correction arrives.
        self._family_keys: dict[str, set[str]] = {}
        self._family_members: dict[str, list[str]] = {}
        self._entry: dict[str, Entry] = {}  # event id -> its entry

    def add(self, event: Event, care: c.CareEventBase | None) -> set[str]:
        """Add one event; returns the keys (child ids or "ev:" pseudo-keys) whose state changed."""
        if care is None:
            self.skipped.add(event.event_id)
            return set()
        return self.add_entry(entry_of(event, care))

    def add_entry(self, entry: Entry) -> set[str]:
        eid = entry.event_id
        known = self._entry
        if eid in known:
            return set()
        care = entry.care
        fam = care.corrected_event_id if isinstance(care, c.EventCorrected) else eid  # family_of
        own = keys_of(care, eid)
        keys = self._family_keys.get(fam)
        states = self.states
        if keys is None:
            original = known.get(fam) if fam != eid else None
            if original is None or isinstance(original.care, c.EventCorrected):
                # The first event of its family (the common case: an uncorrected event).
                if fam != eid:  # a correction before (or without) its original: track its family
                    self._family_keys[fam] = set(own)
                    self._family_members[fam] = [eid]
                for k in own:
                    st = states.get(k)
                    if st is None:
                        st = states[k] = ChildState(child_id=k)
                    st.entries[eid] = entry
                known[eid] = entry
                return set(own)
            # The first correction of an original in hand: its family is tracked from now on.
            keys = self._family_keys[fam] = set(keys_of(original.care, fam))
            self._family_members[fam] = [fam]
        members = self._family_members[fam]
        new_keys = set(own) - keys
        changed = keys | set(own)
        for other in members:  # earlier members reach the keys this event brings
            earlier = known[other]
            for k in new_keys:
                states.setdefault(k, ChildState(child_id=k)).entries[other] = earlier
        keys |= new_keys
        for k in keys:
            states.setdefault(k, ChildState(child_id=k)).entries[eid] = entry
        members.append(eid)
        known[eid] = entry
        return changed

    def fold(self, entry: Entry) -> None:
        """`add_entry` without telling which keys changed (a rebuild's fold): an event about
        one child that no correction reached first goes straight to that child's state."""
        if type(entry.care) not in _ONE_CHILD:
            self.add_entry(entry)
            return
        eid = entry.event_id
        known = self._entry
        if eid in known:
            return
        if eid in self._family_keys:  # a correction of it came first
            self.add_entry(entry)
            return
        key = entry.care.child_id  # type: ignore[union-attr]
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = ChildState(child_id=key)
        st.entries[eid] = entry
        known[eid] = entry

    def archives(self) -> dict[str, ChildArchive]:
        return derive_all(self.states)

    def family_keys(self, event_id: str) -> set[str]:
        """Every key the family of this (non-correction) event goes to."""
        keys = self._family_keys.get(event_id)
        if keys:
            return keys
        e = self._entry[event_id]
        own = keys_of(e.care, event_id)
        return set(own) if family_of(e.care, event_id) == event_id else {own[0]}


def build_states(events: Iterable[tuple[Event, c.CareEventBase | None]]) -> tuple[dict[str, ChildState], int]:
    """Fold events into states (any order, duplicates welcome); returns (states, the number of
    distinct events not understood)."""
    book = ArchiveBook()
    for event, care in events:
        book.add(event, care)
    return book.states, len(book.skipped)


def build(events: Iterable[tuple[Event, c.CareEventBase | None]]) -> dict[str, ChildArchive]:
    """Every child's archive from a set of events (pairs of envelope and typed payload)."""
    states, _ = build_states(events)
    return derive_all(states)


_archive_encoder = msgspec.msgpack.Encoder(order="deterministic")
_archive_decoder = msgspec.msgpack.Decoder(ChildArchive)
_state_decoder = msgspec.msgpack.Decoder(ChildState)


def encode_archive(a: ChildArchive) -> bytes:
    return _archive_encoder.encode(a)


def decode_archive(data: bytes) -> ChildArchive:
    return _archive_decoder.decode(data)


def encode_state(s: ChildState) -> bytes:
    return _archive_encoder.encode(s)


def decode_state(data: bytes) -> ChildState:
    return _state_decoder.decode(data)
