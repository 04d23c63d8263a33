"""Field registers and conflicts: the value each archive field shows, and who set it.

Each archive field (events.catalogue.ARCHIVE_FIELDS) is a register. An update *knows* an earlier
update of the same field when the earlier one is its `based_on` entry for that field
(transitively), or was recorded earlier at the same site (a site knows its own log). The *heads*
are the updates no other update knows. One head: it is the value. Several heads that disagree: a
conflict; the archive shows the head with the highest stamp (deterministic) and the conflict
stays open until a `ConflictResolved` event, which acts as an update of the field with the chosen
event's value that knows every update recorded before it (by HLC: a site's clock observes every
event it receives, so what the person saw when resolving is stamped earlier).
"""

from __future__ import annotations

from typing import Any

import msgspec

from events import catalogue as c
from projections.archive.corrections import Effective
from projections.archive.state import Stamp


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


_FIELD_ATTR: dict[str, dict[str, str]] = {
    "StatusAssessed": {f"status.{a}": a for a in c.STATUS_AREAS},
    "ChildTransferred": {"village_site": "to_village_site", "school_site": "to_school_site"},
}
_value_encoder = msgspec.json.Encoder(order="sorted")


def field_value(care: c.CareEventBase, field: str) -> Any:
    attr = _FIELD_ATTR.get(type(care).__name__, {}).get(field, field)
    return getattr(care, attr)


class Write(msgspec.Struct, frozen=True):
    event_id: str
    stamp: Stamp
    site_id: str
    actor: str
    value: Any
    encoded: bytes
    bases: tuple[str, ...]
    resolution: bool = False


def _knows(writes: list[Write]) -> tuple[dict[str, set[str]], bool]:
    """For each write, the ids of the writes of the same field it knew (transitive closure of
    its base and its own site's earlier writes; a resolution knows every earlier-stamped write),
    and whether that relation is ordered: every write knows only writes of earlier stamps (what
    a site's clock and its `based_on` give; only bad data breaks it)."""
    by_id = {w.event_id: w for w in writes}
    direct: dict[str, set[str]] = {}
    for w in writes:
        d = {o.event_id for o in writes if o.event_id != w.event_id and (
            (o.site_id == w.site_id and o.stamp[2] < w.stamp[2]) or (w.resolution and o.stamp < w.stamp))}
        d.update(b for b in w.bases if b in by_id and b != w.event_id)
        direct[w.event_id] = d
    # In stamp order a write's closure is its direct writes with their closures, each complete
    # already when every edge points back in time: one pass. Otherwise, the fixpoint.
    known: dict[str, set[str]] = {}
    for w in sorted(writes, key=lambda w: w.stamp):
        k = set(direct[w.event_id])
        for o in direct[w.event_id]:
            closed = known.get(o)
            if closed is None:  # an edge forward in time: not ordered
                return _fixpoint(direct), False
            k |= closed
        known[w.event_id] = k
    return known, True


def _fixpoint(direct: dict[str, set[str]]) -> dict[str, set[str]]:
    """The transitive closure of any relation (bad based_on data can make a cycle)."""
    known = {k: set(v) for k, v in direct.items()}
    changed = True
    while changed:  # a handful of writes per field
        changed = False
        for k in known.values():
            extra = set().union(*(known[o] for o in k)) - k
            if extra:
                k |= extra
                changed = True
    return known


def _heads(ws: list[Write], known: dict[str, set[str]], ordered: bool) -> list[Write]:
    """The writes no other write knows without being known by it, by stamp (bad data can make
    a cycle; its members are then all heads, never none). Ordered, no write knows one that
    knows it: the heads are the writes nobody knows."""
    if ordered:
        seen = set().union(*(known[w.event_id] for w in ws))
        return sorted((w for w in ws if w.event_id not in seen), key=lambda w: w.stamp)
    return sorted((w for w in ws if not any(w.event_id in known[o.event_id] and o.event_id not in known[
        w.event_id] for o in ws)), key=lambda w: w.stamp)


# Payload types that never set an archive field (visits, calls, aid...): most of the log.
SETS_NO_FIELD = frozenset(
    cls for cls in c.EVENT_TYPES.values()
    if cls is not c.ConflictResolved and not cls.FIELDS and cls.fields_set is c.CareEventBase.fields_set)


def registers(child_id: str, effs: list[Effective]) -> tuple[dict[str, Write], list[Conflict]]:
    writes: dict[str, list[Write]] = {}
    resolutions: list[Effective] = []
    for x in effs:
        kind = type(x.care)
        if kind in SETS_NO_FIELD:
            continue
        if kind is c.ConflictResolved:
            resolutions.append(x)
            continue
        for f in x.care.fields_set():
            v = field_value(x.care, f)
            writes.setdefault(f, []).append(Write(
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
            writes[care.field].append(Write(
                x.entry.event_id, x.entry.stamp, x.entry.site_id, x.entry.actor, v, _value_encoder.encode(v),
                tuple(b for b in (care.chosen_event_id, x.entry.based_on.get(care.field)) if b), resolution=True))
    values: dict[str, Write] = {}
    conflicts: list[Conflict] = []
    for f in sorted(writes):
        ws = writes[f]
        known, ordered = _knows(ws)
        heads = _heads(ws, known, ordered)
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
            old_heads = sorted(w.event_id for w in _heads(before, known, ordered))
            if len({w.encoded for w in before if w.event_id in old_heads}) > 1:
                old_winner = max((w for w in before if w.event_id in old_heads), key=lambda w: w.stamp)
                conflicts.append(Conflict(child_id=child_id, field=f, heads=old_heads, winner=old_winner.event_id,
                                          resolved_by=r.event_id))
    return values, conflicts

