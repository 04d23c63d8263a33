"""The center in one process: ingest, receipts, dead letters and fan-out as owned tasks.

``async with run_center(database_url, nats_url) as center: ...`` migrates the database,
ensures the JetStream streams and consumers, starts the parts asked for, and on exit cancels
and awaits every task, drains NATS and closes the pool. `shouwang center run` wraps it with
SIGTERM handling; each part can run alone (``parts=``) so ingest scales out to several
processes while one process runs the fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from runtime import log, natsurl
from runtime.db import create_pool
from service.fanout import FanOut
from service.ingest import Ingester, Outcome
from service.metrics import CenterMetricsServer, MetricsSettings, serve_center_metrics
from service.quarantine import DeadLetters
from service.reads import ReadsResponder
from service.receipts import ReceiptPublisher, ReceiptResponder
from service.relay import RelayResponder
from service.restore import RestoreResponder
from service.seals import RelaySettings
from service.streams import StreamSettings, ensure_site_consumer, ensure_streams
from store import migrate, partitions
from store.postgres import EventStore

PARTS = ("ingest", "receipts", "fanout", "deadletters", "restore", "projections")
# run_center's default; the CLI adds projections
CORE_PARTS = ("ingest", "receipts", "fanout", "deadletters", "restore")
_log = log.get("service.center")


@dataclass
class Center:
    """A running center: its connections and parts (for tests, the CLI and the benchmark)."""

    pool: asyncpg.Pool
    nc: NATS
    js: JetStreamContext
    settings: StreamSettings
    ingesters: list[Ingester] = field(default_factory=list)
    receipts: ReceiptPublisher | None = None
    receipt_requests: ReceiptResponder | None = None
    fanout: FanOut | None = None
    dead_letters: DeadLetters | None = None
    restore: RestoreResponder | None = None
    reads: ReadsResponder | None = None
    relay: RelayResponder | None = None  # township offices hand back what a restored store lacks
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    projection_stop: asyncio.Event | None = None
    metrics: CenterMetricsServer | None = None  # its own /metrics (SHOUWANG_METRICS_PORT; service/metrics.py)

    @property
    def store(self) -> EventStore:
        return EventStore(self.pool)

    def on_commit(self, outcome: Outcome) -> None:
        if self.receipts is not None and outcome.sites:
            self.receipts.notify(outcome.sites, outcome.refusals, committed=time.monotonic())
        if self.fanout is not None and outcome.stored:
            self.fanout.wake()

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ing in self.ingesters:
            for k, v in dataclasses.asdict(ing.stats).items():
                out[k] = out.get(k, 0) + v
        out["receipts"] = self.receipts.published if self.receipts else 0
        out["fanned_out"] = self.fanout.sent if self.fanout else 0
        out["dead_letters"] = self.dead_letters.handled if self.dead_letters else 0
        return out

    def check(self) -> None:
        """Raise the error of any part that stopped (a part should run until cancelled)."""
        for t in self.tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise RuntimeError(f"center part {t.get_name()} failed") from t.exception()


async def connect_nats(nats_url: str, *, name: str = "shouwang-center", **options: Any) -> NATS:
    """A NATS connection that keeps reconnecting for as long as the center runs. `nats_url` may
    list several servers, separated by commas (a JetStream cluster): nats-py then reconnects to
    another of them when the one it uses goes away."""
    async def _error(err: Exception) -> None:
        _log.warning("nats error", error=type(err).__name__, detail=str(err)[:200])

    async def _disconnected() -> None:
        _log.info("nats disconnected")

    async def _reconnected() -> None:
        _log.info("nats reconnected")

    opts: dict[str, Any] = {
        "name": name, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.25, "connect_timeout": 2,
        "error_cb": _error,
        "disconnected_cb": _disconnected,
        "reconnected_cb": _reconnected,
        "allow_reconnect": True,
        **options,
    }
    return await nats.connect(natsurl.servers(nats_url), **opts)


async def stop_tasks(tasks: list[asyncio.Task[Any]], *, rounds: int = 20, wait: float = 0.5) -> None:
    """Cancel `tasks` and wait until every one has ended.

    Cancelling once is not enough on Python 3.11: ``asyncio.wait_for`` swallows a cancellation
    that arrives in the same loop turn as its inner future's result (fixed in 3.12), and the
    task then carries on, e.g. back to waiting for its next wake-up, so a plain ``await task``
    after ``cancel()`` can hang the shutdown for ever. A task still running after a round is
    cancelled again (its next await raises); one that survives every round is logged and left."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _done, pending = await asyncio.wait(pending, timeout=wait)
    for t in pending:
        _log.error("task did not stop when cancelled", task=t.get_name())
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            _log.warning("task had failed before stopping", task=t.get_name(), error=type(t.exception()).__name__)


# What the JetStream API answers while it cannot decide yet: no server took the request, or a
# cluster is electing the leader of its meta group or of a stream (a server just died).
_NOT_YET = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)


async def _ensure_jetstream(js: JetStreamContext, settings: StreamSettings, active: list[str],
                            within: float = 120.0) -> None:
    """The streams, the ingest consumer and each active site's consumer (so a site's messages
    wait for it even before its agent first connects), retried for up to `within` seconds while
    JetStream answers "not yet": on a cluster whose server just died, the API is silent until a
    new leader is elected, and a center that exited on that would only be restarted into it. A
    refusal (e.g. 3 replicas asked of a single server) is raised at once."""
    deadline = time.monotonic() + within
    wait = 0.25
    while True:
        try:
            await ensure_streams(js, settings)
            for site_id in active:
                await ensure_site_consumer(js, site_id)
            return
        except _NOT_YET as err:
            if time.monotonic() > deadline:
                raise
            _log.warning("JetStream not answering yet; retrying", error=type(err).__name__, retry_s=wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)


PARTITIONS_EVERY = 24 * 3600.0  # seconds between two runs of the partitions' maintenance
PARTITIONS_RETRY = 600.0  # after a failed run


async def ensure_partitions(pool: asyncpg.Pool) -> bool:
    """One run of the log's partition maintenance (store/partitions.py). A failure (a long reader
    held a lock past the step's timeout) is logged, not raised: appends go on into the default
    partitions and the next run moves them. Returns whether it ran."""
    try:
        async with pool.acquire() as conn:
            created = await partitions.ensure(conn)
    except (asyncpg.PostgresError, OSError) as err:
        _log.warning("partition maintenance failed; appends go to the default partitions until it runs",
                     error=type(err).__name__, detail=str(err))
        return False
    if created:
        _log.info("partitions created", created=created)
    return True


async def _partitions_daily(pool: asyncpg.Pool) -> None:
    while True:
        ok = await ensure_partitions(pool)
        await asyncio.sleep(PARTITIONS_EVERY if ok else PARTITIONS_RETRY)


@contextlib.asynccontextmanager
async def run_center(
    database_url: str,
    nats_url: str,
    *,
    ingesters: int = 1,
    parts: Collection[str] = CORE_PARTS,
    settings: StreamSettings | None = None,
    pool_size: int | None = None,
    nats_options: dict[str, Any] | None = None,
    metrics: MetricsSettings | None = None,
    relay: RelaySettings | None = None,
) -> AsyncIterator[Center]:
    """Run the center's parts until the block exits; then stop them cleanly. ``metrics`` (default:
    from SHOUWANG_METRICS_*) says where the process serves its counters, if anywhere; ``relay``
    (default: SHOUWANG_RELAY_KEY) the key of the fan-out's seals and of relayed copies."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown center parts {sorted(unknown)}; use {', '.join(PARTS)}")
    settings = settings or StreamSettings()
    metrics = metrics or MetricsSettings.for_command()
    sealer = (relay or RelaySettings.for_command()).sealer()
    conn = await asyncpg.connect(database_url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=pool_size or max(4, 2 * ingesters + 3))
    nc: NATS | None = None
    center: Center | None = None
    try:
        nc = await connect_nats(nats_url, **(nats_options or {}))
        js = nc.jetstream(timeout=5)
        async with pool.acquire() as c:
            active = [r["site_id"] for r in await c.fetch("SELECT site_id FROM sites WHERE active")]
        await _ensure_jetstream(js, settings, active)
        center = Center(pool, nc, js, settings)
        center.metrics = serve_center_metrics(metrics)
        if "receipts" in parts:
            center.receipts = ReceiptPublisher(pool, js)
            # Guarantee 2 after a restore from a backup: the center has forgotten events it once
            # receipted, and a site that records nothing new would never hear of it. So at start
            # every active site is told what is committed now; an agent whose last receipt said
            # more rewinds and sends again (sync_agent/upload.py, "watermark went back").
            center.receipts.notify(active)
            center.tasks.append(asyncio.create_task(center.receipts.run(), name="receipts"))
            # ... and an agent that connects asks for its receipt (care.receipt.<site>) before it
            # reports "synced", so an older receipt of its own never passes for the store's.
            center.receipt_requests = ReceiptResponder(pool, nc)
            await center.receipt_requests.start()
        if "fanout" in parts:
            center.fanout = FanOut(pool, js, resend_window=settings.fanout_resend_window, sealer=sealer)
            center.tasks.append(asyncio.create_task(center.fanout.run(), name="fanout"))
        if "deadletters" in parts:
            center.dead_letters = DeadLetters(pool, nc, js)
            await center.dead_letters.start()
        if "restore" in parts:
            center.restore = RestoreResponder(pool, nc)
            await center.restore.start()
            # The stations' read logs (service/reads.py): request/reply like the restore, same part.
            center.reads = ReadsResponder(pool, nc)
            await center.reads.start()
        if "projections" in parts:
            from projections.runner import Runner  # the read models (issue 5), same process, own task

            center.projection_stop = asyncio.Event()
            center.tasks.append(asyncio.create_task(Runner(pool).run(center.projection_stop), name="projections"))
        if "ingest" in parts:
            # Partitions for every region and month before rows arrive (migration 0024): at start,
            # then daily; the default partitions take any row that comes first.
            center.tasks.append(asyncio.create_task(_partitions_daily(pool), name="partitions"))
            # A township office's relayed copies are written like ingest's batches (service/relay.py).
            center.relay = RelayResponder(pool, nc, sealer, on_commit=center.on_commit)
            await center.relay.start()
            for i in range(ingesters):
                ing = Ingester(pool, nc, settings, on_commit=center.on_commit, name=f"ingest-{i + 1}")
                center.ingesters.append(ing)
                center.tasks.append(asyncio.create_task(ing.run(), name=ing.name))
        _log.info("center started", parts=sorted(parts), ingesters=len(center.ingesters))
        yield center
    finally:
        if center is not None:
            if center.projection_stop is not None:  # let the projector finish its transaction
                center.projection_stop.set()
                projector = next(t for t in center.tasks if t.get_name() == "projections")
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(projector), 10)
            await stop_tasks(center.tasks)
            if center.dead_letters is not None:
                await center.dead_letters.stop()
            if center.receipt_requests is not None:
                await center.receipt_requests.stop()
            if center.restore is not None:
                await center.restore.stop()
            if center.relay is not None:
                await center.relay.stop()
            if center.reads is not None:
                await center.reads.stop()
            if center.metrics is not None:
                await asyncio.to_thread(center.metrics.stop)
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 5)
            with contextlib.suppress(Exception):
                await nc.close()
        try:
            await asyncio.wait_for(pool.close(), 10)
        except TimeoutError:  # a connection was not given back: do not hang the shutdown on it
            _log.error("database pool did not close in time; terminating it")
            pool.terminate()
        _log.info("center stopped")
