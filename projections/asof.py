""""As of": a child's archive and timeline, and any rollup, as the log said at a past time.

Two clocks (docs/ARCHITECTURE.md, "Time"): `committed_at`, when the center committed an event (what
the township could have known then), or `occurred_at`, when the work happened as the person
entered it (what had happened by then, including what was recorded later). Both are computed
from the log up to that point with the same pure code as the live read models, never from
the read models themselves.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from events.localtime import local_day
from projections.archive import ArchiveBook, ChildArchive, TimelineItem, timeline
from projections.facts import facts_of
from projections.followups import parse_period
from projections.rollups import Rollup, compute
from projections.rule_queries import sites_of
from projections.rules import inputs_from_states, rule_figures
from projections.source import COLS, HORIZON, book_of, group_rows, to_row


class AsOfError(ValueError):
    """The question was malformed (both clocks, or neither, or a naive time)."""


def _clock(committed_at: dt.datetime | None, occurred_at: dt.datetime | None) -> tuple[str, dt.datetime | None]:
    if committed_at is not None and occurred_at is not None:
        raise AsOfError("ask as of committed_at or as of occurred_at, not both")
    when = committed_at or occurred_at
    if when is not None and when.tzinfo is None:
        raise AsOfError(f"the time must carry a time zone, got {when.isoformat()}")
    return ("committed_at" if committed_at is not None else "occurred_at"), when


async def archive_asof(pool: asyncpg.Pool, child_id: str, *, committed_at: dt.datetime | None = None,
                       occurred_at: dt.datetime | None = None) -> ChildArchive | None:
    """The child's archive as of a committed time or an occurred time (None: not known then).
    A child merged into another at that time comes back as a stub naming it (`merged_into`)."""
    column, when = _clock(committed_at, occurred_at)
    async with pool.acquire() as conn:
        rows = await group_rows(conn, child_id, column, when)
    return book_of(rows).archives().get(child_id)


async def timeline_asof(pool: asyncpg.Pool, child_id: str, *, committed_at: dt.datetime | None = None,
                        occurred_at: dt.datetime | None = None) -> list[TimelineItem]:
    """The child's timeline (its merged group's events, originals and corrections) as of a time."""
    column, when = _clock(committed_at, occurred_at)
    async with pool.acquire() as conn:
        rows = await group_rows(conn, child_id, column, when)
    book = book_of(rows)
    archives = book.archives()
    mine = archives.get(child_id)
    if mine is None:
        return []
    root = mine.merged_into or child_id
    group = {root, *archives[root].merged_from}
    entries = [e for k in group if k in book.states for e in book.states[k].entries.values()]
    return timeline(entries)


async def rollup_asof(pool: asyncpg.Pool, scope: str, period: str, *, committed_at: dt.datetime | None = None,
                      occurred_at: dt.datetime | None = None, page: int = 5000) -> Rollup:
    """Every figure for `scope` and `period` as the log said at a committed or occurred time."""
    column, when = _clock(committed_at, occurred_at)
    p = parse_period(period)
    region = scope.split(".", 1)[0] if scope else None
    book = ArchiveBook()
    async with pool.acquire() as conn:
        after = (0, 0)
        while True:
            found = await conn.fetch(
                f"""SELECT {COLS} FROM events
                     WHERE (tx_id, position) > ($1, $2) AND {HORIZON}
                       AND ($3::timestamptz IS NULL OR {column} <= $3) AND ($4::text IS NULL OR region = $4)
                     ORDER BY tx_id, position LIMIT $5""", after[0], after[1], when, region, page)
            if not found:
                break
            book_of((to_row(r) for r in found), book)
            after = (found[-1]["tx_id"], found[-1]["position"])
        sites = await sites_of(conn, scope)
    archives = book.archives()
    facts = [f for f in facts_of(e for st in book.states.values() for e in st.entries.values()).values()
             if f is not None]
    today = local_day(when) if when is not None else None
    inputs = inputs_from_states(book.states, sites)  # the rules as the log held them then
    on = min(p.last_day, today) if today is not None else p.last_day
    rules = rule_figures(inputs.book, inputs.archives, inputs.work, sites, scope, p, on)
    return compute(scope, p, archives.values(), facts, rules=rules, today=today)


def to_builtins(value: object) -> object:
    return msgspec.to_builtins(value)
