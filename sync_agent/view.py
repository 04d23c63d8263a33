"""The site's offline view of one child: a pure fold over every event it knows of the child.

Guarantee 6 (convergence) at the site: the fold sorts the events by (recorded_at HLC, site id,
event id) before applying them, so the same set of events gives the same view whatever order
and however many times they arrived. Each archive field is won by the latest event that set
it; two events that set a field with the same base (``based_on``) and disagree are reported
as a conflict instead of one silently winning.

This is the interim site-side reducer; the center's projections (``projections/``) are the
reference, and this module is meant to delegate to them where they offer a pure reducer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec

from events import catalogue as c
from events.envelope import Event, care_of

# Where each archive field's value sits in the payloads that set it.
_FIELD_ATTR: dict[tuple[str, str], str] = {
    ("ChildTransferred", "village_site"): "to_village_site",
    ("ChildTransferred", "school_site"): "to_school_site",
    ("ContactCardUpdated", "guardian_phone"): "guardian_phone",
}


def field_value(care: c.CareEventBase, field: str) -> Any:
    """The value an event gives an archive field, as plain JSON-able data."""
    if field.startswith("status."):
        attr = field.split(".", 1)[1]
    else:
        attr = _FIELD_ATTR.get((type(care).__name__, field), field)
    return msgspec.to_builtins(getattr(care, attr, None))


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSetter:
    event_id: str
    recorded_at: int
    site_id: str
    value: Any


@dataclasses.dataclass(slots=True)
class ChildView:
    child_id: str
    fields: dict[str, FieldSetter] = dataclasses.field(default_factory=dict)
    conflicts: dict[str, list[FieldSetter]] = dataclasses.field(default_factory=dict)
    closed: bool = False
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "child_id": self.child_id,
            "registered": "name" in self.fields,
            "closed": self.closed,
            "archive": {k: v.value for k, v in sorted(self.fields.items())},
            "set_by": {k: v.event_id for k, v in sorted(self.fields.items())},
            "conflicts": {k: [s.event_id for s in v] for k, v in sorted(self.conflicts.items())},
            "history": self.history,
        }


def _order(event: Event) -> tuple[int, str, str]:
    return (event.recorded_at, event.site_id, event.event_id)


def build_view(child_id: str, events: Iterable[Event]) -> ChildView:
    """Fold every known event of a child (duplicates and any arrival order allowed)."""
    unique = {e.event_id: e for e in events}
    view = ChildView(child_id)
    for event in sorted(unique.values(), key=_order):
        care = care_of(event)
        view.history.append({
            "event_id": event.event_id, "type": event.type, "site_id": event.site_id,
            "occurred_at": event.occurred_at.astimezone(dt.UTC).isoformat(), "understood": care is not None,
        })
        if care is None:
            continue
        if isinstance(care, c.ArchiveClosed):
            view.closed = True
        elif isinstance(care, c.ArchiveReopened):
            view.closed = False
        if child_id not in care.child_ids() or len(care.child_ids()) != 1:
            continue  # archive fields belong to single-child events
        for field in care.fields_set():
            setter = FieldSetter(event.event_id, event.recorded_at, event.site_id, field_value(care, field))
            previous = view.fields.get(field)
            base = event.based_on.get(field)
            if previous is not None and previous.value != setter.value and base != previous.event_id:
                # The new event did not know the one it overrides: concurrent updates that
                # disagree. The later one shows, and both stay listed for a person to settle.
                view.conflicts.setdefault(field, [previous]).append(setter)
            else:
                view.conflicts.pop(field, None)
            view.fields[field] = setter
        if isinstance(care, c.ConflictResolved):
            chosen = next((s for s in view.conflicts.get(care.field, []) if s.event_id == care.chosen_event_id), None)
            view.conflicts.pop(care.field, None)
            if chosen is not None:
                view.fields[care.field] = chosen
    view.history.sort(key=lambda h: (h["occurred_at"], h["event_id"]))
    return view


def field_bases(view: ChildView) -> dict[str, str]:
    """field -> event id that last set it in this view: the `based_on` of a new update."""
    return {k: v.event_id for k, v in view.fields.items()}
