"""Conflicts, duplicates, merges and corrections: what the township settles, each as an event.

Lists are scoped like every read. A resolution, a merge, an unmerge or a correction is
recorded by :func:`service.api.writes.record` as an event of the township office's site and
takes effect when the projections apply it, like any site's event: nothing here writes a read
model.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter

from events import catalogue as c
from events.envelope import care_of
from events.ids import mask_resident_id
from events.types import ChildId, EventId
from events.validation import ValidationFailed, semantic_problems
from projections import tables
from service.api import archives
from service.api.errors import ApiError, FieldProblem, not_found
from service.api.scoping import (
    READERS,
    ChildCursor,
    ChildIdPath,
    EventIdPath,
    Params,
    SiteFilter,
    allow,
    caller_of,
    child_visible,
)
from service.api.writes import Recorded, record
from store.postgres import read_one_where

CONFLICT = f"{tables.SCHEMA}.conflict"
MAX_DUPLICATES = 1000  # a township has a few hundred children; more pairs than this is a data problem
DUPLICATE = f"{tables.SCHEMA}.duplicate"
Note = Annotated[str, msgspec.Meta(max_length=200, description="why, in a few words")]


class ConflictView(msgspec.Struct, frozen=True):
    """Concurrent, disagreeing updates of one archive field; `winner` is what the archive shows."""

    child_id: str
    field: str
    heads: list[str]
    winner: str


class ConflictPage(msgspec.Struct, frozen=True):
    items: list[ConflictView]
    next_cursor: str | None = None


class Resolve(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    child_id: Annotated[ChildId, msgspec.Meta(examples=["c-01937a0c3f2b7c8d9e0f112233445566"])]
    field: Annotated[str, msgspec.Meta(min_length=1, max_length=40, examples=["guardian"])]
    chosen_event_id: Annotated[EventId, msgspec.Meta(examples=["01937a0c-3f2b-7c8d-9e0f-112233445566"])]
    note: Note | None = None


class DuplicatePair(msgspec.Struct, frozen=True, omit_defaults=True):
    """Two archives that may be one child: reason resident_id (same resident ID) or name_birth_village."""

    child_ids: list[str]
    reason: str
    name: str | None = None
    birth_date: dt.date | None = None
    resident_id_masked: str | None = None


class DuplicateList(msgspec.Struct, frozen=True):
    items: list[DuplicatePair]


class Merge(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kept_child_id: ChildId
    merged_child_id: ChildId
    note: Note | None = None


class Unmerge(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    note: Note | None = None


class Correction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Correct one of the child's events: give a replacement payload (same type) or none to retract it."""

    corrected_event_id: EventId
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["visit was on the 3rd"])]
    replacement: c.CareEvent | None = None
    replacement_occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


async def _stored_event(conn: Any, caller: Any, child_id: str, event_id: str) -> Any:
    """An event concerning a child in the caller's scope, or None."""
    p = Params(uuid.UUID(event_id), child_id)
    return await read_one_where(
        conn, f"event_id = $1 AND children @> ARRAY[$2]::text[] AND {child_visible(caller, p, '$2')}", *p.values)


class ConflictsController(Controller):
    path = "/"
    tags = ["conflicts"]  # noqa: RUF012 (litestar reads controller options from class attributes)

    @get("/conflicts", guards=[allow(*READERS)], summary="Open conflicts in your scope",
         description="Concurrent updates of one archive field that disagree, until a person resolves them.")
    async def list_conflicts(
        self, request: Request[Any, Any, Any],
        site_id: SiteFilter = None,
        cursor: ChildCursor = None,
        limit: Annotated[int, Parameter(ge=1, le=200, description="children per page, at most 200")] = 50,
    ) -> ConflictPage:
        caller = caller_of(request)
        p = Params()
        conds = ["k.resolved_by = ''", child_visible(caller, p, "k.child_id"), f"k.child_id > {p.add(cursor or '')}"]
        if site_id is not None:
            conds.append(f"EXISTS (SELECT 1 FROM {archives.ARCHIVE} a WHERE a.child_id = k.child_id "
                         f"AND a.sites @> ARRAY[{p.add(site_id)}]::text[])")
        async with request.app.state.pool.acquire() as conn:
            # A page holds every conflict of `limit` children, so the cursor is a child id.
            rows = await conn.fetch(
                f"""SELECT k.child_id, k.field, k.heads, k.winner FROM {CONFLICT} k
                    WHERE k.child_id IN (SELECT DISTINCT k.child_id FROM {CONFLICT} k WHERE {' AND '.join(conds)}
                                         ORDER BY k.child_id LIMIT {p.add(limit)})
                      AND k.resolved_by = ''
                    ORDER BY k.child_id, k.field, k.heads""", *p.values)
        items = [ConflictView(child_id=r["child_id"], field=r["field"], heads=list(r["heads"]), winner=r["winner"])
                 for r in rows]
        children = sorted({x.child_id for x in items})
        return ConflictPage(items=items, next_cursor=children[-1] if len(children) == limit else None)

    @post("/conflicts/resolve", guards=[allow("township")], status_code=201,
          summary="Resolve a conflict: record which update stands (a ConflictResolved event)")
    async def resolve(self, request: Request[Any, Any, Any], data: JSONBody[Resolve]) -> Recorded:
        caller = caller_of(request)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            a = archives.derive(data.child_id, await archives.read_rows(conn, caller, data.child_id) or [])
            if a is None:
                raise not_found("child", data.child_id, "child_id")
            open_ = [x for x in a.open_conflicts if x.field == data.field]
            if not open_:
                raise ApiError(409, f"child {data.child_id} has no open conflict on field {data.field!r}",
                               field="field", value=data.field)
            if data.chosen_event_id not in open_[0].heads:
                raise ApiError(400, f"chosen_event_id must be one of the conflicting updates {open_[0].heads}",
                               field="chosen_event_id", value=data.chosen_event_id)
            care = c.ConflictResolved(child_id=data.child_id, field=data.field, chosen_event_id=data.chosen_event_id,
                                      note=data.note)
            return await record(conn, caller, care, based_on={data.field: data.chosen_event_id})

    @get("/duplicates", guards=[allow("township", "auditor")], summary="Archives that may be the same child",
         description="Pairs in your scope with the same resident ID, or the same name, birth date and village.")
    async def duplicates(self, request: Request[Any, Any, Any]) -> DuplicateList:
        caller = caller_of(request)
        p = Params()
        async with request.app.state.pool.acquire() as conn:
            # Both children of a pair must be in the caller's scope (in the statement).
            rows = await conn.fetch(
                f"""SELECT DISTINCT d.child_a, d.child_b, d.reason, a.name, a.birth_date, a.resident_id
                    FROM {DUPLICATE} d JOIN {archives.ARCHIVE} a ON a.child_id = d.child_a
                    WHERE {child_visible(caller, p, 'd.child_a')} AND {child_visible(caller, p, 'd.child_b')}
                    ORDER BY d.child_a, d.child_b, d.reason LIMIT {MAX_DUPLICATES}""", *p.values)
        return DuplicateList(items=[DuplicatePair(
            child_ids=[r["child_a"], r["child_b"]], reason=r["reason"], name=r["name"], birth_date=r["birth_date"],
            resident_id_masked=mask_resident_id(r["resident_id"]) if r["reason"] == "resident_id" else None)
            for r in rows])

    @post("/merges", guards=[allow("township")], status_code=201,
          summary="Merge two archives of one child (an ArchivesMerged event)")
    async def merge(self, request: Request[Any, Any, Any], data: JSONBody[Merge]) -> Recorded:
        caller = caller_of(request)
        if data.kept_child_id == data.merged_child_id:
            raise ApiError(400, "kept_child_id and merged_child_id are the same child", field="merged_child_id",
                           value=data.merged_child_id)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            for field, cid in (("kept_child_id", data.kept_child_id), ("merged_child_id", data.merged_child_id)):
                a = archives.derive(cid, await archives.read_rows(conn, caller, cid) or [])
                if a is None:
                    raise not_found("child", cid, field)
                if a.merged_into is not None:
                    raise ApiError(409, f"child {cid} is already merged into {a.merged_into}", field=field,
                                   value=cid)
            care = c.ArchivesMerged(kept_child_id=data.kept_child_id, merged_child_id=data.merged_child_id,
                                    note=data.note)
            return await record(conn, caller, care)

    @post("/merges/{merge_event_id:str}/undo", guards=[allow("township")], status_code=201,
          summary="Undo a merge (an ArchivesUnmerged event)")
    async def unmerge(self, request: Request[Any, Any, Any], merge_event_id: EventIdPath,
                      data: JSONBody[Unmerge]) -> Recorded:
        caller = caller_of(request)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            p = Params(uuid.UUID(merge_event_id))
            stored = await read_one_where(
                conn, f"event_id = $1 AND type = 'ArchivesMerged' AND "
                f"{child_visible(caller, p, 'children[1]')} AND {child_visible(caller, p, 'children[2]')}",
                *p.values)
            if stored is None:
                raise not_found("merge event", merge_event_id, "merge_event_id")
            merged = care_of(stored.event)
            assert isinstance(merged, c.ArchivesMerged)
            undone = await conn.fetchval(
                "SELECT 1 FROM events WHERE type = 'ArchivesUnmerged' AND children @> $1::text[] "
                "AND payload->>'merge_event_id' = $2", [merged.kept_child_id, merged.merged_child_id], merge_event_id)
            if undone:
                raise ApiError(409, f"merge {merge_event_id} is undone already", field="merge_event_id",
                               value=merge_event_id)
            care = c.ArchivesUnmerged(merge_event_id=merge_event_id, kept_child_id=merged.kept_child_id,
                                      merged_child_id=merged.merged_child_id, note=data.note)
            return await record(conn, caller, care)

    @post("/children/{child_id:str}/corrections", guards=[allow("township")], status_code=201,
          summary="Correct or retract one of a child's events (an EventCorrected event)",
          description="History is not erased: the original stays in the timeline and the correction says how it "
                      "counts from now on.")
    async def correct(self, request: Request[Any, Any, Any], child_id: ChildIdPath,
                      data: JSONBody[Correction]) -> Recorded:
        caller = caller_of(request)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            target = await _stored_event(conn, caller, child_id, data.corrected_event_id)
            if target is None:
                raise not_found("event of this child", data.corrected_event_id, "corrected_event_id")
            if data.replacement is not None:
                if type(data.replacement).__name__ != target.event.type:
                    raise ApiError(400, f"the replacement must be a {target.event.type}",
                                   field="replacement.type", value=type(data.replacement).__name__)
                problems = semantic_problems(data.replacement, occurred_at=None, now=dt.datetime.now(dt.UTC),
                                             prefix="replacement")
                if problems:
                    raise _problems(problems)
            care = c.EventCorrected(corrected_event_id=data.corrected_event_id, reason=data.reason,
                                    child_ids_list=sorted(set(target.event.children) | {child_id}),
                                    replacement=data.replacement,
                                    replacement_occurred_at=data.replacement_occurred_at)
            try:
                return await record(conn, caller, care)
            except ValidationFailed as err:
                raise _problems(err.problems) from None


def _problems(problems: list[Any]) -> ApiError:
    first = problems[0]
    return ApiError(400, f"{first.field}: {first.message}", field=first.field, value=first.value,
                    problems=[FieldProblem(field=p.field, message=p.message, value=p.value) for p in problems])
