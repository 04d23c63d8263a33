"""The log's partitions (migration 0024): `events` by region, each region by month in China time,
with a DEFAULT partition at each level so that an append never waits for, or fails on, a
partition that does not exist yet.

`ensure` is the maintenance step (`shouwang_event_partitions`, SECURITY DEFINER, so the service
role may run it): a partition for every region of the registry and of the top-level default,
this month and `ahead` more of every region, and any rows in a default partition moved into
the partition made for them, every column kept. `center run` runs it at start and daily,
registering a site of a region that has no partition yet runs it then (service/sites.py), and
`shouwang db partitions --ensure` runs it by hand. Two callers at once serialize on an advisory
lock; a call that cannot take a table lock within two seconds (a long reader holds the default
partition) fails alone, and the next call does the work: rows wait in the default meanwhile.

`partitions` lists every partition holding rows (the leaves) with its exact row count and its
size on disk, table and indexes.
"""

from __future__ import annotations

import msgspec

from store.conn import Conn

DEFAULT_AHEAD = 2  # months created ahead of the current one
MAX_AHEAD = 120


class Partition(msgspec.Struct, frozen=True):
    """One leaf partition of `events`."""

    name: str
    region: str | None  # None: the top-level default (regions that have no partition yet)
    month: str | None  # "2026-01" (China time); None: the region's default
    rows: int
    bytes: int  # table, indexes and TOAST (pg_total_relation_size)


async def ensure(conn: Conn, ahead: int = DEFAULT_AHEAD) -> int:
    """Create the partitions that are missing (see the module); returns how many were created."""
    if not 0 <= ahead <= MAX_AHEAD:
        raise ValueError(f"months ahead must be 0 to {MAX_AHEAD}, got {ahead}")
    return int(await conn.fetchval("SELECT shouwang_event_partitions($1)", ahead))


_HAS_REGION = r"""
SELECT EXISTS (
    SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'public.events'::regclass AND c.relkind = 'p'
       AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%L)', $1::text))
"""


async def has_region(conn: Conn, region: str) -> bool:
    """Whether `region` has its partition of `events` (else its rows wait in the top-level default)."""
    return bool(await conn.fetchval(_HAS_REGION, region))


_LEAVES = r"""
SELECT c.relname::text AS name,
       CASE WHEN p.oid = 'public.events'::regclass THEN NULL
            ELSE replace((regexp_match(pg_get_expr(p.relpartbound, p.oid), $re$^FOR VALUES IN \('(.*)'\)$$re$))[1],
                         '''''', '''') END AS region,
       to_char((regexp_match(pg_get_expr(c.relpartbound, c.oid),
                             $re$^FOR VALUES FROM \('([^']*)'\)$re$))[1]::timestamptz AT TIME ZONE 'Asia/Shanghai',
               'YYYY-MM') AS month,
       pg_total_relation_size(c.oid) AS bytes
  FROM pg_partition_tree('public.events') AS t
  JOIN pg_class c ON c.oid = t.relid
  JOIN pg_class p ON p.oid = t.parentrelid
 WHERE t.isleaf
 ORDER BY 2 NULLS FIRST, 3 NULLS LAST, 1
"""


async def partitions(conn: Conn) -> list[Partition]:
    """Every leaf partition of `events`: region, month, exact rows and bytes on disk."""
    # Counted through `events` (the service role holds nothing on a partition itself): one scan.
    counts = {str(r[0]): int(r[1]) for r in await conn.fetch(
        "SELECT tableoid::regclass::text, count(*) FROM public.events GROUP BY 1")}
    return [Partition(r["name"], r["region"], r["month"], counts.get(r["name"], 0), int(r["bytes"]))
            for r in await conn.fetch(_LEAVES)]
