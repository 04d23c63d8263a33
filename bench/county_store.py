"""The partitioned store at county size (migration 0024): a county of 297 sites (27 townships of
8 villages and 3 schools, one region) whose log covers two school years, committed month by
month over 24 months, at two sizes (default 1M and 5M events; quick: 10k and 40k).

At each size, on a store loaded with the whole log:

1. **append**: EventStore.append of fresh events in batches of 1000 into the store as it is
   (this month's partition), beside raw COPY of the same rows, 1000 per transaction, into one
   plain table of the same columns keyed by event_id (bench/store.py's ceiling);
2. **ordered read**: the whole log through EventStore.read_all (pages of 5000, typed decode),
   beside a raw keyset scan of the same rows in the same order with a generic JSON decode
   (bench/store.py's ceiling), each once;
3. **rebuild**: `projections.rebuild.rebuild` from zero, beside the projections suite's raw
   ordered scan (the mean of one before and one after);
4. **size on disk per event**: every partition of `events` (table, TOAST and indexes) over the
   events stored, beside the heap alone; `event_index` apart.

The load itself commits each event with a committed_at spread evenly over the 24 months in the
log's order (the store's own appends take now()), through COPY into `event_index` and `events`
as the store's COPY path does, without its progress bookkeeping; its rate is reported beside
the append sample's raw COPY. Last, each rate at the larger size beside the same at the smaller.
`SHOUWANG_BENCH_COUNTY_STORE_SIZES=200000,1000000` runs other sizes.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator

import asyncpg

from bench.projections import World, raw_scan
from bench.report import Figure, figure
from bench.servers import fresh_database
from bench.store import _append, _raw_copy, _raw_scan, _store_read
from events import DecodedEvent
from projections.rebuild import rebuild
from runtime.db import create_pool
from store import partitions
from store.postgres import EVENT_COLUMNS, EventStore, event_record

SIZES_ENV = "SHOUWANG_BENCH_COUNTY_STORE_SIZES"
TOWNSHIPS = 27  # of 11 sites each: 297 sites
MONTHS = 24
FIRST = dt.datetime(2024, 9, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))  # China time
LOAD_BATCH = 5000


def _committed_at(i: int, n: int) -> dt.datetime:
    """The i-th of n events in the log's order, committed evenly over MONTHS months."""
    months = i * MONTHS / n
    whole = int(months)
    start = _month(whole)
    return start + (_month(whole + 1) - start) * (months - whole)


def _month(k: int) -> dt.datetime:
    y, m = divmod(FIRST.month - 1 + k, 12)
    return FIRST.replace(year=FIRST.year + y, month=m + 1)


def _log(world: World, n: int) -> Iterator[DecodedEvent]:
    produced = 0
    for d in world.registrations():
        produced += 1
        yield d
    yield from world.work(n - produced)


async def _load(conn: asyncpg.Connection, world: World, n: int) -> tuple[float, int]:
    """The county's log, committed over MONTHS months; returns (events/s, events). Only the
    commits are timed, not the making of the events."""
    spent, done, buf = 0.0, 0, []
    for d in _log(world, n):
        buf.append(d)
        if len(buf) == LOAD_BATCH:
            spent += await _commit(conn, buf, done, n)
            done, buf = done + len(buf), []
    if buf:
        spent += await _commit(conn, buf, done, n)
        done += len(buf)
    return done / spent, done


async def _commit(conn: asyncpg.Connection, batch: list[DecodedEvent], first: int, n: int) -> float:
    at = _committed_at(first, n)  # one transaction, one commit time, as the store's appends
    t = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table(
            "event_index", records=[(d.event.event_id, bytes.fromhex(d.hash)) for d in batch],
            columns=("event_id", "hash"))
        await conn.copy_records_to_table(
            "events", records=[(at, *event_record(d)) for d in batch], columns=("committed_at", *EVENT_COLUMNS))
    return time.perf_counter() - t


class Measured:
    def __init__(self, n: int) -> None:
        self.n = n
        self.load = self.append = self.append_raw = self.read = self.read_raw = 0.0
        self.rebuild = self.rebuild_raw = 0.0
        self.bytes = self.heap = self.index_bytes = 0
        self.partitions = 0
        self.month_min = self.month_max = 0.0


async def _measure(admin_url: str, n: int, sample: int) -> Measured:
    m = Measured(n)
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=4)
        try:
            world = World(children=max(200, n // 100), townships=TOWNSHIPS)
            async with pool.acquire() as conn:
                # the county's partitions, as `center run` makes them (the region and the months ahead)
                await conn.execute("INSERT INTO sites (site_id, kind, name, nats_password) "
                                   "VALUES ($1, 'village', $2, 'x')", world.villages[0].site_id, "石桥村")
                await partitions.ensure(conn)
                for k in range(MONTHS):  # and the past months the log fills (they would go to the default)
                    await conn.execute("SELECT shouwang_event_month('bench', $1)", _month(k).date())
                m.load, m.n = await _load(conn, world, n)
                await conn.execute("VACUUM ANALYZE events")
            store = EventStore(pool)
            fresh = list(world.work(sample))
            async with pool.acquire() as conn:
                m.append_raw = await _raw_copy(conn, fresh, 1000)
                await conn.execute("DROP TABLE bench_raw")
            m.append = await _append(store, fresh, 1000)
            total = m.n + len(fresh)
            async with pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE events")
                m.read_raw = await _raw_scan(conn)
            m.read, seen = await _store_read(store)
            assert seen == total, (seen, total)
            async with pool.acquire() as conn:
                before, scanned = await raw_scan(conn)
            assert scanned == total
            report = await rebuild(pool, page=5000, database_url=url, workers=1)
            assert report.events == total
            async with pool.acquire() as conn:
                after, _ = await raw_scan(conn)
                m.rebuild, m.rebuild_raw = report.events_per_second, (before + after) / 2
                leaves = await partitions.partitions(conn)
                m.heap = int(await conn.fetchval(
                    "SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('events') WHERE isleaf"))
                m.index_bytes = int(await conn.fetchval("SELECT pg_total_relation_size('event_index')"))
            assert sum(p.rows for p in leaves) == total
            m.n = total
            m.bytes = sum(p.bytes for p in leaves)
            m.partitions = len(leaves)
            months = [p.bytes / p.rows for p in leaves if p.month and p.rows >= total // (4 * MONTHS)]
            m.month_min, m.month_max = min(months), max(months)
        finally:
            await pool.close()
    return m


def _figures(m: Measured, sample: int) -> list[Figure]:
    size = f"county store, {m.n:,} events over {MONTHS} months, {m.partitions} partitions"
    return [
        figure(f"{size}: dated load (COPY, {LOAD_BATCH} per transaction)", m.load, "events/s",
               "raw COPY into one plain table, 1000 per transaction (the append sample)", m.append_raw),
        figure(f"{size}: store append, batches of 1000 ({sample:,} events)", m.append, "events/s",
               "raw COPY of the same rows into one plain table, 1000 per transaction", m.append_raw),
        figure(f"{size}: ordered read (typed decode)", m.read, "events/s",
               "raw keyset scan of the same rows with JSON decode", m.read_raw),
        figure(f"{size}: projections rebuild from zero", m.rebuild, "events/s",
               "raw ordered keyset scan with JSON decode", m.rebuild_raw),
        figure(f"{size}: size on disk per event (every partition, table + TOAST + indexes)", m.bytes / m.n, "B/event",
               "the partitions' heap alone", m.heap / m.n,
               note=f"month partitions {m.month_min:,.0f}-{m.month_max:,.0f} B/event; "
                    f"event_index {m.index_bytes / m.n:,.0f} B/event more"),
    ]


async def run(admin_url: str, quick: bool) -> list[Figure]:
    sizes = [int(s) for s in os.environ.get(SIZES_ENV, "").split(",") if s.strip()] or (
        [10_000, 40_000] if quick else [1_000_000, 5_000_000])
    sample = 5_000 if quick else 50_000
    measured = [await _measure(admin_url, n, sample) for n in sorted(sizes)]
    figures = [f for m in measured for f in _figures(m, sample)]
    small, big = measured[0], measured[-1]
    if big is not small:
        for what, a, b in (("store append, batches of 1000", big.append, small.append),
                           ("ordered read", big.read, small.read),
                           ("projections rebuild", big.rebuild, small.rebuild),
                           ("size on disk per event", big.bytes / big.n, small.bytes / small.n)):
            figures.append(figure(f"county store: {what} at {big.n:,} events", a,
                                  "B/event" if what.startswith("size") else "events/s",
                                  f"the same at {small.n:,} events", b))
    return figures
