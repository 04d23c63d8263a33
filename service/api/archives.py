"""Scoped reads of one child's events: the archive, the timeline and the as-of views.

Every statement here carries the caller's scope (:func:`service.api.scoping.child_visible`)
in its WHERE clause, and runs in one transaction with the read-log row that records it
(:func:`service.api.audit.record_read`), so a read that returned data has been logged.

The archive is derived with the projections' pure reducer (:mod:`projections.archive`) from
the child's events and those of every child ever merged with it; the reducer decides from the
events themselves which merges hold, so the as-of views (by committed or by occurred time) are
the same code on fewer events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence

import asyncpg

from events.envelope import care_of
from projections import archive as pa
from service.api.audit import record_read
from service.api.auth import Caller
from service.api.scoping import Params, child_visible
from service.store import _HORIZON, _SELECT, StoredEvent, _row_to_stored

MAX_GROUP = 64  # children merged together; more is not a real township


async def _group(conn: asyncpg.Connection, child_id: str) -> list[str]:
    """The child and every child ever linked to it by a merge (transitively)."""
    group = {child_id}
    frontier = [child_id]
    while frontier and len(group) < MAX_GROUP:
        rows = await conn.fetch("SELECT DISTINCT linked_child_id FROM child_links WHERE child_id = ANY($1)",
                                frontier)
        frontier = [r["linked_child_id"] for r in rows if r["linked_child_id"] not in group]
        group.update(frontier)
    return sorted(group)


async def read_events(conn: asyncpg.Connection, caller: Caller, child_id: str, *,
                      committed_before: dt.datetime | None = None,
                      occurred_before: dt.datetime | None = None) -> list[StoredEvent] | None:
    """The events of a child's archive group, if the child is in the caller's scope (else None)."""
    p = Params(child_id)
    visible = await conn.fetchval(f"SELECT {child_visible(caller, p, '$1')}", *p.values)
    if not visible:
        return None
    group = await _group(conn, child_id)
    p = Params(child_id, group, committed_before, occurred_before)
    rows = await conn.fetch(
        f"""{_SELECT} WHERE children && $2::text[] AND tx_id < {_HORIZON}
              AND ($3::timestamptz IS NULL OR committed_at <= $3)
              AND ($4::timestamptz IS NULL OR occurred_at <= $4)
              AND {child_visible(caller, p, '$1')}
            ORDER BY tx_id, position""",
        *p.values,
    )
    return [_row_to_stored(r) for r in rows]


def derive(child_id: str, events: Sequence[StoredEvent]) -> pa.ChildArchive | None:
    """The child's archive from its group's events, or None if nothing registers it."""
    archives = pa.build((s.event, care_of(s.event)) for s in events)
    return archives.get(child_id)


def entries(events: Sequence[StoredEvent]) -> list[tuple[StoredEvent, pa.Entry]]:
    out = []
    for s in events:
        care = care_of(s.event)
        if care is not None:
            out.append((s, pa.entry_of(s.event, care)))
    return out


async def logged_read(pool: asyncpg.Pool, caller: Caller, child_id: str, route: str, query: str, *,
                      committed_before: dt.datetime | None = None,
                      occurred_before: dt.datetime | None = None) -> list[StoredEvent] | None:
    """Read a child's events and log the read, in one transaction."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=False):
        events = await read_events(conn, caller, child_id, committed_before=committed_before,
                                   occurred_before=occurred_before)
        await record_read(conn, caller, child_id, route, query, served=bool(events))
    return events


async def visible_children(conn: asyncpg.Connection, caller: Caller, *, site_id: str | None = None,
                           after: str = "", limit: int = 200) -> list[str]:
    """Child ids in the caller's scope (optionally of one site), in id order, after `after`."""
    p = Params()
    conds = ["cs.until_tx IS NULL", child_visible(caller, p, "cs.child_id"), f"cs.child_id > {p.add(after)}"]
    if site_id is not None:
        conds.append(f"cs.site_id = {p.add(site_id)}")
    rows = await conn.fetch(f"SELECT DISTINCT cs.child_id FROM child_scope cs WHERE {' AND '.join(conds)} "
                            f"ORDER BY cs.child_id LIMIT {p.add(limit)}", *p.values)
    return [r["child_id"] for r in rows]


async def visible_archives(conn: asyncpg.Connection, caller: Caller, *, site_id: str | None = None,
                           after: str = "", batch: int = 200) -> AsyncIterator[pa.ChildArchive]:
    """Every archive in the caller's scope, in child id order (a merged child's stub included)."""
    while True:
        ids = await visible_children(conn, caller, site_id=site_id, after=after, limit=batch)
        if not ids:
            return
        for cid in ids:
            events = await read_events(conn, caller, cid)
            a = derive(cid, events or [])
            if a is not None:
                yield a
        after = ids[-1]
