"""Township rollups: every figure of docs/DOMAIN.md "What the township counts", for a scope (a site,
a township, a region, or everything) and a period (month, semester, year). FIGURES.md says what
each figure counts and from which events.

`compute` is pure: the live read (`projections.queries.rollup`) feeds it archives and facts
from the read models, and "as of" (`projections.asof`) feeds it archives and facts it built
from the log up to a time; both feed it the follow-up rules' figures of the scope
(`projections.rules.rule_figures`, the townships' rules in force, judged on the rollup's day),
which give `rules` and `overdue_children`. Work (visits, aid, activities...) is counted for the site that
recorded it; children (archived, guardianship, pairing, rules met, overdue) for the sites the
child belongs to.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from projections.archive import PROXY_KINDS, ChildArchive
from projections.daily import WorkRow, rows_of_facts
from projections.facts import Fact, in_scope
from projections.followups import Period
from projections.rules import RuleFigures

GRADE_BANDS = (("1-3", 1, 3), ("4-6", 4, 6), ("7-9", 7, 9))


class Share(msgspec.Struct, frozen=True):
    """A count and its percentage of a whole (one decimal). An object on the wire, as the API's
    OpenAPI document says (clients generated from it read {count, pct}); never stored."""

    count: int
    pct: float


def pct(count: int, whole: int) -> float:
    """`count` as a percentage of `whole`, one decimal (0.0 of nothing)."""
    return round(100.0 * count / whole, 1) if whole else 0.0


def share(count: int, whole: int) -> Share:
    return Share(count, pct(count, whole))


class RuleFigure(msgspec.Struct, frozen=True, kw_only=True):
    """One follow-up rule of the townships in scope (projections/rules.py, the rules in force), its
    figures summed over those townships: what GET /rules gives per township, counted."""

    done: int  # the work that counts for it recorded by the sites in scope in the period
    due: int  # child- (or site-) periods due
    met: int  # of those, met
    pct_met: float
    overdue: int  # children (or sites) overdue at the end of the period (or today, if earlier)
    zh: str = ""  # the rule's name (of the first township in scope that has it)
    en: str = ""
    target: str = "child"  # "child" or "site"


def rule_totals(figures: Iterable[RuleFigures]) -> tuple[dict[str, RuleFigure], int]:
    """The rollup's `rules` (per rule id, summed over the townships) and `overdue_children` (children
    overdue for at least one child rule) from the rules' figures of a scope."""
    sums: dict[str, list[int]] = {}
    names: dict[str, RuleFigures] = {}
    late: dict[str, set[str]] = {}
    children: set[str] = set()
    for f in figures:
        acc = sums.setdefault(f.rule_id, [0, 0, 0])
        acc[0] += f.done
        acc[1] += f.due
        acc[2] += f.met
        names.setdefault(f.rule_id, f)
        late.setdefault(f.rule_id, set()).update(o.subject for o in f.overdue)
        if f.target == "child":
            children.update(o.subject for o in f.overdue)
    out = {rid: RuleFigure(done=d, due=due, met=met, pct_met=share(met, due).pct, overdue=len(late[rid]),
                           zh=names[rid].zh, en=names[rid].en, target=names[rid].target)
           for rid, (d, due, met) in sorted(sums.items())}
    return out, len(children)


class Freshness(msgspec.Struct, frozen=True, kw_only=True):
    site_id: str
    last_committed_at: dt.datetime | None
    newest_occurred_at: dt.datetime | None


class Rollup(msgspec.Struct, frozen=True, kw_only=True):
    scope: str
    period: str
    start: dt.date
    end: dt.date  # exclusive
    as_of: dt.date  # the day archive states, "open" and "overdue" are taken on
    children_archived: int
    children_registered: int
    children_closed: int
    by_site: dict[str, int]
    by_guardianship: dict[str, Share]
    by_grade_band: dict[str, Share]
    by_reason: dict[str, Share]
    individual_plan: Share
    children_paired: Share
    paired_by: dict[str, int]
    proxy_parents_matched: int
    proxy_parents_new: int
    pairings_started: int
    pairings_ended: int
    rules: dict[str, RuleFigure]  # by rule id: the townships' rules in force (projections/rules.py)
    overdue_children: int  # children overdue for at least one of those rules
    aid_children: int
    aid_events: int
    aid_amount_fen: int
    aid_by_source: dict[str, int]
    condolence_visits: int
    condolence_children: int
    condolence_amount_fen: int
    activities: int
    activities_by_kind: dict[str, int]
    activity_participants: int
    activity_children: int
    tutoring_sessions: int
    counselling_sessions: int
    guardian_trainings: int
    guardians_trained: int
    meetings: int
    meeting_attendees: int
    safety_incidents: int
    incidents_by_severity: dict[str, int]
    rights_cases_opened: int
    rights_cases_closed: int
    rights_cases_open: int
    freshness: list[Freshness] = []
    # The figures the seed's summaries count that the list above did not (issue 17): children who
    # have a proxy parent (代理妈妈、代管家长、爱心妈妈) rather than pairings, closings by reason and
    # drop-outs by the child's reasons ("no child drops out because of poverty"), households as
    # well as children reached by condolence visits (the seed counts 户), open conflicts.
    proxy_parent_children: Share = Share(0, 0.0)
    proxy_parent_children_new: int = 0
    closed_by_reason: dict[str, int] = {}
    dropped_out: int = 0
    dropped_out_by_reason: dict[str, int] = {}
    dropped_out_poverty: int = 0  # the headline: dropped-out children registered for poverty
    condolence_households: int = 0
    conflicts_open: int = 0
    # The contact work done in the period by the sites in scope, whatever the rules (until issue 17
    # these were the fixed rules' `rules.visit.done` etc.).
    home_visits: int = 0
    parent_calls: int = 0
    letters: int = 0
    talks: int = 0


def household_of(a: ChildArchive | None, child_id: str) -> str:
    """Which household (户) a child belongs to, for counting households a visit reached: children
    whose archives name the same guardian (name and phone as recorded) in the same household
    village are one household, as siblings living with one grandmother are. A child with no
    guardian's name or phone on record, or no archive at hand, is a household of its own."""
    g = a.guardian if a is not None else None
    if a is None or g is None or not (g.name or a.guardian_phone):
        return child_id
    return "\x1f".join((a.household_village or "", g.name or "", a.guardian_phone or ""))


def _band(grade: int | None) -> str:
    for name, lo, hi in GRADE_BANDS:
        if grade is not None and lo <= grade <= hi:
            return name
    return "other"


class _Zeros(dict[str, int]):
    """Sums by key; a key never added reads 0 (a plain dict where Counter's constructor and
    update cost more than the sums themselves)."""

    def __missing__(self, key: str) -> int:
        return 0


class _Totals:
    """The sums a rollup's work figures read, by kind (and source or detail where a figure splits)."""

    def __init__(self, rows: Iterable[WorkRow] = ()) -> None:
        self.facts = _Zeros()
        self.amount = _Zeros()
        self.count = _Zeros()
        self.amount_by_source: dict[str, _Zeros] = {}
        self.by_detail: dict[str, _Zeros] = {}
        self.children: dict[str, set[str]] = {}
        self.children_by_detail: dict[tuple[str, str], set[str]] = {}
        for r in rows:
            self.add(r.kind, r.source, r.detail, r.facts, r.amount_fen, r.count, r.children)

    def add(self, kind: str, source: str, detail: str, facts: int, amount_fen: int, count: int,
            children: Iterable[str] = ()) -> None:
        """One row's sums (a `WorkRow`'s fields). Added with `get`, not through `_Zeros.__missing__`
        (a Python call for each key's first sum)."""
        self.facts[kind] = self.facts.get(kind, 0) + facts
        self.amount[kind] = self.amount.get(kind, 0) + amount_fen
        self.count[kind] = self.count.get(kind, 0) + count
        by_source = self.amount_by_source.get(kind)
        if by_source is None:
            by_source = self.amount_by_source[kind] = _Zeros()
        source = source or "unknown"
        by_source[source] = by_source.get(source, 0) + amount_fen
        by_detail = self.by_detail.get(kind)
        if by_detail is None:
            by_detail = self.by_detail[kind] = _Zeros()
        by_detail[detail] = by_detail.get(detail, 0) + facts
        if children:
            self.children.setdefault(kind, set()).update(children)
            self.children_by_detail.setdefault((kind, detail), set()).update(children)

    def by_detail_or(self, kind: str, missing: str) -> dict[str, int]:
        out = _Zeros()
        for detail, n in self.by_detail.get(kind, {}).items():
            out[detail or missing] += n
        return out


def compute(
    scope: str, period: Period, archives: Iterable[ChildArchive], facts: Iterable[Fact], *,
    rules: Sequence[RuleFigures], today: dt.date | None = None, freshness: Iterable[Freshness] = (),
) -> Rollup:
    """Every figure for `scope` and `period` from archives (children), facts (work) and the rules'
    figures of the scope for the period judged on the same day (`projections.rules.rule_figures`)."""
    return compute_from_rows(scope, period, archives, rows_of_facts(facts, scope, period.start, period.end),
                             rules=rules, today=today, freshness=freshness)


def child_state(a: ChildArchive, day: dt.date, scope: str) -> dict[str, int]:
    """What one child adds on `day` to the figures a rollup takes on its day (`as_of`): nothing
    unless its archive is open then; else "archived" 1, a "site", "guardianship", "band" and
    "reason" key per value it is counted under (`key\x1fvalue`), "plan", "paired" and a
    "paired_by" per kind of its pairings active that day, "proxies" (proxy pairings active) and
    "proxy_kids", "open_cases". Counted over the scope's children it gives those figures; it changes
    only on the days its intervals, pairings and cases start or end (projections.ranges keeps it as
    day-deltas)."""
    if not a.open_on(day):
        return {}
    out: dict[str, int] = {"archived": 1}

    def add(key: str, n: int = 1) -> None:
        out[key] = out.get(key, 0) + n

    for s in a.sites:
        if in_scope(s, scope):
            add("site\x1f" + s)
    add("guardianship\x1f" + (str(a.guardian.type) if a.guardian is not None else "unknown"))
    add("band\x1f" + _band(a.grade))
    for r in a.reasons:
        add("reason\x1f" + r)
    if a.individual_plan:
        add("plan")
    active = [p for p in a.pairings if p.started_on <= day and (p.ended_on is None or p.ended_on > day)]
    if active:
        add("paired")
    for k in sorted({p.partner_kind for p in active}):
        add("paired_by\x1f" + k)
    proxy_now = sum(1 for p in active if p.partner_kind in PROXY_KINDS)
    if proxy_now:
        add("proxies", proxy_now)
        add("proxy_kids")
    cases = sum(1 for x in a.rights_cases if x.opened_on <= day and (x.closed_on is None or x.closed_on > day))
    if cases:
        add("open_cases", cases)
    return out


def child_dated(a: ChildArchive) -> list[tuple[str, dt.date]]:
    """The days on which a child counts once for a figure of the period holding the day:
    "registered", "closed" (each interval's end), "closed_by\x1f<reason>" (each closing)."""
    out = [("registered", a.registered_on)] if a.registered_on is not None else []
    out += [("closed", hi) for _, hi in a.intervals if hi is not None]
    out += [("closed_by\x1f" + why, day) for day, why in a.closings]
    return out


class ChildCounts(msgspec.Struct, frozen=True, kw_only=True):
    """The children's figures of a rollup before they are shaped: `state` the sums of
    :func:`child_state` on the rollup's day, `dated` the sums of :func:`child_dated` in the period,
    the drop-outs of the period (children, and their reasons) and the open conflicts."""

    state: dict[str, int]
    dated: dict[str, int]
    dropped: int
    dropped_reasons: dict[str, int]
    conflicts_open: int


def child_counts(kids: Sequence[ChildArchive], scope: str, period: Period, as_of: dt.date) -> ChildCounts:
    """:class:`ChildCounts` of the scope's children (merged stubs left out), one by one."""
    state: Counter[str] = Counter()
    dated: Counter[str] = Counter()
    dropped_reasons: dict[str, int] = {}
    dropped = 0
    for a in kids:
        state.update(child_state(a, as_of, scope))
        dated.update(key for key, day in child_dated(a) if period.contains(day))
        if any(why == "dropped_out" and period.contains(day) for day, why in a.closings):
            dropped += 1
            for r in a.reasons:
                dropped_reasons[r] = dropped_reasons.get(r, 0) + 1
    return ChildCounts(state=dict(state), dated=dict(dated), dropped=dropped, dropped_reasons=dropped_reasons,
                       conflicts_open=sum(len(a.open_conflicts) for a in kids))


def _split(counts: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """The `key\x1fvalue` counts by key, each value's count (zeros left out)."""
    out: dict[str, dict[str, int]] = {}
    for k, v in counts.items():
        key, sep, value = k.partition("\x1f")
        if sep and v:
            out.setdefault(key, {})[value] = v
    return out


def compute_from_rows(
    scope: str, period: Period, archives: Iterable[ChildArchive], work: Iterable[WorkRow], *,
    rules: Sequence[RuleFigures], today: dt.date | None = None, freshness: Iterable[Freshness] = (),
) -> Rollup:
    """Every figure for `scope` and `period` from archives (children) and the scope's work in the
    period summed by kind, source and detail (`projections.daily`: from the daily rows, or from
    facts one by one; the same sums give the same figures); the rules' figures and who is overdue
    from `rules`, the townships' rules in force judged on the rollup's day (`as_of`)."""
    as_of = min(period.last_day, today) if today is not None else period.last_day
    archives = list(archives)
    root = {a.child_id: a.merged_into for a in archives if a.merged_into is not None}
    kids = [a for a in archives if a.merged_into is None and a.registered and any(in_scope(s, scope) for s in a.sites)]
    rule_figs, overdue_children = rule_totals(rules)
    by_id = {a.child_id: a for a in archives}
    return assemble(scope, period, as_of, child_counts(kids, scope, period, as_of), _Totals(work), root, by_id,
                    rule_figs, overdue_children, freshness)


def state_figures(st: Mapping[str, int]) -> dict[str, Any]:
    """The figures a rollup takes from its children's state on its day (`st`: the sums of
    :func:`child_state` over the scope's children, zeros left out or not), as keyword arguments of
    :class:`Rollup`: they depend on that day alone, so a range index shapes them once for each
    stretch of days between two changes (projections.ranges)."""
    by = _split(st)
    n = st.get("archived", 0)
    return {
        "children_archived": n,
        "by_site": dict(sorted(by.get("site", {}).items())),
        "by_guardianship": {k: share(v, n) for k, v in sorted(by.get("guardianship", {}).items())},
        "by_grade_band": {k: share(v, n) for k, v in sorted(by.get("band", {}).items())},
        "by_reason": {k: share(v, n) for k, v in sorted(by.get("reason", {}).items())},
        "individual_plan": share(st.get("plan", 0), n),
        "children_paired": share(st.get("paired", 0), n),
        "paired_by": dict(sorted(by.get("paired_by", {}).items())),
        "proxy_parents_matched": st.get("proxies", 0),
        "rights_cases_open": st.get("open_cases", 0),
        "proxy_parent_children": share(st.get("proxy_kids", 0), n),
    }


def assemble(scope: str, period: Period, as_of: dt.date, cc: ChildCounts, t: _Totals, root: Mapping[str, str],
             by_id: Mapping[str, ChildArchive], rule_figs: dict[str, RuleFigure], overdue_children: int,
             freshness: Iterable[Freshness] = ()) -> Rollup:
    """The rollup from its parts: the children's counts, the work's sums, the merged children's
    roots and the archives by id (for households), the rules' totals."""
    return assemble_shaped(scope, period, as_of, state_figures(cc.state), cc.dated, cc.dropped, cc.dropped_reasons,
                           cc.conflicts_open, t, root, by_id, rule_figs, overdue_children, freshness)


def assemble_shaped(scope: str, period: Period, as_of: dt.date, state: Mapping[str, Any], dated: Mapping[str, int],
                    dropped: int, dropped_reasons: Mapping[str, int], conflicts_open: int, t: _Totals,
                    root: Mapping[str, str], by_id: Mapping[str, ChildArchive], rule_figs: dict[str, RuleFigure],
                    overdue_children: int, freshness: Iterable[Freshness] = ()) -> Rollup:
    """:func:`assemble` with the children's state already shaped (:func:`state_figures`) and their
    counts of the period (`dated`, the drop-outs, the open conflicts) given apart. The sums are
    read with `get` (a kind without work would call `_Zeros.__missing__`, a Python call each: ~40
    a range, most of them for kinds the range has none of)."""

    def children_of(kind: str) -> int:
        return len({root.get(c, c) for c in t.children.get(kind, ())})

    households = {household_of(by_id.get(root.get(c, c)), root.get(c, c)) for c in t.children.get("condolence", ())}
    pairing_details: Mapping[str, int] = t.by_detail.get("pairing_started", {})
    closed_by = _split(dated).get("closed_by", {})
    return Rollup(
        scope=scope, period=period.label, start=period.start, end=period.end, as_of=as_of,
        **state,
        children_registered=dated.get("registered", 0),
        children_closed=dated.get("closed", 0),
        proxy_parents_new=sum(pairing_details.get(k, 0) for k in PROXY_KINDS),
        pairings_started=t.facts.get("pairing_started", 0),
        pairings_ended=t.facts.get("pairing_ended", 0),
        rules=rule_figs,
        overdue_children=overdue_children,
        aid_children=children_of("aid"),
        aid_events=t.facts.get("aid", 0),
        aid_amount_fen=t.amount.get("aid", 0),
        aid_by_source=dict(sorted(t.amount_by_source.get("aid", {}).items())),
        condolence_visits=t.facts.get("condolence", 0),
        condolence_children=children_of("condolence"),
        condolence_amount_fen=t.amount.get("condolence", 0),
        activities=t.facts.get("activity", 0),
        activities_by_kind=dict(sorted(t.by_detail_or("activity", "other").items())),
        activity_participants=t.count.get("activity", 0),
        activity_children=children_of("activity"),
        tutoring_sessions=t.facts.get("tutoring", 0),
        counselling_sessions=t.facts.get("counselling", 0),
        guardian_trainings=t.facts.get("guardian_training", 0),
        guardians_trained=t.count.get("guardian_training", 0),
        meetings=t.facts.get("meeting", 0),
        meeting_attendees=t.count.get("meeting", 0),
        safety_incidents=t.facts.get("incident", 0),
        incidents_by_severity=dict(sorted(t.by_detail_or("incident", "unknown").items())),
        rights_cases_opened=t.facts.get("case_opened", 0),
        rights_cases_closed=t.facts.get("case_closed", 0),
        freshness=sorted((f for f in freshness if in_scope(f.site_id, scope)), key=lambda f: f.site_id),
        proxy_parent_children_new=len({root.get(c, c) for k in PROXY_KINDS
                                       for c in t.children_by_detail.get(("pairing_started", k), ())}),
        closed_by_reason=dict(sorted(closed_by.items())),
        dropped_out=dropped,
        dropped_out_by_reason=dict(sorted(dropped_reasons.items())),
        dropped_out_poverty=dropped_reasons.get("poverty", 0),
        condolence_households=len(households),
        conflicts_open=conflicts_open,
        home_visits=t.facts.get("visit", 0),
        parent_calls=t.facts.get("call", 0),
        letters=t.facts.get("letter", 0),
        talks=t.facts.get("talk", 0),
    )
