"""The timeline (the growth record, 成长记录袋): every event, originals and corrections both."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

from events import catalogue as c
from projections.archive.corrections import effective
from projections.archive.state import Entry


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

