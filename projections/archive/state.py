"""A child's state: the set of events its archive is derived from, keyed by event id.

`apply` inserts, so applying the same events in any order, any number of times, gives the same
state (guarantee 6). `keys_of` says which states an event goes to; `family_of` which correction
family it belongs to (an original and its corrections always meet in the same states).
"""

from __future__ import annotations

import datetime as dt

import msgspec

from events import catalogue as c
from events.envelope import Event

Stamp = tuple[int, str, int]


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



def family_of(care: c.CareEventBase, event_id: str) -> str:
    """The correction family an event belongs to: a correction's target, else the event itself.
    Every member of a family goes to every key of every member, so an original and its
    corrections always meet (a correction need not list the children of what it corrects)."""
    return care.corrected_event_id if isinstance(care, c.EventCorrected) else event_id

