"""The follow-up rules' figures at the center: `projections.rules.rule_figures` fed from the live
read models (archives, facts), the store's registrations and transfers, and the townships' rule
events, for any scope ('' everything, a region, a township, a site).

The rules and calendars come from the store itself (events `FollowUpRuleSet`,
`FollowUpRuleRetired`, `SchoolCalendarSet`, through the partial index of migration 0015), read
up to the readers' horizon, so a rule a township office set is in force for the next figures
without waiting for the projections. `committed_before` answers "as of": with the rules the
center held at that time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import asyncpg
import msgspec

from events.localtime import day_start, local_day, local_today
from projections import tables
from projections.archive import ArchiveBook, ChildArchive, decode_archive, effective, entry_of
from projections.facts import Fact
from projections.followups import Period, parse_period
from projections.ranges import RuleIndex
from projections.rules import (
    RuleBook,
    RuleFigures,
    SiteInfo,
    Work,
    counts_for,
    inputs_from_states,
    rule_figures,
    work_of,
    work_of_fact,
)
from projections.runner import NAME as CHECKPOINT
from projections.source import COLS, HORIZON, book_of, to_row
from store.conn import Conn

RULE_TYPES = ("FollowUpRuleSet", "FollowUpRuleRetired", "SchoolCalendarSet")
_WORK_KINDS = ("visit", "call", "letter", "talk", "tutoring", "counselling", "guardian_training", "meeting", "aid",
               "condolence", "activity")


def townships_clause(scope: str, column: str) -> tuple[str, list[str]]:
    """SQL (with $1 when it takes an argument) for the rows of `column` ('region.township') in the
    townships `scope` touches: a site's township, a township, a region's townships, or all."""
    if not scope:
        return "true", []
    if scope.count(".") == 2:
        return f"{column} = $1", [scope.rsplit(".", 1)[0]]
    if scope.count(".") == 1:
        return f"{column} = $1", [scope]
    return f"starts_with({column}, $1 || '.')", [scope]


async def sites_of(conn: Conn, scope: str) -> dict[str, SiteInfo]:
    """Every active site of the townships `scope` touches, with its kind, registration day and name."""
    where, args = townships_clause(scope, "regexp_replace(site_id, '\\.[^.]*$', '')")
    rows = await conn.fetch(f"SELECT site_id, kind, registered_at, name FROM sites WHERE active AND {where}", *args)
    return {r["site_id"]: SiteInfo(r["kind"], local_day(r["registered_at"]), r["name"]) for r in rows}


async def rule_book(conn: Conn, scope: str, committed_before: dt.datetime | None = None) -> RuleBook:
    """The rules and calendars of the townships `scope` touches, as they count after corrections
    (an `EventCorrected` by the office replaces or retracts one), in stamp order."""
    where, args = townships_clause(scope, "(payload->>'township')")
    n = len(args)
    rows = await conn.fetch(
        f"""SELECT {COLS} FROM events
             WHERE type IN ('FollowUpRuleSet', 'FollowUpRuleRetired', 'SchoolCalendarSet') AND understood
               AND {HORIZON} AND {where} AND (${n + 1}::timestamptz IS NULL OR committed_at <= ${n + 1})
             ORDER BY tx_id, position""", *args, committed_before)
    ids = [r["event_id"] for r in rows]
    fixes = await conn.fetch(
        f"""SELECT {COLS} FROM events
             WHERE type = 'EventCorrected' AND payload->>'corrected_event_id' = ANY($1::text[]) AND understood
               AND {HORIZON} AND ($2::timestamptz IS NULL OR committed_at <= $2)""",
        ids, committed_before) if ids else []
    entries = [entry_of(row.event, row.care) for row in map(to_row, [*rows, *fixes]) if row.care is not None]
    book = RuleBook()
    for x in effective(entries)[0]:  # a corrected rule counts as its replacement; a retracted one not at all
        book.add(x.care, x.counts_as, x.occurred_at)
    return book


async def _moves(conn: Conn, children: Iterable[str], kinds: dict[str, SiteInfo]) -> list[Work]:
    """Registrations and transfers of these children (which site held each child when)."""
    ids = sorted(children)
    rows = []
    for kind in ("ChildRegistered", "ChildTransferred"):  # one query each: each type has its partial index
        # One look-up of the type's GIN index per child (`children && <every id>` was a filter
        # over every row of the type, each row compared with the whole list: quadratic in a region).
        rows += await conn.fetch(
            f"""SELECT DISTINCT ON (tx_id, position) {COLS} FROM events
                  JOIN unnest($1::text[]) AS asked (child) ON children @> ARRAY[asked.child]
                 WHERE type = '{kind}' AND understood AND {HORIZON}
                 ORDER BY tx_id, position""", ids)
    out = []
    for r in rows:
        row = to_row(r)
        if row.care is None:
            continue
        info = kinds.get(row.event.site_id)
        w = work_of(row.care, row.event.event_id, row.event.site_id, row.event.occurred_at,
                    info.kind if info else None)
        if w is not None:
            out.append(w)
    return out


async def _work(conn: Conn, scope: str, end: dt.date | None) -> list[Work]:
    """The countable work of the townships `scope` touches, from their first fact to `end` (None: all)."""
    where, args = townships_clause(scope, "township")
    n = len(args)
    rows = await conn.fetch(
        f"""SELECT {', '.join(tables.FACT_COLS)} FROM {tables.SCHEMA}.fact
             WHERE {where} AND kind = ANY(${n + 1}::text[])
               AND (${n + 2}::timestamptz IS NULL OR occurred_at < ${n + 2})""",
        *args, list(_WORK_KINDS), day_start(end) if end is not None else None)
    out = []
    for r in rows:
        w = work_of_fact(Fact(event_id=r["event_id"], kind=r["kind"], site_id=r["site_id"],
                              occurred_at=r["occurred_at"], children=list(r["children"]), detail=r["detail"]))
        if w is not None:
            out.append(w)
    return out


async def _archives(conn: Conn, scope: str) -> list[ChildArchive]:
    """The archives of the children of the townships `scope` touches (merged stubs included:
    work may name a merged child)."""
    where, args = townships_clause(scope, "t")
    if scope.count(".") >= 1:  # one township: through the archive's GIN index on townships
        where = "townships @> ARRAY[$1]::text[]"
    else:
        where = f"EXISTS (SELECT 1 FROM unnest(townships) t WHERE {where})"
    rows = await conn.fetch(f"SELECT view, work FROM {tables.SCHEMA}.archive WHERE {where}", *args)
    return [decode_archive(r["view"], r["work"]) for r in rows]


class RuleInputs:
    """What `rule_figures` reads for the townships a scope touches (the same for a site of a
    township as for the township): kept by the API per `inputs_key`, so a page that asks for
    several periods and sites reads them once."""

    def __init__(self, sites: dict[str, SiteInfo], book: RuleBook, archives: list[ChildArchive], work: list[Work]):
        self.sites, self.book, self.archives, self.work = sites, book, archives, work
        # Figures already computed from these inputs: (scope, period, start, end, as_of) -> figures.
        self.figures: dict[tuple[object, ...], list[RuleFigures]] = {}
        # Rule indexes built from these inputs (projections.ranges.RuleIndex): (scope, today) -> index.
        self.indexes: dict[tuple[str, dt.date], RuleIndex] = {}


def towns_of(scope: str) -> str:
    """The part of a scope the rule inputs depend on: its township (a site's), region, or ''."""
    return scope.rsplit(".", 1)[0] if scope.count(".") == 2 else scope


async def inputs_key(conn: Conn, scope: str) -> tuple[object, ...]:
    """What the rule inputs of `scope` depend on, read in one statement: its townships, the
    projections' checkpoint (archives, facts; every event, a correction of a rule too, moves it once
    projected) and the newest rule event (read from the store, as `rule_book` reads them, so a new
    rule counts before it is projected)."""
    row = await conn.fetchrow(
        f"""SELECT (SELECT c.tx FROM {tables.SCHEMA}.checkpoint c WHERE c.name = $1) AS tx,
                   (SELECT c.pos FROM {tables.SCHEMA}.checkpoint c WHERE c.name = $1) AS pos,
                   (SELECT events_rules_head()) AS rules""", CHECKPOINT)  # its plan kept (migration 0039)
    assert row is not None  # a SELECT without FROM has its one row
    return key_of(scope, (row["tx"], row["pos"]), row["rules"])


def key_of(scope: str, checkpoint: tuple[int | None, int | None], rules: int | None) -> tuple[object, ...]:
    """:func:`inputs_key` from its parts already read (the rollups' heads read them too)."""
    return (towns_of(scope), checkpoint[0], checkpoint[1], rules)


async def rule_inputs(pool: asyncpg.Pool, scope: str) -> RuleInputs:
    """The sites, rules, archives and all the countable work and moves of the townships `scope` touches."""
    async with pool.acquire() as conn:
        sites = await sites_of(conn, scope)
        book = await rule_book(conn, scope)
        archives = await _archives(conn, scope)
        work = await _work(conn, scope, None)
        work += await _moves(conn, [m for a in archives if a.merged_into is None
                                    for m in (a.child_id, *a.merged_from)], sites)
    return RuleInputs(sites, book, archives, work)


def figures_of(inputs: RuleInputs, scope: str, period: str | Period, as_of: dt.date) -> list[RuleFigures]:
    """`rule_figures` over inputs in hand (work after `as_of` is never counted for it)."""
    p = parse_period(period) if isinstance(period, str) else period
    key = (scope, p.label, p.start, p.end, as_of)
    hit = inputs.figures.get(key)
    if hit is None:
        hit = inputs.figures[key] = rule_figures(inputs.book, inputs.archives, inputs.work, inputs.sites, scope, p,
                                                 as_of)
        if len(inputs.figures) > 256:  # a small memo: the oldest goes first
            del inputs.figures[next(iter(inputs.figures))]
    return list(hit)


def rule_index(inputs: RuleInputs, scope: str, today: dt.date) -> RuleIndex:
    """The rules' totals of `scope` for any period judged up to `today`, from inputs in hand
    (kept with them: a few of the latest)."""
    key = (scope, today)
    hit = inputs.indexes.get(key)
    if hit is None:
        hit = inputs.indexes[key] = RuleIndex(inputs.book, inputs.archives, inputs.work, inputs.sites, scope, today)
        if len(inputs.indexes) > 16:
            del inputs.indexes[next(iter(inputs.indexes))]
    return hit


def child_figures(inputs: RuleInputs, child_id: str, township: str, period: str | Period, as_of: dt.date
                  ) -> list[RuleFigures]:
    """The child rules of `township` judged for one child alone (its archive and the archives merged
    into it): the periods due and met for it, and whether it is overdue on `on`."""
    p = parse_period(period) if isinstance(period, str) else period
    mine = [a for a in inputs.archives if child_id in (a.child_id, a.merged_into)]
    ids = {a.child_id for a in mine}
    reasons = {i: a.reasons for a in mine for i in ids}
    out = []
    for f in rule_figures(inputs.book, mine, inputs.work, inputs.sites, township, p, as_of):
        if f.target != "child":
            continue
        # `done` of this child alone: its work that counts for the version shown, in the period.
        shown = [v.rule for v in inputs.book.versions(township, f.rule_id)
                 if v.rule is not None and v.effective_from <= f.on]
        rule = shown[-1] if shown else None
        done = sum(1 for w in inputs.work if rule is not None and ids & set(w.children)
                   and p.start <= w.day < p.end and w.day <= as_of and counts_for(rule, w, reasons))
        out.append(msgspec.structs.replace(f, done=done))
    return out


async def rule_figures_live(pool: asyncpg.Pool, scope: str, period: str | Period, as_of: dt.date | None = None
                            ) -> list[RuleFigures]:
    """Per rule of each township in `scope`: whom it applies to, due, met and who is overdue in
    `period`, judged on `as_of` (today by default); see projections/rules.py. Children and sites
    outside `scope` are never named."""
    p = parse_period(period) if isinstance(period, str) else period
    as_of = as_of or local_today()
    async with pool.acquire() as conn:
        sites = await sites_of(conn, scope)
        book = await rule_book(conn, scope)
        archives = await _archives(conn, scope)
        work = await _work(conn, scope, min(p.end, as_of + dt.timedelta(days=1)))
        work += await _moves(conn, [m for a in archives if a.merged_into is None
                                    for m in (a.child_id, *a.merged_from)], sites)
    return rule_figures(book, archives, work, sites, scope, p, as_of)


async def rule_figures_asof(pool: asyncpg.Pool, scope: str, period: str | Period, as_of: dt.date | None = None, *,
                            committed_at: dt.datetime, page: int = 5000) -> list[RuleFigures]:
    """`rule_figures_live` as the center could have answered at `committed_at`: from the log up
    to that time (the region's events), with the rules it held then, judged on `as_of` (by
    default the day of `committed_at`)."""
    if committed_at.tzinfo is None:
        raise ValueError(f"committed_at must carry a time zone, got {committed_at.isoformat()}")
    p = parse_period(period) if isinstance(period, str) else period
    region = scope.split(".", 1)[0] if scope else None
    book = ArchiveBook()
    async with pool.acquire() as conn:
        sites = await sites_of(conn, scope)
        after = (0, 0)
        while True:
            found = await conn.fetch(
                f"""SELECT {COLS} FROM events
                     WHERE (tx_id, position) > ($1, $2) AND {HORIZON} AND committed_at <= $3
                       AND ($4::text IS NULL OR region = $4)
                     ORDER BY tx_id, position LIMIT $5""", after[0], after[1], committed_at, region, page)
            if not found:
                break
            book_of((to_row(r) for r in found), book)
            after = (found[-1]["tx_id"], found[-1]["position"])
    inputs = inputs_from_states(book.states, sites)
    return rule_figures(inputs.book, inputs.archives, inputs.work, sites, scope, p, as_of or local_day(committed_at))
