"""The periods a follow-up rule counts in (events.rules.PeriodKind), and the school calendar.

Every period is a half-open date range with a label (projections.followups.Period). Weeks run
Monday to Sunday ("2026-W10", ISO numbering); semesters February-July and August-January
("2026-S1", "2026-S2"); half years January-June and July-December ("2026-H1", "2026-H2"); school
years August-July ("2025-SY", an autumn semester and the spring one after it, as the rollups'
periods). A school month is a calendar month at least half of whose
days are in a term of the township's calendar, so the summer break (July, August under the
national pattern) and the month of the winter break (February) are never due.

`period_of(kind, day)` is the period a day belongs to; for school months a day in a holiday month
belongs to the latest school month before it (a talk in July counts as done "by June" for the
clock, so the next talk falls due in September, not in August).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping

from events.rules import PeriodKind, SchoolCalendar, national_calendar
from projections.followups import Period, month_of, school_year_of, semester_of

Calendars = Mapping[int, SchoolCalendar]  # school year -> its calendar (absent: the national pattern)


def _add_months(day: dt.date, n: int) -> dt.date:
    m = day.year * 12 + day.month - 1 + n
    return dt.date(m // 12, m % 12 + 1, 1)


def week_of(day: dt.date) -> Period:
    start = day - dt.timedelta(days=day.weekday())
    y, w, _ = start.isocalendar()
    return Period(f"{y:04d}-W{w:02d}", start, start + dt.timedelta(days=7))


def half_year_of(day: dt.date) -> Period:
    if day.month <= 6:
        return Period(f"{day.year:04d}-H1", dt.date(day.year, 1, 1), dt.date(day.year, 7, 1))
    return Period(f"{day.year:04d}-H2", dt.date(day.year, 7, 1), dt.date(day.year + 1, 1, 1))


def calendar_for(cals: Calendars, school_year: int) -> SchoolCalendar:
    return cals.get(school_year) or national_calendar(school_year)


def days_in_term(month: Period, cals: Calendars) -> int:
    """How many days of the month fall in a term (the calendars of both school years it may touch)."""
    total = 0
    for y in (month.start.year - 1, month.start.year):
        for t in calendar_for(cals, y).terms:
            lo, hi = max(t.first_day, month.start), min(t.last_day, month.last_day)
            if lo <= hi:
                total += (hi - lo).days + 1
    return total


def is_school_month(month: Period, cals: Calendars) -> bool:
    return 2 * days_in_term(month, cals) >= (month.end - month.start).days


def _school_months(cals: Calendars) -> Callable[[dt.date], bool]:
    @functools.lru_cache(maxsize=512)
    def school(start: dt.date) -> bool:
        return is_school_month(month_of(start), cals)
    return school


class Periods:
    """The periods of one kind under one township's calendars (school months looked up once)."""

    def __init__(self, kind: PeriodKind, cals: Calendars | None = None) -> None:
        self.kind = kind
        self.cals: Calendars = cals or {}
        self._school = _school_months(self.cals)

    def of(self, day: dt.date) -> Period:
        """The period `day` belongs to (school months: the latest school month starting on or
        before it, looking back at most two years)."""
        k = self.kind
        if k is PeriodKind.WEEK:
            return week_of(day)
        if k is PeriodKind.MONTH:
            return month_of(day)
        if k is PeriodKind.SEMESTER:
            return semester_of(day)
        if k is PeriodKind.HALF_YEAR:
            return half_year_of(day)
        if k is PeriodKind.SCHOOL_YEAR:
            return school_year_of(day)
        start = day.replace(day=1)
        for _ in range(24):
            if self._school(start):
                return month_of(start)
            start = _add_months(start, -1)
        return month_of(day.replace(day=1))  # a calendar with no term for two years: plain months

    def after(self, p: Period) -> Period:
        """The period following `p` (school months: the next school month)."""
        if self.kind is not PeriodKind.SCHOOL_MONTH:
            return self.of(p.end)
        start = p.end
        for _ in range(24):
            if self._school(start):
                return month_of(start)
            start = _add_months(start, 1)
        return month_of(p.end)

    def starting_in(self, window: Period) -> list[Period]:
        """The periods that start inside `window` (school months: only school months), in order."""
        out: list[Period] = []
        p = self.of(window.start)
        if p.start < window.start:
            p = self.after(p)
        while p.start < window.end:
            out.append(p)
            p = self.after(p)
        return out
