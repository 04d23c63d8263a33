"""The central event store on PostgreSQL.

What it promises, and where each promise is kept:

* **Counted once** (guarantee 3). `event_index` holds every event_id ever stored, forever,
  with its site, sequence number and content hash. Appending an id that is there already
  with the same hash is a no-op reported as a duplicate; with a different hash it is refused
  and reported, and the stored event is never overwritten. A different event claiming a
  (site, site_seq) that is taken is refused the same way. Two appenders racing on one id are
  settled by the primary key: the second waits for the first's commit, then sees a conflict.

* **Per-site contiguity.** `site_progress` keeps the highest gapless `site_seq` (the
  watermark) and the committed ranges above it; holes are the gaps between. Each append
  locks the progress rows of the sites in its batch, in site order (no deadlocks), so two
  ingesters never compute a watermark from a stale view.

* **Readers never skip** (guarantee 4). PostgreSQL assigns positions (a sequence) when rows
  are inserted but makes them visible when their transaction commits, which can be in a
  different order, so "everything after position p" misses a transaction that took a lower
  position and committed late. Each row therefore records its transaction id
  (`pg_current_xact_id()`), and readers only read rows whose transaction id is below
  `pg_snapshot_xmin(pg_current_snapshot())`: every transaction below that horizon has ended,
  so no row can appear there later. Within the horizon the order is (tx_id, position), which
  is stable: a new row always gets a tx_id at or above the horizon, so it sorts after every
  row already read. No table lock, no waiting for a gap to time out; the cost is that a
  long-running writing transaction holds readers back until it ends (they lag, never skip).

* **History is never rewritten** (guarantee 8). There is no UPDATE or DELETE of `events`
  anywhere; each event keeps its site's `prev_hash`, and `verify_chain` recomputes the chain.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import msgspec

from events.envelope import GENESIS_HASH, DecodedEvent, Event, event_hash


class StoreError(Exception):
    """Base class of the store's errors."""


class Position(msgspec.Struct, frozen=True, order=True):
    """A place in the global order: (transaction id, position). Compare as a tuple."""

    tx: int
    pos: int

    def __str__(self) -> str:
        return f"{self.tx}:{self.pos}"

    @classmethod
    def parse(cls, text: str) -> Position:
        try:
            tx, pos = text.split(":")
            return cls(int(tx), int(pos))
        except ValueError:
            raise ValueError(f"position must look like '<tx>:<pos>', got {text!r}") from None


ORIGIN = Position(0, 0)


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as committed at the center."""

    position: Position
    committed_at: dt.datetime
    event: Event
    hash: str
    understood: bool


class Refused(msgspec.Struct, frozen=True):
    event_id: str
    site_id: str
    site_seq: int
    reason: str


class AppendResult(msgspec.Struct):
    """What one append did, event by event: stored now, already there, or refused."""

    stored: list[str] = msgspec.field(default_factory=list)
    duplicates: list[str] = msgspec.field(default_factory=list)
    refused: list[Refused] = msgspec.field(default_factory=list)
    sites: list[str] = msgspec.field(default_factory=list)  # sites whose progress changed


class SiteProgress(msgspec.Struct, frozen=True):
    site_id: str
    watermark: int
    max_seq: int
    holes: list[tuple[int, int]]
    events_stored: int
    duplicates_seen: int
    last_committed_at: dt.datetime | None
    newest_occurred_at: dt.datetime | None


def region_of(site_id: str) -> str:
    return site_id.split(".", 1)[0]


def holes_of(watermark: int, pending: Sequence[int]) -> list[tuple[int, int]]:
    """Gaps between the watermark and the committed ranges above it (flattened lo/hi pairs)."""
    holes = []
    prev = watermark
    for i in range(0, len(pending), 2):
        lo, hi = pending[i], pending[i + 1]
        if lo > prev + 1:
            holes.append((prev + 1, lo - 1))
        prev = hi
    return holes


def advance(watermark: int, pending: Sequence[int], new_seqs: Iterable[int]) -> tuple[int, list[int]]:
    """Merge newly committed sequence numbers into (watermark, pending ranges)."""
    seqs = sorted({s for s in new_seqs if s > watermark})
    ranges = [(pending[i], pending[i + 1]) for i in range(0, len(pending), 2)]
    ranges += [(s, s) for s in seqs]
    ranges.sort()
    merged: list[list[int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    while merged and merged[0][0] <= watermark + 1:
        watermark = max(watermark, merged.pop(0)[1])
    return watermark, [x for pair in merged for x in pair]


_EVENT_COLUMNS = (
    "region", "site_id", "site_seq", "event_id", "type", "schema_version", "understood", "actor",
    "occurred_at", "recorded_at", "prev_hash", "hash", "children", "based_on", "payload",
)
_SELECT = """SELECT tx_id, position, committed_at, event_id, type, schema_version, site_id, site_seq,
                    actor, occurred_at, recorded_at, prev_hash, hash, children, based_on, payload,
                    understood
             FROM events"""
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_based_on_decoder = msgspec.json.Decoder(dict[str, str])
_json = msgspec.json.Encoder()


def _row_to_stored(r: asyncpg.Record) -> StoredEvent:
    based_on = r["based_on"]
    event = Event(
        event_id=str(r["event_id"]),
        type=r["type"],
        schema_version=r["schema_version"],
        site_id=r["site_id"],
        site_seq=r["site_seq"],
        actor=r["actor"],
        occurred_at=r["occurred_at"],
        recorded_at=r["recorded_at"],
        prev_hash=r["prev_hash"].hex(),
        children=list(r["children"]),
        based_on=_based_on_decoder.decode(based_on) if based_on != b"{}" else {},
        payload=msgspec.Raw(r["payload"]),
    )
    return StoredEvent(Position(r["tx_id"], r["position"]), r["committed_at"], event, r["hash"].hex(),
                       r["understood"])


class EventStore:
    """Append and read care events. All methods take a pool; `append_in` joins a transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def append(self, batch: Sequence[DecodedEvent]) -> AppendResult:
        """Append a batch in one transaction (all stored, or on error none)."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await append_in(conn, batch)

    async def progress(self, site_id: str) -> SiteProgress:
        async with self.pool.acquire() as conn:
            return await progress_of(conn, site_id)

    async def all_progress(self) -> list[SiteProgress]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM site_progress ORDER BY site_id")
        return [_progress(r) for r in rows]

    async def read_all(self, after: Position = ORIGIN, limit: int = 1000) -> list[StoredEvent]:
        """The next events in the global order after `after`, never skipping a late commit."""
        async with self.pool.acquire() as conn:
            return await read_all_in(conn, after, limit)

    async def head(self) -> Position:
        """The last position a reader can see now (ORIGIN for an empty store)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT tx_id, position FROM events WHERE tx_id < {_HORIZON} "
                "ORDER BY tx_id DESC, position DESC LIMIT 1"
            )
        return Position(row["tx_id"], row["position"]) if row else ORIGIN

    async def count(self) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM event_index"))

    async def get(self, event_id: str) -> StoredEvent | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(f"{_SELECT} WHERE event_id = $1", uuid.UUID(event_id))
        return _row_to_stored(row) if row else None

    async def read_child(
        self, child_id: str, *, committed_before: dt.datetime | None = None,
        occurred_before: dt.datetime | None = None,
    ) -> list[StoredEvent]:
        """Every event concerning a child, in the global order, optionally as of a time."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""{_SELECT} WHERE children @> ARRAY[$1]::text[] AND tx_id < {_HORIZON}
                    AND ($2::timestamptz IS NULL OR committed_at <= $2)
                    AND ($3::timestamptz IS NULL OR occurred_at <= $3)
                    ORDER BY tx_id, position""",
                child_id, committed_before, occurred_before,
            )
        return [_row_to_stored(r) for r in rows]

    async def read_site(self, site_id: str, from_seq: int = 1, limit: int = 1000) -> list[StoredEvent]:
        """A site's own events by site_seq (its log as the center holds it)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"{_SELECT} WHERE site_id = $1 AND site_seq >= $2 ORDER BY site_seq LIMIT $3",
                site_id, from_seq, limit,
            )
        return [_row_to_stored(r) for r in rows]

    async def read_committed(
        self, since: dt.datetime, until: dt.datetime, after: Position = ORIGIN, limit: int = 1000
    ) -> list[StoredEvent]:
        """Events committed in [since, until), in the global order, paged by position."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""{_SELECT} WHERE committed_at >= $1 AND committed_at < $2
                    AND (tx_id, position) > ($3, $4) AND tx_id < {_HORIZON}
                    ORDER BY tx_id, position LIMIT $5""",
                since, until, after.tx, after.pos, limit,
            )
        return [_row_to_stored(r) for r in rows]

    async def verify_chain(self, site_id: str) -> ChainReport:
        """Recompute a site's hash chain from the stored events (what an auditor runs)."""
        report = ChainReport(site_id=site_id)
        prev_hash, expected_seq = GENESIS_HASH, 1
        while True:
            batch = await self.read_site(site_id, expected_seq, 2000)
            if not batch:
                break
            for stored in batch:
                ev = stored.event
                if ev.site_seq != expected_seq:
                    report.problems.append(f"site_seq {expected_seq}..{ev.site_seq - 1} missing")
                    prev_hash = None  # type: ignore[assignment]
                recomputed = event_hash(ev)
                if recomputed != stored.hash:
                    report.problems.append(f"site_seq {ev.site_seq}: content does not match its stored hash")
                if prev_hash is not None and ev.prev_hash != prev_hash:
                    report.problems.append(f"site_seq {ev.site_seq}: prev_hash does not link to site_seq "
                                           f"{ev.site_seq - 1}")
                prev_hash, expected_seq = recomputed, ev.site_seq + 1
                report.verified += 1
        report.ok = not report.problems
        return report


class ChainReport(msgspec.Struct):
    site_id: str
    verified: int = 0
    ok: bool = True
    problems: list[str] = msgspec.field(default_factory=list)


async def read_all_in(conn: asyncpg.Connection, after: Position, limit: int) -> list[StoredEvent]:
    rows = await conn.fetch(
        f"""{_SELECT} WHERE (tx_id, position) > ($1, $2) AND tx_id < {_HORIZON}
            ORDER BY tx_id, position LIMIT $3""",
        after.tx, after.pos, limit,
    )
    return [_row_to_stored(r) for r in rows]


async def progress_of(conn: asyncpg.Connection, site_id: str) -> SiteProgress:
    row = await conn.fetchrow("SELECT * FROM site_progress WHERE site_id = $1", site_id)
    if row is None:
        return SiteProgress(site_id, 0, 0, [], 0, 0, None, None)
    return _progress(row)


def _progress(row: asyncpg.Record) -> SiteProgress:
    return SiteProgress(
        row["site_id"], row["watermark"], row["max_seq"], holes_of(row["watermark"], row["pending"]),
        row["events_stored"], row["duplicates_seen"], row["last_committed_at"], row["newest_occurred_at"],
    )


async def append_in(conn: asyncpg.Connection, batch: Sequence[DecodedEvent]) -> AppendResult:
    """Append inside the caller's transaction (the ingester also writes quarantine rows in it)."""
    result = AppendResult()
    if not batch:
        return result
    sites = sorted({d.event.site_id for d in batch})
    # Lock the progress rows first, in site order: appends for one site are serialized from
    # here to commit, and two appenders never deadlock on each other's sites.
    await conn.execute(
        "INSERT INTO site_progress (site_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", sites
    )
    progress_rows = await conn.fetch(
        "SELECT site_id, watermark, pending FROM site_progress WHERE site_id = ANY($1) ORDER BY site_id FOR UPDATE",
        sites,
    )
    ids = [uuid.UUID(d.event.event_id) for d in batch]
    hashes = [bytes.fromhex(d.hash) for d in batch]
    inserted = await conn.fetch(
        """INSERT INTO event_index (event_id, site_id, site_seq, hash)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bytea[])
           ON CONFLICT DO NOTHING RETURNING event_id""",
        ids, [d.event.site_id for d in batch], [d.event.site_seq for d in batch], hashes,
    )
    new_ids = {r["event_id"] for r in inserted}
    fresh: list[DecodedEvent] = []
    others: list[DecodedEvent] = []
    for d, eid in zip(batch, ids, strict=True):
        if eid in new_ids:
            new_ids.discard(eid)  # a second copy of the same id in this batch is not fresh
            fresh.append(d)
        else:
            others.append(d)
    if fresh:
        await conn.copy_records_to_table("events", records=[_record(d) for d in fresh], columns=_EVENT_COLUMNS)
        result.stored = [d.event.event_id for d in fresh]
    duplicates_by_site: dict[str, int] = {}
    if others:
        await _classify(conn, others, result)
        dup_ids = set(result.duplicates)
        for d in others:
            if d.event.event_id in dup_ids:
                duplicates_by_site[d.event.site_id] = duplicates_by_site.get(d.event.site_id, 0) + 1
    await _advance_progress(conn, progress_rows, fresh, duplicates_by_site)
    result.sites = sites
    return result


def _record(d: DecodedEvent) -> tuple[Any, ...]:
    e = d.event
    return (
        region_of(e.site_id), e.site_id, e.site_seq, uuid.UUID(e.event_id), e.type, e.schema_version,
        d.understood, e.actor, e.occurred_at, e.recorded_at, bytes.fromhex(e.prev_hash),
        bytes.fromhex(d.hash), e.children, _json.encode(e.based_on), bytes(e.payload),
    )


async def _classify(conn: asyncpg.Connection, others: list[DecodedEvent], result: AppendResult) -> None:
    """Each event that was not inserted is a duplicate (same id, same content) or refused."""
    rows = await conn.fetch(
        "SELECT event_id, site_id, site_seq, hash FROM event_index WHERE event_id = ANY($1::uuid[])",
        [uuid.UUID(d.event.event_id) for d in others],
    )
    by_id = {str(r["event_id"]): r for r in rows}
    for d in others:
        e = d.event
        row = by_id.get(e.event_id)
        if row is not None:
            if row["hash"].hex() == d.hash and row["site_id"] == e.site_id and row["site_seq"] == e.site_seq:
                result.duplicates.append(e.event_id)
            else:
                result.refused.append(Refused(
                    e.event_id, e.site_id, e.site_seq,
                    f"event_id {e.event_id} is already stored with different content "
                    f"(site {row['site_id']} seq {row['site_seq']}); the stored event is kept, this one is refused",
                ))
            continue
        holder = await conn.fetchval(
            "SELECT event_id FROM event_index WHERE site_id = $1 AND site_seq = $2", e.site_id, e.site_seq
        )
        result.refused.append(Refused(
            e.event_id, e.site_id, e.site_seq,
            f"site_seq {e.site_seq} of site {e.site_id} is already used by event {holder}; "
            "a site's sequence numbers must be unique",
        ))


async def _advance_progress(
    conn: asyncpg.Connection, progress_rows: list[asyncpg.Record], fresh: list[DecodedEvent],
    duplicates_by_site: dict[str, int],
) -> None:
    by_site: dict[str, list[DecodedEvent]] = {}
    for d in fresh:
        by_site.setdefault(d.event.site_id, []).append(d)
    for row in progress_rows:
        site_id = row["site_id"]
        events = by_site.get(site_id, [])
        dups = duplicates_by_site.get(site_id, 0)
        if not events and not dups:
            continue
        watermark, pending = advance(row["watermark"], row["pending"], (d.event.site_seq for d in events))
        newest = max((d.event.occurred_at for d in events), default=None)
        await conn.execute(
            """UPDATE site_progress SET watermark = $2, pending = $3,
                   max_seq = greatest(max_seq, $4), events_stored = events_stored + $5,
                   duplicates_seen = duplicates_seen + $6,
                   last_committed_at = CASE WHEN $5 > 0 THEN now() ELSE last_committed_at END,
                   newest_occurred_at = greatest(newest_occurred_at, $7)
               WHERE site_id = $1""",
            site_id, watermark, pending, max((d.event.site_seq for d in events), default=0),
            len(events), dups, newest,
        )
