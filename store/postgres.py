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

* **Where the append runs: two paths, one set of promises.** `_append` sends each batch one
  of two ways, and both keep every promise above:

  - the server-side function `shouwang_append` (PL/pgSQL, migration 0005), in one round trip,
    for a batch of fewer than CALL_THRESHOLD events whose ids and (site, site_seq) pairs are
    unique (every batch a site sends). It cannot sort out repeats inside one batch, so it is
    never given one. Counted once: new ids go into event_index with ON CONFLICT DO NOTHING,
    and an id that is there is a duplicate ('d') or refused ('c') by its hash. One site_seq,
    one event: a seq already committed (from the locked progress row) is not inserted, and a
    new id claiming it is refused ('t') with the holder named. Contiguity: progress rows are
    locked in site order before anything is checked and advanced before it returns. Readers
    never skip: tx_id comes from the column default. History: INSERT only.
  - the Python path, `_append_general` (COPY for large batches, a multi-row INSERT for small
    ones), for any batch, repeats inside it included. Counted once: ids go into event_index by
    a COPY in a savepoint (large batches) or by INSERT ... ON CONFLICT DO NOTHING (small ones,
    and after a COPY that hit a stored id), and `_classify` tells a duplicate from a refusal
    by the hash. One site_seq, one event:
    `_split_by_sequence` sets aside repeats and claims on committed seqs before anything is
    inserted. Contiguity, readers and history as above (progress rows locked first, in site
    order, by the same upsert; tx_id from the default; INSERT only).

  The two must agree on every input: tests/test_store.py,
  `test_both_append_paths_tell_each_events_fate_alike`, sends the same batches (out-of-order
  arrival over two sites, a resend, a forged resend, a claim on a taken site_seq) down each
  path and asserts the same results, progress and stored log, and
  tests/test_store_contract.py runs the contract every log keeps on each path.

* **The contract shared with the site's log.** Guarantees (a) to (d) of `store.contract`
  (ids kept once, one event per site_seq, stable ordered reads, a verifiable chain) are kept
  by this store and by the agent's SQLite log alike; `EventStore` is checked against
  `store.contract.EventLog` by mypy (below) and by one suite of tests run on both.

* **History is never rewritten** (guarantee 8). There is no UPDATE of `events` anywhere; each
  event keeps its site's `prev_hash`, and `verify_chain` recomputes the chain. The one DELETE is
  the partitions' maintenance (migration 0024, store/partitions.py) moving a row out of a
  default partition into the partition made for it, in the same transaction and with every
  column kept: its values, its place in the global order and its visibility do not change.

* **Partitions** (migration 0024). `events` is partitioned by region and China-time month; both
  append paths and every read name `events` only, and PostgreSQL routes and prunes. The global
  order spans the partitions (an ordered read is a Merge Append of per-partition index scans).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import msgspec

from events.envelope import GENESIS_HASH, DecodedEvent, Event, event_hash
from store.conn import Conn
from store.contract import EventLog


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


EVENT_COLUMNS = (
    "region", "site_id", "site_seq", "event_id", "type", "schema_version", "understood", "actor",
    "occurred_at", "recorded_at", "prev_hash", "hash", "children", "based_on", "payload",
)
_SELECT = """SELECT tx_id, position, committed_at, event_id::text AS event_id, type, schema_version, site_id,
                    site_seq, actor, occurred_at, recorded_at, encode(prev_hash, 'hex') AS prev_hash,
                    encode(hash, 'hex') AS hash, children,
                    CASE WHEN based_on <> '{}' THEN based_on END AS based_on, payload, understood
             FROM events"""
_NOTIFY = "SELECT set_config('synchronous_commit', 'off', true), pg_notify('shouwang_events', '')"
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_based_on_decoder = msgspec.json.Decoder(dict[str, str])
_json = msgspec.json.Encoder()
_EMPTY: dict[str, str] = {}


def _row_to_stored(r: asyncpg.Record) -> StoredEvent:
    # Hot path of every reader (projections, rebuilds, catch-up): text conversions happen in
    # PostgreSQL (uuid and hex in C), and nothing is decoded that a reader may not need (an
    # empty based_on, nearly every event's, arrives as NULL: no jsonb codec call).
    (tx_id, position, committed_at, event_id, type_, schema_version, site_id, site_seq, actor, occurred_at,
     recorded_at, prev_hash, hash_, children, based_on, payload, understood) = r
    event = Event(
        event_id=event_id, type=type_, schema_version=schema_version, site_id=site_id, site_seq=site_seq,
        actor=actor, occurred_at=occurred_at, recorded_at=recorded_at, prev_hash=prev_hash, children=children,
        based_on=_EMPTY if based_on is None else _based_on_decoder.decode(based_on),
        payload=msgspec.Raw(payload),
    )
    return StoredEvent(Position(tx_id, position), committed_at, event, hash_, understood)


class EventStore:
    """Append and read care events. All methods take a pool; `append_in` joins a transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._notify_lock = asyncio.Lock()
        self._committed = 0  # appends committed by this store (with notify_in_tx false)
        self._announced = 0  # of those, how many a notification has covered

    async def append(self, batch: Sequence[DecodedEvent]) -> AppendResult:
        """Append a batch in one transaction (all stored, or on error none)."""
        async with self.pool.acquire() as conn:
            result, notified = await _append(conn, batch, notify_in_tx=False)
            if result.stored and not notified:
                await self._announce(conn)
            return result

    async def _announce(self, conn: Conn) -> None:
        """Wake the store's listeners (projections, fan-out) after a commit. Appends that commit
        while a notification is being sent share the next one; the notifying transaction
        commits without waiting for its fsync (a lost wake-up only costs a listener its poll
        interval), so the cluster-wide NOTIFY lock is held for microseconds, not for an fsync."""
        self._committed += 1
        mine = self._committed
        async with self._notify_lock:
            if self._announced >= mine:
                return
            upto = self._committed
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                # The append is committed: failing it now would make the caller resend it.
                await conn.execute(_NOTIFY)
            self._announced = upto

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
                # the region prunes the log's partitions to the site's (migration 0024)
                f"{_SELECT} WHERE region = $4 AND site_id = $1 AND site_seq >= $2 ORDER BY site_seq LIMIT $3",
                site_id, from_seq, limit, region_of(site_id),
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


# mypy checks here that the center's store has the operations of the contract every log keeps
# (store/contract.py); tests/test_store_contract.py checks that it keeps their promises.
_keeps_the_contract: type[EventLog] = EventStore


# The ordered read: over the partitions of `events` (migration 0024), a Merge Append of one scan
# of events_global_order per partition, no sort (tests/test_partitioned_store.py reads its plan).
READ_ALL = f"""{_SELECT} WHERE (tx_id, position) > ($1, $2) AND tx_id < {_HORIZON}
            ORDER BY tx_id, position LIMIT $3"""


async def read_all_in(conn: Conn, after: Position, limit: int) -> list[StoredEvent]:
    rows = await conn.fetch(READ_ALL, after.tx, after.pos, limit)
    return [_row_to_stored(r) for r in rows]


async def read_where(
    conn: Conn, condition: str, *args: Any, after: Position = ORIGIN, limit: int = 1000
) -> list[StoredEvent]:
    """The events matching `condition` that a reader may see now, in the global order after
    `after`, at most `limit`: the order and the visibility horizon of `read_all_in`, so a page
    never skips a late commit. `condition` is SQL over the columns of `events`, written by the
    caller (never from user input; values travel as `args`, numbered from $1)."""
    n = len(args)
    rows = await conn.fetch(
        f"""{_SELECT} WHERE ({condition}) AND (tx_id, position) > (${n + 1}, ${n + 2}) AND tx_id < {_HORIZON}
            ORDER BY tx_id, position LIMIT ${n + 3}""",
        *args, after.tx, after.pos, limit,
    )
    return [_row_to_stored(r) for r in rows]


async def read_one_where(conn: Conn, condition: str, *args: Any) -> StoredEvent | None:
    """The committed event matching `condition` (which names one, by its event_id), or None. A
    look-up by id needs no horizon: a row is there or not, it never appears behind a reader.
    `condition` is SQL over the columns of `events` with `args` numbered from $1."""
    row = await conn.fetchrow(f"{_SELECT} WHERE {condition}", *args)
    return _row_to_stored(row) if row else None


async def progress_of(conn: Conn, site_id: str) -> SiteProgress:
    row = await conn.fetchrow("SELECT * FROM site_progress WHERE site_id = $1", site_id)
    if row is None:
        return SiteProgress(site_id, 0, 0, [], 0, 0, None, None)
    return _progress(row)


def _progress(row: asyncpg.Record) -> SiteProgress:
    return SiteProgress(
        row["site_id"], row["watermark"], row["max_seq"], holes_of(row["watermark"], row["pending"]),
        row["events_stored"], row["duplicates_seen"], row["last_committed_at"], row["newest_occurred_at"],
    )


async def append_in(conn: Conn, batch: Sequence[DecodedEvent]) -> AppendResult:
    """Append inside the caller's transaction (the ingester also writes quarantine rows in it),
    or, on a connection outside a transaction, in a transaction of its own."""
    result, _ = await _append(conn, batch, notify_in_tx=True)
    return result


# Below this many events one call of `shouwang_append` (the events travel as arrays) is cheaper
# than the COPY path; above it COPY's cheaper per-row handling on the server wins (measured
# beside raw COPY: 0.47 vs 0.41 of it at 100 events, equal at 150, COPY ahead at 250).
CALL_THRESHOLD = 128


async def _append(
    conn: Conn, batch: Sequence[DecodedEvent], *, notify_in_tx: bool
) -> tuple[AppendResult, bool]:
    """A batch smaller than CALL_THRESHOLD whose event ids and (site, site_seq) pairs are unique
    (every batch a site sends) is appended by one call of the server-side `shouwang_append`
    (migration 0005): one round trip, whatever the batch holds (new events, resends or
    refusals), and no transaction of our own around it (one statement is one transaction).
    Larger batches, and batches with repeats inside, take the COPY path (`_append_general`).

    With `notify_in_tx` false the function does not wake the store's listeners from inside the
    transaction (the caller does it after the commit: a NOTIFY holds a cluster-wide lock from
    its commit's start to its end, fsync included, so it would serialize concurrent appends).
    Returns the result and whether listeners were notified in the transaction."""
    if not batch:
        return AppendResult(), True
    n = len(batch)
    if n < CALL_THRESHOLD and len({d.event.event_id for d in batch}) == n \
            and len({(d.event.site_id, d.event.site_seq) for d in batch}) == n:
        return await _append_call(conn, batch, notify_in_tx), notify_in_tx
    if conn.is_in_transaction():
        return await _append_general(conn, batch), True
    async with conn.transaction():
        return await _append_general(conn, batch), True


_APPEND_CALL = """SELECT outcome, holders FROM shouwang_append($1::text[], $2::bigint[], $3::uuid[], $4::bytea[],
    $5::timestamptz[], $6::text[], $7::int[], $8::bool[], $9::text[], $10::bigint[], $11::bytea[], $12::text[],
    $13::jsonb[], $14::jsonb[], $15::bool)"""


async def _append_call(conn: Conn, batch: Sequence[DecodedEvent], notify: bool) -> AppendResult:
    evs = [d.event for d in batch]
    row = await conn.fetchrow(
        _APPEND_CALL,
        [e.site_id for e in evs], [e.site_seq for e in evs], [e.event_id for e in evs],
        [bytes.fromhex(d.hash) for d in batch], [e.occurred_at for e in evs], [e.type for e in evs],
        [e.schema_version for e in evs], [d.understood for d in batch], [e.actor for e in evs],
        [e.recorded_at for e in evs], [bytes.fromhex(e.prev_hash) for e in evs],
        [" ".join(e.children) for e in evs],  # ragged arrays travel as text
        [_json.encode(e.based_on) if e.based_on else b"{}" for e in evs], [bytes(e.payload) for e in evs],
        notify,
    )
    assert row is not None  # the function returns one row
    outcome: str = row[0]
    result = AppendResult(sites=sorted({e.site_id for e in evs}))
    if outcome.count("s") == len(evs):
        result.stored = [e.event_id for e in evs]
        return result
    holders = iter(row[1])
    for e, code in zip(evs, outcome, strict=True):
        if code == "s":
            result.stored.append(e.event_id)
        elif code == "d":
            result.duplicates.append(e.event_id)
        elif code == "c":
            result.refused.append(Refused(e.event_id, e.site_id, e.site_seq, _different_content(e.event_id)))
        else:
            holder = next(holders) or "another event in the same batch"
            result.refused.append(Refused(e.event_id, e.site_id, e.site_seq, _seq_taken(e, holder)))
    return result


def _different_content(event_id: str) -> str:
    return (f"event_id {event_id} is already stored with different content; "
            "the stored event is kept, this one is refused")


def _seq_taken(e: Event, holder: object) -> str:
    return (f"site_seq {e.site_seq} of site {e.site_id} is already used by event {holder}; "
            "a site's sequence numbers must be unique")


async def _append_general(conn: Conn, batch: Sequence[DecodedEvent]) -> AppendResult:
    """Any batch, repeats inside it included, in the caller's transaction.

    Fast path, for a batch of new events: two COPYs, no per-row lookups. If the COPY into
    `event_index` hits an id that is already stored (a resend), the savepoint is rolled back and
    the batch is classified against what is stored, then only the new events are copied.
    """
    result = AppendResult()
    sites = sorted({d.event.site_id for d in batch})
    # Lock the progress rows first, in site order (the upsert processes rows in input order):
    # appends for one site are serialized from here to commit, so sequence numbers are checked
    # against a current view, and two appenders never deadlock on each other's sites.
    progress_rows = await conn.fetch(
        """INSERT INTO site_progress (site_id) SELECT unnest($1::text[])
           ON CONFLICT (site_id) DO UPDATE SET site_id = EXCLUDED.site_id
           RETURNING site_id, watermark, pending""",
        sites,
    )
    committed = {r["site_id"]: (r["watermark"], r["pending"]) for r in progress_rows}
    fresh, taken = _split_by_sequence(batch, committed)
    others: list[DecodedEvent] = list(taken)
    inserted = await _insert_index(conn, fresh)
    if len(inserted) < len(fresh):  # some ids were stored already: a resend
        others += [d for d in fresh if d.event.event_id not in inserted]
        fresh = [d for d in fresh if d.event.event_id in inserted]
    if fresh:
        await _insert_events(conn, fresh)
        result.stored = [d.event.event_id for d in fresh]
    duplicates_by_site: dict[str, int] = {}
    if others:
        await _classify(conn, others, result)
        dup_ids = set(result.duplicates)
        for d in others:
            if d.event.event_id in dup_ids:
                duplicates_by_site[d.event.site_id] = duplicates_by_site.get(d.event.site_id, 0) + 1
        # keep the caller's order in the report
        order = {d.event.event_id: i for i, d in enumerate(batch)}
        result.duplicates.sort(key=lambda eid: order[eid])
        result.refused.sort(key=lambda r: order[r.event_id])
    await _advance_progress(conn, committed, fresh, duplicates_by_site)
    result.sites = sites
    return result


# Below this many rows a multi-row INSERT of arrays beats COPY, whose set-up costs round trips.
COPY_THRESHOLD = 64


async def _insert_index(conn: Conn, fresh: list[DecodedEvent]) -> set[str]:
    """Insert the ids into event_index; returns the ids that were not there yet."""
    if not fresh:
        return set()
    if len(fresh) >= COPY_THRESHOLD:
        try:
            async with conn.transaction():  # a savepoint: an id stored already only undoes this COPY
                await conn.copy_records_to_table(
                    "event_index", records=[_index_record(d) for d in fresh], columns=_INDEX_COLUMNS
                )
            return {d.event.event_id for d in fresh}
        except asyncpg.UniqueViolationError:
            pass
    rows = await conn.fetch(
        """INSERT INTO event_index (event_id, hash) SELECT * FROM unnest($1::uuid[], $2::bytea[])
           ON CONFLICT DO NOTHING RETURNING event_id""",
        [d.event.event_id for d in fresh], [bytes.fromhex(d.hash) for d in fresh],
    )
    return {str(r["event_id"]) for r in rows}


async def _insert_events(conn: Conn, fresh: list[DecodedEvent]) -> None:
    records = [event_record(d) for d in fresh]
    if len(records) >= COPY_THRESHOLD:
        await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        return
    columns = [list(col) for col in zip(*records, strict=True)]
    columns[12] = [" ".join(children) for children in columns[12]]  # ragged arrays travel as text
    await conn.execute(_INSERT_EVENTS, *columns)


_INSERT_EVENTS = """INSERT INTO events (region, site_id, site_seq, event_id, type, schema_version, understood,
        actor, occurred_at, recorded_at, prev_hash, hash, children, based_on, payload)
    SELECT u.region, u.site_id, u.site_seq, u.event_id, u.type, u.schema_version, u.understood, u.actor,
           u.occurred_at, u.recorded_at, u.prev_hash, u.hash, string_to_array(u.children, ' '), u.based_on,
           u.payload
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::int[], $7::bool[], $8::text[],
                $9::timestamptz[], $10::bigint[], $11::bytea[], $12::bytea[], $13::text[], $14::jsonb[],
                $15::jsonb[])
         AS u(region, site_id, site_seq, event_id, type, schema_version, understood, actor, occurred_at,
              recorded_at, prev_hash, hash, children, based_on, payload)"""


def _is_committed(seq: int, watermark: int, pending: Sequence[int]) -> bool:
    if seq <= watermark:
        return True
    return any(pending[i] <= seq <= pending[i + 1] for i in range(0, len(pending), 2))


def _split_by_sequence(
    batch: Sequence[DecodedEvent], committed: dict[str, tuple[int, Sequence[int]]]
) -> tuple[list[DecodedEvent], list[DecodedEvent]]:
    """Events whose (site, seq) is free and whose id is the first in the batch (candidates to
    store), and the rest (a resend, a repeat inside the batch, or a claim on a taken seq)."""
    fresh: list[DecodedEvent] = []
    rest: list[DecodedEvent] = []
    seen_ids: set[str] = set()
    seen_seqs: set[tuple[str, int]] = set()
    for d in batch:
        e = d.event
        watermark, pending = committed[e.site_id]
        key = (e.site_id, e.site_seq)
        if e.event_id in seen_ids or key in seen_seqs or _is_committed(e.site_seq, watermark, pending):
            rest.append(d)
        else:
            fresh.append(d)
            seen_ids.add(e.event_id)
            seen_seqs.add(key)
    return fresh, rest


async def _existing(conn: Conn, event_ids: list[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT event_id, hash FROM event_index WHERE event_id = ANY($1::uuid[])",
        [uuid.UUID(e) for e in event_ids],
    )
    return {str(r["event_id"]): r for r in rows}


_INDEX_COLUMNS = ("event_id", "hash")


# asyncpg encodes a uuid column from its text form in C, faster than building uuid.UUID objects.
def _index_record(d: DecodedEvent) -> tuple[Any, ...]:
    return (d.event.event_id, bytes.fromhex(d.hash))


def event_record(d: DecodedEvent) -> tuple[Any, ...]:
    e = d.event
    return (
        region_of(e.site_id), e.site_id, e.site_seq, e.event_id, e.type, e.schema_version,
        d.understood, e.actor, e.occurred_at, e.recorded_at, bytes.fromhex(e.prev_hash),
        bytes.fromhex(d.hash), e.children, _json.encode(e.based_on) if e.based_on else b"{}", bytes(e.payload),
    )


async def _classify(conn: Conn, others: list[DecodedEvent], result: AppendResult) -> None:
    """Each event that was not stored is a duplicate (same id, same content) or refused."""
    by_id = await _existing(conn, [d.event.event_id for d in others])
    stored_now = set(result.stored)
    for d in others:
        e = d.event
        row = by_id.get(e.event_id)
        if row is not None:
            if row["hash"].hex() == d.hash:  # the hash covers site_id and site_seq too
                result.duplicates.append(e.event_id)
            else:
                result.refused.append(Refused(e.event_id, e.site_id, e.site_seq, _different_content(e.event_id)))
            continue
        if e.event_id in stored_now:  # cannot happen: stored ids are in event_index
            raise StoreError(f"event {e.event_id} stored but not indexed")
        holder = await conn.fetchval(
            "SELECT event_id FROM events WHERE site_id = $1 AND site_seq = $2", e.site_id, e.site_seq
        ) or "another event in the same batch"
        result.refused.append(Refused(e.event_id, e.site_id, e.site_seq, _seq_taken(e, holder)))


async def _advance_progress(
    conn: Conn, committed: dict[str, tuple[int, Sequence[int]]], fresh: list[DecodedEvent],
    duplicates_by_site: dict[str, int],
) -> None:
    by_site: dict[str, list[DecodedEvent]] = {}
    for d in fresh:
        by_site.setdefault(d.event.site_id, []).append(d)
    cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    for site_id, (watermark, pending) in committed.items():
        events = by_site.get(site_id, [])
        dups = duplicates_by_site.get(site_id, 0)
        if not events and not dups:
            continue
        new_watermark, new_pending = advance(watermark, pending, (d.event.site_seq for d in events))
        values = (
            site_id, new_watermark, "{" + ",".join(map(str, new_pending)) + "}",
            max((d.event.site_seq for d in events), default=0), len(events), dups,
            max((d.event.occurred_at for d in events), default=None),
        )
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    if not cols[0]:
        return
    await conn.execute(
        """UPDATE site_progress AS p SET watermark = u.watermark, pending = u.pending::bigint[],
               max_seq = greatest(p.max_seq, u.max_seq), events_stored = p.events_stored + u.stored,
               duplicates_seen = p.duplicates_seen + u.dups,
               last_committed_at = CASE WHEN u.stored > 0 THEN now() ELSE p.last_committed_at END,
               newest_occurred_at = greatest(p.newest_occurred_at, u.newest)
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                       $7::timestamptz[]) AS u(site_id, watermark, pending, max_seq, stored, dups, newest)
           WHERE p.site_id = u.site_id""",
        *cols,
    )
