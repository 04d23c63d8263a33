"""A rebuild's fold by partitions of archives, so that its memory is bounded by a partition, not
by the log.

Why: folding the whole log at once holds every event's entry until the end (a correction or a
merge can reach back anywhere in a child's history): about 1.4 KB per event, 1.4 GB at 1M
events, tens of GB for a province's year. But an archive depends only on its group's events
(the child, the children merged into it, whole correction families), and the fold is
order-free (guarantee 6: a state is the set of its events), so the log can be folded one set of
groups at a time.

How (`projections.rebuild` drives it when the log holds more than one partition's worth):

1. `plan`: up to a fixed position (the head when the rebuild starts), read the few events that
   decide groups: merges, unmerges and corrections, and the originals the corrections name.
   From them the merge edges (`archive.merge_edges`, so who is merged into whom is decided as
   the archive code decides it) and, for each corrected family, every key its members go to.
2. `spill`: read the log once in the global order up to that position and append each row, as
   the raw columns of the ordered scan (msgpack), to the spill file of every partition that
   holds a group it concerns: the partition of a key is crc32 of its group's root (`share_of`),
   and a family goes wherever any of its members' keys go.
3. The rebuild then folds each partition's file into a fresh book, derives the archives whose
   root is the partition's and writes them with the facts the partition owns (the share rule of
   `rebuild._write_share`: a fact is written by the partition of the lowest root its family
   reaches), and lets the book go before the next.

Peak memory is one partition's book (`partitions_for` sizes them to about `PARTITION_EVENTS`
events), the write buffers of the spill, and the maps of step 1 (merges and corrected families:
about a percent of the log). The spill takes about the log's raw size on local disk (the system's
temporary directory, or `SHOUWANG_REBUILD_SPILL_DIR`) while the rebuild runs and is deleted after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from projections.archive import Entry, MergeEdge, keys_of, merge_edges, roots
from projections.source import SCAN_COLS, entries_of
from store.conn import Conn
from store.postgres import ORIGIN, Position

PARTITION_EVENTS = 250_000
"""About this many events per partition: at ~1.4 KB an event folded, a partition's book is
~350 MB, whatever the log's size."""
_DECIDING_TYPES = ["ArchivesMerged", "ArchivesUnmerged", "EventCorrected"]  # as archive.MERGE_TYPES
_FLUSH_ROWS = 256  # rows buffered per partition before they are appended to its file


def share_of(key: str, shares: int) -> int:
    """The partition (or forked share) of an archive group, by its root's id."""
    return zlib.crc32(key.encode()) % shares


def partitions_for(events: int, per_partition: int = PARTITION_EVENTS) -> int:
    return max(1, math.ceil(events / per_partition))


class Plan(msgspec.Struct):
    """What routing a row needs, decided before the log is read (step 1)."""

    upto: Position
    parts: int
    edges: list[MergeEdge]
    root_of: dict[str, str]
    family: dict[str, str]  # a correction's id -> its family (the id it corrects)
    family_keys: dict[str, tuple[str, ...]]  # a corrected family -> every key its members go to

    def partitions(self, event_id: str, children: Sequence[str]) -> set[int]:
        fam = self.family.get(event_id, event_id)
        keys = self.family_keys.get(fam)
        if keys is None:
            keys = tuple(children) if children else (f"ev:{event_id}",)
        root = self.root_of.get
        return {share_of(root(k, k), self.parts) for k in keys}


_HEAD = """SELECT tx_id, position FROM events WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
            ORDER BY tx_id DESC, position DESC LIMIT 1"""
_COUNT = "SELECT count(*) FROM events WHERE (tx_id, position) <= ($1, $2)"
_DECIDING = f"""SELECT {SCAN_COLS} FROM events
                 WHERE type = ANY($3::text[]) AND (tx_id, position) <= ($1, $2)"""
_ORIGINALS = f"""SELECT {SCAN_COLS} FROM events
                  WHERE event_id = ANY($3::uuid[]) AND (tx_id, position) <= ($1, $2)"""
_ROUTE = f"""SELECT {SCAN_COLS}, children FROM events
              WHERE (tx_id, position) > ($1, $2) AND (tx_id, position) <= ($3, $4)
              ORDER BY tx_id, position LIMIT $5"""


async def head(conn: Conn) -> tuple[Position, int]:
    """The last position every reader sees now (below the horizon: nothing can commit before
    it any more) and how many events lie up to it."""
    row = await conn.fetchrow(_HEAD)
    if row is None:
        return ORIGIN, 0
    upto = Position(row["tx_id"], row["position"])
    return upto, int(await conn.fetchval(_COUNT, upto.tx, upto.pos))


async def plan(conn: Conn, upto: Position, parts: int) -> Plan:
    """Step 1: the merge edges and the corrected families up to `upto`."""
    deciding = [e for _, e in entries_of(await conn.fetch(_DECIDING, upto.tx, upto.pos, _DECIDING_TYPES))[0]
                if e is not None]
    edges = merge_edges(deciding)
    family: dict[str, str] = {}
    keys: dict[str, set[str]] = {}
    for e in deciding:
        target = getattr(e.care, "corrected_event_id", None)
        if e.type == "EventCorrected" and target is not None:
            family[e.event_id] = target
            keys.setdefault(target, set()).update(keys_of(e.care, e.event_id))
    if keys:
        originals = await conn.fetch(_ORIGINALS, upto.tx, upto.pos, sorted(keys))
        for eid, entry in entries_of(originals)[0]:
            if entry is not None:
                keys[eid].update(keys_of(entry.care, eid))
    return Plan(upto=upto, parts=parts, edges=edges, root_of=roots(edges), family=family,
                family_keys={fam: tuple(sorted(ks)) for fam, ks in keys.items()})


_encode = msgspec.msgpack.Encoder().encode
_decode_rows = msgspec.msgpack.Decoder(list[tuple[int, int, None, str, str, int, str, int, str, dt.datetime,
                                                  int, bytes | None, bytes, bool]]).decode


class Spilled(msgspec.Struct, frozen=True):
    events: int
    skipped: int  # not understood by this code (counted once, in partition 0)
    last_committed_at: dt.datetime | None
    written: int  # rows written over all partitions (an event of several partitions counts in each)


class _Files:
    """The partitions' spill files and their write buffers (rows go out in chunks of _FLUSH_ROWS,
    each a length-prefixed msgpack list)."""

    def __init__(self, directory: Path, parts: int) -> None:
        self.files: list[IO[bytes]] = [open(directory / f"{i}.part", "wb") for i in range(parts)]  # noqa: SIM115
        self.buffers: list[list[tuple[object, ...]]] = [[] for _ in range(parts)]

    def add(self, part: int, row: tuple[object, ...]) -> None:
        buf = self.buffers[part]
        buf.append(row)
        if len(buf) >= _FLUSH_ROWS:
            self.flush(part)

    def flush(self, part: int) -> None:
        data = _encode(self.buffers[part])
        self.files[part].write(len(data).to_bytes(4, "little"))
        self.files[part].write(data)
        self.buffers[part].clear()

    def flush_all(self) -> None:
        for part, buf in enumerate(self.buffers):
            if buf:
                self.flush(part)

    def close(self) -> None:
        for f in self.files:
            f.close()


async def spill(conn: Conn, p: Plan, directory: Path, page: int = 5000,
                progress: object = None) -> Spilled:
    """Step 2: the log up to `p.upto`, read once in the global order, each row appended to the
    file of every partition it concerns."""
    files = _Files(directory, p.parts)
    n = skipped = written = 0
    last: Position = ORIGIN
    last_committed: dt.datetime | None = None

    def fetch(after: Position) -> asyncio.Task[list[Any]]:
        return asyncio.ensure_future(conn.fetch(_ROUTE, after.tx, after.pos, p.upto.tx, p.upto.pos, page))

    nxt = fetch(ORIGIN)
    try:
        while rows := await nxt:
            tail = rows[-1]
            last, last_committed = Position(tail["tx_id"], tail["position"]), tail["committed_at"]
            nxt = fetch(last)  # PostgreSQL reads the next page while this one is routed
            for r in rows:
                row = tuple(r)
                # what entries_of reads, without the position columns (only the last row's are kept)
                scan, children = (0, 0, None, *row[3:14]), row[14]
                if not row[13]:  # not understood: folded nowhere, counted once
                    skipped += 1
                    files.add(0, scan)
                    written += 1
                    continue
                targets = p.partitions(row[3], children)
                for i in targets:
                    files.add(i, scan)
                written += len(targets)
            n += len(rows)
            if callable(progress):
                progress(n)
        files.flush_all()
    finally:
        if not nxt.done():
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
        files.close()
    return Spilled(events=n, skipped=skipped, last_committed_at=last_committed, written=written)


def read(directory: Path, part: int, upcast: list[str]) -> Iterator[list[tuple[str, Entry | None]]]:
    """Step 3's input: the entries of one partition's rows, chunk by chunk; the ids of those read
    through an upcaster are added to `upcast`."""
    with open(directory / f"{part}.part", "rb") as f:
        while header := f.read(4):
            rows = _decode_rows(f.read(int.from_bytes(header, "little")))
            entries, up = entries_of(rows)
            upcast.extend(up)
            yield entries
