"""Range rollups as look-ups: a scope's figures kept as functions of the day, so that a rollup of
any date range is a few bisections instead of a pass over every child of the scope.

A rollup (projections.rollups) counts three things, and each becomes a step function of the day:

- **Children** taken on the rollup's day (archived, by site, guardianship, grade band, reason,
  individual plan, pairings and proxy parents, open rights cases): what one child adds
  (`rollups.child_state`) changes only on the days its intervals, pairings and cases start or
  end, so each child gives day-deltas at those days, and the scope's figure on a day D is the sum
  of the deltas up to D (:class:`Steps`). Children counted in the period (registered, closed, closings
  by reason: `rollups.child_dated`) are counts of days in [start, end); drop-outs are kept per child.
- **Work**, from the daily per-site rows (projections.daily) read once for every day: running
  sums per kind, source and detail, and the children each day's rows name for the kinds counted
  by distinct child (:class:`WorkIndex`).
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
from collections.abc import Iterable, Mapping, Sequence

from events.rules import FollowUpRule, PeriodKind, Target
from projections.archive import ChildArchive
from projections.daily import DISTINCT_CHILDREN, WorkRow
from projections.facts import in_scope, township_of
from projections.followups import Period
from projections.periods import Periods
from projections.rollups import (
    ChildCounts,
    Freshness,
    Rollup,
    RuleFigure,
    _Totals,
    assemble,
    child_dated,
    child_state,
    share,
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
    """Step functions of the day, one per key, from day-deltas: `at(D)` is the sum of every delta
    on a day up to D; `count(key, start, end)` the sum of the deltas on days in [start, end)."""

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

    def at(self, day: dt.date) -> dict[str, int]:
        out = {}
        for key, days in self.days.items():
            i = bisect.bisect_right(days, day)
            if i and self.sums[key][i - 1]:
                out[key] = self.sums[key][i - 1]
        return out

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
        self.state, self.dated = Steps(state), Steps(dated)
        self.conflicts_open = sum(len(a.open_conflicts) for a in kids)

    def counts(self, period: Period, as_of: dt.date) -> ChildCounts:
        reasons: dict[str, int] = {}
        dropped = 0
        for days, why in self.dropped:
            if bisect.bisect_left(days, period.end) > bisect.bisect_left(days, period.start):
                dropped += 1
                for r in why:
                    reasons[r] = reasons.get(r, 0) + 1
        return ChildCounts(state=self.state.at(as_of), dated=self.dated.counts(period.start, period.end),
                           dropped=dropped, dropped_reasons=reasons, conflicts_open=self.conflicts_open)


class WorkIndex:
    """A scope's work from its daily rows of every day: running sums per kind, source and detail,
    and the children named per day for the kinds counted by distinct child."""

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
        self.days: dict[tuple[str, str, str], list[dt.date]] = {}
        self.running: dict[tuple[str, str, str], list[tuple[int, int, int]]] = {}
        for key in self.keys:
            days = sorted(sums[key])
            out, f, a, n = [], 0, 0, 0
            for d in days:
                x = sums[key][d]
                f, a, n = f + x[0], a + x[1], n + x[2]
                out.append((f, a, n))
            self.days[key], self.running[key] = days, out
        self.named = {key: (sorted(by_day), [frozenset(by_day[d]) for d in sorted(by_day)])
                      for key, by_day in named.items()}

    def rows(self, start: dt.date, end: dt.date) -> list[WorkRow]:
        """The work of [start, end) summed by kind, source and detail (as projections.daily.work_rows)."""
        out = []
        zero = (0, 0, 0)
        for key in self.keys:
            days, running = self.days[key], self.running[key]
            lo, hi = bisect.bisect_left(days, start), bisect.bisect_left(days, end)
            if hi == lo:
                continue
            top, base = running[hi - 1], running[lo - 1] if lo else zero
            children: frozenset[str] = frozenset()
            if key in self.named and key[0] in DISTINCT_CHILDREN:
                ndays, sets = self.named[key]
                children = frozenset().union(*sets[bisect.bisect_left(ndays, start):bisect.bisect_left(ndays, end)])
            out.append(WorkRow(key[0], key[1], key[2], top[0] - base[0], top[1] - base[1], top[2] - base[2],
                               children))
        return out


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
    """Due and met per period of one rule version, with running sums over the periods in order."""

    def __init__(self, periods: list[Period], due: list[int], met: list[int]) -> None:
        self.starts = [p.start for p in periods]
        self.lasts = [p.last_day for p in periods]
        self.due, self.met = [0], [0]
        for d, m in zip(due, met, strict=True):
            self.due.append(self.due[-1] + d)
            self.met.append(self.met[-1] + m)

    def sums(self, window: Period, as_of: dt.date) -> tuple[int, int]:
        """Due and met of the periods starting in `window` that ended by `as_of`."""
        lo = bisect.bisect_left(self.starts, window.start)
        hi = min(bisect.bisect_left(self.starts, window.end), bisect.bisect_right(self.lasts, as_of))
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
                self.entries.append(e)
        self.all_count = {rid: _steps_of(self._union(rid, None)) for rid in {e.rid for e in self.entries}}
        self.all_children = _steps_of(self._children_union(None))
        self.town_children = {t: _steps_of(self._children_union(t)) for t in g.towns}

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
            e.child[key] = _Table(ps, due, met)

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
            e.site[key] = _Table(ps, due, met)

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
        on = min(period.last_day, as_of)
        sums: dict[str, list[int]] = {}
        names: dict[str, FollowUpRule] = {}
        for e in self.entries:
            if town is not None and e.town != town:
                continue
            shown = self._shown(e, period, on)
            if shown is None or shown.rule is None:
                continue
            # every version judges the periods that start while it is in force; the work that
            # counts is the shown version's
            due = met = 0
            for table in (e.site if shown.rule.applies.target is Target.SITE else e.child).values():
                d, m = table.sums(period, as_of)
                due, met = due + d, met + m
            days = e.done[id(shown.rule)]
            done = bisect.bisect_left(days, min(period.end, as_of + dt.timedelta(days=1))) - bisect.bisect_left(
                days, period.start)
            acc = sums.setdefault(e.rid, [0, 0, 0])
            acc[0] += max(done, 0)
            acc[1] += due
            acc[2] += met
            names.setdefault(e.rid, shown.rule)
        out = {}
        for rid, (d, due, met) in sorted(sums.items()):
            late = (self.all_count[rid] if town is None else
                    next(e.count for e in self.entries if e.rid == rid and e.town == town)).value("n", on)
            r = names[rid]
            out[rid] = RuleFigure(done=d, due=due, met=met, pct_met=share(met, due).pct, overdue=late, zh=r.zh, en=r.en,
                                  target=str(r.applies.target))
        kids = self.all_children if town is None else self.town_children[town]
        return out, kids.value("n", on)


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
        return assemble(self.scope, period, as_of, c.counts(period, as_of),
                        _Totals(self.work.rows(period.start, period.end)), c.root, c.by_id, rules[0], rules[1],
                        freshness)
