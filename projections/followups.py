"""The periods follow-up figures and rollups are counted in: a half-open date range with a label.

Months ("2026-03"); semesters: spring = February to July ("YYYY-S1"), autumn = August to January
("YYYY-S2", named by the year it starts in); a school year ("YYYY-SY") is an autumn semester and
the spring one after it: August to July, named by the year it starts in, the period schools write
their year-end summaries for; years ("2026").

The follow-up rules themselves are data each township sets (events/rules.py), judged by
projections/rules.py; the fixed four rules this module held until issue 17 (a visit, a call and a
talk every month, a letter every semester, for every child) are retired.
"""

from __future__ import annotations

import datetime as dt
import functools

import msgspec


class Period(msgspec.Struct, frozen=True):
    """A half-open date range [start, end) with a label: '2026-03', '2026-S1', '2026'."""

    label: str
    start: dt.date
    end: dt.date

    def contains(self, day: dt.date) -> bool:
        return self.start <= day < self.end

    @property
    def last_day(self) -> dt.date:
        return self.end - dt.timedelta(days=1)


def _add_months(day: dt.date, n: int) -> dt.date:
    m = day.year * 12 + day.month - 1 + n
    return dt.date(m // 12, m % 12 + 1, 1)


@functools.lru_cache(maxsize=8192)  # pure, called per child, rule and month by every rollup
def month_of(day: dt.date) -> Period:
    start = day.replace(day=1)
    return Period(f"{start.year:04d}-{start.month:02d}", start, _add_months(start, 1))


@functools.lru_cache(maxsize=8192)  # pure, called per child, rule and month by every rollup
def semester_of(day: dt.date) -> Period:
    if 2 <= day.month <= 7:
        return Period(f"{day.year:04d}-S1", dt.date(day.year, 2, 1), dt.date(day.year, 8, 1))
    year = day.year if day.month >= 8 else day.year - 1
    return Period(f"{year:04d}-S2", dt.date(year, 8, 1), dt.date(year + 1, 2, 1))


def school_year_of(day: dt.date) -> Period:
    """The school year (August to July) a day falls in, e.g. '2025-SY' for 2025-08-01 .. 2026-07-31."""
    year = day.year if day.month >= 8 else day.year - 1
    return Period(f"{year:04d}-SY", dt.date(year, 8, 1), dt.date(year + 1, 8, 1))


def year_of(day: dt.date) -> Period:
    return Period(f"{day.year:04d}", dt.date(day.year, 1, 1), dt.date(day.year + 1, 1, 1))


def parse_period(label: str) -> Period:
    """'2026-03' (month), '2026-S1' / '2026-S2' (semester), '2025-SY' (school year) or '2026' (year)."""
    try:
        if len(label) == 4:
            return year_of(dt.date(int(label), 1, 1))
        year, rest = label.split("-")
        if rest == "SY":
            return school_year_of(dt.date(int(year), 9, 1))
        if rest in ("S1", "S2"):
            return semester_of(dt.date(int(year), 3 if rest == "S1" else 9, 1))
        return month_of(dt.date(int(year), int(rest), 1))
    except ValueError:
        raise ValueError(f"period must be YYYY, YYYY-MM, YYYY-S1, YYYY-S2 or YYYY-SY, got {label!r}") from None
