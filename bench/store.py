"""Store benchmark: appends in batches of 1, 100 and 1000, 50 concurrent single-event writers,
and the full ordered read, each beside a raw PostgreSQL ceiling measured in the same run:
raw COPY of the same rows into a table of the same columns (keyed by event_id), and a raw
keyset scan of the events table with generic JSON decoding of the payload.

The 50 concurrent writers are 50 sites, each appending its own events one per call (a village
station appends only its own log; appends for one site are serialized by its progress row
lock by design, so 50 writers on one site would measure that lock). The baseline is one such
writer on the same pool. Their gain comes from group commit: one WAL flush serves many
transactions, so the figure moves with the disk's fsync latency and with free CPU.

The raw scan reads the same columns as the store's read, in the same global order
(tx_id, position) through the same index, keyset-paged by 5000 (it used to order by
position alone, which no index serves: every page sorted the whole table). Both reads run
three times, alternating; each side's median is reported.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

import asyncpg
import msgspec

from bench import peer_eventsourcing
from bench.report import Figure, figure
from bench.servers import fresh_database
from events import DecodedEvent, care_of
from events.catalogue import HomeVisitMade
from events.samples import SampleSite
from runtime.db import create_pool
from store.postgres import EVENT_COLUMNS, ORIGIN, EventStore, event_record


def make_events(n: int, sites: int = 20, prefix: str = "bench") -> list[DecodedEvent]:
    """n events of about 300 bytes, spread round-robin over `sites` chained site logs."""
    writers = [SampleSite(f"{prefix}.t{i // 10:02d}.v{i:03d}") for i in range(sites)]
    out = []
    for i in range(n):
        w = writers[i % sites]
        child = f"c-{i % 997:032x}"
        out.append(w.write(HomeVisitMade(child_id=child, visitor="石晓", findings="家访：学习有进步，祖母身体尚可。")))
    return out


async def _raw_copy(conn: asyncpg.Connection, events: Sequence[DecodedEvent], batch: int) -> float:
    await conn.execute("DROP TABLE IF EXISTS bench_raw")
    await conn.execute("CREATE TABLE bench_raw (LIKE events INCLUDING DEFAULTS, PRIMARY KEY (event_id))")
    records = [event_record(d) for d in events]
    t = time.perf_counter()
    for i in range(0, len(records), batch):
        async with conn.transaction():
            await conn.copy_records_to_table("bench_raw", records=records[i:i + batch], columns=EVENT_COLUMNS)
    return len(records) / (time.perf_counter() - t)


async def _append(store: EventStore, events: Sequence[DecodedEvent], batch: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(events), batch):
        result = await store.append(events[i:i + batch])
        assert len(result.stored) == len(events[i:i + batch]), "benchmark events must all be new"
    return len(events) / (time.perf_counter() - t)


async def _concurrent_singles(store: EventStore, writers: int, per_writer: int) -> float:
    """Each writer is one village station appending its own events (its own site), one per call,
    as a station's agent does; the writers run concurrently on one pool of `writers`
    connections. Each writer's first append is not timed: it opens the writer's connection
    (a new PostgreSQL backend) and warms its caches, as a running center has long done."""
    logs = [make_events(per_writer + 1, sites=1, prefix=f"conc{w}") for w in range(writers)]
    await asyncio.gather(*(store.append(log[:1]) for log in logs))

    async def run(events: list[DecodedEvent]) -> None:
        for d in events:
            await store.append([d])

    t = time.perf_counter()
    await asyncio.gather(*(run(log[1:]) for log in logs))
    return writers * per_writer / (time.perf_counter() - t)


async def _single_writer(store: EventStore, n: int) -> float:
    """One station appending its events one per call (the first, which warms the connection,
    not timed: the same footing as the concurrent writers)."""
    events = make_events(n + 1, sites=1, prefix="one")
    await store.append(events[:1])
    return await _append(store, events[1:], 1)


async def _store_read(store: EventStore) -> tuple[float, int]:
    t = time.perf_counter()
    after, n = ORIGIN, 0
    while True:
        page = await store.read_all(after, 5000)
        if not page:
            break
        for s in page:
            care_of(s.event)
        n += len(page)
        after = page[-1].position
    return n / (time.perf_counter() - t), n


async def _raw_scan(conn: asyncpg.Connection) -> float:
    """The ceiling for the ordered read: the same rows and columns in the same global order,
    keyset-paged the same way, as asyncpg returns them (no conversions in SQL, no typed
    objects built), with a generic JSON decode of each payload."""
    decode = msgspec.json.Decoder()
    t = time.perf_counter()
    last_tx, last_pos, n = -1, -1, 0
    while True:
        rows = await conn.fetch(
            "SELECT tx_id, position, committed_at, event_id, type, schema_version, site_id, site_seq, actor, "
            "occurred_at, recorded_at, prev_hash, hash, children, based_on, payload, understood FROM events "
            "WHERE (tx_id, position) > ($1, $2) ORDER BY tx_id, position LIMIT 5000", last_tx, last_pos)
        if not rows:
            break
        for r in rows:
            decode.decode(r["payload"])
        n += len(rows)
        last_tx, last_pos = rows[-1]["tx_id"], rows[-1]["position"]
    return n / (time.perf_counter() - t)


async def run(admin_url: str, quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    sizes = {1: 500 if quick else 3000, 100: 5000 if quick else 30_000, 1000: 20_000 if quick else 100_000}
    for batch, n in sizes.items():
        events = make_events(n, prefix=f"b{batch}")
        async with fresh_database(admin_url) as url:
            pool = await create_pool(url, max_size=4)
            try:
                async with pool.acquire() as conn:
                    raw = await _raw_copy(conn, events, batch)
                    await conn.execute("DROP TABLE bench_raw")
                ours = await _append(EventStore(pool), events, batch)
            finally:
                await pool.close()
        figures.append(figure(f"store append, batches of {batch}", ours, "events/s",
                              f"raw COPY, {batch} per transaction", raw))
        if batch == 1000 and peer_eventsourcing.available():
            async with fresh_database(admin_url, migrated=False) as peer_url:
                save = await asyncio.to_thread(peer_eventsourcing.application_save, peer_url, events)
            async with fresh_database(admin_url, migrated=False) as peer_url:
                insert = await asyncio.to_thread(peer_eventsourcing.recorder_insert, peer_url, events)
            figures.append(figure("store append, batches of 1000", ours, "events/s",
                                  "eventsourcing Application.save, 1000 per call", save))
            figures.append(figure("store append, batches of 1000", ours, "events/s",
                                  "eventsourcing recorder insert_events, 1000 per call", insert))
    # single-event appends: one writer, then 50 concurrent writers (group commit)
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=50)
        try:
            store = EventStore(pool)
            single = await _single_writer(store, 300 if quick else 2000)
            conc = await _concurrent_singles(store, 50, 20 if quick else 100)
        finally:
            await pool.close()
    figures.append(figure("store append, 1 per call, 50 concurrent writers", conc, "events/s",
                          "store append, 1 per call, 1 writer", single))
    # ordered read of the whole log
    n = 50_000 if quick else 300_000
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=4)
        try:
            store = EventStore(pool)
            events = make_events(n, prefix="read")
            for i in range(0, n, 5000):
                await store.append(events[i:i + 5000])
            async with pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE events")
            # Three alternating rounds, the median of each side: one read takes about a second
            # at the quick size, and a neighbour's CPU burst during one of them would decide a
            # single-shot ratio.
            raws, ours_ = [], []
            for _ in range(3):
                async with pool.acquire() as conn:
                    raws.append(await _raw_scan(conn))
                rate, seen = await _store_read(store)
                assert seen == n
                ours_.append(rate)
            raw, ours = statistics.median(raws), statistics.median(ours_)
        finally:
            await pool.close()
    figures.append(figure(f"ordered read of the log ({n:,} events, typed decode)", ours, "events/s",
                          "raw keyset scan with JSON decode", raw))
    return figures
