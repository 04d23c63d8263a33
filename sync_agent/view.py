"""The site's offline view of a child: the center's own reducer (projections.archive) run over
every event this site knows of the child, its own and those fanned out to it.

Guarantee 6 (convergence): the reducer sorts by (recorded_at HLC, site id, site_seq) and keys
events by id, so the same set of events gives the same archive here as at the center, in any
arrival order and with any number of copies.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from events.envelope import Event, care_of
from projections import archive, followups, rules

if TYPE_CHECKING:
    from sync_agent.locallog import LocalLog


def build_view(child_id: str, events: Iterable[Event]) -> archive.ChildArchive:
    """The child's merged archive from the events the site holds (duplicates allowed)."""
    pairs = [(e, care_of(e)) for e in events]
    return archive.build(pairs).get(child_id) or archive.ChildArchive(child_id=child_id)


def field_bases(view: archive.ChildArchive) -> dict[str, str]:
    """field -> id of the event whose value the field shows now: the `based_on` of an update."""
    return {field: src.event_id for field, src in view.sources.items()}


def as_json(child_id: str, events: Iterable[Event]) -> dict[str, Any]:
    """The archive and its timeline, as plain JSON-able data (for `agent show` and local HTTP)."""
    known = list(events)
    pairs = [(e, care_of(e)) for e in known]
    entries = [archive.entry_of(e, care) for e, care in pairs if care is not None]
    view = archive.build(pairs).get(child_id) or archive.ChildArchive(child_id=child_id)
    out: dict[str, Any] = msgspec.to_builtins(view)
    out["timeline"] = msgspec.to_builtins(archive.timeline(entries))
    out["not_understood"] = sum(1 for _, care in pairs if care is None)
    return out


class ChildRecord(NamedTuple):
    """Everything the site knows of one child, for its page and its paper archive: the archive,
    every event (originals and corrections both, by occurred time then stamp), the timeline and,
    for each corrected event, its winning correction (correction event id, retracted?)."""

    archive: archive.ChildArchive
    entries: list[archive.Entry]
    timeline: list[archive.TimelineItem]
    corrections: dict[str, tuple[str, bool]]


def child_record(child_id: str, events: Iterable[Event]) -> ChildRecord:
    """The child's archive (the center's reducer) and its events as entries, in one pass."""
    pairs = [(e, care_of(e)) for e in events]
    entries = list({e.event_id: archive.entry_of(e, care) for e, care in pairs if care is not None}.values())
    view = archive.build(pairs).get(child_id) or archive.ChildArchive(child_id=child_id)
    _, corrections = archive.effective(entries)
    ordered = sorted(entries, key=lambda e: (e.occurred_at, e.stamp))
    return ChildRecord(view, ordered, archive.timeline(entries), corrections)


def child_work(events: Iterable[Event]) -> list[rules.Work]:
    """The child's work as the follow-up rules count it (after corrections), with its registrations
    and transfers (projections.rules.work_of)."""
    entries = [archive.entry_of(e, c) for e in events if (c := care_of(e)) is not None]
    out = []
    for x in archive.effective(entries)[0]:
        w = rules.work_of(x.care, x.counts_as, x.entry.site_id, x.occurred_at)
        if w is not None:
            out.append(w)
    return out


class StationArchives:
    """Every child's archive at this station (`build_view` of its events), kept in the serving
    process and rebuilt only for the children whose events changed since the last look.

    What changed: `LocalLog.change_mark` says whether anything was committed at all (nothing: the
    archives kept are current); then `LocalLog.child_event_counts` names the children whose count
    of events moved (rows are only ever added). A received copy that `LocalLog._widen_inbound`
    widens changes the body of an event other children already held: it adds rows for the
    children it newly names, and an event naming several children that is new to a rebuilt child
    rebuilds the others it names too. The children list, overdue, "this week", the roster and the
    record pages' pickers all read this one cache (`station_archives(log)`).
    """

    def __init__(self, log: LocalLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._mark: tuple[int, int] | None = None
        self._counts: dict[str, int] = {}
        self._views: dict[str, archive.ChildArchive] = {}
        self._shared: dict[str, frozenset[str]] = {}  # child -> its events that name other children too
        self._listed: list[archive.ChildArchive] = []
        self.rebuilt = 0  # children rebuilt since the process started (what the tests count)
        self._rules: tuple[tuple[int, int] | None, str, rules.Inputs] | None = None
        self._late: dict[tuple[str, dt.date], tuple[rules.Inputs, list[rules.RuleFigures]]] = {}
        self._work: dict[str, list[rules.Work]] = {}  # child -> its work as it counts (projections.rules)
        self._work_stale: set[str] = set()  # children rebuilt since their work was last read

    def _refresh(self) -> None:
        mark = self.log.change_mark()  # before the counts: a commit in between is seen next time
        if mark == self._mark:
            return
        counts = self.log.child_event_counts()
        first = self._mark is None
        queue = [cid for cid, n in counts.items() if self._counts.get(cid) != n]
        done: set[str] = set()
        while queue:
            cid = queue.pop()
            if cid in done:
                continue
            done.add(cid)
            events = self.log.child_events(cid)
            shared = frozenset(e.event_id for e in events if len(e.children) > 1)
            if not first:  # an event naming others, new to this child: a copy may have been widened
                known = self._shared.get(cid, frozenset())
                queue += [o for e in events if len(e.children) > 1 and e.event_id not in known
                          for o in e.children if o not in done]
            self._views[cid] = build_view(cid, events)
            self._work_stale.add(cid)
            self._shared[cid] = shared
            self.rebuilt += 1
        if done:
            self._listed = [v for _, v in sorted(self._views.items()) if v.registered and v.merged_into is None]
        self._counts = counts
        self._mark = mark

    def all(self) -> dict[str, archive.ChildArchive]:
        """Child id -> archive, for every child the site holds an event of (registered or not)."""
        with self._lock:
            self._refresh()
            return dict(self._views)

    def listed(self) -> list[archive.ChildArchive]:
        """The registered, unmerged archives (what the lists show), by child id."""
        with self._lock:
            self._refresh()
            return list(self._listed)

    def rule_inputs(self, site: str, kind: str) -> rules.Inputs:
        """What the follow-up rules need (projections.rules): the cached archives, the work of the
        site's children (read again only for the children rebuilt since), and the township's rules
        and calendars it holds (after corrections); kept until the log changes."""
        with self._lock:
            self._refresh()
            mark = self._mark
            kept = self._rules
            if kept is not None and kept[0] == mark and kept[1] == site:
                return kept[2]
            children = list(self._views)
            views = list(self._views.values())
            for cid in sorted(self._work_stale):  # only the children rebuilt since: a change costs what it touched
                self._work[cid] = child_work(self.log.child_events(cid))
            self._work_stale.clear()
            known = {cid: self._work.get(cid, []) for cid in children}
        work: dict[str, rules.Work] = {}
        for cid in children:
            for w in known[cid]:
                if w.type == "ChildRegistered" and w.site_id == site and kind in ("village", "school") \
                        and kind not in w.roles:  # the site registered a child for itself
                    w = msgspec.structs.replace(w, roles={**w.roles, kind: site})
                work.setdefault(w.event_id, w)
        book = rules.RuleBook()
        entries = [archive.entry_of(e, c) for e in self.log.rule_events() if (c := care_of(e)) is not None]
        for x in archive.effective(entries)[0]:
            book.add(x.care, x.counts_as, x.occurred_at)
        inputs = rules.Inputs(archives=views, book=book, work=list(work.values()))
        with self._lock:
            self._rules = (mark, site, inputs)
        return inputs

    def rule_figures(self, site: str, kind: str, *days: dt.date) -> list[list[rules.RuleFigures]]:
        """The township's rules in force judged on each of `days` for this site's children, or a
        township office's whole township (projections.rules: who is overdue on the day), kept until
        the log changes."""
        inputs = self.rule_inputs(site, kind)
        with self._lock:
            kept = {d: self._late[(site, d)][1] for d in days
                    if (site, d) in self._late and self._late[(site, d)][0] is inputs}
        wanted = [d for d in days if d not in kept]
        if wanted:
            # A township office looks after its whole township (its agent holds every site's children).
            scope = site.rsplit(".", 1)[0] if kind == "township" else site
            found = rules.rule_figures_on(inputs.book, inputs.archives, inputs.work, {site: rules.SiteInfo(kind)},
                                          scope, [(followups.month_of(d), d) for d in wanted])
            with self._lock:
                if len(self._late) > 16:
                    self._late.clear()
                for d, out in zip(wanted, found, strict=True):
                    self._late[(site, d)] = (inputs, out)
                    kept[d] = out
        return [kept[d] for d in days]

    def rule_overdue(self, site: str, kind: str, *days: dt.date
                     ) -> list[dict[str, list[tuple[rules.RuleFigures, rules.OverdueEntry]]]]:
        """For each of `days`: child id -> (rule, its overdue entry) for each child rule the child
        is overdue for on that day."""
        answers = []
        for figures in self.rule_figures(site, kind, *days):
            out: dict[str, list[tuple[rules.RuleFigures, rules.OverdueEntry]]] = {}
            for f in figures:
                if f.target == "child":
                    for o in f.overdue:
                        out.setdefault(o.subject, []).append((f, o))
            answers.append(out)
        return answers


_caches: weakref.WeakKeyDictionary[LocalLog, StationArchives] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def station_archives(log: LocalLog) -> StationArchives:
    """The one cache of archives of this log connection (one per serving process)."""
    with _caches_lock:
        cache = _caches.get(log)
        if cache is None:
            cache = _caches[log] = StationArchives(log)
        return cache
