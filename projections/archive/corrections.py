"""Corrections: how events count after `EventCorrected`.

`EventCorrected` never erases: the original stays in the timeline; its effect is replaced by the
correction's `replacement` (same event id for counting, replacement payload and occurred time)
or removed (retraction). When one event is corrected more than once, the correction with the
highest stamp wins. Corrections of corrections are not interpreted.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterable

import msgspec

from events import catalogue as c
from projections.archive.state import Entry


class Effective(msgspec.Struct, frozen=True, kw_only=True):
    """An event as it counts after corrections: payload and occurred time may be replaced."""

    entry: Entry
    care: c.CareEventBase
    occurred_at: dt.datetime
    counts_as: str  # the event id it counts under: the original's
    corrected_by: str | None = None



stamp_key = operator.attrgetter("recorded_at", "site_id", "site_seq")  # Entry.stamp, without the property call


def effective(entries: Iterable[Entry]) -> tuple[list[Effective], dict[str, tuple[str, bool]]]:
    """The events as they count, sorted by stamp, and for each corrected event id its winning
    correction (correction event id, retracted?)."""
    ordered = sorted(entries, key=stamp_key)
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

