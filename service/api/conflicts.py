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
from projections import archive as pa
from projections import tables
from projections.duplicates import dismissed_pairs
from projections.source import Row
from service.api import archives
from service.api.audit import record_read
from service.api.errors import ApiError, FieldProblem, broken_rule, not_found
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
MERGE_EDGE = f"{tables.SCHEMA}.merge_edge"
MAX_MERGES = 1000
Note = Annotated[str, msgspec.Meta(max_length=200, description="why, in a few words")]
# Rules between fields that JSON Schema cannot state (the routes' 422 answers, docs/API.md).
MERGE_TWO = "kept_child_id and merged_child_id are two different children"
CORRECTION_RULES = [
    "a replacement has the type of the event it corrects, and is not itself a correction",
    "a resident_id in the replacement has a valid check digit (GB 11643)",
    "a birth_date in the replacement is not in the future, nor is replacement_occurred_at more than a day ahead",
]


class SiteRef(msgspec.Struct, frozen=True):
    """A site and its name in the sites registry (None if the registry has no such site)."""

    site_id: str
    name: str | None = None


class ChildRef(msgspec.Struct, frozen=True):
    """A child and the name its archive shows."""

    child_id: str
    name: str | None = None


class Update(msgspec.Struct, frozen=True, kw_only=True):
    """Who recorded an event, where and when (occurred: as the person gave it; committed: when
    the center stored it)."""

    event_id: str
    event_type: str
    site: SiteRef
    actor: str
    occurred_at: dt.datetime
    committed_at: dt.datetime


Value = Annotated[Any, msgspec.Meta(description=(
    "the field's value as the update gives it: text, a number, a date, a list or an object (a guardian: type, "
    "name, relation, phone); a resident ID masked"))]


class ConflictSide(msgspec.Struct, frozen=True, kw_only=True):
    """One of the disagreeing updates: what it says, who recorded it, and what it knew (its base:
    the update of the same field it replaced, None when it replaced nothing known)."""

    update: Update
    value: Value = None
    shown: bool = False  # the archive shows this side until a person resolves the conflict
    base: Update | None = None
    base_value: Value = None


class ConflictResolution(msgspec.Struct, frozen=True, kw_only=True):
    """The ConflictResolved event that settled a conflict: which side it kept, by whom, why."""

    event_id: str
    chosen_event_id: str
    site: SiteRef
    actor: str
    occurred_at: dt.datetime
    committed_at: dt.datetime
    note: str | None = None


class ConflictView(msgspec.Struct, frozen=True):
    """Concurrent, disagreeing updates of one archive field; `winner` is what the archive shows.
    With details: the child's name and sites, each side's value and record, and the resolution."""

    child_id: str
    field: str
    heads: list[str]
    winner: str
    child_name: str | None = None
    child_sites: list[SiteRef] = []
    sides: list[ConflictSide] = []
    resolution: ConflictResolution | None = None


class ConflictPage(msgspec.Struct, frozen=True):
    items: list[ConflictView]
    next_cursor: str | None = None


class Resolve(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    child_id: Annotated[ChildId, msgspec.Meta(examples=["c-01937a0c3f2b7c8d9e0f112233445566"])]
    field: Annotated[str, msgspec.Meta(min_length=1, max_length=40, examples=["guardian"])]
    chosen_event_id: Annotated[EventId, msgspec.Meta(examples=["01937a0c-3f2b-7c8d-9e0f-112233445566"])]
    note: Note | None = None


class DuplicateArchive(msgspec.Struct, frozen=True, kw_only=True):
    """One archive of a proposed pair, as a person compares them (resident ID masked)."""

    child_id: str
    name: str | None = None
    sex: str | None = None
    birth_date: dt.date | None = None
    resident_id_masked: str | None = None
    guardian: c.Guardian | None = None
    guardian_phone: str | None = None
    household_village: str | None = None
    school: str | None = None
    grade: int | None = None
    class_name: str | None = None
    registered_on: dt.date | None = None
    registered_by: SiteRef | None = None
    sites: list[SiteRef] = []
    open: bool = False
    events: int = 0  # how much history the archive has
    last_contact: dt.date | None = None  # the latest visit, call, letter or talk


class DuplicatePair(msgspec.Struct, frozen=True, omit_defaults=True):
    """Two archives that may be one child: reason resident_id (same resident ID) or name_birth_village.
    `archives`: both archives side by side, in the order of `child_ids`."""

    child_ids: list[str]
    reason: str
    name: str | None = None
    birth_date: dt.date | None = None
    resident_id_masked: str | None = None
    archives: list[DuplicateArchive] = []


class Dismiss(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Two archives proposed as one child are two different children."""

    child_ids: Annotated[list[ChildId], msgspec.Meta(min_length=2, max_length=2, examples=[[
        "c-01937a0c3f2b7c8d9e0f112233445566", "c-01937a0c3f2b7c8d9e0f112233445577"]],
        extra_json_schema={"uniqueItems": True})]  # two different children (checked in the handler)
    note: Note | None = None


class MergeView(msgspec.Struct, frozen=True, kw_only=True):
    """A merge of two archives (ArchivesMerged), and its undoing (ArchivesUnmerged) if any."""

    merge_event_id: str
    kept: ChildRef
    merged: ChildRef
    merge: Update
    note: str | None = None
    undone: bool = False
    undo: Update | None = None
    undo_note: str | None = None


class MergeList(msgspec.Struct, frozen=True):
    items: list[MergeView]


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

    @get("/conflicts", guards=[allow(*READERS)], summary="Open (or resolved) conflicts in your scope",
         description="Concurrent updates of one archive field that disagree, until a person resolves them. Each "
                     "comes with the child's name and sites, and each side's value (a resident ID masked), who "
                     "recorded it where and when, and the value it replaced; with `resolved=true`, the conflicts "
                     "already settled and who settled them. Showing the values is a read of the child's archive "
                     "(read log).")
    async def list_conflicts(
        self, request: Request[Any, Any, Any],
        site_id: SiteFilter = None,
        cursor: ChildCursor = None,
        limit: Annotated[int, Parameter(ge=1, le=200, description="children per page, at most 200")] = 50,
        resolved: Annotated[bool, Parameter(description="list resolved conflicts instead of open ones")] = False,
    ) -> ConflictPage:
        caller = caller_of(request)
        p = Params()
        state = "k.resolved_by <> ''" if resolved else "k.resolved_by = ''"
        conds = [state, child_visible(caller, p, "k.child_id"), f"k.child_id > {p.add(cursor or '')}"]
        if site_id is not None:
            conds.append(f"EXISTS (SELECT 1 FROM {archives.ARCHIVE} a WHERE a.child_id = k.child_id "
                         f"AND a.sites @> ARRAY[{p.add(site_id)}]::text[])")
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            # A page holds every conflict of `limit` children, so the cursor is a child id.
            rows = await conn.fetch(
                f"""SELECT k.child_id, k.field, k.heads, k.winner, k.resolved_by, a.name, a.sites
                    FROM {CONFLICT} k LEFT JOIN {archives.ARCHIVE} a ON a.child_id = k.child_id
                    WHERE k.child_id IN (SELECT DISTINCT k.child_id FROM {CONFLICT} k WHERE {' AND '.join(conds)}
                                         ORDER BY k.child_id LIMIT {p.add(limit)})
                      AND {state}
                    ORDER BY k.child_id, k.field, k.heads""", *p.values)
            children = sorted({r["child_id"] for r in rows})
            logs: dict[str, list[Row]] = {}
            for child in children:
                logs[child] = await archives.read_rows(conn, caller, child) or []
                await record_read(conn, caller, child, request.url.path, request.url.query or "", True)
            names = await _site_names(conn, {s for r in rows for s in r["sites"] or ()}
                                      | {x.event.site_id for got in logs.values() for x in got})
        items = [_conflict_view(r, logs[r["child_id"]], names) for r in rows]
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
                # The conflict as it stands now decides: a state, not a rule between fields.
                raise ApiError(409, f"chosen_event_id must be one of the conflicting updates {open_[0].heads}",
                               field="chosen_event_id", value=data.chosen_event_id)
            care = c.ConflictResolved(child_id=data.child_id, field=data.field, chosen_event_id=data.chosen_event_id,
                                      note=data.note)
            return await record(conn, caller, care, based_on={data.field: data.chosen_event_id})

    @get("/duplicates", guards=[allow("township", "auditor")], summary="Archives that may be the same child",
         description="Pairs in your scope with the same resident ID, or the same name, birth date and village, "
                     "except pairs a person recorded as two different children (POST /duplicates/dismiss). Each "
                     "pair comes with both archives side by side (resident ID masked), which is a read of both "
                     "(read log).")
    async def duplicates(self, request: Request[Any, Any, Any]) -> DuplicateList:
        caller = caller_of(request)
        p = Params()
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            # Both children of a pair must be in the caller's scope (in the statement).
            rows = await conn.fetch(
                f"""SELECT DISTINCT d.child_a, d.child_b, d.reason, a.name, a.birth_date, a.resident_id
                    FROM {DUPLICATE} d JOIN {archives.ARCHIVE} a ON a.child_id = d.child_a
                    WHERE {child_visible(caller, p, 'd.child_a')} AND {child_visible(caller, p, 'd.child_b')}
                    ORDER BY d.child_a, d.child_b, d.reason LIMIT {MAX_DUPLICATES}""", *p.values)
            dismissed = await dismissed_pairs(conn, {(r["child_a"], r["child_b"]) for r in rows})
            rows = [r for r in rows if (r["child_a"], r["child_b"]) not in dismissed]
            ids = sorted({x for r in rows for x in (r["child_a"], r["child_b"])})
            q = Params(ids)
            views = {r["child_id"]: pa.decode_archive(bytes(r["view"]), r["work"]) for r in await conn.fetch(
                f"SELECT v.child_id, v.view, v.work FROM {archives.ARCHIVE} v WHERE v.child_id = ANY($1::text[]) "
                f"AND {child_visible(caller, q, 'v.child_id')}", *q.values)}
            for child in sorted(views):
                await record_read(conn, caller, child, request.url.path, request.url.query or "", True)
            names = await _site_names(conn, {s for a in views.values() for s in (*a.sites, a.registered_by or "")})
        return DuplicateList(items=[DuplicatePair(
            child_ids=[r["child_a"], r["child_b"]], reason=r["reason"], name=r["name"], birth_date=r["birth_date"],
            resident_id_masked=mask_resident_id(r["resident_id"]) if r["reason"] == "resident_id" else None,
            archives=[_duplicate_archive(views[x], names) for x in (r["child_a"], r["child_b"]) if x in views])
            for r in rows])

    @post("/duplicates/dismiss", guards=[allow("township")], status_code=201,
          summary="Record that two proposed archives are different children (a DuplicateDismissed event)",
          description="The pair is not proposed as a duplicate again, also after a rebuild of the read models.")
    async def dismiss(self, request: Request[Any, Any, Any], data: JSONBody[Dismiss]) -> Recorded:
        caller = caller_of(request)
        a_id, b_id = data.child_ids
        if a_id == b_id:
            raise ApiError(400, "child_ids names the same child twice", field="child_ids", value=b_id)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            for cid in (a_id, b_id):
                a = archives.derive(cid, await archives.read_rows(conn, caller, cid) or [])
                if a is None:
                    raise not_found("child", cid, "child_ids")
                other = b_id if cid == a_id else a_id
                if other in a.not_same_as:
                    raise ApiError(409, f"children {a_id} and {b_id} are recorded as different children already",
                                   field="child_ids", value=other)
            return await record(conn, caller, c.DuplicateDismissed(child_ids_list=sorted((a_id, b_id)),
                                                                   note=data.note))

    @get("/merges", guards=[allow("township", "auditor")], summary="Merges of archives in your scope",
         description="Every merge of two archives (kept and merged child by name), who recorded it where and "
                     "when, and whether it was undone (by whom, when). Undo one with POST /merges/{id}/undo.")
    async def merges(self, request: Request[Any, Any, Any]) -> MergeList:
        caller = caller_of(request)
        p = Params()
        async with request.app.state.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT m.merge_event_id, m.kept, m.merged, m.undone, ka.name AS kept_name,
                           -- a merged archive shows nothing of its own: its name as it registered
                           COALESCE(ma.name, (SELECT r.payload->>'name' FROM events r
                                              WHERE r.type = 'ChildRegistered' AND r.children @> ARRAY[m.merged]
                                              ORDER BY r.committed_at LIMIT 1)) AS merged_name,
                           e.type, e.site_id, e.actor, e.occurred_at, e.committed_at,
                           e.payload->>'note' AS note,
                           u.event_id AS u_id, u.site_id AS u_site, u.actor AS u_actor,
                           u.occurred_at AS u_occurred, u.committed_at AS u_committed, u.payload->>'note' AS u_note
                    FROM {MERGE_EDGE} m
                    JOIN events e ON e.event_id = m.merge_event_id::uuid
                    LEFT JOIN {archives.ARCHIVE} ka ON ka.child_id = m.kept
                    LEFT JOIN {archives.ARCHIVE} ma ON ma.child_id = m.merged
                    LEFT JOIN LATERAL (
                        SELECT x.event_id, x.site_id, x.actor, x.occurred_at, x.committed_at, x.payload
                        FROM events x WHERE x.type = 'ArchivesUnmerged' AND x.children @> ARRAY[m.kept, m.merged]
                          AND x.payload->>'merge_event_id' = m.merge_event_id
                        ORDER BY x.committed_at LIMIT 1) u ON true
                    WHERE {child_visible(caller, p, 'm.kept')} AND {child_visible(caller, p, 'm.merged')}
                    ORDER BY e.committed_at DESC, m.merge_event_id LIMIT {MAX_MERGES}""", *p.values)
            names = await _site_names(conn, {r["site_id"] for r in rows} | {r["u_site"] for r in rows if r["u_site"]})
        items = []
        for r in rows:
            undo = None
            if r["u_id"] is not None:
                undo = Update(event_id=str(r["u_id"]), event_type="ArchivesUnmerged",
                              site=SiteRef(r["u_site"], names.get(r["u_site"])), actor=r["u_actor"],
                              occurred_at=r["u_occurred"], committed_at=r["u_committed"])
            items.append(MergeView(
                merge_event_id=r["merge_event_id"], kept=ChildRef(r["kept"], r["kept_name"]),
                merged=ChildRef(r["merged"], r["merged_name"]),
                merge=Update(event_id=r["merge_event_id"], event_type=r["type"],
                             site=SiteRef(r["site_id"], names.get(r["site_id"])), actor=r["actor"],
                             occurred_at=r["occurred_at"], committed_at=r["committed_at"]),
                note=r["note"], undone=bool(r["undone"]), undo=undo, undo_note=r["u_note"]))
        return MergeList(items=items)

    @post("/merges", guards=[allow("township")], status_code=201,
          summary="Merge two archives of one child (an ArchivesMerged event)", opt={"rules": [MERGE_TWO]})
    async def merge(self, request: Request[Any, Any, Any], data: JSONBody[Merge]) -> Recorded:
        caller = caller_of(request)
        if data.kept_child_id == data.merged_child_id:
            raise broken_rule("merged_child_id", data.merged_child_id, MERGE_TWO)
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
                      "counts from now on.", opt={"rules": CORRECTION_RULES})
    async def correct(self, request: Request[Any, Any, Any], child_id: ChildIdPath,
                      data: JSONBody[Correction]) -> Recorded:
        caller = caller_of(request)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            target = await _stored_event(conn, caller, child_id, data.corrected_event_id)
            if target is None:
                raise not_found("event of this child", data.corrected_event_id, "corrected_event_id")
            if data.replacement is not None:
                if type(data.replacement).__name__ != target.event.type:
                    raise ApiError(422, f"the replacement must be a {target.event.type}",
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


async def _site_names(conn: Any, ids: set[str]) -> dict[str, str]:
    """Site id -> name, from the sites registry."""
    ids.discard("")
    if not ids:
        return {}
    rows = await conn.fetch("SELECT site_id, name FROM sites WHERE site_id = ANY($1::text[])", sorted(ids))
    return {r["site_id"]: r["name"] for r in rows}


def _shown(field: str, value: Any) -> Any:
    """A value as a list shows it: a resident ID masked."""
    return mask_resident_id(value) if field == "resident_id" and isinstance(value, str) else value


def _sets(x: pa.Effective, field: str) -> bool:
    if isinstance(x.care, c.ConflictResolved):
        return x.care.field == field
    return field in x.care.fields_set()


def _value(x: pa.Effective, field: str, by_id: dict[str, pa.Effective]) -> Any:
    """What an update (or a resolution: the update it chose) gives the field."""
    if isinstance(x.care, c.ConflictResolved):
        chosen = by_id.get(x.care.chosen_event_id)
        return None if chosen is None or isinstance(chosen.care, c.ConflictResolved) else _value(chosen, field, by_id)
    return pa.field_value(x.care, field) if field in x.care.fields_set() else None


def _base(x: pa.Effective, field: str, effs: list[pa.Effective], by_id: dict[str, pa.Effective]
          ) -> pa.Effective | None:
    """The update of `field` that `x` knew and replaced: its `based_on` entry, else the latest
    earlier update of the field at its own site (a site knows its own log)."""
    named = x.entry.based_on.get(field)
    if named:
        return by_id.get(named)
    own = [y for y in effs if y.entry.site_id == x.entry.site_id and y.entry.site_seq < x.entry.site_seq
           and _sets(y, field)]
    return max(own, key=lambda y: y.entry.stamp) if own else None


def _update(x: pa.Effective, committed: dict[str, dt.datetime], names: dict[str, str]) -> Update:
    e = x.entry
    return Update(event_id=e.event_id, event_type=e.type, site=SiteRef(e.site_id, names.get(e.site_id)),
                  actor=e.actor, occurred_at=x.occurred_at, committed_at=committed[e.event_id])


def _conflict_view(r: Any, rows: list[Row], names: dict[str, str]) -> ConflictView:
    """A conflict row with its details, from the child's group's events."""
    field = r["field"]
    effs, _ = pa.effective([pa.entry_of(x.event, x.care) for x in rows if x.care is not None])
    by_id = {x.entry.event_id: x for x in effs}
    committed = {x.event.event_id: x.committed_at for x in rows}
    sides = []
    for head in r["heads"]:
        x = by_id.get(head)
        if x is None:
            continue
        base = _base(x, field, effs, by_id)
        sides.append(ConflictSide(
            update=_update(x, committed, names), value=_shown(field, _value(x, field, by_id)),
            shown=head == r["winner"], base=_update(base, committed, names) if base is not None else None,
            base_value=_shown(field, _value(base, field, by_id)) if base is not None else None))
    resolution = None
    done = by_id.get(r["resolved_by"]) if r["resolved_by"] else None
    if done is not None and isinstance(done.care, c.ConflictResolved):
        resolution = ConflictResolution(
            event_id=done.entry.event_id, chosen_event_id=done.care.chosen_event_id,
            site=SiteRef(done.entry.site_id, names.get(done.entry.site_id)), actor=done.entry.actor,
            occurred_at=done.occurred_at, committed_at=committed[done.entry.event_id], note=done.care.note)
    return ConflictView(child_id=r["child_id"], field=field, heads=list(r["heads"]), winner=r["winner"],
                        child_name=r["name"], child_sites=[SiteRef(s, names.get(s)) for s in r["sites"] or ()],
                        sides=sides, resolution=resolution)


def _duplicate_archive(a: pa.ChildArchive, names: dict[str, str]) -> DuplicateArchive:
    contacts = [d for d in (a.last_visit, a.last_call, a.last_letter, a.last_talk) if d is not None]
    return DuplicateArchive(
        child_id=a.child_id, name=a.name, sex=a.sex, birth_date=a.birth_date,
        resident_id_masked=mask_resident_id(a.resident_id), guardian=a.guardian, guardian_phone=a.guardian_phone,
        household_village=a.household_village, school=a.school, grade=a.grade, class_name=a.class_name,
        registered_on=a.registered_on,
        registered_by=SiteRef(a.registered_by, names.get(a.registered_by)) if a.registered_by else None,
        sites=[SiteRef(s, names.get(s)) for s in a.sites], open=a.open, events=a.events,
        last_contact=max(contacts) if contacts else None)


def _problems(problems: list[Any]) -> ApiError:
    """422: checks types cannot express (events.validation.semantic_problems), CORRECTION_RULES."""
    first = problems[0]
    return ApiError(422, f"{first.field}: {first.message}", field=first.field, value=first.value,
                    problems=[FieldProblem(field=p.field, message=p.message, value=p.value) for p in problems])
