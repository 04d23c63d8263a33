"""Follow-up rules evaluated: per rule, whom it applies to, how many periods were due and met, and
who is overdue, for a scope (a site, a township, a region, everything) and a period.

The rules are data (events.rules), set per township by events (`FollowUpRuleSet`,
`FollowUpRuleRetired`, `SchoolCalendarSet`); `RuleBook` holds their history, and every period is
judged by the version of its rule in force on the period's first day, so a rule changed on a day
changes the figures of the periods from that day on, and "as of" an earlier day answers with the
rule then in force. A township that never set a rule is held to `events.rules.DEFAULT_RULES`.

The one entry point for figures is `rule_figures` (pure: archives, work and sites in, figures out;
the center feeds it from its read models, projections/queries.py `rule_figures`, and the "as of"
view from the log up to a time). For a **child rule**:

- A child-period is *due* when the period has ended (by `as_of`) and, on its first day, the
  child's archive was open, the rule applied to the child (its pairing, grade, reasons) and a site
  of the rule's kinds held the child: so the month a child is registered or reopened in, or
  transferred into a site in, is not due there; a period is counted for the sites that held the
  child on its first day (a transfer leaves the old site's arrears with the old site).
- It is *met* when the work that counts (its types, the filter of `counts.where`, done for that
  child) in the period numbers at least `at_least`.
- A child is *overdue* on a day T (the period's last day, or `as_of` if earlier) when the rule
  applies to it on T and the last day of the period after its *anchor* has passed: the anchor is
  the period of the later of its latest qualifying work (with `at_least` above 1: the latest
  period met) and the day its clock started (the later of: the current open interval's first
  day, the day the holding site in scope took the child, the day its qualifying pairing started,
  the day the rule came into force). So a child visited in January is due by the end of February
  and 1 day overdue on 1 March; reopened on 10 May, it is due by the end of June.

A **site rule** is the same per site: the work the site recorded that counts, per period; a site's
clock starts when the rule came into force, or the site's registration, or the window's start.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from events import catalogue as c
from events.envelope import Event
from events.labels import enum_label
from events.localtime import local_day
from events.rules import COUNTABLE, DEFAULT_RULES, FollowUpRule, SchoolCalendar, Target
from events.types import SiteKind
from projections.archive import ChildArchive, ChildState, Effective
from projections.archive.book import build_states, derive_all
from projections.facts import Fact, in_scope, township_of
from projections.followups import Period
from projections.periods import Periods

_FAR_PAST = dt.date(1970, 1, 1)
_MOVES = frozenset({"ChildRegistered", "ChildTransferred"})


class Work(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of work a rule may count, or a move of a child (registration, transfer)."""

    event_id: str
    type: str  # the event type name
    site_id: str  # the site that recorded it
    day: dt.date  # the reporting day it happened on (events.localtime.local_day)
    children: tuple[str, ...] = ()
    detail: str | None = None  # the value of the type's filter field (events.rules.FILTER_FIELDS)
    # Registrations and transfers: the role ("village", "school") -> the site that takes the child.
    roles: dict[str, str] = {}


_FACT_TYPES: dict[str, str] = {"visit": "HomeVisitMade", "call": "ParentCallMade", "letter": "LetterWritten",
                               "talk": "TalkHeld", "tutoring": "TutoringGiven", "counselling": "CounsellingGiven",
                               "guardian_training": "GuardianTrained", "meeting": "MeetingHeld", "aid": "AidGiven",
                               "condolence": "CondolenceVisitMade", "activity": "ActivityHeld"}


def work_of_fact(f: Fact) -> Work | None:
    """The work of a counted fact (projections.facts), None for a kind no rule counts."""
    t = _FACT_TYPES.get(f.kind)
    if t is None:
        return None
    field, _, default = COUNTABLE[t]
    detail = (f.detail or default) if field is not None else None
    return Work(event_id=f.event_id, type=t, site_id=f.site_id, day=local_day(f.occurred_at),
                children=tuple(f.children), detail=detail)


def work_of(care: c.CareEventBase, event_id: str, site_id: str, occurred_at: dt.datetime,
            site_kind: str | None = None) -> Work | None:
    """The work of a payload (as it counts after corrections): countable types, registrations and
    transfers; None for anything else. `site_kind` is the sender's kind (a registration gives the
    sender the role of its kind when it names no site of that kind)."""
    name = type(care).__name__
    day = local_day(occurred_at)
    if isinstance(care, c.ChildRegistered):
        roles = {k: v for k, v in (("village", care.village_site), ("school", care.school_site)) if v}
        if site_kind in ("village", "school") and site_kind not in roles:
            roles[site_kind] = site_id
        return Work(event_id=event_id, type=name, site_id=site_id, day=day, children=(care.child_id,), roles=roles)
    if isinstance(care, c.ChildTransferred):
        roles = {k: v for k, v in (("village", care.to_village_site), ("school", care.to_school_site)) if v}
        return Work(event_id=event_id, type=name, site_id=site_id, day=day, children=(care.child_id,), roles=roles)
    spec = COUNTABLE.get(name)
    if spec is None:
        return None
    field = spec[0]
    detail = str(getattr(care, field)) if field is not None else None
    return Work(event_id=event_id, type=name, site_id=site_id, day=day, children=care.child_ids(), detail=detail)


class SiteInfo(msgspec.Struct, frozen=True):
    kind: str
    since: dt.date | None = None  # registered at the center (a site rule's clock starts no earlier)
    name: str | None = None  # its registered name: what pages show for it


class RuleVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A rule as set on a day; `rule` None: retired from that day."""

    rule_id: str
    effective_from: dt.date
    rule: FollowUpRule | None
    event_id: str | None = None  # None: the default


class RuleBook:
    """Each township's rules and calendars over time. Versions of a rule are kept in the order of
    their effective day (for one day, the later `add`: callers add in the store's order)."""

    def __init__(self, defaults: Sequence[FollowUpRule] = DEFAULT_RULES) -> None:
        self.defaults = {r.rule_id: r for r in defaults}
        self._versions: dict[str, dict[str, list[RuleVersion]]] = {}
        self.calendars: dict[str, dict[int, SchoolCalendar]] = {}

    def set_rule(self, township: str, rule: FollowUpRule, effective_from: dt.date, event_id: str | None = None
                 ) -> None:
        self._add(township, RuleVersion(rule_id=rule.rule_id, effective_from=effective_from, rule=rule,
                                        event_id=event_id))

    def retire(self, township: str, rule_id: str, effective_from: dt.date, event_id: str | None = None) -> None:
        self._add(township, RuleVersion(rule_id=rule_id, effective_from=effective_from, rule=None, event_id=event_id))

    def set_calendar(self, township: str, cal: SchoolCalendar) -> None:
        self.calendars.setdefault(township, {})[cal.school_year] = cal

    def _add(self, township: str, v: RuleVersion) -> None:
        vs = self._versions.setdefault(township, {}).setdefault(v.rule_id, [])
        keys = [x.effective_from for x in vs]
        vs.insert(bisect.bisect_right(keys, v.effective_from), v)

    def add(self, care: c.CareEventBase, event_id: str, occurred_at: dt.datetime) -> bool:
        """Take a rule or calendar event (False: not one)."""
        if isinstance(care, c.FollowUpRuleSet):
            self.set_rule(care.township, care.rule, care.effective_from, event_id)
        elif isinstance(care, c.FollowUpRuleRetired):
            self.retire(care.township, care.rule_id, care.effective_from, event_id)
        elif isinstance(care, c.SchoolCalendarSet):
            self.set_calendar(care.township, care.calendar)
        else:
            return False
        return True

    def versions(self, township: str, rule_id: str) -> list[RuleVersion]:
        """Every version of the rule, the default (from the far past) first when there is one."""
        base = [RuleVersion(rule_id=rule_id, effective_from=_FAR_PAST, rule=self.defaults[rule_id])
                ] if rule_id in self.defaults else []
        return base + self._versions.get(township, {}).get(rule_id, [])

    def rule_ids(self, township: str) -> list[str]:
        return list(dict.fromkeys([*self.defaults, *self._versions.get(township, {})]))

    def in_force(self, township: str, rule_id: str, day: dt.date) -> RuleVersion | None:
        """The version in force on `day` (None: not set yet, or retired)."""
        found = None
        for v in self.versions(township, rule_id):
            if v.effective_from <= day:
                found = v
        return found if found is not None and found.rule is not None else None

    def since(self, township: str, rule_id: str, day: dt.date) -> dt.date:
        """The first day of the unbroken run of versions in force on `day` (a retirement breaks it)."""
        start = _FAR_PAST
        for v in self.versions(township, rule_id):
            if v.effective_from > day:
                break
            if v.rule is None:
                start = dt.date.max
            elif start == dt.date.max:
                start = v.effective_from
        return start

    def rules_in_force(self, township: str, day: dt.date) -> list[FollowUpRule]:
        out = []
        for rid in self.rule_ids(township):
            v = self.in_force(township, rid, day)
            if v is not None and v.rule is not None:
                out.append(v.rule)
        return out


class OverdueEntry(msgspec.Struct, frozen=True, kw_only=True):
    subject: str  # a child id (child rules) or a site id (site rules)
    name: str | None = None  # the child's name in its archive, or the site's registered name
    sites: list[str]  # the sites in scope it is overdue for
    last_done: dt.date | None
    due_on: dt.date
    days_overdue: int


class RuleFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One rule of one township, for a scope and a period (see the module docstring)."""

    township: str
    rule_id: str
    zh: str
    en: str
    applies_zh: str  # whom it applies to, in words
    applies_en: str
    target: str  # "child" or "site"
    event_types: list[str]  # what counts (the first one is the form a station offers to record it)
    period_kind: str
    at_least: int
    effective_from: dt.date | None  # the day the version shown came into force (None: the default)
    applies_to: int  # children (or sites) in scope it applies to on `on`
    due: int  # child- (or site-) periods due
    met: int
    pct_met: float
    overdue: list[OverdueEntry]  # on `on`, most overdue first
    on: dt.date  # the day "applies to" and "overdue" are taken on: the period's last day, or as_of if earlier
    # The work that counts for the version shown (its types and filter) recorded by the sites in
    # scope in the period, up to `as_of` (the rollups' `rules.<rule id>.done`).
    done: int = 0


def _labels(kind: str, values: Iterable[object], lang: str) -> list[str]:
    """The catalogue's labels (events.labels) of enumeration values: a rule says a partner, a reason
    or a site kind in the words of the figures, the exports and the station forms."""
    return [enum_label(kind, v, lang) for v in values]


def applies_text(rule: FollowUpRule, sites: Mapping[str, SiteInfo] | None = None) -> tuple[str, str]:
    """Whom a rule applies to, in Chinese and in English, each value in the catalogue's words and
    each site it names by its registered name in `sites` (its id when not registered there)."""
    a = rule.applies
    if a.target is Target.SITE:
        if a.sites:
            named = [(sites or {}).get(s) for s in a.sites]
            words = [i.name if i is not None and i.name else s for s, i in zip(a.sites, named, strict=True)]
            return "指定站点：" + "、".join(words), "sites " + ", ".join(words)
        return ("、".join(_labels("site_kind", a.site_kinds, "zh")),
                ", ".join(f"{k} sites" for k in _labels("site_kind", a.site_kinds, "en")))
    zh, en = ["建档儿童"], ["archived children"]
    if a.pairing_kinds:
        zh.insert(0, "有" + "或".join(_labels("partner", a.pairing_kinds, "zh")) + "结对的")
        en.append("with an active pairing with a " + " or ".join(_labels("partner", a.pairing_kinds, "en")))
    if a.grade_min is not None or a.grade_max is not None:
        lo, hi = a.grade_min or 0, a.grade_max if a.grade_max is not None else 12
        zh.insert(0, f"{lo}-{hi}年级")
        en.append(f"in grades {lo}-{hi}")
    if a.reasons:
        zh.insert(0, "、".join(_labels("reason", a.reasons, "zh")))
        en.append("counted for " + " or ".join(_labels("reason", a.reasons, "en")))
    if a.site_kinds:
        zh.insert(0, "、".join(_labels("site_kind", a.site_kinds, "zh")) + "的")
        en.append("held by " + " or ".join(f"a {k}" for k in _labels("site_kind", a.site_kinds, "en")))
    return "".join(zh), " ".join(en)


def holdings(work_by_child: Mapping[str, Sequence[Work]], a: ChildArchive, kinds: Mapping[str, SiteInfo]
             ) -> list[tuple[str, str, dt.date, dt.date | None]]:
    """(role, site, from, until) of every site that held the child, from its registrations and
    transfers (by day, then in the given order); without a registration in `work_by_child`, the
    archive's current sites since its registration."""
    moves = sorted((w for m in (a.child_id, *a.merged_from) for w in work_by_child.get(m, ())
                    if w.type in ("ChildRegistered", "ChildTransferred")), key=lambda w: w.day)
    if not any(w.type == "ChildRegistered" for w in moves):
        start = a.registered_on or _FAR_PAST
        return [(kinds[s].kind if s in kinds else "", s, start, None) for s in a.sites]
    current: dict[str, tuple[str, dt.date]] = {}
    out: list[tuple[str, str, dt.date, dt.date | None]] = []
    for w in moves:
        roles = w.roles
        if w.type == "ChildRegistered" and not roles and not current:
            roles = {(kinds[w.site_id].kind if w.site_id in kinds else "township"): w.site_id}
        for role, site in roles.items():
            held = current.get(role)
            if held is not None and held[0] == site:
                continue
            if held is not None:
                out.append((role, held[0], held[1], w.day))
            current[role] = (site, w.day)
    out += [(role, site, since, None) for role, (site, since) in current.items()]
    return out


class _Child:
    """What a child rule needs of one child: its archive, holdings and countable work."""

    def __init__(self, a: ChildArchive, held: list[tuple[str, str, dt.date, dt.date | None]], work: list[Work]):
        self.a = a
        self.held = held
        self.by_type: dict[str, list[Work]] = {}
        for w in work:
            self.by_type.setdefault(w.type, []).append(w)

    def days(self, rule: FollowUpRule, reasons_of: Mapping[str, list[str]]) -> list[dt.date]:
        """The days of the child's work that counts for `rule`, sorted."""
        return sorted(w.day for t in rule.counts.event_types for w in self.by_type.get(t, ())
                      if _counts(rule, w, reasons_of))

    def may_apply(self, rule: FollowUpRule) -> bool:
        """Whether the rule can apply to the child on some day (what does not change with the day:
        grade, reasons, a pairing of the kinds ever, a holder of the kinds ever)."""
        a, ap = self.a, rule.applies
        grade = a.grade or 0
        if (ap.grade_min is not None and grade < ap.grade_min) or (ap.grade_max is not None and grade > ap.grade_max):
            return False
        if ap.reasons and not set(map(str, ap.reasons)) & set(a.reasons):
            return False
        if ap.pairing_kinds and not set(map(str, ap.pairing_kinds)) & {p.partner_kind for p in a.pairings}:
            return False
        return not ap.site_kinds or bool({str(k) for k in ap.site_kinds} & {role for role, *_ in self.held})

    def holders_on(self, day: dt.date, scope: str, kinds: Sequence[str]) -> list[tuple[str, dt.date]]:
        """(site, since) of the holders in scope, of the given kinds, on `day`."""
        return [(site, lo) for role, site, lo, hi in self.held
                if lo <= day and (hi is None or day < hi) and in_scope(site, scope) and (not kinds or role in kinds)]

    def applies_on(self, rule: FollowUpRule, day: dt.date, scope: str) -> bool:
        a, ap = self.a, rule.applies
        if not a.open_on(day):
            return False
        grade = a.grade or 0
        if ap.grade_min is not None and grade < ap.grade_min:
            return False
        if ap.grade_max is not None and grade > ap.grade_max:
            return False
        if ap.reasons and not set(map(str, ap.reasons)) & set(a.reasons):
            return False
        if ap.pairing_kinds and not self.pairing_since(rule, day):
            return False
        return bool(self.holders_on(day, scope, [str(k) for k in ap.site_kinds]))

    def pairing_since(self, rule: FollowUpRule, day: dt.date) -> dt.date | None:
        kinds = set(map(str, rule.applies.pairing_kinds))
        starts = [p.started_on for p in self.a.pairings if p.partner_kind in kinds and p.started_on <= day
                  and (p.ended_on is None or day < p.ended_on)]
        return min(starts) if starts else None

    def clock_start(self, rule: FollowUpRule, day: dt.date, scope: str, rule_since: dt.date) -> dt.date:
        opened = max((lo for lo, hi in self.a.intervals if lo <= day and (hi is None or day < hi)), default=day)
        held = [lo for _, lo in self.holders_on(day, scope, [str(k) for k in rule.applies.site_kinds])]
        starts = [opened, rule_since, min(held) if held else day]
        if rule.applies.pairing_kinds:
            starts.append(self.pairing_since(rule, day) or day)
        return max(starts)


def counts_for(rule: FollowUpRule, w: Work, reasons_of: Mapping[str, list[str]]) -> bool:
    """Whether `w` counts for `rule` (its types, its filter, the reasons of the children it covers)."""
    return _counts(rule, w, reasons_of)


def _counts(rule: FollowUpRule, w: Work, reasons_of: Mapping[str, list[str]]) -> bool:
    k = rule.counts
    if w.type not in k.event_types:
        return False
    for values in k.where.values():
        if w.detail is None or w.detail not in values:
            return False
    if k.child_reasons:
        wanted = set(map(str, k.child_reasons))
        if not any(wanted & set(reasons_of.get(ch, ())) for ch in w.children):
            return False
    return True


def _overdue(days: list[dt.date], periods: Periods, at_least: int, start: dt.date, on: dt.date
             ) -> tuple[dt.date | None, dt.date] | None:
    """(last qualifying day, due_on) when overdue on `on`, else None. `days` sorted."""
    last, due_on = due_on_of(days, periods, at_least, start, on)
    return (last, due_on) if on > due_on else None


def due_on_of(days: list[dt.date], periods: Periods, at_least: int, start: dt.date, on: dt.date
              ) -> tuple[dt.date | None, dt.date]:
    """(last qualifying day up to `on`, the last day of the period the next work is due in): the
    subject is overdue on `on` when `on` is after it. `days` sorted."""
    upto = days[:bisect.bisect_right(days, on)]
    last = upto[-1] if upto else None
    if at_least == 1:
        anchor = max(start, last) if last is not None else start
    else:
        per: dict[Period, int] = {}
        for d in upto:
            p = periods.of(d)
            per[p] = per.get(p, 0) + 1
        met = [p.start for p, n in per.items() if n >= at_least]
        anchor = max(start, max(met)) if met else start
    return last, periods.after(periods.of(anchor)).last_day


def _in(days: list[dt.date], p: Period) -> int:
    return bisect.bisect_left(days, p.end) - bisect.bisect_left(days, p.start)


def rule_figures(book: RuleBook, archives: Iterable[ChildArchive], work: Iterable[Work],
                 sites: Mapping[str, SiteInfo], scope: str, period: Period, as_of: dt.date) -> list[RuleFigures]:
    """Per rule of every township in `scope`: whom it applies to, how many periods were due and
    met in `period`, and who is overdue on its last day (or `as_of`, if earlier); see the module
    docstring. `archives` and `work` may hold more than the scope (they are filtered here);
    `work` must reach back far enough for each child's last qualifying work (all of it, for a
    child in scope). `sites`: every site of the townships concerned, with its kind.

    Children's ids appear only for children held in `scope`; site ids only of sites in `scope`.
    """
    return rule_figures_on(book, archives, work, sites, scope, [(period, as_of)])[0]


class Gathered(msgspec.Struct, kw_only=True):
    """What every rule of a scope reads, gathered once from archives, work and sites: each
    child's reasons (by every id it had), each site's work by type, the children held in scope
    (their holdings and work) and the townships concerned."""

    reasons_of: dict[str, list[str]]
    by_site: dict[str, dict[str, list[Work]]]
    children: list[_Child]
    towns: list[str]


def gather(archives: Iterable[ChildArchive], work: Iterable[Work], sites: Mapping[str, SiteInfo], scope: str
           ) -> Gathered:
    """:class:`Gathered` for `scope` (what `rule_figures_on` and projections.ranges start from)."""
    arch = [a for a in archives if a.merged_into is None and a.registered]
    root = {m: a.child_id for a in arch for m in (a.child_id, *a.merged_from)}
    reasons_of = {m: a.reasons for a in arch for m in (a.child_id, *a.merged_from)}
    by_child: dict[str, list[Work]] = {}
    moves: dict[str, list[Work]] = {}  # registrations and transfers only (holdings reads them)
    by_site: dict[str, dict[str, list[Work]]] = {}  # site -> event type -> its work
    for w in work:
        by_site.setdefault(w.site_id, {}).setdefault(w.type, []).append(w)
        into = moves if w.type in _MOVES else by_child
        for ch in w.children:
            into.setdefault(root.get(ch, ch), []).append(w)
    children = []
    for a in arch:
        held = holdings(moves, a, sites)
        if any(in_scope(s, scope) for _, s, _, _ in held):
            children.append(_Child(a, held, [*by_child.get(a.child_id, []), *moves.get(a.child_id, [])]))
    towns = sorted({township_of(s) for s in sites if in_scope(s, scope) or in_scope(township_of(s), scope)}
                   | {township_of(s) for ch in children for _, s, _, _ in ch.held})
    return Gathered(reasons_of=reasons_of, by_site=by_site, children=children, towns=towns)


def rule_figures_on(book: RuleBook, archives: Iterable[ChildArchive], work: Iterable[Work],
                    sites: Mapping[str, SiteInfo], scope: str, asked: Sequence[tuple[Period, dt.date]]
                    ) -> list[list[RuleFigures]]:
    """`rule_figures` for several (period, as_of) at once, the children's holdings and work
    gathered once (a station's "this week" judges today and a week on)."""
    g = gather(archives, work, sites, scope)
    reasons_of, by_site, children, towns = g.reasons_of, g.by_site, g.children, g.towns
    answers = []
    for period, as_of in asked:
        on = min(period.last_day, as_of)
        out = []
        for town in towns:
            town_children = [ch for ch in children if any(township_of(s) == town for _, s, _, _ in ch.held)]
            town_sites = {s: i for s, i in sites.items() if township_of(s) == town and in_scope(s, scope)}
            for rid in book.rule_ids(town):
                shown = book.in_force(town, rid, on) or _latest_in(book, town, rid, period, on)
                if shown is None or shown.rule is None:
                    continue
                if shown.rule.applies.target is Target.SITE:
                    fig = _site_rule(book, town, rid, shown, town_sites, by_site, reasons_of, period, on, as_of)
                else:
                    fig = _child_rule(book, town, rid, shown, town_children, reasons_of, scope, period, on, as_of)
                done = _done(shown.rule, [s for s in by_site if township_of(s) == town and in_scope(s, scope)],
                             by_site, reasons_of, period, as_of)
                out.append(msgspec.structs.replace(fig, done=done) if done else fig)
        answers.append(out)
    return answers


def _done(rule: FollowUpRule, sites: Sequence[str], by_site: Mapping[str, Mapping[str, list[Work]]],
          reasons_of: Mapping[str, list[str]], period: Period, as_of: dt.date) -> int:
    """The work that counts for `rule` recorded by `sites` (those in scope) in `period`, up to `as_of`."""
    return sum(1 for s in sites for t in rule.counts.event_types for w in by_site.get(s, {}).get(t, ())
               if period.start <= w.day < period.end and w.day <= as_of and _counts(rule, w, reasons_of))


def _latest_in(book: RuleBook, town: str, rid: str, period: Period, on: dt.date) -> RuleVersion | None:
    """A rule retired before `on`: the last version in force during the period, if any."""
    found = None
    for v in book.versions(town, rid):
        if v.rule is not None and v.effective_from <= on:
            found = v
    return found if found is not None and book.in_force(town, rid, max(found.effective_from, period.start)) else None


def _figures(town: str, v: RuleVersion, applies_to: int, due: int, met: int, overdue: list[OverdueEntry],
             on: dt.date, sites: Mapping[str, SiteInfo] | None = None) -> RuleFigures:
    rule = v.rule
    assert rule is not None
    zh, en = applies_text(rule, sites)
    return RuleFigures(
        township=town, rule_id=rule.rule_id, zh=rule.zh, en=rule.en, applies_zh=zh, applies_en=en,
        target=str(rule.applies.target), event_types=list(rule.counts.event_types),
        period_kind=str(rule.counts.period), at_least=rule.counts.at_least,
        effective_from=v.effective_from if v.event_id is not None else None, applies_to=applies_to, due=due,
        met=met, pct_met=round(100.0 * met / due, 1) if due else 0.0,
        overdue=sorted(overdue, key=lambda o: (-o.days_overdue, o.subject)), on=on)


def _child_rule(book: RuleBook, town: str, rid: str, shown: RuleVersion, children: list[_Child],
                reasons_of: Mapping[str, list[str]], scope: str, period: Period, on: dt.date, as_of: dt.date
                ) -> RuleFigures:
    cals = book.calendars.get(town, {})
    due = met = applies = 0
    overdue = []
    window_rules = {id(v.rule): v.rule for v in book.versions(town, rid) if v.rule is not None}
    now = book.in_force(town, rid, on)
    periods = {k: Periods(k, cals) for k in {r.counts.period for r in window_rules.values()}}
    # The periods of the window each version judges: those starting while it is in force, ended by as_of.
    judged: dict[int, list[Period]] = {key: [] for key in window_rules}
    for key, rule in window_rules.items():
        for p in periods[rule.counts.period].starting_in(period):
            v = book.in_force(town, rid, p.start)
            if v is not None and v.rule is rule and p.last_day <= as_of:
                judged[key].append(p)
    for ch in children:
        possible = {key: rule for key, rule in window_rules.items() if ch.may_apply(rule)}
        if not possible:
            continue
        days_of = {key: ch.days(rule, reasons_of) for key, rule in possible.items()}
        for key, rule in possible.items():
            for p in judged[key]:
                if ch.applies_on(rule, p.start, scope):
                    due += 1
                    met += _in(days_of[key], p) >= rule.counts.at_least
        if now is None or now.rule is None or id(now.rule) not in possible or not ch.applies_on(now.rule, on, scope):
            continue
        applies += 1
        rule = now.rule
        ps = periods[rule.counts.period]
        start = ch.clock_start(rule, on, scope, book.since(town, rid, on))
        late = _overdue(days_of[id(rule)], ps, rule.counts.at_least, start, on)
        if late is not None:
            sites = sorted(s for s, _ in ch.holders_on(on, scope, [str(k) for k in rule.applies.site_kinds]))
            overdue.append(OverdueEntry(subject=ch.a.child_id, name=ch.a.name, sites=sites, last_done=late[0],
                                        due_on=late[1], days_overdue=(on - late[1]).days))
    return _figures(town, shown, applies, due, met, overdue, on)


def _site_rule(book: RuleBook, town: str, rid: str, shown: RuleVersion, sites: Mapping[str, SiteInfo],
               by_site: Mapping[str, Mapping[str, list[Work]]], reasons_of: Mapping[str, list[str]], period: Period,
               on: dt.date, as_of: dt.date) -> RuleFigures:
    cals = book.calendars.get(town, {})
    due = met = applies = 0
    overdue = []

    def held(rule: FollowUpRule, site: str, info: SiteInfo) -> bool:
        ap = rule.applies
        return site in ap.sites if ap.sites else info.kind in {str(k) for k in ap.site_kinds}

    window_rules = {id(v.rule): v.rule for v in book.versions(town, rid) if v.rule is not None}
    periods = {k: Periods(k, cals) for k in {r.counts.period for r in window_rules.values()}}
    in_window = {key: periods[r.counts.period].starting_in(period) for key, r in window_rules.items()}
    version_at = {p.start: book.in_force(town, rid, p.start) for ps in in_window.values() for p in ps}

    def days_of(rule: FollowUpRule, site: str) -> list[dt.date]:
        work = by_site.get(site, {})
        return sorted(w.day for t in rule.counts.event_types for w in work.get(t, ()) if _counts(rule, w, reasons_of))

    for site, info in sorted(sites.items()):
        days_by: dict[int, list[dt.date]] = {}
        for key, rule in window_rules.items():
            if not held(rule, site, info):
                continue
            days = days_by[key] = days_of(rule, site)
            for p in in_window[key]:
                v = version_at[p.start]
                if v is None or v.rule is not rule or p.last_day > as_of:
                    continue
                if info.since is not None and p.start < info.since:
                    continue
                due += 1
                met += _in(days, p) >= rule.counts.at_least
        now = book.in_force(town, rid, on)
        if now is None or now.rule is None or not held(now.rule, site, info):
            continue
        applies += 1
        rule = now.rule
        days = days_by.get(id(rule)) or days_of(rule, site)
        # A site's clock starts when the rule came into force or the site was registered; with
        # neither known, the first period of the window is its first due one.
        start = max(book.since(town, rid, on), info.since or _FAR_PAST)
        if start == _FAR_PAST:
            start = period.start - dt.timedelta(days=1)
        ps = periods.get(rule.counts.period) or Periods(rule.counts.period, cals)
        late = _overdue(days, ps, rule.counts.at_least, start, on)
        if late is not None:
            overdue.append(OverdueEntry(subject=site, name=info.name, sites=[site], last_done=late[0], due_on=late[1],
                                        days_overdue=(on - late[1]).days))
    return _figures(town, shown, applies, due, met, overdue, on, sites)


SITE_KINDS = tuple(str(k) for k in SiteKind)
# For projections.ranges, which keeps these figures for every day at once with the same code.
Child = _Child
counts = _counts
latest_in = _latest_in
periods_in = _in


class Inputs(msgspec.Struct, kw_only=True):
    """What `rule_figures` needs, built from events (a station's log, an "as of" replay, a test)."""

    archives: list[ChildArchive]
    book: RuleBook
    work: list[Work]


def inputs_from(events: Iterable[tuple[Event, c.CareEventBase | None]], sites: Mapping[str, SiteInfo],
                defaults: Sequence[FollowUpRule] = DEFAULT_RULES) -> Inputs:
    """Archives, the rule book and the work of a set of events, after corrections (an event counts
    as its effective payload; a retracted one not at all), rules taken in stamp order."""
    return inputs_from_states(build_states(events)[0], sites, defaults)


def inputs_from_states(states: Mapping[str, ChildState], sites: Mapping[str, SiteInfo],
                       defaults: Sequence[FollowUpRule] = DEFAULT_RULES) -> Inputs:
    """`inputs_from` for states already built (an ArchiveBook's: a station's view, an "as of" scan)."""
    groups: list[list[Effective]] = []
    archives = derive_all(states, groups)
    seen: dict[str, Effective] = {}
    for effs in groups:
        for x in effs:
            seen.setdefault(x.counts_as, x)
    book = RuleBook(defaults)
    work = []
    for x in sorted(seen.values(), key=lambda x: x.entry.stamp):
        if book.add(x.care, x.counts_as, x.occurred_at):
            continue
        info = sites.get(x.entry.site_id)
        w = work_of(x.care, x.counts_as, x.entry.site_id, x.occurred_at, info.kind if info else None)
        if w is not None:
            work.append(w)
    return Inputs(archives=list(archives.values()), book=book, work=work)
