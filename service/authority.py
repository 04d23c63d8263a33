"""Scope is granted, never taken: every event is authorized against its sender at ingest.

The rule of each event type is its `authority` trait (events/traits.py, one row per type); this
module enforces it, inside the ingest transaction, from the store's state in commit order:

* ``WORK`` (visits, calls, letters, talks, aid, pairings, status, archive updates...): every
  child the event names is, or was, in the sending site's scope (its village or school role, now
  or before a transfer; a child merged with one of those), or the sender is the township office
  of the child's township. Work recorded offline about a child transferred away meanwhile is
  kept and counted; it grants nothing (work never changes a scope). A child the center has never
  seen (its registration not arrived yet) is no one's: the work is accepted and grants nothing.
* ``REGISTER`` (`ChildRegistered`): refused when the child id is already registered by another
  site; the sites it names must be registered sites of the sender's township, of the named kind.
* ``HOLDER`` (`ChildTransferred`, `ArchiveClosed`, `ArchiveReopened`): the site that holds the
  child now (its current village or school) hands it over to sites of the child's township; the
  township office may move or close any child of its township. Nobody else.
* ``TOWNSHIP`` (merges, unmerges, conflict resolutions): the township office of the township of
  every child named, only.
* ``RULES`` (`FollowUpRuleSet`, `FollowUpRuleRetired`, `SchoolCalendarSet`): the township office
  of the township the rule or calendar is for, only (a station cannot loosen what it is held to).
* ``CORRECTION`` (`EventCorrected`): the site that recorded the corrected event; another site's
  event only by the township office of its township. The replacement is authorized by its own
  type's rule, as if the sender recorded it.

A refused event is quarantined with its bytes and the reason (service/quarantine.py), receipted
to the sender as refused, and replayable by an admin once the township decides. Decisions depend
only on events committed before (and on earlier events of the same batch, in batch order): the
ingester takes a transaction-scoped advisory lock per child for events that change a scope, so
two transactions deciding about one child's scope are serialized in commit order. A rebuild
needs no decision of its own: refused events never enter the store.

Reasons go back to the sending site: they name its own site and the child ids it sent, never who
holds a child it does not hold.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from events import catalogue as c
from events import traits
from events.envelope import DecodedEvent
from events.traits import Authority
from events.types import scope_role
from store.conn import Conn

# Scope-changing types: their decisions take a per-child lock (see the module docstring).
_SCOPE_TYPES = (c.ChildRegistered, c.ChildTransferred, c.ArchivesMerged, c.ArchivesUnmerged)
_LOCK_SPACE = 0x5343_4F50  # "SCOP"


def township_of(site_id: str) -> str:
    """'region.township' of a site id 'region.township.site'."""
    return site_id.rsplit(".", 1)[0]


@dataclass(frozen=True, slots=True)
class SiteInfo:
    kind: str
    active: bool


@dataclass(slots=True)
class ChildFacts:
    """What the store says of one child, as the batch's decisions need it."""

    registered_by: set[str] = field(default_factory=set)  # sites that registered it
    ever: set[str] = field(default_factory=set)  # sites that hold or held it (village and school roles)
    holders: dict[str, str] = field(default_factory=dict)  # role -> the site holding it now
    linked: set[str] = field(default_factory=set)  # children merged with it, now or before

    @property
    def known(self) -> bool:
        return bool(self.registered_by or self.ever)

    def township(self) -> str | None:
        for site in sorted(self.registered_by | self.ever):
            return township_of(site)
        return None


@dataclass(slots=True)
class Facts:
    sites: dict[str, SiteInfo]
    children: dict[str, ChildFacts]
    recorded_by: dict[str, str]  # event id -> the site that recorded it (targets of corrections)

    def child(self, child_id: str) -> ChildFacts:
        return self.children.setdefault(child_id, ChildFacts())


def _children_named(care: c.CareEventBase) -> set[str]:
    ids = set(care.child_ids())
    if isinstance(care, c.EventCorrected) and care.replacement is not None:
        ids |= set(care.replacement.child_ids())
    return ids


async def lock_scope_changes(conn: Conn, batch: Sequence[DecodedEvent]) -> None:
    """Serialize decisions about the scope of the children whose scope this batch may change
    (locks in sorted order, so two batches never wait for each other in a cycle)."""
    keys = sorted({zlib.crc32(child.encode()) for d in batch if isinstance(d.care, _SCOPE_TYPES)
                   for child in d.care.child_ids()})
    for key in keys:
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_SPACE, key - 2**31)


async def load_facts(conn: Conn, batch: Sequence[DecodedEvent]) -> Facts:
    children: set[str] = set()
    sites: set[str] = set()
    targets: dict[str, set[str]] = {}  # corrected event id -> children to look for it by
    for d in batch:
        sites.add(d.event.site_id)
        care = d.care
        if care is None:
            children.update(d.event.children)
            continue
        children |= _children_named(care)
        for cls_care in (care, care.replacement if isinstance(care, c.EventCorrected) else None):
            if isinstance(cls_care, c.ChildTransferred):
                sites.update(s for s in (cls_care.to_village_site, cls_care.to_school_site) if s)
            elif isinstance(cls_care, c.ChildRegistered):
                sites.update(s for s in (cls_care.village_site, cls_care.school_site) if s)
        if isinstance(care, c.EventCorrected):
            targets.setdefault(care.corrected_event_id, set()).update(_children_named(care))
    facts = Facts(sites={}, children={}, recorded_by={})
    for r in await conn.fetch("SELECT site_id, kind, active FROM sites WHERE site_id = ANY($1)", sorted(sites)):
        facts.sites[r["site_id"]] = SiteInfo(r["kind"], r["active"])
    if children:
        ids = sorted(children)
        for r in await conn.fetch(
                "SELECT child_id, linked_child_id FROM child_links WHERE child_id = ANY($1)", ids):
            facts.child(r["child_id"]).linked.add(r["linked_child_id"])
        linked = sorted({x for f in facts.children.values() for x in f.linked} - children)
        for r in await conn.fetch(
                "SELECT child_id, role, site_id, until_tx IS NULL AS current FROM child_scope "
                "WHERE child_id = ANY($1)", ids + linked):
            f = facts.child(r["child_id"])
            f.ever.add(r["site_id"])
            if r["current"]:
                f.holders[r["role"]] = r["site_id"]
        for f in list(facts.children.values()):  # a merged child's sites see it too
            for other in f.linked:
                f.ever |= facts.children.get(other, ChildFacts()).ever
        # Registrations: children registered by a site that took no role (a township office).
        for r in await conn.fetch(
                "SELECT DISTINCT site_id, payload->>'child_id' AS child_id FROM events "
                "WHERE type = 'ChildRegistered' AND children && $1::text[]", ids):
            if r["child_id"] in children:
                facts.child(r["child_id"]).registered_by.add(r["site_id"])
    for target, kids in targets.items():
        if kids:
            row = await conn.fetchrow("SELECT site_id FROM events WHERE event_id = $1::uuid AND children && $2::text[]",
                                      target, sorted(kids))
        else:  # a correction of an event about no child: rare, so a scan is acceptable
            row = await conn.fetchrow("SELECT site_id FROM events WHERE event_id = $1::uuid", target)
        if row is not None:
            facts.recorded_by[target] = row["site_id"]
    return facts


async def already_stored(conn: Conn, batch: Sequence[DecodedEvent]) -> set[str]:
    """Ids of the events of `batch` the store holds already with the same content: a resend,
    which the store keeps once; it was authorized when it was first stored (and a decision taken
    now, on a scope that moved since, must not refuse the copy)."""
    rows = await conn.fetch("SELECT event_id::text AS event_id, hash FROM event_index WHERE event_id = ANY($1::uuid[])",
                            [d.event.event_id for d in batch])
    held = {r["event_id"]: bytes(r["hash"]) for r in rows}
    return {d.event.event_id for d in batch if held.get(d.event.event_id) == bytes.fromhex(d.hash)}


def authorize(batch: Sequence[DecodedEvent], facts: Facts, stored: AbstractSet[str] = frozenset()) -> dict[int, str]:
    """Index in `batch` -> why the event is refused, for every event its sender may not record
    (events in `stored`, resends of what the store holds, are not decided again). Accepted scope
    changes update `facts` as they go, so later events of the batch see them. A copy of an event
    accepted earlier in the batch (a station's resends arriving together) is that event again,
    not decided a second time: decided on the scope the first copy moved, a transfer's copy would
    be refused ("does not hold child") and quarantined although the transfer is stored."""
    refused: dict[int, str] = {}
    accepted: dict[str, str] = {}  # event_id -> hash of the copy accepted in this batch
    for i, d in enumerate(batch):
        sender = d.event.site_id
        if d.event.event_id in stored or accepted.get(d.event.event_id) == d.hash:
            facts.recorded_by[d.event.event_id] = sender
            continue
        why = _decide(d, sender, facts)
        if why is not None:
            refused[i] = f"not authorized: {why}"
            continue
        if d.care is not None:
            _apply(d.care, sender, facts)
        facts.recorded_by[d.event.event_id] = sender
        accepted[d.event.event_id] = d.hash
    return refused


def _decide(d: DecodedEvent, sender: str, facts: Facts) -> str | None:
    care = d.care
    if care is None:  # a type this center does not know: it grants nothing; its children must be the sender's
        return _work(sender, d.event.children, facts, d.event.type)
    return _rule(care, sender, facts)


def _rule(care: c.CareEventBase, sender: str, facts: Facts) -> str | None:
    name = type(care).__name__
    authority = traits.traits_of(type(care)).authority
    if authority is Authority.WORK:
        return _work(sender, care.child_ids(), facts, name)
    if authority is Authority.REGISTER:
        assert isinstance(care, c.ChildRegistered)
        return _register(care, sender, facts)
    if authority is Authority.HOLDER:
        return _holder(care, sender, facts, name)
    if authority is Authority.TOWNSHIP:
        return _township(care.child_ids(), sender, facts, name)
    if authority is Authority.RULES:
        return _rules(care, sender, facts, name)
    assert authority is Authority.CORRECTION and isinstance(care, c.EventCorrected)
    return _correction(care, sender, facts)


def _office_of(sender: str, facts: Facts) -> str | None:
    """The township whose office the sender is, or None."""
    info = facts.sites.get(sender)
    return township_of(sender) if info is not None and info.kind == "township" else None


def _work(sender: str, children: Iterable[str], facts: Facts, name: str) -> str | None:
    office = _office_of(sender, facts)
    outside = []
    for child in sorted(set(children)):
        f = facts.children.get(child)
        if f is None or not f.known:
            continue  # no one's child yet: accepted, grants nothing
        if sender in f.ever or sender in f.registered_by or (office is not None and f.township() == office):
            continue
        outside.append(child)
    if outside:
        return (f"{name} from site {sender} names {', '.join(outside)}, not in this site's scope (a site records "
                "work only about children it holds or held)")
    return None


def _register(care: c.ChildRegistered, sender: str, facts: Facts) -> str | None:
    f = facts.children.get(care.child_id)
    if f is not None and f.known:
        if f.registered_by != {sender}:
            return (f"ChildRegistered from site {sender}: child {care.child_id} is already registered by another "
                    "site (a child is registered once; its township office transfers or merges it)")
        moved = [site for role, site in _roles(care, sender, facts).items() if f.holders.get(role) != site]
        if moved:
            return (f"ChildRegistered from site {sender}: child {care.child_id} is already registered; registering "
                    "it again cannot move it (a transfer does)")
    for field_name, site, kind in (("village_site", care.village_site, "village"),
                                   ("school_site", care.school_site, "school")):
        if site is None or site == sender:
            continue
        info = facts.sites.get(site)
        if info is None or not info.active or scope_role(info.kind) != kind or township_of(site) != township_of(sender):
            return (f"ChildRegistered from site {sender}: {field_name} {site!r} is not an active {_KIND_WORDS[kind]} "
                    f"site{_KIND_NOTE[kind]} of township {township_of(sender)}")
    return None


# How a refusal names the kinds of site a role takes (events.types.scope_role).
_KIND_WORDS = {"village": "village", "school": "school"}
_KIND_NOTE = {"village": " (a village station or a community)", "school": ""}


def _roles(care: c.ChildRegistered, sender: str, facts: Facts) -> dict[str, str]:
    """The roles a registration gives (as service/scope.py applies them): the sites it names, and
    the sender itself in the role of its own kind when it names no site of that kind."""
    named = {"village": care.village_site, "school": care.school_site}
    info = facts.sites.get(sender)
    role = scope_role(info.kind) if info is not None else None
    if role is not None and named[role] is None:
        named[role] = sender
    return {role: site for role, site in named.items() if site is not None}


def _holder(care: c.CareEventBase, sender: str, facts: Facts, name: str) -> str | None:
    child = care.child_id  # type: ignore[attr-defined]
    f = facts.children.get(child)
    if f is None or not f.known:
        return f"{name} from site {sender}: child {child} is not registered at the center"
    township = f.township()
    holds = sender in f.holders.values() or (not f.holders and sender in f.registered_by)
    if not holds and _office_of(sender, facts) != township:
        return (f"{name} from site {sender}: this site does not hold child {child} (the site that holds a child "
                "hands it over; the township office may move any child of its township)")
    if isinstance(care, c.ChildTransferred):
        for field_name, site, kind in (("to_village_site", care.to_village_site, "village"),
                                       ("to_school_site", care.to_school_site, "school")):
            if site is None:
                continue
            info = facts.sites.get(site)
            if info is None or not info.active or scope_role(info.kind) != kind or township_of(site) != township:
                return (f"ChildTransferred from site {sender}: {field_name} {site!r} is not an active "
                        f"{_KIND_WORDS[kind]} site{_KIND_NOTE[kind]} of the child's township {township}")
    return None


def _township(children: Iterable[str], sender: str, facts: Facts, name: str) -> str | None:
    office = _office_of(sender, facts)
    if office is None:
        return f"{name} from site {sender}: only a township office records it"
    for child in sorted(set(children)):
        f = facts.children.get(child)
        if f is None or not f.known:
            return f"{name} from site {sender}: child {child} is not registered at the center"
        if f.township() != office:
            return f"{name} from site {sender}: child {child} is not of township {office}"
    return None


def _rules(care: c.CareEventBase, sender: str, facts: Facts, name: str) -> str | None:
    township = care.township  # type: ignore[attr-defined]
    office = _office_of(sender, facts)
    if office is None:
        return f"{name} from site {sender}: only a township office sets its township's rules"
    if office != township:
        return f"{name} from site {sender}: township {township} is not this office's township {office}"
    return None


def _correction(care: c.EventCorrected, sender: str, facts: Facts) -> str | None:
    target_site = facts.recorded_by.get(care.corrected_event_id)
    if target_site is None:
        # Not in the store (yet): the sender may correct only what it could have recorded itself.
        why = _work(sender, _children_named(care), facts, "EventCorrected")
    elif target_site != sender and _office_of(sender, facts) != township_of(target_site):
        return (f"EventCorrected from site {sender}: event {care.corrected_event_id} was recorded by another site "
                "(a site corrects its own entries; the township office corrects its sites' entries)")
    else:
        why = None
    if why is None and care.replacement is not None and not isinstance(care.replacement, c.EventCorrected):
        inner = _rule(care.replacement, sender, facts)
        if inner is not None:
            why = f"the replacement: {inner}"
    return why


def _apply(care: c.CareEventBase, sender: str, facts: Facts) -> None:
    """What an accepted event changes in the facts later events of the batch are decided on
    (the same changes service/scope.py writes)."""
    if isinstance(care, c.ChildRegistered):
        f = facts.child(care.child_id)
        f.registered_by.add(sender)
        for role, site in _roles(care, sender, facts).items():
            f.holders[role] = site
            f.ever.add(site)
    elif isinstance(care, c.ChildTransferred):
        f = facts.child(care.child_id)
        for role, to in (("village", care.to_village_site), ("school", care.to_school_site)):
            if to is not None:
                f.holders[role] = to
                f.ever.add(to)
    elif isinstance(care, c.ArchivesMerged):
        a, b = facts.child(care.kept_child_id), facts.child(care.merged_child_id)
        a.linked.add(care.merged_child_id)
        b.linked.add(care.kept_child_id)
        union = a.ever | b.ever
        a.ever, b.ever = set(union), set(union)
