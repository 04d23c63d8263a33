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
   a range of the hash of a group's root (`hash32`, the first 32 bits of the md5 of the key,
   the same in PostgreSQL and Python); an event naming k children is folded in every partition
   one of them is in, so partitions are sized in the rows they will receive, weighted by size
   (`bounds_for_rows`, `rows_in`): the largest holds about `PARTITION_EVENTS` rows of the log's
   mean size whatever the log's size or how many children its events name.
1. `plan`: up to a fixed position (the head when the rebuild starts), read the few events that
   decide groups: merges, unmerges and corrections, and the originals the corrections name.
   From them the merge edges (`archive.merge_edges`, so who is merged into whom is decided as
   the archive code decides it) and, for each corrected family, every key its members go to.
2. `partition_rows`: PostgreSQL hands the rows over partition by partition. The partition of a
   key is its group root's (`Plan.part_of`); the plan's exceptions (children merged into another
   root, members of corrected families) go to the reading session as two small temporary
   tables. One query per reading process routes every row of the log up to the position to the
   partitions of its groups (an event about children of several partitions goes to each) and
   returns them ordered by partition, then in the global order: PostgreSQL's sort spills to its
   own temporary files, not this process's memory, and every row is decoded once, here.
3. The rebuild folds each partition's rows into a fresh book as they arrive, holding states of
   the partition's own keys only (`Plan.keeper`: an event naming children of other partitions
   too is not kept in a state for each of them), derives the archives whose root is the
   partition's and writes them with the facts the partition owns (the share rule of
   `rebuild._write_share`: a fact is written by the partition of the lowest root its family
   reaches), and lets the book go before the next partition's rows are folded.

Peak memory is one partition's book, a page of rows, and the maps of step 1 (merges and
corrected families: about a percent of the log). PostgreSQL's sort takes about the routed rows'
size on the server's temporary space while the query runs.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import hashlib
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import msgspec

from projections.archive import MergeEdge, keys_of, merge_edges, roots
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
    """The first 32 bits of the key's md5 as an unsigned number (`_hash32_sql` is the same in SQL)."""
    return int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest()[:4], "big")


def _hash32_sql(key: str) -> str:
    """`hash32` in SQL, of the text expression `key`."""
    return f"(('x' || left(md5({key}), 8))::bit(32)::bigint)"


def _part_sql(key: str, bounds: str) -> str:
    """`Plan.part_of` in SQL, of the text expression `key` and the bigint[] expression `bounds`."""
    return f"width_bucket({_hash32_sql(key)}, {bounds})"


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
        """The partition of a key's group (its root's), as `_part_sql` computes it in SQL."""
        return bisect.bisect_right(self.bounds, hash32(self.root_of.get(key, key)))

    def partitions(self, event_id: str, children: Sequence[str]) -> set[int]:
        fam = self.family.get(event_id, event_id)
        keys = self.family_keys.get(fam)
        if keys is None:
            keys = tuple(children) if children else (f"ev:{event_id}",)
        return {self.part_of(k) for k in keys}

    def keeper(self, part: int) -> Callable[[str], bool]:
        """Whether a key's group is partition `part`'s (a partition's `ArchiveBook(keep=...)`),
        remembered per key."""
        seen: dict[str, bool] = {}
        part_of = self.part_of

        def keep(key: str) -> bool:
            mine = seen.get(key)
            if mine is None:
                mine = seen[key] = part_of(key) == part
            return mine

        return keep

    def exceptions(self) -> tuple[list[tuple[str, list[int]]], list[tuple[str, int]]]:
        """What `partitions` does not read from an event's own row, as rows of the reading
        session's temporary tables: (event id, its partitions) for every member of a corrected
        family, (child id, partition of its root) for every merged child."""
        fam_parts = {fam: sorted({self.part_of(k) for k in keys}) for fam, keys in self.family_keys.items()}
        family = [(eid, fam_parts[fam]) for eid in sorted(fam_parts.keys() | self.family.keys())
                  if (fam := self.family.get(eid, eid)) in fam_parts]
        moved = [(child, self.part_of(child)) for child in self.root_of]
        return family, moved


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
# The columns entries_of reads, after the partition (in the place of tx_id; position and
# committed_at are not read there, so they are not sent).
_ROUTED_COLS = "r.part, 0, NULL::timestamptz, " + SCAN_COLS.split(", ", 3)[3]
SORT_MEMORY = "256MB"  # work_mem of the routing query: PostgreSQL sorts up to this in memory, then on disk
_BOUNDS = "$3::bigint[]"
_ROUTE = f"""SELECT {_ROUTED_COLS} FROM (
    SELECT unnest(CASE WHEN f.parts IS NOT NULL THEN f.parts
                       WHEN cardinality(e.children) = 0 THEN ARRAY[{_part_sql("'ev:' || e.event_id::text", _BOUNDS)}]
                       WHEN cardinality(e.children) = 1
                         THEN ARRAY[coalesce(m.part, {_part_sql("e.children[1]", _BOUNDS)})]
                       ELSE ARRAY(SELECT DISTINCT coalesce((SELECT o.part FROM rebuild_moved o WHERE o.child = k),
                                                           {_part_sql("k", _BOUNDS)})
                                    FROM unnest(e.children) AS k) END) AS part, e.*
      FROM events e
      LEFT JOIN rebuild_family f ON f.event_id = e.event_id
      LEFT JOIN rebuild_moved m ON m.child = e.children[1]
     WHERE e.understood AND (e.tx_id, e.position) <= ($1, $2)) r
 WHERE r.part % $4 = $5
 ORDER BY r.part, r.tx_id, r.position"""
"""Every understood row up to ($1, $2) once per partition of its groups (bounds $3), for the partitions
of share $5 of $4, in the order of partitions, then of the log: `Plan.partitions` in SQL."""


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


async def partition_rows(conn: Conn, p: Plan, share: int = 0, shares: int = 1, page: int = 5000,
                         forget: bool = False) -> AsyncIterator[tuple[int, list[Any]]]:
    """Step 2: the rows of the partitions of this share (every `shares`-th from `share`), as
    (partition, rows) in the order of partitions, a partition's rows in the log's order and
    possibly over several pages; each row in `source.SCAN_COLS`' order as `entries_of` reads it
    (the first column is the partition). The next page is read while the caller works on this
    one. Uses `conn` in a transaction of its own (its temporary tables go with it). `forget`:
    empty the plan's maps of corrected families once they are in the session's tables (nothing
    after needs them, and they grow with the log: 14 MiB at 1M events, 42 MiB at 3M)."""
    family, moved = p.exceptions()
    if forget:
        p.family, p.family_keys = {}, {}
    async with conn.transaction():
        await conn.execute(f"""SET LOCAL work_mem = '{SORT_MEMORY}'; SET LOCAL jit = off;
                               CREATE TEMPORARY TABLE rebuild_family (event_id uuid PRIMARY KEY, parts int[] NOT NULL)
                                ON COMMIT DROP;
                               CREATE TEMPORARY TABLE rebuild_moved (child text PRIMARY KEY, part int NOT NULL)
                                ON COMMIT DROP""")
        await conn.copy_records_to_table("rebuild_family", records=family)
        await conn.copy_records_to_table("rebuild_moved", records=moved)
        del family, moved
        await conn.execute("ANALYZE rebuild_family; ANALYZE rebuild_moved")
        cursor = await conn.cursor(_ROUTE, p.upto.tx, p.upto.pos, p.bounds, shares, share)
        nxt = asyncio.ensure_future(cursor.fetch(page))
        try:
            while rows := await nxt:
                nxt = asyncio.ensure_future(cursor.fetch(page))  # PostgreSQL sends it while this one is folded
                start = 0
                for i in range(1, len(rows) + 1):
                    if i == len(rows) or rows[i][0] != rows[start][0]:
                        yield rows[start][0], rows[start:i]
                        start = i
        finally:
            if not nxt.done():
                nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
