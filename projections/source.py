"""Reading what the projections need from the event store: a batch in the global order, and
the whole history of some children (with every member of their correction families).

History reads are bounded by a position, so a batch's read models say exactly what the log
up to its checkpoint says, never more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import msgspec

from events import EVENT_TYPES, traits
from events import catalogue as c
from events.envelope import Event, care_of
from projections.archive import ArchiveBook, Entry, family_of
from store.conn import Conn
from store.postgres import Position

COLS = """tx_id, position, committed_at, event_id::text AS event_id, type, schema_version, site_id, site_seq,
           actor, occurred_at, recorded_at, prev_hash, children, based_on, payload, understood"""
"""The columns of `events` that :func:`to_row` reads."""
HORIZON = "tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
"""Only transactions every snapshot sees committed: a read never skips a commit still in flight."""
_based_on = msgspec.json.Decoder(dict[str, str])
STRUCTURAL_READ = (*sorted(traits.types_where(lambda t: t.fold is traits.Fold.STRUCTURAL)), "EventCorrected")
"""The types a structural re-derive reads (projections/runner.py): the structural ones and corrections."""
STRUCTURAL_SQL = f"type IN ({', '.join(repr(t) for t in STRUCTURAL_READ)})"
"""STRUCTURAL_READ as the literal predicate of the partial index `events_structural` (migration
0031): written out, not a parameter, so that the planner can prove the query implies it."""


class Row(msgspec.Struct, frozen=True):
    """An event read for projecting: its place, commit time, envelope and typed payload."""

    position: Position
    committed_at: dt.datetime
    event: Event
    care: c.CareEventBase | None


def to_row(r: asyncpg.Record) -> Row:
    based_on = r["based_on"]
    event = Event(
        event_id=r["event_id"], type=r["type"], schema_version=r["schema_version"], site_id=r["site_id"],
        site_seq=r["site_seq"], actor=r["actor"], occurred_at=r["occurred_at"], recorded_at=r["recorded_at"],
        prev_hash=bytes(r["prev_hash"]).hex(), children=list(r["children"]),
        based_on=_based_on.decode(based_on) if based_on != b"{}" else {},
        payload=msgspec.Raw(r["payload"]),
    )
    care = care_of(event) if r["understood"] else None
    return Row(Position(r["tx_id"], r["position"]), r["committed_at"], event, care)


async def history_book(conn: Conn, child_ids: Sequence[str], pseudo: Iterable[str], upto: Position,
                       structural: bool = False) -> ArchiveBook:
    """The book of every event up to `upto` that concerns these children (with `structural`, only
    those of STRUCTURAL_READ), plus every member of the correction families of those events and
    of the pseudo-keys ('ev:<id>'), for the projector's re-derives. The rows are decoded straight
    to entries as a rebuild decodes them (`entries_of`: no envelope, one typed decode a payload),
    and it holds states for these children and pseudo-keys only: an activity of 21 children read
    for one of them is not also put in a partial state for each of the other 20."""
    pseudo = list(pseudo)
    wanted = {*child_ids, *pseudo}
    only = f" AND {STRUCTURAL_SQL}" if structural else ""
    rows = await conn.fetch(
        f"""SELECT {SCAN_COLS} FROM events WHERE children && $1::text[] AND (tx_id, position) <= ($2, $3){only}""",
        list(child_ids), upto.tx, upto.pos,
    ) if child_ids else []
    book = ArchiveBook(keep=wanted.__contains__)
    have: set[str] = set()
    families = {p[3:] for p in pseudo}
    for eid, entry in entries_of(rows)[0]:
        have.add(eid)
        if entry is None:
            book.skipped.add(eid)  # as `ArchiveBook.add` keeps an event this code does not understand
            continue
        book.add_entry(entry)
        families.add(family_of(entry.care, eid))
    if families:
        for r in await family_members(conn, families, upto, known=have):
            book.add(r.event, r.care)
    return book


async def group_rows(conn: Conn, child_id: str, column: str, when: dt.datetime | None) -> list[Row]:
    """Every event of the child's merged group up to `when` on the clock `column` ('committed_at'
    or 'occurred_at'; None: everything committed), with whole correction families: follows
    merges transitively (a merge names both children)."""
    ids: set[str] = {child_id}
    rows: dict[str, Row] = {}
    while True:
        found = await conn.fetch(
            f"""SELECT {COLS} FROM events WHERE children && $1::text[] AND {HORIZON}
                  AND ($2::timestamptz IS NULL OR {column} <= $2)""", sorted(ids), when)
        for r in found:
            rows.setdefault(r["event_id"], to_row(r))
        more = {x for row in rows.values() if isinstance(row.care, c.ArchivesMerged | c.ArchivesUnmerged)
                for x in row.care.child_ids()} - ids
        if not more:
            break
        ids |= more
    fams = sorted({family_of(r.care, r.event.event_id) for r in rows.values() if r.care is not None})
    if fams:
        found = await conn.fetch(
            f"""SELECT {COLS} FROM events
                 WHERE (event_id = ANY($1::uuid[])
                        OR (type = 'EventCorrected' AND payload->>'corrected_event_id' = ANY($2::text[])))
                   AND {HORIZON} AND ($3::timestamptz IS NULL OR {column} <= $3)""", fams, fams, when)
        for r in found:
            rows.setdefault(r["event_id"], to_row(r))
    return list(rows.values())


async def family_members(conn: Conn, families: Iterable[str], upto: Position,
                         known: Iterable[str] = ()) -> list[Row]:
    """The members of these correction families (the original and every correction of it) up
    to `upto`, except the events in `known` (already in hand)."""
    ids = sorted(families)
    have = set(known)
    originals = [i for i in ids if i not in have]  # the originals not in hand (corrections' targets)
    rows = await conn.fetch(
        f"""SELECT {COLS} FROM events
             WHERE type = 'EventCorrected' AND payload->>'corrected_event_id' = ANY($1::text[])
               AND (tx_id, position) <= ($2, $3)""",
        ids, upto.tx, upto.pos,
    )
    if originals:
        rows += await conn.fetch(
            f"""SELECT {COLS} FROM events WHERE event_id = ANY($1::uuid[]) AND (tx_id, position) <= ($2, $3)""",
            originals, upto.tx, upto.pos,
        )
    return [to_row(r) for r in rows if r["event_id"] not in have]


# The columns in the order scan_page unpacks them; an empty based_on comes as NULL (no decode).
SCAN_COLS = """tx_id, position, committed_at, event_id::text AS event_id, type, schema_version, site_id, site_seq,
               actor, occurred_at, recorded_at, NULLIF(based_on, '{}'::jsonb) AS based_on, payload, understood"""
"""The columns of the ordered scan, in the order `entries_of` unpacks them (a partitioned rebuild keeps
them on disk between its read and its fold, projections/partitioned.py)."""
_SCAN = f"""SELECT {SCAN_COLS} FROM events WHERE (tx_id, position) > ($1, $2) AND {HORIZON}
             ORDER BY tx_id, position LIMIT $3"""
_care_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
# (type, schema_version) -> decode, for payloads stored at the version this code reads directly.
_current = {(name, cls.SCHEMA_VERSION): _care_decoders[name].decode for name, cls in EVENT_TYPES.items()}


def _care(r: Mapping[str, Any]) -> c.CareEventBase | None:
    """The typed payload of a stored row, decoded once (upcast through care_of when older)."""
    if not r["understood"]:
        return None
    cls = EVENT_TYPES.get(r["type"])
    if cls is not None and r["schema_version"] == cls.SCHEMA_VERSION:
        care: c.CareEventBase = _care_decoders[r["type"]].decode(r["payload"])
        return care
    return _slow_care(r)


def _slow_care(r: Mapping[str, Any]) -> c.CareEventBase | None:
    event = Event(event_id=r["event_id"], type=r["type"], schema_version=r["schema_version"], site_id=r["site_id"],
                  site_seq=r["site_seq"], actor=r["actor"], occurred_at=r["occurred_at"],
                  recorded_at=r["recorded_at"], prev_hash="0" * 64, payload=msgspec.Raw(r["payload"]))
    return care_of(event)


class Page(msgspec.Struct):
    """One page of the ordered scan, as entries (None where not understood)."""

    entries: list[tuple[str, Entry | None]]
    last: Position
    last_committed_at: dt.datetime
    upcast: list[str] = []  # understood events not stored at the version this code reads directly


async def scan_page(conn: Conn, after: Position, limit: int) -> Page | None:
    """The next page of the global order (never skipping a late commit), straight to entries."""
    rows = await conn.fetch(_SCAN, after.tx, after.pos, limit)
    if not rows:
        return None
    out, upcast = entries_of(rows)
    last = rows[-1]
    return Page(out, Position(last["tx_id"], last["position"]), last["committed_at"], upcast)


def entries_of(rows: Iterable[Any]) -> tuple[list[tuple[str, Entry | None]], list[str]]:
    """Entries of rows in the `_SCAN` column order (None where not understood), and the ids of the
    understood ones read through an upcaster."""
    out: list[tuple[str, Entry | None]] = []
    upcast: list[str] = []
    append = out.append
    current = _current.get
    decode_based_on = _based_on.decode
    # The hot loop of a rebuild: records unpacked by position, one typed decode per payload.
    for _, _, _, eid, typ, version, site_id, site_seq, actor, occurred_at, recorded_at, based_on, payload, \
            understood in rows:
        decode = current((typ, version)) if understood else None
        care: c.CareEventBase | None
        if decode is not None:
            care = decode(payload)
        else:
            care = _care({"understood": understood, "type": typ, "schema_version": version, "event_id": eid,
                          "site_id": site_id, "site_seq": site_seq, "actor": actor, "occurred_at": occurred_at,
                          "recorded_at": recorded_at, "payload": payload})
            if care is None:
                append((eid, None))
                continue
            upcast.append(eid)
        append((eid, Entry(
            event_id=eid, type=typ, site_id=site_id, site_seq=site_seq, actor=actor, occurred_at=occurred_at,
            recorded_at=recorded_at, based_on=decode_based_on(based_on) if based_on is not None else {},
            care=care)))  # type: ignore[arg-type]
    return out, upcast


def book_of(rows: Iterable[Row], book: ArchiveBook | None = None) -> ArchiveBook:
    """The archive book of these stored rows: every event added with its typed payload (None where
    not understood). Adds to `book` if given (a read by pages), else to a new one."""
    book = ArchiveBook() if book is None else book
    for r in rows:
        book.add(r.event, r.care)
    return book
