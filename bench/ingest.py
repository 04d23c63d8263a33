"""Center benchmark: end to end from publish on care.up to committed in PostgreSQL, with 1 and
50 sites publishing at once, beside raw JetStream publish and raw COPY of the same rows in the
same run; the ingest drain rate of a backlog (1 and 2 ingesters); receipt latency p50/p99
(one event at a time, and 50 sites publishing at a steady 500 events/s in all); and JetStream publish with the default
fsync policy against ``sync_interval: always`` (deploy/nats/README.md).

The suite deletes and recreates the CARE_UP / CARE_DOWN streams on the NATS server it is given:
never point it at a server that carries real traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench.pipeline import raw_pipeline
from bench.report import Figure, figure
from bench.servers import fresh_database
from bench.store import make_events
from events.envelope import DecodedEvent, encode_event
from events.wire import DOWN_PREFIX, DOWN_STREAM, UP_STREAM, receipt_decoder, up_subject
from runtime.db import connect
from service.center import run_center
from service.sites import register_site
from service.streams import publish_batch
from store.postgres import EVENT_COLUMNS, event_record
from testbed.embedded import EmbeddedNats

EVENTS = Sequence[DecodedEvent]


async def _connect(url: str) -> NATS:
    return await nats.connect(url, max_reconnect_attempts=-1, connect_timeout=5)


async def clean_streams(url: str, *extra: str) -> None:
    """Delete CARE_UP, CARE_DOWN, BENCH_RAW and `extra` streams (a suite's own server only)."""
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        for name in (UP_STREAM, DOWN_STREAM, "BENCH_RAW", *extra):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


def _by_site(events: EVENTS) -> dict[str, list[DecodedEvent]]:
    out: dict[str, list[DecodedEvent]] = {}
    for d in events:
        out.setdefault(d.event.site_id, []).append(d)
    return out


async def _publish(nc: NATS, events: EVENTS, sent_at: dict[tuple[str, int], float] | None = None) -> None:
    js = nc.jetstream()
    messages = []
    for d in events:
        if sent_at is not None:
            sent_at[(d.event.site_id, d.event.site_seq)] = time.perf_counter()
        messages.append((up_subject(d.event.site_id), encode_event(d.event), {"Nats-Msg-Id": d.event.event_id}))
    await publish_batch(js, messages, ack_within=120)


async def raw_publish(url: str, events: EVENTS, stream: str = "BENCH_RAW", subject: str = "bench.raw") -> float:
    """JetStream publish_async of the same bytes into a plain file stream (the transport's ceiling)."""
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
        await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
        payloads = [encode_event(d.event) for d in events]
        t = time.perf_counter()
        futures = [await js.publish_async(subject, p) for p in payloads]
        await asyncio.gather(*futures)
        rate = len(payloads) / (time.perf_counter() - t)
        await js.delete_stream(stream)
        return rate
    finally:
        await nc.close()


async def raw_copy(admin_url: str, events: EVENTS, batch: int = 500) -> float:
    """Plain COPY of the same rows, `batch` per transaction (the database's ceiling)."""
    async with fresh_database(admin_url) as url:
        conn = await connect(url)
        try:
            await conn.execute("CREATE TABLE bench_raw (LIKE events INCLUDING DEFAULTS, PRIMARY KEY (event_id))")
            records = [event_record(d) for d in events]
            t = time.perf_counter()
            for i in range(0, len(records), batch):
                async with conn.transaction():
                    await conn.copy_records_to_table("bench_raw", records=records[i:i + batch], columns=EVENT_COLUMNS)
            return len(records) / (time.perf_counter() - t)
        finally:
            await conn.close()


async def _count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM event_index"))


async def _wait_count(conn: asyncpg.Connection, n: int, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while await _count(conn) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {await _count(conn)} of {n} events committed after {limit}s")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _database_with_sites(admin_url: str, events: EVENTS) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            for site in sorted({d.event.site_id for d in events}):
                await register_site(pool, site, "village", site)
        finally:
            await pool.close()
        yield url


class ReceiptClock:
    """Listens to every care.down receipt and records when each site's watermark first covered each seq."""

    def __init__(self) -> None:
        self.covered: dict[str, list[tuple[int, float]]] = {}

    async def start(self, nc: NATS) -> None:
        async def on_msg(msg: Msg) -> None:
            if (msg.headers or {}).get("Shouwang-Kind") != "receipt":
                return
            r = receipt_decoder.decode(msg.data)
            self.covered.setdefault(r.site_id, []).append((r.watermark, time.perf_counter()))

        await nc.subscribe(DOWN_PREFIX + ">", cb=on_msg)

    def latencies(self, sent_at: dict[tuple[str, int], float]) -> list[float]:
        out = []
        for (site, seq), t0 in sent_at.items():
            marks = self.covered.get(site, [])
            t1 = next((t for wm, t in marks if wm >= seq), None)
            if t1 is not None:
                out.append(t1 - t0)
        return sorted(out)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def end_to_end(admin_url: str, nats_url: str, events: EVENTS, *, ingesters: int = 1
                     ) -> tuple[float, list[float]]:
    """Publish every event (each site on its own connection, all at once) with the center running; events/s until
    the last is committed, and each event's publish-to-receipt latency."""
    await clean_streams(nats_url)
    by_site = _by_site(events)
    async with _database_with_sites(admin_url, events) as url, \
            run_center(url, nats_url, ingesters=ingesters, parts=("ingest", "receipts")):
        conns = [await _connect(nats_url) for _ in by_site]
        listener = await _connect(nats_url)
        db = await asyncpg.connect(url)
        clock = ReceiptClock()
        await clock.start(listener)
        sent_at: dict[tuple[str, int], float] = {}
        try:
            t = time.perf_counter()
            await asyncio.gather(*(_publish(nc, evs, sent_at) for nc, evs in zip(conns, by_site.values(),
                                                                                  strict=True)))
            await _wait_count(db, len(events))
            rate = len(events) / (time.perf_counter() - t)
            await asyncio.sleep(0.3)  # the last receipts
            return rate, clock.latencies(sent_at)
        finally:
            await db.close()
            for nc in [*conns, listener]:
                await nc.close()


async def paced_latency(admin_url: str, nats_url: str, events: EVENTS, rate: float) -> list[float]:
    """Every site publishes its events one at a time at an even pace, `rate` events/s in all (below
    capacity, so this measures the path, not a queue); each event's publish-to-receipt latency."""
    await clean_streams(nats_url)
    by_site = _by_site(events)
    per_site_gap = len(by_site) / rate
    async with _database_with_sites(admin_url, events) as url, \
            run_center(url, nats_url, parts=("ingest", "receipts")):
        conns = [await _connect(nats_url) for _ in by_site]
        listener = await _connect(nats_url)
        db = await asyncpg.connect(url)
        clock = ReceiptClock()
        await clock.start(listener)
        sent_at: dict[tuple[str, int], float] = {}

        async def site(nc: NATS, evs: list[DecodedEvent], offset: float) -> None:
            js = nc.jetstream()
            await asyncio.sleep(offset)
            start = time.perf_counter()
            for i, d in enumerate(evs):
                delay = start + i * per_site_gap - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[(d.event.site_id, d.event.site_seq)] = time.perf_counter()
                await js.publish(up_subject(d.event.site_id), encode_event(d.event),
                                 headers={"Nats-Msg-Id": d.event.event_id})

        try:
            await asyncio.gather(*(site(nc, evs, i * per_site_gap / len(by_site))
                                   for i, (nc, evs) in enumerate(zip(conns, by_site.values(), strict=True))))
            await _wait_count(db, len(events))
            await asyncio.sleep(0.3)
            return clock.latencies(sent_at)
        finally:
            await db.close()
            for nc in [*conns, listener]:
                await nc.close()


async def drain(admin_url: str, nats_url: str, events: EVENTS, ingesters: int) -> float:
    """A backlog already in CARE_UP (a township coming back online); events/s for the center to commit it all."""
    await clean_streams(nats_url)
    async with _database_with_sites(admin_url, events) as url:
        async with run_center(url, nats_url, parts=()):  # streams only
            nc = await _connect(nats_url)
            await _publish(nc, events)
            await nc.close()
        db = await asyncpg.connect(url)
        try:
            t = time.perf_counter()
            async with run_center(url, nats_url, ingesters=ingesters, parts=("ingest",)):
                await _wait_count(db, len(events))
                rate = len(events) / (time.perf_counter() - t)
        finally:
            await db.close()
        return rate


async def receipt_latency_idle(admin_url: str, nats_url: str, events: EVENTS) -> list[float]:
    """One event at a time: publish, then wait for the receipt that covers it."""
    await clean_streams(nats_url)
    async with _database_with_sites(admin_url, events) as url, run_center(url, nats_url, parts=("ingest", "receipts")):
        nc = await _connect(nats_url)
        waiting: dict[int, asyncio.Future[float]] = {}

        async def on_msg(msg: Msg) -> None:
            if (msg.headers or {}).get("Shouwang-Kind") == "receipt":
                r = receipt_decoder.decode(msg.data)
                for seq, fut in list(waiting.items()):
                    if seq <= r.watermark and not fut.done():
                        fut.set_result(time.perf_counter())

        await nc.subscribe(DOWN_PREFIX + ">", cb=on_msg)
        js = nc.jetstream()
        out = []
        try:
            for d in events:
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                waiting[d.event.site_seq] = fut
                t = time.perf_counter()
                await js.publish(up_subject(d.event.site_id), encode_event(d.event))
                out.append(await asyncio.wait_for(fut, 30) - t)
                del waiting[d.event.site_seq]
        finally:
            await nc.close()
        return sorted(out)


async def sync_policy(events: EVENTS) -> tuple[float, float]:
    """publish_async into private servers: default fsync policy vs `sync_interval: always`."""
    rates = []
    with tempfile.TemporaryDirectory(prefix="shouwang-bench-sync-") as tmp:
        for policy in (None, "always"):
            server = EmbeddedNats(Path(tmp) / (policy or "default"), sync_interval=policy).start()
            try:
                rates.append(await raw_publish(server.url, events))
            finally:
                server.stop()
    return rates[0], rates[1]


def _messages(events: EVENTS) -> list[tuple[str, bytes, str]]:
    return [(d.event.site_id, encode_event(d.event), d.event.event_id) for d in events]


async def run(admin_url: str, nats_url: str, quick: bool) -> list[Figure]:
    n = 3000 if quick else 30_000
    one_site = make_events(n, sites=1, prefix="e2e1")
    fifty = make_events(n, sites=50, prefix="e2e50")
    figures: list[Figure] = []
    raw_pub = await raw_publish(nats_url, one_site)
    copy = await raw_copy(admin_url, one_site)
    pipe_1 = await raw_pipeline(admin_url, nats_url, _messages(one_site))
    pipe_50 = await raw_pipeline(admin_url, nats_url, _messages(fifty))
    e2e_1, _ = await end_to_end(admin_url, nats_url, one_site)
    e2e_50, _ = await end_to_end(admin_url, nats_url, fifty)
    e2e_50_2, _ = await end_to_end(admin_url, nats_url, make_events(n, sites=50, prefix="e2e50b"), ingesters=2)
    figures += [
        figure("end to end publish->committed, 1 site", e2e_1, "events/s",
               "raw pipeline: publish, fetch, COPY, ack (no decoding)", pipe_1),
        figure("end to end publish->committed, 50 sites", e2e_50, "events/s",
               "raw pipeline: publish, fetch, COPY, ack (no decoding)", pipe_50),
        figure("end to end publish->committed, 1 site", e2e_1, "events/s", "raw JetStream publish_async", raw_pub),
        figure("end to end publish->committed, 1 site", e2e_1, "events/s", "raw COPY, 500 per transaction", copy),
        figure("end to end publish->committed, 50 sites", e2e_50, "events/s", "raw JetStream publish_async",
               raw_pub),
        figure("end to end publish->committed, 50 sites", e2e_50, "events/s", "raw COPY, 500 per transaction", copy),
        figure("end to end, 50 sites, 2 ingesters", e2e_50_2, "events/s", "end to end, 50 sites, 1 ingester",
               e2e_50),
    ]
    drain_1 = await drain(admin_url, nats_url, make_events(n, sites=50, prefix="dr1"), 1)
    drain_2 = await drain(admin_url, nats_url, make_events(n, sites=50, prefix="dr2"), 2)
    figures += [
        figure("ingest drain of a backlog, 1 ingester", drain_1, "events/s", "raw COPY, 500 per transaction", copy),
        figure("ingest drain of a backlog, 2 ingesters", drain_2, "events/s", "ingest drain, 1 ingester", drain_1),
    ]
    idle = await receipt_latency_idle(admin_url, nats_url, make_events(100 if quick else 500, sites=1, prefix="lat"))
    paced_rate = 500.0
    paced = await paced_latency(admin_url, nats_url, make_events(1000 if quick else 5000, sites=50, prefix="pace"),
                                paced_rate)
    figures += [
        figure("receipt latency p50, one event at a time", _pct(idle, 50) * 1000, "ms"),
        figure("receipt latency p99, one event at a time", _pct(idle, 99) * 1000, "ms"),
        figure(f"receipt latency p50, 50 sites at {paced_rate:.0f} events/s in all", _pct(paced, 50) * 1000, "ms"),
        figure(f"receipt latency p99, 50 sites at {paced_rate:.0f} events/s in all", _pct(paced, 99) * 1000, "ms"),
    ]
    default_rate, always_rate = await sync_policy(make_events(3000 if quick else 20_000, sites=1, prefix="sync"))
    figures.append(figure("JetStream publish_async, sync_interval: always", always_rate, "events/s",
                          "same, default sync_interval (2 min)", default_rate))
    await clean_streams(nats_url)
    return figures
