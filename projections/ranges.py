"""Range rollups as look-ups: a scope's figures kept as functions of the day, so that a rollup of
any date range is a few bisections instead of a pass over every child of the scope.

A rollup (projections.rollups) counts three things, and each becomes a step function of the day:

- **Children** taken on the rollup's day (archived, by site, guardianship, grade band, reason,
  individual plan, pairings and proxy parents, open rights cases): what one child adds
  (`rollups.child_state`) changes only on the days its intervals, pairings and cases start or
  end, so each child gives day-deltas at those days, and the scope's figure on a day D is the sum
  of the deltas up to D: the figures are shaped once for each stretch of days between two such
  changes (:class:`ChildIndex`). Children counted in the period (registered, closed, closings by
  reason: `rollups.child_dated`) are counts of days in [start, end) (:class:`Steps`); drop-outs
  are kept per child.
- **Work**, from the daily per-site rows (projections.daily) read once for every day: running
  sums per kind, source and detail on every day with work, side by side, so a range's sums are one
  subtraction; and the children each day's rows name for the kinds counted by distinct child
  (:class:`WorkIndex`).
- **Rules** (projections.rules): a child- (or site-) period's due and met do not depend on the
  range asked, only on the period, so each rule version keeps them per period with running sums; the
  work that counts for it per day; and who is overdue as intervals of days: between two of the
  days on which anything the judgement reads changes (an interval, a holding, a pairing, a rule
  version, a piece of counting work), the anchor and so the due day stay put, so a subject is
  overdue from the day after it to the next change (:class:`RuleIndex`).

Every figure is the one `rollups.compute_from_rows` gives from the same read models, computed
by the same functions (`child_state`, `rules.Child.applies_on`, `rules.due_on_of`...) at the days
where their value can change; tests/test_rollup_ranges.py checks them equal over random ranges,
scopes and days. The API builds an index per scope once per projections checkpoint (and day, and
the rules' inputs), beside the archives it already keeps (service/api/rollups.py).
"""

from __future__ import annotations

import bisect
import datetime as dt
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from events.rules import FollowUpRule, PeriodKind, Target
from projections.archive import ChildArchive
from projections.daily import DISTINCT_CHILDREN, WorkRow
from projections.facts import in_scope, township_of
from projections.followups import Period
from projections.periods import Periods
from projections.rollups import (
    Freshness,
    Rollup,
    RuleFigure,
    _Totals,
    assemble_shaped,
    child_dated,
    child_state,
    pct,
    state_figures,
)
from projections.rules import (
    Child,
    RuleBook,
    RuleVersion,
    SiteInfo,
    Work,
    counts,
    due_on_of,
    gather,
    periods_in,
)

_FOREVER = dt.date.max


class Steps:
    """Step functions of the day, one per key, from day-deltas: `value(key, D)` is the sum of every
    delta on a day up to D; `count(key, start, end)` the sum of the deltas on days in [start, end)."""

    def __init__(self, deltas: Mapping[str, Mapping[dt.date, int]]) -> None:
        self.days: dict[str, list[dt.date]] = {}
        self.sums: dict[str, list[int]] = {}
        for key, by_day in deltas.items():
            days = sorted(by_day)
            running, acc = [], 0
            for d in days:
                acc += by_day[d]
                running.append(acc)
            self.days[key], self.sums[key] = days, running

    def value(self, key: str, day: dt.date) -> int:
        days = self.days.get(key)
        if not days:
            return 0
        i = bisect.bisect_right(days, day)
        return self.sums[key][i - 1] if i else 0

    def count(self, key: str, start: dt.date, end: dt.date) -> int:
        days = self.days.get(key)
        if not days:
            return 0
        hi, lo = bisect.bisect_left(days, end), bisect.bisect_left(days, start)
        sums = self.sums[key]
        return (sums[hi - 1] if hi else 0) - (sums[lo - 1] if lo else 0)

    def counts(self, start: dt.date, end: dt.date) -> dict[str, int]:
        out = {}
        for key in self.days:
            n = self.count(key, start, end)
            if n:
                out[key] = n
        return out


def _add(deltas: dict[str, dict[dt.date, int]], key: str, day: dt.date, n: int) -> None:
    by_day = deltas.setdefault(key, {})
    by_day[day] = by_day.get(day, 0) + n


class ChildIndex:
    """The children's figures of one scope as functions of the day (module docstring)."""

    def __init__(self, scope: str, archives: Iterable[ChildArchive]) -> None:
        archives = list(archives)
        self.root = {a.child_id: a.merged_into for a in archives if a.merged_into is not None}
        self.by_id = {a.child_id: a for a in archives}
        kids = [a for a in archives
                if a.merged_into is None and a.registered and any(in_scope(s, scope) for s in a.sites)]
        state: dict[str, dict[dt.date, int]] = {}
        dated: dict[str, dict[dt.date, int]] = {}
        self.dropped: list[tuple[list[dt.date], list[str]]] = []  # each drop-out's days and reasons
        for a in kids:
            changes = {lo for lo, _ in a.intervals} | {hi for _, hi in a.intervals if hi is not None}
            changes |= {p.started_on for p in a.pairings} | {p.ended_on for p in a.pairings if p.ended_on}
            changes |= {x.opened_on for x in a.rights_cases} | {x.closed_on for x in a.rights_cases if x.closed_on}
            before: dict[str, int] = {}
            for day in sorted(changes):
                now = child_state(a, day, scope)
                for key in before.keys() | now.keys():
                    d = now.get(key, 0) - before.get(key, 0)
                    if d:
                        _add(state, key, day, d)
                before = now
            for key, day in child_dated(a):
                _add(dated, key, day, 1)
            drops = sorted(day for day, why in a.closings if why == "dropped_out")
            if drops:
                self.dropped.append((drops, list(a.reasons)))
        self.dated = Steps(dated)
        self.conflicts_open = sum(len(a.open_conflicts) for a in kids)
        # The state on a day is the sum of the deltas up to it; its figures are shaped once for each
        # stretch of days between two changes of any key (`rollups.state_figures`): what a rollup
        # takes on its day is then one bisection, whatever the scope's size.
        on_day: dict[dt.date, list[tuple[str, int]]] = {}
        for key, by_day in state.items():
            for day, n in by_day.items():
                on_day.setdefault(day, []).append((key, n))
        self.stretches = sorted(on_day)
        self.shaped: list[dict[str, Any]] = []
        running: dict[str, int] = {}
        for day in self.stretches:
            for key, n in on_day[day]:
                running[key] = running.get(key, 0) + n
            self.shaped.append(state_figures({k: v for k, v in running.items() if v}))
        self.before = state_figures({})

    def state_on(self, day: dt.date) -> dict[str, Any]:
        """`rollups.state_figures` of the children's state on `day` (the sums of `rollups.child_state`),
        its dicts copied (the answer's own)."""
        i = bisect.bisect_right(self.stretches, day)
        shaped = self.shaped[i - 1] if i else self.before
        return {k: dict(v) if isinstance(v, dict) else v for k, v in shaped.items()}

    def period_counts(self, period: Period) -> tuple[dict[str, int], int, dict[str, int]]:
        """The counts of `period`: `dated`, the children who dropped out and their reasons."""
        reasons: dict[str, int] = {}
        dropped = 0
        for days, why in self.dropped:
            if bisect.bisect_left(days, period.end) > bisect.bisect_left(days, period.start):
                dropped += 1
                for r in why:
                    reasons[r] = reasons.get(r, 0) + 1
        return self.dated.counts(period.start, period.end), dropped, reasons


class WorkIndex:
    """A scope's work from its daily rows of every day: running sums per kind, source and detail
    on every day with work, and the children named per day for the kinds counted by distinct child."""

    def __init__(self, rows: Iterable[tuple[dt.date, WorkRow]]) -> None:
        sums: dict[tuple[str, str, str], dict[dt.date, list[int]]] = {}
        named: dict[tuple[str, str, str], dict[dt.date, set[str]]] = {}
        for day, r in rows:
            key = (r.kind, r.source, r.detail)
            acc = sums.setdefault(key, {}).setdefault(day, [0, 0, 0])
            acc[0] += r.facts
            acc[1] += r.amount_fen
            acc[2] += r.count
            if r.children:
                named.setdefault(key, {}).setdefault(day, set()).update(r.children)
        self.keys = sorted(sums)
        self.named = {key: (sorted(by_day), [frozenset(by_day[d]) for d in sorted(by_day)])
                      for key, by_day in named.items()}
        # Every key's running sums on every day with work, side by side: (days with a row, facts,
        # amount, count) per key, so a range's sums are two bisections and one subtraction of tuples.
        per_day: dict[dt.date, list[tuple[int, list[int]]]] = {}
        for j, key in enumerate(self.keys):
            for d, x in sums[key].items():
                per_day.setdefault(d, []).append((j, x))
        self.all_days = sorted(per_day)
        self.zero = (0,) * (4 * len(self.keys))
        self.cumulative: list[tuple[int, ...]] = []
        acc = [0] * (4 * len(self.keys))
        for d in self.all_days:
            for j, (f, a, n) in per_day[d]:
                acc[4 * j] += 1
                acc[4 * j + 1] += f
                acc[4 * j + 2] += a
                acc[4 * j + 3] += n
            self.cumulative.append(tuple(acc))
        self.distinct = [key in self.named and key[0] in DISTINCT_CHILDREN for key in self.keys]

    def totals(self, start: dt.date, end: dt.date) -> _Totals:
        """`rollups._Totals` of the work of [start, end): the daily rows summed by kind, source and
        detail (as projections.daily.work_rows), and the children they name."""
        days = self.all_days
        lo, hi = bisect.bisect_left(days, start), bisect.bisect_left(days, end)
        t = _Totals()
        if hi == lo:
            return t
        top, base = self.cumulative[hi - 1], self.cumulative[lo - 1] if lo else self.zero
        sums = list(map(operator.sub, top, base))
        for j, key in enumerate(self.keys):
            if not sums[4 * j]:
                continue
            children: frozenset[str] = frozenset()
            if self.distinct[j]:
                ndays, sets = self.named[key]
                children = frozenset().union(*sets[bisect.bisect_left(ndays, start):bisect.bisect_left(ndays, end)])
            t.add(key[0], key[1], key[2], sums[4 * j + 1], sums[4 * j + 2], sums[4 * j + 3], children)
        return t


def _merged(intervals: list[tuple[dt.date, dt.date]]) -> list[tuple[dt.date, dt.date]]:
    out: list[tuple[dt.date, dt.date]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _steps_of(subjects: Mapping[str, list[tuple[dt.date, dt.date]]]) -> Steps:
    """How many subjects are in one of their intervals [lo, hi) on a day."""
    deltas: dict[str, dict[dt.date, int]] = {}
    for spans in subjects.values():
        for lo, hi in _merged(spans):
            _add(deltas, "n", lo, 1)
            if hi != _FOREVER:
                _add(deltas, "n", hi, -1)
    return Steps(deltas)


class _Table:
    """Due and met per period of one rule version, with running sums over the periods in order.
    Tables over the same periods share one list of starts and one of last days (`grids`), so a
    look-up bisects each list of periods once for all of them (:meth:`RuleIndex.totals`)."""

    def __init__(self, periods: list[Period], due: list[int], met: list[int],
                 grids: dict[tuple[dt.date, ...], tuple[list[dt.date], list[dt.date]]] | None = None) -> None:
        starts = [p.start for p in periods]
        lasts = [p.last_day for p in periods]
        if grids is not None:
            starts, lasts = grids.setdefault((*starts, *lasts), (starts, lasts))
        self.starts, self.lasts = starts, lasts
        self.due, self.met = [0], [0]
        for d, m in zip(due, met, strict=True):
            self.due.append(self.due[-1] + d)
            self.met.append(self.met[-1] + m)

    def span(self, window: Period, as_of: dt.date) -> tuple[int, int]:
        """The periods starting in `window` that ended by `as_of`: [lo, hi) in the list."""
        lo = bisect.bisect_left(self.starts, window.start)
        return lo, min(bisect.bisect_left(self.starts, window.end), bisect.bisect_right(self.lasts, as_of))

    def sums(self, window: Period, as_of: dt.date) -> tuple[int, int]:
        """Due and met of the periods starting in `window` that ended by `as_of`."""
        lo, hi = self.span(window, as_of)
        if hi <= lo:
            return 0, 0
        return self.due[hi] - self.due[lo], self.met[hi] - self.met[lo]


class _Entry:
    """One rule of one township: its due/met tables per version (judged as a child rule and, where
    a version targets sites, as a site rule), the counting work of the sites in scope per version,
    and who is overdue when."""

    def __init__(self, town: str, rid: str, versions: list[RuleVersion]) -> None:
        self.town, self.rid = town, rid
        self.versions = versions  # RuleBook.versions: by effective day, the later of one day last
        self.days = [v.effective_from for v in versions]
        self.child: dict[int, _Table] = {}
        self.site: dict[int, _Table] = {}
        self.done: dict[int, list[dt.date]] = {}
        self.overdue: dict[str, list[tuple[dt.date, dt.date]]] = {}  # subject -> days [lo, hi) overdue
        self.children_overdue: dict[str, list[tuple[dt.date, dt.date]]] = {}  # child rules only
        self.count: Steps = Steps({})
        # Kept for the look-ups once the tables are made (`RuleIndex._finish`): the one version,
        # when the rule never changed; per version's rule, the tables summed when it is shown.
        self.single: RuleVersion | None = None
        self.tables: dict[int, list[_Table]] = {}


class RuleIndex:
    """The follow-up rules' totals of a scope (what `rollups.rule_totals` makes of
    `rules.rule_figures`) for any period and day up to `today`, from the same inputs.
    `supported` is False when a figure depends on the range in a way not kept here (a site rule
    for a site with no registration day, whose clock starts with the range): the caller then
    computes the rules' figures as before."""

    def __init__(self, book: RuleBook, archives: Iterable[ChildArchive], work: Iterable[Work],
                 sites: Mapping[str, SiteInfo], scope: str, today: dt.date) -> None:
        self.book, self.scope, self.today = book, scope, today
        g = gather(archives, work, sites, scope)
        self.reasons_of, self.by_site = g.reasons_of, g.by_site
        self.entries: list[_Entry] = []
        self.supported = True
        self.grids: dict[tuple[dt.date, ...], tuple[list[dt.date], list[dt.date]]] = {}
        starts = [lo for ch in g.children for lo, _ in ch.a.intervals]
        starts += [i.since for i in sites.values() if i.since is not None]
        first = min(starts, default=today)
        for town in g.towns:
            town_children = [ch for ch in g.children if any(township_of(s) == town for _, s, _, _ in ch.held)]
            town_sites = {s: i for s, i in sites.items() if township_of(s) == town and in_scope(s, scope)}
            in_scope_sites = [s for s in self.by_site if township_of(s) == town and in_scope(s, scope)]
            for rid in book.rule_ids(town):
                versions = book.versions(town, rid)
                rules = {id(v.rule): v.rule for v in versions if v.rule is not None}
                if not rules:
                    continue
                e = _Entry(town, rid, versions)
                cals = book.calendars.get(town, {})
                kinds = {k: Periods(k, cals) for k in {r.counts.period for r in rules.values()}}
                listed = {k: self._periods(ps, first) for k, ps in kinds.items()}
                judged = {key: [p for p in listed[r.counts.period]
                                if (v := book.in_force(town, rid, p.start)) is not None and v.rule is r]
                          for key, r in rules.items()}
                targets = {r.applies.target for r in rules.values()}
                if Target.CHILD in targets:
                    self._child_tables(e, rules, judged, town_children)
                    self._child_overdue(e, versions, rules, kinds, town_children)
                if Target.SITE in targets:
                    self._site_tables(e, rules, judged, town_sites)
                    self._site_overdue(e, versions, rules, kinds, town_sites)
                for key, r in rules.items():
                    e.done[key] = sorted(w.day for s in in_scope_sites for t in r.counts.event_types
                                         for w in self.by_site.get(s, {}).get(t, ())
                                         if counts(r, w, self.reasons_of))
                e.count = _steps_of(e.overdue)
                e.single = versions[0] if len(versions) == 1 and versions[0].rule is not None else None
                e.tables = {key: list((e.site if r.applies.target is Target.SITE else e.child).values())
                            for key, r in rules.items()}
                self.entries.append(e)
        self.all_count = {rid: _steps_of(self._union(rid, None)) for rid in {e.rid for e in self.entries}}
        self.all_children = _steps_of(self._children_union(None))
        self.town_children = {t: _steps_of(self._children_union(t)) for t in g.towns}
        self.vectors = _Vectors.of(self)

    def _periods(self, ps: Periods, first: dt.date) -> list[Period]:
        out = []
        p = ps.of(first)
        while p.start <= self.today:
            out.append(p)
            p = ps.after(p)
        return out

    def _union(self, rid: str, town: str | None) -> dict[str, list[tuple[dt.date, dt.date]]]:
        out: dict[str, list[tuple[dt.date, dt.date]]] = {}
        for e in self.entries:
            if e.rid == rid and (town is None or e.town == town):
                for s, spans in e.overdue.items():
                    out.setdefault(s, []).extend(spans)
        return out

    def _children_union(self, town: str | None) -> dict[str, list[tuple[dt.date, dt.date]]]:
        out: dict[str, list[tuple[dt.date, dt.date]]] = {}
        for e in self.entries:
            if town is None or e.town == town:
                for s, spans in e.children_overdue.items():
                    out.setdefault(s, []).extend(spans)
        return out

    def _child_tables(self, e: _Entry, rules: Mapping[int, FollowUpRule], judged: Mapping[int, list[Period]],
                      children: Sequence[Child]) -> None:
        for key, rule in rules.items():
            ps = judged[key]
            due, met = [0] * len(ps), [0] * len(ps)
            for ch in children:
                if not ch.may_apply(rule):
                    continue
                days = ch.days(rule, self.reasons_of)
                for i, p in enumerate(ps):
                    if ch.applies_on(rule, p.start, self.scope):
                        due[i] += 1
                        met[i] += periods_in(days, p) >= rule.counts.at_least
            e.child[key] = _Table(ps, due, met, self.grids)

    def _site_tables(self, e: _Entry, rules: Mapping[int, FollowUpRule], judged: Mapping[int, list[Period]],
                     sites: Mapping[str, SiteInfo]) -> None:
        for key, rule in rules.items():
            ps = judged[key]
            due, met = [0] * len(ps), [0] * len(ps)
            for site, info in sites.items():
                if not _held(rule, site, info):
                    continue
                days = self._site_days(rule, site)
                for i, p in enumerate(ps):
                    if info.since is not None and p.start < info.since:
                        continue
                    due[i] += 1
                    met[i] += periods_in(days, p) >= rule.counts.at_least
            e.site[key] = _Table(ps, due, met, self.grids)

    def _site_days(self, rule: FollowUpRule, site: str) -> list[dt.date]:
        work = self.by_site.get(site, {})
        return sorted(w.day for t in rule.counts.event_types for w in work.get(t, ())
                      if counts(rule, w, self.reasons_of))

    def _child_overdue(self, e: _Entry, versions: list[RuleVersion], rules: Mapping[int, FollowUpRule],
                       kinds: Mapping[PeriodKind, Periods], children: Sequence[Child]) -> None:
        book, town, rid, scope = self.book, e.town, e.rid, self.scope
        vdays = {v.effective_from for v in versions}
        for ch in children:
            possible = {key: rule for key, rule in rules.items() if ch.may_apply(rule)}
            if not possible:
                continue
            days_of = {key: ch.days(rule, self.reasons_of) for key, rule in possible.items()}
            a = ch.a
            changes = set(vdays) | {lo for lo, _ in a.intervals} | {hi for _, hi in a.intervals if hi is not None}
            changes |= {lo for _, _, lo, _ in ch.held} | {hi for _, _, _, hi in ch.held if hi is not None}
            changes |= {p.started_on for p in a.pairings} | {p.ended_on for p in a.pairings if p.ended_on}
            for ds in days_of.values():
                changes.update(ds)
            order = sorted(changes)
            spans = []
            for i, day in enumerate(order):
                until = order[i + 1] if i + 1 < len(order) else _FOREVER
                now = book.in_force(town, rid, day)
                if (now is None or now.rule is None or now.rule.applies.target is not Target.CHILD
                        or id(now.rule) not in possible or not ch.applies_on(now.rule, day, scope)):
                    continue
                rule = now.rule
                start = ch.clock_start(rule, day, scope, book.since(town, rid, day))
                _, due_on = due_on_of(days_of[id(rule)], kinds[rule.counts.period], rule.counts.at_least, start, day)
                lo = max(day, due_on + dt.timedelta(days=1))
                if lo < until:
                    spans.append((lo, until))
            if spans:
                e.overdue.setdefault(a.child_id, []).extend(spans)
                e.children_overdue.setdefault(a.child_id, []).extend(spans)

    def _site_overdue(self, e: _Entry, versions: list[RuleVersion], rules: Mapping[int, FollowUpRule],
                      kinds: Mapping[PeriodKind, Periods], sites: Mapping[str, SiteInfo]) -> None:
        book, town, rid = self.book, e.town, e.rid
        vdays = {v.effective_from for v in versions}
        for site, info in sorted(sites.items()):
            held = {key: rule for key, rule in rules.items() if _held(rule, site, info)}
            if not held:
                continue
            days_of = {key: self._site_days(rule, site) for key, rule in held.items()}
            changes = set(vdays) | ({info.since} if info.since is not None else set())
            for ds in days_of.values():
                changes.update(ds)
            order = sorted(changes)
            spans = []
            for i, day in enumerate(order):
                until = order[i + 1] if i + 1 < len(order) else _FOREVER
                now = book.in_force(town, rid, day)
                if (now is None or now.rule is None or now.rule.applies.target is not Target.SITE
                        or id(now.rule) not in held):
                    continue
                rule = now.rule
                if info.since is None and book.since(town, rid, day) == dt.date(1970, 1, 1):
                    self.supported = False  # its clock starts with the range asked (rules._site_rule)
                    return
                start = max(book.since(town, rid, day), info.since or dt.date(1970, 1, 1))
                _, due_on = due_on_of(days_of[id(rule)], kinds[rule.counts.period], rule.counts.at_least, start, day)
                lo = max(day, due_on + dt.timedelta(days=1))
                if lo < until:
                    spans.append((lo, until))
            if spans:
                e.overdue.setdefault(site, []).extend(spans)

    @staticmethod
    def _in_force(e: _Entry, day: dt.date) -> RuleVersion | None:
        """`RuleBook.in_force` from the entry's versions kept at hand."""
        i = bisect.bisect_right(e.days, day)
        v = e.versions[i - 1] if i else None
        return v if v is not None and v.rule is not None else None

    def _shown(self, e: _Entry, period: Period, on: dt.date) -> RuleVersion | None:
        """The version `rules.rule_figures_on` shows: in force on `on`, else (retired before it) the
        last one in force during the period (`rules.latest_in`)."""
        now = self._in_force(e, on)
        if now is not None:
            return now
        found = None
        for v in e.versions:
            if v.rule is not None and v.effective_from <= on:
                found = v
        return found if found is not None and self._in_force(e, max(found.effective_from, period.start)) else None

    def totals(self, period: Period, as_of: dt.date, town: str | None = None) -> tuple[dict[str, RuleFigure], int]:
        """`rollups.rule_totals(rules.rule_figures(..., period, as_of))` of the scope, or of the
        rules of one of its townships (`town`: the county's split)."""
        if town is None and self.vectors is not None:
            hit = self.vectors.totals(period, as_of)
            if hit is not None:
                return hit
        return self.totals_by_rule(period, as_of, town)

    def totals_by_rule(self, period: Period, as_of: dt.date, town: str | None = None
                       ) -> tuple[dict[str, RuleFigure], int]:
        """:meth:`totals` rule by rule (every case; the vectors answer the common one)."""
        on = min(period.last_day, as_of)
        until = min(period.end, as_of + dt.timedelta(days=1))
        sums: dict[str, list[int]] = {}
        names: dict[str, FollowUpRule] = {}
        spans: dict[int, tuple[int, int]] = {}  # id of a table's list of starts: its span (tables share them)
        for e in self.entries:
            if town is not None and e.town != town:
                continue
            single = e.single
            if single is not None:  # `_shown` of a rule that never changed
                shown = single if single.effective_from <= on else None
            else:
                shown = self._shown(e, period, on)
            if shown is None or shown.rule is None:
                continue
            # every version judges the periods that start while it is in force; the work that
            # counts is the shown version's
            due = met = 0
            key = id(shown.rule)
            for table in e.tables[key]:
                span = spans.get(id(table.starts))
                if span is None:
                    span = spans[id(table.starts)] = table.span(period, as_of)
                lo, hi = span
                if hi > lo:
                    due += table.due[hi] - table.due[lo]
                    met += table.met[hi] - table.met[lo]
            days = e.done[key]
            done = bisect.bisect_left(days, until) - bisect.bisect_left(days, period.start)
            acc = sums.get(e.rid)
            if acc is None:
                sums[e.rid] = [max(done, 0), due, met]
                names[e.rid] = shown.rule
            else:
                acc[0] += max(done, 0)
                acc[1] += due
                acc[2] += met
        out = {}
        for rid, (d, due, met) in sorted(sums.items()):
            late = (self.all_count[rid] if town is None else
                    next(e.count for e in self.entries if e.rid == rid and e.town == town)).value("n", on)
            r = names[rid]
            out[rid] = RuleFigure(done=d, due=due, met=met, pct_met=pct(met, due), overdue=late, zh=r.zh, en=r.en,
                                  target=str(r.applies.target))
        kids = self.all_children if town is None else self.town_children[town]
        return out, kids.value("n", on)


class _Vectors:
    """:meth:`RuleIndex.totals` of the whole scope as vectors per day, when no rule of it ever
    changed (one version each, the common case) and on days from which every rule is in force.

    A rule's due and met over a window are differences of its tables' running sums, at indexes
    found by bisecting the periods' starts and last days with the window's start, end and as-of
    day; so each table's running sum at those indexes is a function of one day, kept for every
    day from before the first period, work or overdue day to the index's `today` + 1 as one tuple
    over the tables (`by_start`, `by_last`), as are the counting work's running counts (`done`,
    one per rule and township) and the numbers overdue (`overdue`, one per rule id and the
    children overdue for any). A range is then a few `map`s over tuples instead of a loop over the
    rules with its bisections. The running sums only grow, so a table's sum at the lesser of two
    indexes is the lesser of its sums there (`min`), and a window with no period in it comes out
    at or below zero (`max` with 0), as the loop's empty span gives 0."""

    LIMIT = 4_000_000  # days x figures kept at most (a large region over years: the loop instead)

    def __init__(self, ri: RuleIndex, first: dt.date) -> None:
        entries = sorted(ri.entries, key=lambda e: e.rid)  # stable: a rule's first township first
        rids = sorted({e.rid for e in entries})
        slot = {rid: i for i, rid in enumerate(rids)}
        self.rids = rids
        self.from_day = max(e.days[0] for e in entries)  # every rule shown on days from here on
        firsts: dict[str, FollowUpRule] = {}
        tables: list[tuple[int, _Table]] = []
        done: list[tuple[int, list[dt.date]]] = []
        for e in entries:
            assert e.single is not None and e.single.rule is not None
            key = id(e.single.rule)
            firsts.setdefault(e.rid, e.single.rule)
            tables += [(slot[e.rid], t) for t in e.tables[key]]
            done.append((slot[e.rid], e.done[key]))
        self.names = [(firsts[rid].zh, firsts[rid].en, str(firsts[rid].applies.target)) for rid in rids]
        self.table_slots = [i for i, _ in tables]
        self.done_slots = [i for i, _ in done]
        # One table and one list of work per rule id, in their order: no sums over townships or versions.
        n = len(rids)
        self.direct = self.table_slots == list(range(n)) and self.done_slots == list(range(n))
        self.zeros_tables = (0,) * len(tables)
        self.zeros_done = (0,) * len(done)
        steps = [ri.all_count[rid] for rid in rids] + [ri.all_children]
        self.lo = first.toordinal() - 1  # before any day the vectors depend on: every figure 0
        self.hi = ri.today.toordinal() + 1
        by_start_due, by_start_met, by_last_due, by_last_met, done_v, overdue = [], [], [], [], [], []
        for o in range(self.lo, self.hi + 1):
            day = dt.date.fromordinal(o)
            i_start = [bisect.bisect_left(t.starts, day) for _, t in tables]
            i_last = [bisect.bisect_right(t.lasts, day) for _, t in tables]
            by_start_due.append(tuple(t.due[i] for (_, t), i in zip(tables, i_start, strict=True)))
            by_start_met.append(tuple(t.met[i] for (_, t), i in zip(tables, i_start, strict=True)))
            by_last_due.append(tuple(t.due[i] for (_, t), i in zip(tables, i_last, strict=True)))
            by_last_met.append(tuple(t.met[i] for (_, t), i in zip(tables, i_last, strict=True)))
            done_v.append(tuple(bisect.bisect_left(days, day) for _, days in done))
            overdue.append(tuple(st.value("n", day) for st in steps))
        self.by_start_due, self.by_start_met = by_start_due, by_start_met
        self.by_last_due, self.by_last_met = by_last_due, by_last_met
        self.done, self.overdue = done_v, overdue

    @classmethod
    def of(cls, ri: RuleIndex) -> _Vectors | None:
        """The vectors of `ri`, or None where the loop answers every range (a rule that changed,
        no rules, or more days x figures than LIMIT)."""
        if not ri.entries or any(e.single is None for e in ri.entries):
            return None
        days: list[dt.date] = [ri.today]
        for e in ri.entries:
            for t in e.tables[id(e.single.rule)] if e.single is not None and e.single.rule is not None else ():
                days += t.starts[:1] + t.lasts[:1]
            days += [d for ds in e.done.values() for d in ds[:1]]
        days += [d[0] for st in [*ri.all_count.values(), ri.all_children] for d in st.days.values() if d]
        first = min(days)
        width = len(ri.entries) * 4 + len(ri.all_count) + 1
        if (ri.today - first).days * width > cls.LIMIT:
            return None
        return cls(ri, first)

    def _at(self, day: dt.date) -> int:
        return min(max(day.toordinal(), self.lo), self.hi) - self.lo

    def totals(self, period: Period, as_of: dt.date) -> tuple[dict[str, RuleFigure], int] | None:
        """:meth:`RuleIndex.totals` of the scope, or None for a day outside the vectors' reach."""
        on = min(period.last_day, as_of)
        if on < self.from_day or as_of.toordinal() >= self.hi:
            return None
        until = min(period.end, as_of + dt.timedelta(days=1))
        s, e, a, u = self._at(period.start), self._at(period.end), self._at(as_of), self._at(until)
        sub = operator.sub
        due = list(map(max, self.zeros_tables, map(sub, map(min, self.by_start_due[e], self.by_last_due[a]),
                                                   self.by_start_due[s])))
        met = list(map(max, self.zeros_tables, map(sub, map(min, self.by_start_met[e], self.by_last_met[a]),
                                                   self.by_start_met[s])))
        done = list(map(max, self.zeros_done, map(sub, self.done[u], self.done[s])))
        if not self.direct:
            due, met, done = self._summed(due, self.table_slots), self._summed(met, self.table_slots), \
                self._summed(done, self.done_slots)
        late = self.overdue[self._at(on)]
        out = {rid: RuleFigure(done=d, due=du, met=m, pct_met=pct(m, du), overdue=n, zh=zh, en=en, target=target)
               for rid, d, du, m, n, (zh, en, target) in zip(self.rids, done, due, met, late, self.names,
                                                              strict=False)}
        return out, late[-1]

    def _summed(self, values: list[int], slots: list[int]) -> list[int]:
        out = [0] * len(self.rids)
        for i, v in zip(slots, values, strict=True):
            out[i] += v
        return out


def _held(rule: FollowUpRule, site: str, info: SiteInfo) -> bool:
    ap = rule.applies
    return site in ap.sites if ap.sites else info.kind in {str(k) for k in ap.site_kinds}


class RangeIndex:
    """A scope's children and work as functions of the day (built from the archives and daily rows
    read at one checkpoint); with a :class:`RuleIndex` of the same scope, every rollup figure of
    any period judged on any day up to the rule index's `today`."""

    def __init__(self, scope: str, archives: Iterable[ChildArchive], rows: Iterable[tuple[dt.date, WorkRow]]
                 ) -> None:
        self.scope = scope
        self.children = ChildIndex(scope, archives)
        self.work = WorkIndex(rows)

    def rollup(self, period: Period, today: dt.date, rules: tuple[dict[str, RuleFigure], int],
               freshness: Iterable[Freshness] = ()) -> Rollup:
        """The figures `rollups.compute_from_rows` gives for `period` judged on `today`, with the
        rules' totals (`RuleIndex.totals` or `rollups.rule_totals`) judged on the same day."""
        as_of = min(period.last_day, today)
        c = self.children
        dated, dropped, reasons = c.period_counts(period)
        return assemble_shaped(self.scope, period, as_of, c.state_on(as_of), dated, dropped, reasons,
                               c.conflicts_open, self.work.totals(period.start, period.end), c.root, c.by_id,
                               rules[0], rules[1], freshness)
