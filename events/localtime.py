"""The reporting day: which calendar day (and so which month and semester) an event belongs to.

Care work is done, and counted, on China Standard Time: UTC+8, one zone for the whole country,
no daylight saving. A home visit at 07:30 on 1 March in a village is 23:30 UTC on 28 February;
it belongs to March's follow-up figures, and a child born that morning is not "born in the
future". Times are stored as instants (timestamptz, UTC on the wire); only turning an instant
into a day uses this zone.
"""

from __future__ import annotations

import datetime as dt

_OFFSET = dt.timedelta(hours=8)
REPORTING_TZ = dt.timezone(_OFFSET, "UTC+08:00")


def local_day(t: dt.datetime) -> dt.date:
    """The reporting day of an instant (an aware datetime). Hot in projections: a UTC datetime,
    as the store returns them, is shifted rather than converted."""
    return (t + _OFFSET).date() if t.tzinfo is dt.UTC else t.astimezone(REPORTING_TZ).date()


def local_today(now: dt.datetime | None = None) -> dt.date:
    return local_day(now or dt.datetime.now(dt.UTC))


def day_start(day: dt.date) -> dt.datetime:
    """The instant a reporting day begins (its midnight on China Standard Time)."""
    return dt.datetime.combine(day, dt.time(), REPORTING_TZ)
