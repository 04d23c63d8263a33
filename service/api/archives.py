"""Scoped reads of children: the current archive (the projections' read model), and the
timeline and as-of views (from the log, with the projections' pure reducer).

A merged archive is the record of every child of its group: a read of it is logged for each
member (:func:`service.api.audit.record_group_reads`), and the members' ids are the only child
ids besides those in the caller's scope that a caller is shown (:func:`shown_ids`).

Every statement that returns a child's data carries the caller's scope
(:func:`service.api.scoping.child_visible`) in its WHERE clause, or runs only after a
statement that does, in the same transaction; reads of one child are logged in that same
transaction (:func:`service.api.audit.record_read`), so a read that returned data was logged.

The current archive comes from ``proj.archive``. A child the projections have not reached yet
(they trail the store by a moment) is derived from the log instead, with the same reducer, so
a child that exists is never a 404 because of lag.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from projections import archive as pa
from projections import tables
from projections.source import Row, book_of, group_rows
from service.api.audit import record_group_reads, record_read
from service.api.auth import Caller
from service.api.scoping import Params, child_visible
from store.conn import Conn

ARCHIVE = f"{tables.SCHEMA}.archive"


async def visible(conn: Conn, caller: Caller, child_id: str) -> bool:
    p = Params(child_id)
    return bool(await conn.fetchval(f"SELECT {child_visible(caller, p, '$1')}", *p.values))


async def read_rows(conn: Conn, caller: Caller, child_id: str, *,
                    committed_before: dt.datetime | None = None,
                    occurred_before: dt.datetime | None = None) -> list[Row] | None:
    """The events of a child's merged group (whole correction families) up to a time, if the
    child is in the caller's scope (else None)."""
    if not await visible(conn, caller, child_id):
        return None
    column, when = ("committed_at", committed_before) if committed_before is not None else \
        ("occurred_at", occurred_before)
    return await group_rows(conn, child_id, column, when)


async def visible_among(conn: Conn, caller: Caller, ids: set[str]) -> set[str]:
    """Those of `ids` that are in the caller's scope now (one statement, the scope predicate in it)."""
    if not ids:
        return set()
    p = Params(sorted(ids))
    rows = await conn.fetch(f"SELECT x FROM unnest($1::text[]) AS x WHERE {child_visible(caller, p, 'x')}",
                            *p.values)
    return {r["x"] for r in rows}


def group_of(a: pa.ChildArchive) -> set[str]:
    """The children whose archives are one with `a`: itself, those merged into it, its root."""
    return {a.child_id, *a.merged_from, *([a.merged_into] if a.merged_into else [])}


def derive(child_id: str, rows: Sequence[Row]) -> pa.ChildArchive | None:
    """The child's archive from its group's events, or None if nothing registers it."""
    a = book_of(rows).archives().get(child_id)
    return a if a is not None and (a.registered or a.merged_into is not None) else None


def timeline_rows(child_id: str, rows: Sequence[Row]) -> tuple[list[pa.TimelineItem], dict[str, Row]]:
    """The timeline of the child's merged group, and each event's row (for payload and commit time)."""
    book = book_of(rows)
    archives = book.archives()
    mine = archives.get(child_id)
    if mine is None:
        return [], {}
    root = mine.merged_into or child_id
    group = {root, *archives[root].merged_from} if root in archives else {child_id}
    entries = [e for k in group if k in book.states for e in book.states[k].entries.values()]
    return pa.timeline(entries), {r.event.event_id: r for r in rows}


async def read_archive(conn: Conn, caller: Caller, child_id: str) -> pa.ChildArchive | None:
    """The child's current archive, if in scope: the read model's row, or the log's if not projected yet."""
    p = Params(child_id)
    row = await conn.fetchrow(
        f"SELECT a.view, a.work FROM {ARCHIVE} a WHERE a.child_id = $1 AND {child_visible(caller, p, 'a.child_id')}",
        *p.values)
    if row is not None:
        return pa.decode_archive(row["view"], row["work"])
    rows = await read_rows(conn, caller, child_id)
    return derive(child_id, rows) if rows else None


async def logged_archive(pool: asyncpg.Pool, caller: Caller, child_id: str, route: str, query: str
                         ) -> pa.ChildArchive | None:
    """The child's current archive, if in scope, with its read logged.

    The common case is one statement: it reads the scoped row and, only if one was found,
    inserts the read-log row (a data-modifying CTE runs to completion with the statement, so
    the row is logged iff the archive is returned); a merged archive then logs its other
    members' reads before it is returned. Otherwise (not projected yet, or not in
    scope) a transaction reads the log and records the outcome either way."""
    p = Params(child_id, caller.username, caller.role, route, query[:500])
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""WITH found AS (SELECT a.view, a.work FROM {ARCHIVE} a
                               WHERE a.child_id = $1 AND {child_visible(caller, p, 'a.child_id')}),
                     logged AS (INSERT INTO read_log (username, role, child_id, route, query, outcome)
                                SELECT $2, $3, $1, $4, $5, 'served' FROM found)
                SELECT view, work FROM found""", *p.values)
        if row is not None:
            found = pa.decode_archive(row["view"], row["work"])
            # A merged archive: the other members' reads too, before it is returned.
            await record_group_reads(conn, caller, child_id, group_of(found), route, query)
            return found
        async with conn.transaction():
            rows = await read_rows(conn, caller, child_id)
            a = derive(child_id, rows) if rows else None
            await record_read(conn, caller, child_id, route, query, served=a is not None)
            if a is not None:
                await record_group_reads(conn, caller, child_id, group_of(a), route, query)
    return a


async def logged_rows(pool: asyncpg.Pool, caller: Caller, child_id: str, route: str, query: str, *,
                      committed_before: dt.datetime | None = None,
                      occurred_before: dt.datetime | None = None) -> list[Row] | None:
    """Read a child's events up to a time and log the read, in one transaction."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        rows = await read_rows(conn, caller, child_id, committed_before=committed_before,
                               occurred_before=occurred_before)
        a = derive(child_id, rows) if rows else None
        await record_read(conn, caller, child_id, route, query, served=a is not None)
        if a is not None:
            await record_group_reads(conn, caller, child_id, group_of(a), route, query)
    return rows if a is not None else None


async def shown_ids(pool: asyncpg.Pool, caller: Caller, child_id: str, rows: Sequence[Row]) -> set[str]:
    """The child ids the caller may be shown beside this child's events: the child's merge group
    and the children in the caller's scope. Any other child an event names (a condolence visit
    of the whole township) is cut from what the caller sees."""
    a = derive(child_id, rows)
    group = group_of(a) if a is not None else {child_id}
    named = {x for r in rows for x in r.event.children} - group
    async with pool.acquire() as conn:
        return group | await visible_among(conn, caller, named)


def scope_hint(caller: Caller, p: Params, alias: str = "a") -> str:
    """The read model's own membership columns (GIN-indexed) for the caller's site or township:
    lets a list use an index instead of testing every archive of the store. It narrows only;
    the authoritative test stays :func:`child_visible`, in the same statement."""
    if caller.role in ("station", "school") and caller.site_id is not None:
        return f"{alias}.sites @> ARRAY[{p.add(caller.site_id)}]::text[]"
    if caller.township is not None:
        return f"{alias}.townships @> ARRAY[{p.add(caller.township)}]::text[]"
    if caller.role == "county" and caller.region is not None:
        # The region's townships from the registry (an init plan), so the GIN index still narrows.
        return (f"{alias}.townships && ARRAY(SELECT DISTINCT substring(s.site_id FROM '^[^.]+[.][^.]+') "
                f"FROM sites s WHERE starts_with(s.site_id, {p.add(caller.region + '.')}))")
    return "false"


async def archives_where(conn: Conn, caller: Caller, p: Params, conds: list[str],
                         limit: int | None = None) -> list[pa.ChildArchive]:
    """Current archives (not merged stubs) in the caller's scope that meet `conds`, by child id."""
    where = " AND ".join(["a.root_id = a.child_id", "a.registered", scope_hint(caller, p),
                          child_visible(caller, p, "a.child_id"), *conds])
    tail = f" LIMIT {p.add(limit)}" if limit is not None else ""
    rows = await conn.fetch(f"SELECT a.view, a.work FROM {ARCHIVE} a WHERE {where} ORDER BY a.child_id{tail}",
                            *p.values)
    return [pa.decode_archive(r["view"], r["work"]) for r in rows]
