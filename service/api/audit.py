"""The read log (who read which child's archive, when, through which route) and the auditors'
routes: the log itself and each site's hash-chain verification.

A read is logged in the same transaction as the statement that reads the child's events, so an
archive that was served has its log row, and the log row says whether the child was found
(``served``) or not (``not_found``: outside the caller's scope, or no such child). The table is
append-only (migration 0004: a trigger refuses UPDATE, DELETE and TRUNCATE) and no route
writes to it except through :func:`record_read`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter

from projections.tables import SCHEMA
from service.api.auth import Caller
from service.api.errors import ApiError, bad
from service.api.scoping import Params, SiteFilter, SiteIdPath, allow, caller_of, child_visible, may_see_site
from store.conn import Conn
from store.postgres import EventStore

ARCHIVE = f"{SCHEMA}.archive"


async def record_read(conn: Conn, caller: Caller, child_id: str, route: str, query: str,
                      served: bool) -> None:
    await conn.execute(
        "INSERT INTO read_log (username, role, child_id, route, query, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        caller.username, caller.role, child_id, route, query[:500], "served" if served else "not_found",
    )


async def record_group_reads(conn: Conn, caller: Caller, child_id: str, group: set[str], route: str,
                             query: str) -> None:
    """A merged archive is every member's record: log a served read of each member other than
    `child_id` (whose own read the caller logs)."""
    others = sorted(group - {child_id})
    if others:
        await conn.executemany(
            "INSERT INTO read_log (username, role, child_id, route, query, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
            [(caller.username, caller.role, c, route, query[:500], "served") for c in others])


class ReadLogEntry(msgspec.Struct, frozen=True):
    id: int
    read_at: dt.datetime
    username: str
    role: str
    child_id: str
    route: str
    query: str
    outcome: str
    child_name: str | None = None  # the child's name, when the child is in the auditor's scope


class ReadLogPage(msgspec.Struct, frozen=True):
    items: list[ReadLogEntry]
    next_cursor: str | None = None


class ChainReportView(msgspec.Struct, frozen=True):
    site_id: str
    verified: int
    ok: bool
    problems: list[str]


Cursor = Annotated[str | None, Parameter(max_length=18, pattern=r"^[0-9]{1,18}$",
                                         description="next_cursor of the previous page")]
Limit = Annotated[int, Parameter(ge=1, le=200, description="page size, at most 200")]


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]  # noqa: RUF012 (litestar reads controller options from class attributes)

    @get("/reads", guards=[allow("auditor")], summary="The read log: who read which child's archive",
         description="Every read of an archive, timeline or as-of view, newest first, for the auditor's township. "
                     "site_id: reads of that site's children or by its people.")
    async def reads(
        self, request: Request[Any, Any, Any],
        child_id: Annotated[str | None, Parameter(pattern=r"^c-[0-9a-f]{32}$", description="only this child")] = None,
        username: Annotated[str | None, Parameter(max_length=64, pattern=r"^[A-Za-z0-9._@-]{1,64}$")] = None,
        since: Annotated[dt.datetime | None, Parameter(description="reads at or after this time")] = None,
        until: Annotated[dt.datetime | None, Parameter(description="reads before this time")] = None,
        site_id: SiteFilter = None,
        cursor: Cursor = None, limit: Limit = 50,
    ) -> ReadLogPage:
        caller = caller_of(request)
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise bad(name, value.isoformat(), "give a time zone, e.g. 2026-06-30T00:00:00+08:00")
        p = Params()
        # An auditor sees reads of the children of their township and reads by its people
        # (the scope is part of the statement).
        conds = [f"({child_visible(caller, p, 'r.child_id')} OR r.username IN "
                 f"(SELECT username FROM api_users WHERE township = {p.add(caller.township)}))"]
        if child_id is not None:
            conds.append(f"r.child_id = {p.add(child_id)}")
        if username is not None:
            conds.append(f"r.username = {p.add(username)}")
        if since is not None:
            conds.append(f"r.read_at >= {p.add(since)}")
        if until is not None:
            conds.append(f"r.read_at < {p.add(until)}")
        if site_id is not None:  # reads of the site's children, or by the site's own people
            site = p.add(site_id)
            conds.append(f"""(EXISTS (SELECT 1 FROM child_scope cs WHERE cs.child_id = r.child_id
                                        AND cs.until_tx IS NULL AND cs.site_id = {site})
                              OR r.username IN (SELECT username FROM api_users WHERE site_id = {site}))""")
        if cursor is not None:
            conds.append(f"r.id < {p.add(int(cursor))}")
        name = f"CASE WHEN {child_visible(caller, p, 'r.child_id')} THEN a.name END"
        sql = f"""SELECT r.id, r.read_at, r.username, r.role, r.child_id, r.route, r.query, r.outcome,
                         {name} AS child_name
                  FROM read_log r LEFT JOIN {ARCHIVE} a ON a.child_id = r.child_id
                  WHERE {' AND '.join(conds)}
                  ORDER BY r.id DESC LIMIT {p.add(limit + 1)}"""
        async with request.app.state.pool.acquire() as conn:
            rows = await conn.fetch(sql, *p.values)
        items = [ReadLogEntry(**dict(r)) for r in rows[:limit]]
        return ReadLogPage(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)

    @get("/chains/{site_id:str}", guards=[allow("auditor", "admin", "township")],
         summary="Verify a site's hash chain",
         description="Recomputes every hash of the site's log as the center holds it and checks each link.")
    async def chain(self, request: Request[Any, Any, Any], site_id: SiteIdPath
                    ) -> ChainReportView:
        caller = caller_of(request)
        if not may_see_site(caller, site_id):
            raise ApiError(404, f"site {site_id} was not found", field="site_id", value=site_id)
        report = await EventStore(request.app.state.pool).verify_chain(site_id)
        if report.verified == 0:
            async with request.app.state.pool.acquire() as conn:
                known = await conn.fetchval("SELECT 1 FROM sites WHERE site_id = $1", site_id)
            if not known:
                raise ApiError(404, f"site {site_id} was not found", field="site_id", value=site_id)
        return ChainReportView(site_id=report.site_id, verified=report.verified, ok=report.ok,
                               problems=report.problems)
