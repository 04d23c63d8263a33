"""Follow-up rules (docs/DOMAIN.md "The rules people are held to"), checked per child and period.

Rules: a home visit every month, a call with the parents every month, a talk with the class
teacher every month, a letter to the parents every semester.

When a period is *due* for a child: it has ended, and the child's archive was open on its first
day (so the month a child is registered in is not due; a child closed during a month still
had it due).

When a child is *overdue*: its archive is open and the last day of the period after the one of
its latest qualifying contact (or, with none, of its registration) has passed; the days overdue
count from that day. So a child visited in January is due by the end of February and is
1 day overdue on 1 March.

Semesters: spring = February to July ("YYYY-S1"), autumn = August to January ("YYYY-S2", named
by the year it starts in). A school year ("YYYY-SY") is an autumn semester and the spring one
after it: August to July, named by the year it starts in, the period schools write their year-end
summaries for.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable

import msgspec

from projections.archive import ChildArchive

MONTHLY_RULES: dict[str, str] = {"visit": "visits", "call": "calls", "talk": "talks"}
SEMESTER_RULES: dict[str, str] = {"letter": "letters"}
RULES: tuple[str, ...] = ("visit", "call", "talk", "letter")


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


def months_in(period: Period) -> list[Period]:
    out, day = [], period.start
    while day < period.end:
        out.append(month_of(day))
        day = _add_months(day, 1)
    return out


def semesters_in(period: Period) -> list[Period]:
    """Semesters that start inside the period (a month lies in none)."""
    out, day = [], period.start
    while day < period.end:
        s = semester_of(day)
        if period.contains(s.start) and s not in out:
            out.append(s)
        day = _add_months(day, 1)
    return out


class MonthCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One child, one month: was it due, what was done, which monthly rules were met."""

    child_id: str
    month: str
    due: bool
    visits: int
    calls: int
    letters: int
    talks: int
    visit_met: bool
    call_met: bool
    talk_met: bool


def month_checks(a: ChildArchive, period: Period, until: dt.date | None = None) -> list[MonthCheck]:
    """Each month of `period` for one child, against the monthly rules. With `until`, a month
    that has not ended by then is not due yet."""
    by_month = {m.month: m for m in a.months}
    out = []
    for m in months_in(period):
        w = by_month.get(m.label)
        v, ca, le, t = (w.visits, w.calls, w.letters, w.talks) if w else (0, 0, 0, 0)
        due = a.open_on(m.start) and (until is None or m.last_day <= until)
        out.append(MonthCheck(child_id=a.child_id, month=m.label, due=due, visits=v, calls=ca,
                              letters=le, talks=t, visit_met=v > 0, call_met=ca > 0, talk_met=t > 0))
    return out


def letters_in(a: ChildArchive, period: Period) -> int:
    return sum(m.letters for m in a.months if period.start <= _month_start(m.month) < period.end)


@functools.lru_cache(maxsize=8192)  # pure, called per child, rule and month by every rollup
def _month_start(label: str) -> dt.date:
    return dt.date(int(label[:4]), int(label[5:7]), 1)


class Overdue(msgspec.Struct, frozen=True, kw_only=True):
    child_id: str
    rule: str  # visit, call, talk, letter
    sites: list[str]
    last_done: dt.date | None
    due_on: dt.date
    days_overdue: int


def overdue_of(a: ChildArchive, today: dt.date) -> list[Overdue]:
    """The rules this child is overdue for on `today` (none if its archive is not open)."""
    if a.merged_into is not None or not a.open_on(today) or a.registered_on is None:
        return []
    out = []
    lasts = {"visit": a.last_visit, "call": a.last_call, "talk": a.last_talk, "letter": a.last_letter}
    for rule in RULES:
        last = lasts[rule]
        last = last if last is not None and last <= today else _last_before(a, rule, today)
        baseline = max(last, a.registered_on) if last is not None else a.registered_on
        period = semester_of(baseline) if rule in SEMESTER_RULES else month_of(baseline)
        following = semester_of(period.end) if rule in SEMESTER_RULES else month_of(period.end)
        due_on = following.last_day
        if today > due_on:
            out.append(Overdue(child_id=a.child_id, rule=rule, sites=a.sites, last_done=last, due_on=due_on,
                               days_overdue=(today - due_on).days))
    return out


def _last_before(a: ChildArchive, rule: str, today: dt.date) -> dt.date | None:
    """The start of the latest month up to `today` with this kind of contact (for a past `today`)."""
    attr = MONTHLY_RULES.get(rule) or SEMESTER_RULES[rule]
    months = [_month_start(m.month) for m in a.months if getattr(m, attr) > 0 and _month_start(m.month) <= today]
    return max(months) if months else None


def overdue_list(archives: Iterable[ChildArchive], today: dt.date, scope: str = "") -> list[Overdue]:
    """Everyone overdue on `today` among children whose sites are in `scope`, most overdue first."""
    from projections.facts import in_scope

    out = [o for a in archives if any(in_scope(s, scope) for s in a.sites) for o in overdue_of(a, today)]
    return sorted(out, key=lambda o: (-o.days_overdue, o.rule, o.child_id))
