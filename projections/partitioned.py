"""A rebuild's fold by partitions of archives, so that its memory is bounded by a partition, not
by the log.

Why: folding the whole log at once holds every event's entry until the end (a correction or a
merge can reach back anywhere in a child's history): about 1.4 KB per event, 1.4 GB at 1M
events, tens of GB for a province's year. But an archive depends only on its group's events
(the child, the children merged into it, whole correction families), and the fold is
order-free (guarantee 6: a state is the set of its events), so the log can be folded one set of
groups at a time.

How (`projections.rebuild` drives it when the log holds more than one partition's worth):

0. `tally`: how many events name 0, 1, 2... children and their payloads' bytes. A partition is
   a range of the hash of a group's root (`hash32`, the first 32 bits of the md5 of the key);
   an event naming k children is folded in every partition
   one of them is in, so partitions are sized in the rows they will receive, weighted by size
   (`bounds_for_rows`, `rows_in`): the largest holds about `PARTITION_EVENTS` rows of the log's
   mean size whatever the log's size or how many children its events name.
1. `plan`: up to a fixed position (the head when the rebuild starts), read the few events that
   decide groups: merges, unmerges and corrections, and the originals the corrections name.
   From them the merge edges (`archive.merge_edges`, so who is merged into whom is decided as
   the archive code decides it) and, for each corrected family, every key its members go to.
2. `split` and `spill`: the log up to the position, cut into as many consecutive ranges as there
   are processes, each read once in the log's order (the index's: no sort anywhere) by a process
   of its own, which routes every understood row to the partitions of its groups (`Plan.router`:
   the partition of a key is its group root's, `Plan.part_of`; a corrected family goes wherever
   any of its members' keys go; an event about children of several partitions goes to each) and
   appends it to that partition's file of its range in a temporary directory (a page's rows of a
   partition as one msgpack `Chunk`: the rows in the columns `entries_of` reads, the events
   whose fact another partition writes, `Plan.owner`, so each fact is computed once, and the
   events routed by their correction family). The position is below the horizon, so the ranges
   read exactly the log up to it, whatever commits meanwhile. Steps 0 to 2's reads of the log
   before the spill run at once, on connections of their own.
3. Each process then folds every `shares`-th partition from the files of all ranges, in range
   order (so in the log's order), into a fresh book holding states of the partition's own keys
   only (`Plan.keeper`: an event naming children of other partitions too is not kept in a state
   for each of them; a row routed by its children is here for a child of the partition, so only
   the family-routed rows' keys are checked: `fold_partition`), derives the archives whose root
   is the partition's and writes them with the facts the partition owns (the share rule of
   `rebuild._write_share`: a fact is written by the partition of the lowest root its family
   reaches, as marked in step 2), and lets the book go before the next.

Peak memory is one partition's book, a chunk of a file, and the maps of step 1 (merges and
corrected families: about a percent of the log, emptied before the fold); while spilling, a
page of rows. The files hold about the routed rows' raw size
(~300 bytes a row in the bench's world) on local disk while the rebuild runs, and are removed
after it, also when it fails.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from projections.archive import ArchiveBook, MergeEdge, keys_of, merge_edges, roots
from projections.source import SCAN_COLS, entries_of
from store.conn import Conn
from store.postgres import ORIGIN, Position

PARTITION_EVENTS = 250_000
"""At most about this many rows of the log's mean size per partition (`bounds_for_rows`): a
partition's book is a few hundred MB, whatever the log's size."""
_DECIDING_TYPES = ["ArchivesMerged", "ArchivesUnmerged", "EventCorrected"]  # as archive.MERGE_TYPES


def share_of(key: str, shares: int) -> int:
    """The forked share of an archive group (a fold at once's derive), by its root's id: the
    first 32 bits of the key's md5 as an unsigned number (`hash32`), modulo `shares`."""
    return hash32(key) % shares


def hash32(key: str) -> int:
    """The first 32 bits of the key's md5 as an unsigned number."""
    return int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest()[:4], "big")


_SPACE = 1 << 32  # hash32's values


def partitions_for(events: int, per_partition: int = PARTITION_EVENTS) -> int:
    return max(1, math.ceil(events / per_partition))


ROW_OVERHEAD = 100
"""Bytes a folded row holds besides its payload, in units of the payload's stored size: a row's
book entry measured ~3.3 bytes per byte of payload plus ~180 (tutoring 1.3 KB, activity 3.4 KB,
home visit 0.7 KB), and its key slots ~150 more; so a row weighs its payload plus about 100."""


def rows_in(by_children: Mapping[int, tuple[int, int]], width: float, sized: bool = True) -> float:
    """How many rows a partition owning `width` of the hash space is expected to receive, from
    the events (count, payload bytes) naming each number of children (`Tally.by_children`): an
    event naming k children is in it when one of their groups is, 1 - (1 - width)^k; one naming
    none with the width. `sized`: in rows of the log's mean size (a row weighs its payload plus
    `ROW_OVERHEAD`), so that a budget of rows is the same memory whatever the log's mix: an
    activity naming 21 children is a big row, and a partition of a bigger log holds more of
    them. Merges and corrections are left out (a percent of the log)."""
    events = sum(n for n, _ in by_children.values())
    size = sum(b for _, b in by_children.values())
    mean = ROW_OVERHEAD + size / events if events else 1.0
    return sum((ROW_OVERHEAD + b / n) / mean * n * (1 - (1 - width) ** k if k else width) if sized
               else n * (1 - (1 - width) ** k if k else width)
               for k, (n, b) in by_children.items() if n)


def equal_bounds(parts: int) -> list[int]:
    """The bounds of `parts` partitions of equal width."""
    return [math.ceil(i * _SPACE / parts) for i in range(1, parts)]


def bounds_for_rows(by_children: Mapping[int, tuple[int, int]], per_partition: int = PARTITION_EVENTS, shares: int = 1
                    ) -> list[int]:
    """Partitions (as the bounds of their ranges of `hash32`, `Plan.bounds`) that each receive
    at most about `per_partition` rows, whatever the log's size: an event naming k children is
    folded in every partition one of them is in, so a partition counted in events holds more
    rows the more partitions there are (250,000 events made 280k rows at 1M events, 320k at 3M
    in the bench's world). The widest width w with `rows_in(w)` <= per_partition is found; all
    partitions but the last `shares` get it, and those share the rest equally, so the count is a
    multiple of `shares` and each share gets as many rows (partitions go to shares in turn).
    Rows are counted by their size (`rows_in`): the budget is in rows of the log's mean size."""
    if rows_in(by_children, 1.0) <= per_partition:
        return []
    low, high = 0.0, 1.0  # rows_in(low) <= per_partition < rows_in(high)
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if rows_in(by_children, mid) <= per_partition else (low, mid)
    width = low
    parts = math.ceil(1 / width) if width > 0 else shares
    parts = max(shares, math.ceil(parts / shares) * shares)
    full = parts - shares
    rest = (1 - full * width) / shares
    edges = [width * i for i in range(1, full + 1)] + [full * width + rest * i for i in range(1, shares)]
    return sorted({min(_SPACE - 1, max(1, round(e * _SPACE))) for e in edges})


class _Keeper(dict[str, bool]):
    """`Plan.keeper`: whether a key is partition `part`'s, computed the first time it is asked."""

    def __init__(self, part_of: Callable[[str], int], part: int) -> None:
        super().__init__()
        self.part_of = part_of
        self.part = part

    def __missing__(self, key: str) -> bool:
        mine = self[key] = self.part_of(key) == self.part
        return mine


class Plan(msgspec.Struct):
    """What routing a row needs, decided before the log is read (step 1)."""

    upto: Position
    bounds: list[int]  # a key's partition is the number of bounds at or below its root's hash32
    edges: list[MergeEdge]
    root_of: dict[str, str]
    family: dict[str, str]  # a correction's id -> its family (the id it corrects)
    family_keys: dict[str, tuple[str, ...]]  # a corrected family -> every key its members go to

    @property
    def parts(self) -> int:
        return len(self.bounds) + 1

    def part_of(self, key: str) -> int:
        """The partition of a key's group (its root's)."""
        return bisect.bisect_right(self.bounds, hash32(self.root_of.get(key, key)))

    def partitions(self, event_id: str, children: Sequence[str]) -> set[int]:
        fam = self.family.get(event_id, event_id)
        keys = self.family_keys.get(fam)
        if keys is None:
            keys = tuple(children) if children else (f"ev:{event_id}",)
        return {self.part_of(k) for k in keys}

    def keeper(self, part: int) -> Callable[[str], bool]:
        """Whether a key's group is partition `part`'s (a partition's `ArchiveBook(keep=...)`),
        remembered per key: a dict's own look-up, so a key seen before costs no Python call."""
        return _Keeper(self.part_of, part).__getitem__

    def owner(self, keys: Iterable[str]) -> int:
        """The partition that writes the fact of an event whose family goes to these keys: the
        lowest root's (the share rule of `rebuild._write_share`)."""
        root = self.root_of.get
        return self.part_of(min(root(k, k) for k in keys))

    def router(self) -> Callable[[str, str], tuple[int, ...]]:
        """`partitions` as a function for the spill's hot loop, of an event id and its children
        separated by spaces (child ids have none: `events.types.ChildId`; a text decodes much
        faster than an array), as a tuple of partitions, the one that writes the event's fact
        first (`owner`): corrected families' members looked up, each child's partition computed
        once."""
        member, _, by_children = self.routes()

        def route(event_id: str, children: str) -> tuple[int, ...]:
            parts = member.get(event_id)
            return parts if parts is not None else by_children(event_id, children)

        return route

    def routes(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]],
                              Callable[[str, str], tuple[int, ...]]]:
        """`router` in its two parts, for the spill, which marks the rows routed by their
        correction family (their keys are checked in the fold: `ArchiveBook.fold`) apart from
        those routed by their children (`ArchiveBook.fold_own`): the partitions of the members of
        corrected families (originals and corrections, by id); those of the children and of the
        texts of children seen so far (the route's memory, for a look-up without a call); and the
        route of any other event by its children."""
        part_of = self.part_of

        def ordered(parts: set[int], owner: int) -> tuple[int, ...]:
            return (owner, *sorted(parts - {owner}))

        fam_parts = {fam: ordered({part_of(k) for k in keys}, self.owner(keys))
                     for fam, keys in self.family_keys.items()}
        member = dict(fam_parts)  # an original, by its id
        member.update((eid, fam_parts[fam]) for eid, fam in self.family.items() if fam in fam_parts)  # corrections
        one: dict[str, tuple[int, ...]] = {}  # child -> (its group's partition,)

        def by_children(event_id: str, children: str) -> tuple[int, ...]:
            parts = one.get(children)
            if parts is not None:
                return parts
            if not children:
                return (part_of(f"ev:{event_id}"),)
            if " " not in children:
                parts = one[children] = (part_of(children),)
                return parts
            keys = children.split(" ")
            several = set()
            for k in keys:
                p = one.get(k)
                if p is None:
                    p = one[k] = (part_of(k),)
                several.add(p[0])
            return (several.pop(),) if len(several) == 1 else ordered(several, self.owner(keys))

        return member, one, by_children


_HEAD = """SELECT tx_id, position FROM events WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
            ORDER BY tx_id DESC, position DESC LIMIT 1"""
_COUNT = "SELECT count(*) FROM events WHERE (tx_id, position) <= ($1, $2)"
_DECIDING = f"""SELECT {SCAN_COLS} FROM events
                 WHERE type = ANY($3::text[]) AND (tx_id, position) <= ($1, $2)"""
_ORIGINALS = f"""SELECT {SCAN_COLS} FROM events
                  WHERE event_id = ANY($3::uuid[]) AND (tx_id, position) <= ($1, $2)"""
_TALLY = """SELECT cardinality(children) AS k, count(*) FILTER (WHERE understood) AS understood,
                   coalesce(sum(pg_column_size(payload)) FILTER (WHERE understood), 0) AS bytes,
                   count(*) FILTER (WHERE NOT understood) AS skipped,
                   max(committed_at) FILTER (WHERE (tx_id, position) = ($1, $2)) AS last_committed_at
              FROM events WHERE (tx_id, position) <= ($1, $2) GROUP BY 1"""
_SPILL = f"""SELECT 0, 0, NULL::timestamptz, {SCAN_COLS.split(", ", 3)[3]}, array_to_string(children, ' '), tx_id,
                     position
                FROM events
               WHERE (tx_id, position) > ($1, $2) AND (tx_id, position) <= ($3, $4) AND understood
               ORDER BY tx_id, position LIMIT $5"""
"""A page of the understood rows of a range of the log, in its order (the index's): the columns
`entries_of` reads (its first three, the row's place and commit time, it does not read: zeros
here), then the children the row is routed by and its place."""
_SPLIT = """SELECT tx_id, position FROM events WHERE (tx_id, position) <= ($1, $2)
             ORDER BY tx_id, position OFFSET $3 LIMIT 1"""


async def head(conn: Conn) -> tuple[Position, int]:
    """The last position every reader sees now (below the horizon: nothing can commit before
    it any more) and how many events lie up to it."""
    row = await conn.fetchrow(_HEAD)
    if row is None:
        return ORIGIN, 0
    upto = Position(row["tx_id"], row["position"])
    return upto, int(await conn.fetchval(_COUNT, upto.tx, upto.pos))


async def plan(conn: Conn, upto: Position, bounds: int | list[int]) -> Plan:
    """Step 1: the merge edges and the corrected families up to `upto`; `bounds`, the partitions'
    (`Plan.bounds`), or their number for partitions of equal width."""
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
    return Plan(upto=upto, bounds=equal_bounds(bounds) if isinstance(bounds, int) else bounds, edges=edges,
                root_of=roots(edges), family=family,
                family_keys={fam: tuple(sorted(ks)) for fam, ks in keys.items()})




class Tally(msgspec.Struct, frozen=True):
    skipped: int  # not understood by this code: folded nowhere
    last_committed_at: dt.datetime | None  # of the event at the plan's position
    by_children: dict[int, tuple[int, int]] = {}  # children named -> (understood events, their payloads' bytes)


async def tally(conn: Conn, upto: Position) -> Tally:
    rows = await conn.fetch(_TALLY, upto.tx, upto.pos)
    last = [r["last_committed_at"] for r in rows if r["last_committed_at"] is not None]
    return Tally(skipped=sum(int(r["skipped"]) for r in rows), last_committed_at=last[0] if last else None,
                 by_children={int(r["k"]): (int(r["understood"]), int(r["bytes"])) for r in rows if r["understood"]})


async def split(conn: Conn, upto: Position, total: int, ranges: int) -> list[tuple[Position, Position]]:
    """The log up to `upto` (`total` events) cut into `ranges` consecutive ranges (after, upto]
    of about as many events each, for as many processes to spill."""
    cuts = [ORIGIN]
    for i in range(1, ranges):
        row = await conn.fetchrow(_SPLIT, upto.tx, upto.pos, total * i // ranges - 1) if total * i // ranges else None
        if row is not None and Position(row["tx_id"], row["position"]) > cuts[-1]:
            cuts.append(Position(row["tx_id"], row["position"]))
    cuts.append(upto)
    return list(itertools.pairwise(cuts))


class Chunk(msgspec.Struct, array_like=True):
    """A page's rows of one partition, as `spill` writes them and `read_partition` reads them:
    the rows in the log's order, in the columns `entries_of` reads; the events whose fact
    another partition writes (`Plan.owner`, so each fact is computed once); the events routed
    here by their correction family, whose keys the fold checks (`ArchiveBook.fold`): any other
    row is here for a child of this partition (`ArchiveBook.fold_own`)."""

    rows: list[tuple[int, int, None, str, str, int, str, int, str, dt.datetime, int, bytes | None, bytes, bool]]
    others: list[str]
    checked: list[str]


_encode_chunk = msgspec.msgpack.Encoder().encode
_decode_chunk = msgspec.msgpack.Decoder(Chunk).decode


def _spill_file(directory: Path, part: int, spiller: int) -> Path:
    return directory / f"{part:05d}.{spiller:03d}.rows"


async def spill(conn: Conn, p: Plan, after: Position, upto: Position, directory: Path, spiller: int,
                page: int = 5000, progress: Callable[[int], None] | None = None) -> int:
    """Step 2: the understood rows of the log in (after, upto], read in its order, each appended
    to the file of every partition that holds a group it concerns (`Plan.partitions`) as
    spiller `spiller`: a page's rows of a partition are one chunk (its length, then a `Chunk` in
    msgpack). `read_partition` reads the spillers' files in their order, so ranges spilled in
    the log's order are read back in it. Returns the rows written (an event of several
    partitions counts in each)."""
    member, one, by_children = p.routes()
    family, known = member.get, one.get
    files: dict[int, BinaryIO] = {}
    written = n = 0

    def fetch(start: Position) -> asyncio.Task[list[Any]]:
        return asyncio.ensure_future(conn.fetch(_SPILL, start.tx, start.pos, upto.tx, upto.pos, page))

    nxt = fetch(after)
    try:
        while rows := await nxt:
            nxt = fetch(Position(rows[-1][15], rows[-1][16]))  # read while this one is routed
            by_part: dict[int, Chunk] = {}
            chunk_of = by_part.get
            for r in rows:
                eid = r[3]
                fam = family(eid)
                if fam is None:
                    children = r[14]
                    parts = known(children) or by_children(eid, children)
                    if len(parts) == 1:  # most rows: one partition, which writes the fact
                        out = chunk_of(parts[0])
                        if out is None:
                            out = by_part[parts[0]] = Chunk([], [], [])
                        out.rows.append(r[:14])
                        continue
                else:
                    parts = fam
                row = r[:14]
                first = parts[0]
                for part in parts:
                    out = chunk_of(part)
                    if out is None:
                        out = by_part[part] = Chunk([], [], [])
                    out.rows.append(row)
                    if part != first:  # not the partition that writes its fact
                        out.others.append(eid)
                    if fam is not None:
                        out.checked.append(eid)
            written += _append(files, directory, spiller, by_part)
            n += len(rows)
            if progress is not None:
                progress(n)
    finally:
        if not nxt.done():
            nxt.cancel()
        await asyncio.gather(nxt, return_exceptions=True)
        for f in files.values():
            f.close()
    return written


def _append(files: dict[int, BinaryIO], directory: Path, spiller: int, by_part: dict[int, Chunk]) -> int:
    """Append each partition's rows of a page to its file as one chunk; returns the rows."""
    written = 0
    for part, out in by_part.items():
        f = files.get(part)
        if f is None:
            f = files[part] = open(_spill_file(directory, part, spiller), "wb")  # noqa: SIM115
        chunk = _encode_chunk(out)
        f.write(len(chunk).to_bytes(4, "little"))
        f.write(chunk)
        written += len(out.rows)
    return written


def read_partition(directory: Path, part: int, spillers: int) -> Iterator[Chunk]:
    """Step 3's input: a partition's rows as `spill` wrote them, chunk by chunk, spiller after
    spiller (in the log's order when the spillers' ranges are)."""
    for spiller in range(spillers):
        try:
            f = open(_spill_file(directory, part, spiller), "rb")  # noqa: SIM115
        except FileNotFoundError:  # no rows of this partition in that range
            continue
        with f:
            while header := f.read(4):
                yield _decode_chunk(f.read(int.from_bytes(header, "little")))


class Folded(msgspec.Struct):
    """What folding a partition's rows leaves besides its book."""

    rows: int = 0  # an event of several partitions counts in each
    others: set[str] = msgspec.field(default_factory=set)  # events whose facts another partition writes
    upcast: set[str] = msgspec.field(default_factory=set)  # read through an upcaster: their facts are Python's


def fold_partition(book: ArchiveBook, directory: Path, part: int, spillers: int) -> Folded:
    """Step 3's fold: a partition's rows from its files into `book` (`ArchiveBook(keep=...)`):
    a row routed here by its correction family through `fold`, which checks its keys, any other
    (here for a child of this partition) through `fold_own`."""
    out = Folded()
    fold, own = book.fold, book.fold_own
    for chunk in read_partition(directory, part, spillers):
        entries, up = entries_of(chunk.rows)
        if up:
            out.upcast.update(up)
        if chunk.checked:
            check = set(chunk.checked)
            for eid, entry in entries:
                if entry is not None:
                    (fold if eid in check else own)(entry)
        else:
            for _, entry in entries:
                if entry is not None:
                    own(entry)
        out.others.update(chunk.others)
        out.rows += len(entries)
    return out
