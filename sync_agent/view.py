"""The site's offline view of a child: the center's own reducer (projections.archive) run over
every event this site knows of the child, its own and those fanned out to it.

Guarantee 6 (convergence): the reducer sorts by (recorded_at HLC, site id, site_seq) and keys
events by id, so the same set of events gives the same archive here as at the center, in any
arrival order and with any number of copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from events.envelope import Event, care_of
from projections import archive


def build_view(child_id: str, events: Iterable[Event]) -> archive.ChildArchive:
    """The child's merged archive from the events the site holds (duplicates allowed)."""
    pairs = [(e, care_of(e)) for e in events]
    return archive.build(pairs).get(child_id) or archive.ChildArchive(child_id=child_id)


def field_bases(view: archive.ChildArchive) -> dict[str, str]:
    """field -> id of the event whose value the field shows now: the `based_on` of an update."""
    return {field: src.event_id for field, src in view.sources.items()}


def as_json(child_id: str, events: Iterable[Event]) -> dict[str, Any]:
    """The archive and its timeline, as plain JSON-able data (for `agent show` and local HTTP)."""
    known = list(events)
    pairs = [(e, care_of(e)) for e in known]
    entries = [archive.entry_of(e, care) for e, care in pairs if care is not None]
    view = archive.build(pairs).get(child_id) or archive.ChildArchive(child_id=child_id)
    out: dict[str, Any] = msgspec.to_builtins(view)
    out["timeline"] = msgspec.to_builtins(archive.timeline(entries))
    out["not_understood"] = sum(1 for _, care in pairs if care is None)
    return out


class ChildRecord(NamedTuple):
    """Everything the site knows of one child, for its page and its paper archive: the archive,
    every event (originals and corrections both, by occurred time then stamp), the timeline and,
    for each corrected event, its winning correction (correction event id, retracted?)."""

    archive: archive.ChildArchive
    entries: list[archive.Entry]
    timeline: list[archive.TimelineItem]
    corrections: dict[str, tuple[str, bool]]


def child_record(child_id: str, events: Iterable[Event]) -> ChildRecord:
    """The child's archive (the center's reducer) and its events as entries, in one pass."""
    pairs = [(e, care_of(e)) for e in events]
    entries = list({e.event_id: archive.entry_of(e, care) for e, care in pairs if care is not None}.values())
    view = archive.build(pairs).get(child_id) or archive.ChildArchive(child_id=child_id)
    _, corrections = archive.effective(entries)
    ordered = sorted(entries, key=lambda e: (e.occurred_at, e.stamp))
    return ChildRecord(view, ordered, archive.timeline(entries), corrections)
