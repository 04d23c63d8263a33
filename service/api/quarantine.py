"""The quarantine through the API: refused input, listed, shown and replayed after a fix.

Admins see every row and replay; township staff see the rows of their township's sites (the
scope is in the query). The raw bytes are shown only to admins: they may hold a child's data.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter

from service.api.errors import ApiError
from service.api.limits import MAX_ID
from service.api.scoping import Params, SiteFilter, allow, caller_of, site_visible
from service.quarantine import Quarantined, QuarantineError, dismiss, replay

_SELECT = """SELECT id, received_at, subject, site_id, event_id::text AS event_id, site_seq, reason,
                    octet_length(raw) AS size, status, attempts, deliveries, resolved_at, resolution
             FROM quarantine q"""


RowId = Annotated[int, Parameter(ge=1, le=MAX_ID, description="quarantine row id")]


# One refused message as the center keeps it: the center's own row type, not a second copy.
QuarantineRow = Quarantined


class QuarantinePage(msgspec.Struct, frozen=True):
    items: list[QuarantineRow]
    next_cursor: int | None = None


class QuarantineDetail(msgspec.Struct, frozen=True):
    row: QuarantineRow
    raw_text: str | None  # the bytes as UTF-8 text (admins only; MessagePack shown as hex)


class ReplayOutcome(msgspec.Struct, frozen=True):
    id: int
    site_id: str | None
    outcome: str  # stored, duplicate or refused
    reason: str | None = None


class Dismissal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Why a held row is not to be replayed (kept with the row, in its resolution)."""

    note: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["测试消息，无需处理"])]


class QuarantineController(Controller):
    path = "/quarantine"
    tags = ["quarantine"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow("admin", "township")]  # noqa: RUF012 (as above)

    @get("/", summary="Refused input, oldest first")
    async def list_rows(
        self, request: Request[Any, Any, Any],
        site_id: SiteFilter = None,
        include_replayed: Annotated[bool, Parameter(description="also rows already replayed")] = False,
        cursor: Annotated[int | None, Parameter(ge=0, le=MAX_ID,
                                                 description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Parameter(ge=1, le=200, description="page size, at most 200")] = 50,
    ) -> QuarantinePage:
        caller = caller_of(request)
        p = Params()
        conds = [f"q.id > {p.add(cursor or 0)}"]
        if caller.role != "admin":
            conds.append(f"q.site_id IS NOT NULL AND {site_visible(caller, p, 'q.site_id')}")
        if site_id is not None:
            conds.append(f"q.site_id = {p.add(site_id)}")
        if not include_replayed:
            conds.append("q.status = 'held'")
        async with request.app.state.pool.acquire() as conn:
            rows = await conn.fetch(f"{_SELECT} WHERE {' AND '.join(conds)} ORDER BY q.id LIMIT {p.add(limit + 1)}",
                                    *p.values)
        items = [QuarantineRow(**dict(r)) for r in rows[:limit]]
        return QuarantinePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    @get("/{row_id:int}", summary="One refused message and why")
    async def show(self, request: Request[Any, Any, Any], row_id: RowId) -> QuarantineDetail:
        caller = caller_of(request)
        p = Params(row_id)
        scope = ""
        if caller.role != "admin":
            scope = f" AND q.site_id IS NOT NULL AND {site_visible(caller, p, 'q.site_id')}"
        async with request.app.state.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"{_SELECT.replace('FROM', ', raw, msgpack FROM', 1)} WHERE q.id = $1{scope}", *p.values)
        if row is None:
            raise ApiError(404, f"quarantine row {row_id} was not found", field="row_id", value=row_id)
        fields: dict[str, Any] = dict(row)
        raw, msgpack = bytes(fields.pop("raw")), fields.pop("msgpack")
        text = None
        if caller.role == "admin":
            text = raw.hex() if msgpack else raw.decode("utf-8", "replace")
        return QuarantineDetail(row=QuarantineRow(**fields), raw_text=text)

    @post("/{row_id:int}/replay", guards=[allow("admin")], status_code=200,
          summary="Run a held row through ingest again (after the fix)")
    async def replay_row(self, request: Request[Any, Any, Any], row_id: RowId) -> ReplayOutcome:
        try:
            r = await replay(request.app.state.pool, row_id)
        except QuarantineError as err:
            status = 404 if "does not exist" in str(err) else 409
            raise ApiError(status, str(err), field="row_id", value=row_id) from None
        return ReplayOutcome(id=r.id, site_id=r.site_id, outcome=r.outcome, reason=r.reason)

    @post("/{row_id:int}/dismiss", guards=[allow("admin")], status_code=200,
          summary="Dismiss a held row: it is not to be replayed",
          description="The row and its bytes stay (status 'dismissed', who and why in its resolution); the center's "
                      "log records the decision. 409 if the row is not held.")
    async def dismiss_row(self, request: Request[Any, Any, Any], row_id: RowId,
                          data: JSONBody[Dismissal]) -> QuarantineRow:
        caller = caller_of(request)
        try:
            return await dismiss(request.app.state.pool, row_id, caller.username, data.note)
        except QuarantineError as err:
            status = 404 if "does not exist" in str(err) else 409
            raise ApiError(status, str(err), field="row_id", value=row_id) from None
