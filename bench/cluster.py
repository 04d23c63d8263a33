"""The center on a JetStream cluster of three nats-servers (issue 19): what keeping CARE_UP and
CARE_DOWN on all three servers (replicas 3) costs ingest, beside the same with one copy
(replicas 1), on the same cluster in the same run.

* end to end: 50 sites (each its own connection, given the list of the three servers) publish on
  care.up with the center running (`run_center`, ingest and receipts, streams at R3 or R1), until
  the last event is committed in PostgreSQL; R1 and R3 alternate (R1 first in even rounds, R3
  in odd ones), 5 rounds (1 with --quick), the medians reported and each round's R3/R1 in the
  figure's note;
* raw JetStream `publish_async` of the same bytes into a plain stream of 3 copies beside one of
  1 copy (what replication costs the transport alone).

The suite starts its own cluster (testbed.embedded.NatsCluster) on free 127.0.0.1 ports and
stops every server at the end, whatever happens; `--nats` is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import nats
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench.ingest import EVENTS, _by_site, _database_with_sites, _publish, _wait_count
from bench.report import Figure, figure
from bench.store import make_events
from events.envelope import encode_event
from events.wire import DOWN_STREAM, UP_STREAM
from runtime import natsurl
from service.center import run_center
from service.streams import StreamSettings
from testbed.embedded import NatsCluster


async def _connect(url: str) -> NATS:
    return await nats.connect(natsurl.servers(url), max_reconnect_attempts=-1, connect_timeout=5)


async def _drop_streams(url: str, *names: str) -> None:
    nc = await _connect(url)
    try:
        js = nc.jetstream(timeout=10)
        for name in names:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def end_to_end(admin_url: str, url: str, events: EVENTS, replicas: int) -> float:
    """Events/s from the first publish until the last event is committed, streams at `replicas`."""
    await _drop_streams(url, UP_STREAM, DOWN_STREAM)
    by_site = _by_site(events)
    settings = StreamSettings(replicas=replicas)
    async with _database_with_sites(admin_url, events) as db_url, \
            run_center(db_url, url, parts=("ingest", "receipts"), settings=settings):
        conns = [await _connect(url) for _ in by_site]
        db = await asyncpg.connect(db_url)
        try:
            t = time.perf_counter()
            await asyncio.gather(*(_publish(nc, evs) for nc, evs in zip(conns, by_site.values(), strict=True)))
            await _wait_count(db, len(events))
            return len(events) / (time.perf_counter() - t)
        finally:
            await db.close()
            for nc in conns:
                await nc.close()


async def raw_publish(url: str, events: EVENTS, replicas: int) -> float:
    """publish_async of the same bytes into a file stream of `replicas` copies, all acks awaited."""
    name = f"BENCH_R{replicas}"
    nc = await _connect(url)
    try:
        js = nc.jetstream(timeout=10)
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
        await js.add_stream(StreamConfig(name=name, subjects=[f"bench.r{replicas}"], storage=StorageType.FILE,
                                         num_replicas=replicas))
        payloads = [encode_event(d.event) for d in events]
        t = time.perf_counter()
        futures = [await js.publish_async(f"bench.r{replicas}", p) for p in payloads]
        await asyncio.gather(*futures)
        rate = len(payloads) / (time.perf_counter() - t)
        await js.delete_stream(name)
        return rate
    finally:
        await nc.close()


async def run(admin_url: str, quick: bool) -> list[Figure]:
    n = 2000 if quick else 20_000
    rounds = 1 if quick else 5
    with tempfile.TemporaryDirectory(prefix="shouwang-bench-cluster-") as tmp:
        cluster = await asyncio.to_thread(NatsCluster(Path(tmp) / "cluster").start)
        try:
            e2e: dict[int, list[float]] = {1: [], 3: []}
            raw: dict[int, list[float]] = {1: [], 3: []}
            for i in range(rounds):
                for replicas in ((1, 3) if i % 2 == 0 else (3, 1)):  # alternate: drift hits both alike
                    events = make_events(n, sites=50, prefix=f"cl{replicas}r{i}")
                    raw[replicas].append(await raw_publish(cluster.url, events, replicas))
                    e2e[replicas].append(await end_to_end(admin_url, cluster.url, events, replicas))
            await _drop_streams(cluster.url, UP_STREAM, DOWN_STREAM)
        finally:
            await asyncio.to_thread(cluster.stop)
    e1, e3 = statistics.median(e2e[1]), statistics.median(e2e[3])
    r1, r3 = statistics.median(raw[1]), statistics.median(raw[3])
    return [
        figure("cluster of 3: end to end publish->committed, 50 sites, streams replicas 3", e3, "events/s",
               "same cluster, streams replicas 1", e1, note=_note(e2e, rounds, n)),
        figure("cluster of 3: raw JetStream publish_async, replicas 3", r3, "events/s",
               "same cluster, replicas 1", r1, note=_note(raw, rounds, n)),
    ]


def _note(rates: dict[int, list[float]], rounds: int, n: int) -> str:
    """Every round's rates and its own R3/R1 ratio (the two measured one after the other), so the
    spread behind the medians is on record: on a shared machine one round can run at half the
    rate of the next."""
    each = "; ".join(f"R{r}: " + ", ".join(f"{x:,.0f}" for x in rates[r]) for r in (3, 1))
    paired = [a / b for a, b in zip(rates[3], rates[1], strict=True)]
    return (f"median of {rounds} rounds of {n} events, alternating; each round {each} events/s; "
            f"R3/R1 within each round {', '.join(f'{x:.2f}' for x in paired)} "
            f"(median {statistics.median(paired):.2f})")
