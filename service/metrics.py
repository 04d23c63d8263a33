"""Prometheus metrics: what an operator watches (deploy/prometheus/, deploy/README.md "Watching it").

Two places serve them, because two kinds of process count:

- **The HTTP API** (``GET /metrics`` on the API's own port, ``service.api.app.metrics``): API request
  latency by route template (never a path with ids, never a query string), and what the store
  says at scrape time: each active site's seconds since last contact and its reported backlog,
  the quarantine's held rows, the projections' lag. Those are read by one query plus
  :func:`projections.runner.lag`, at most once per :data:`STORE_CACHE_SECONDS` however many
  scrapes come (:class:`StoreMetrics`).
- **The center process** (``shouwang center run``; ingest and receipts), whose counters live in
  its memory: it serves its own ``/metrics`` on ``SHOUWANG_METRICS_PORT`` (off when unset) at
  ``SHOUWANG_METRICS_HOST`` (default 127.0.0.1), :func:`serve_center_metrics`. Counters that
  restart at zero with the process are what Prometheus' ``rate()`` expects; writing them to the
  database would cost a write per batch for nothing.

Access: both need ``Authorization: Bearer <SHOUWANG_API_METRICS_TOKEN>``. Without that token
set, the API's ``/metrics`` answers 404 (off); the center's port, off unless its port is set,
then takes any request, so it listens on 127.0.0.1 unless told otherwise. Nothing personal is in
any metric: labels are site ids, refusal kinds, outcomes, route templates, methods and statuses.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import asyncpg
import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, make_wsgi_app
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime import log
from runtime.cli import CliError
from runtime.settings import SettingsError, load

if TYPE_CHECKING:  # the center process (ingest, receipts) imports this module and not litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

_log = log.get("service.metrics")

STORE_CACHE_SECONDS = 10.0  # scrapes within this share one reading of the store


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """SHOUWANG_API_METRICS_TOKEN, SHOUWANG_METRICS_HOST, SHOUWANG_METRICS_PORT."""

    api_metrics_token: str = ""  # bearer token of both /metrics; empty: the API's /metrics is off
    metrics_host: str = "127.0.0.1"  # where the center process serves its own /metrics
    metrics_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None  # unset: the center serves none

    def __post_init__(self) -> None:
        if self.api_metrics_token and len(self.api_metrics_token) < 16:
            raise ValueError("SHOUWANG_API_METRICS_TOKEN must be at least 16 characters (or unset: /metrics off)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MetricsSettings:
        return load(cls, "SHOUWANG_", env)

    @classmethod
    def for_command(cls) -> MetricsSettings:
        """:meth:`from_env`, a bad value refused as a command's error (one line, exit 2)."""
        try:
            return cls.from_env()
        except SettingsError as err:
            raise CliError(str(err)) from None

    def allows(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries the token (compared in constant time)."""
        if not self.api_metrics_token or not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        expected = self.api_metrics_token.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


# --- the center process: ingest and receipts -------------------------------------------------

CENTER = CollectorRegistry()
ProcessCollector(registry=CENTER)
INGEST_EVENTS = Counter("shouwang_ingest_events", "Events ingest committed from care.up, by outcome "
                        "(stored, duplicate, quarantined, not_understood: stored but of a type this center does "
                        "not know)", ["outcome"], registry=CENTER)
INGEST_REFUSALS = Counter("shouwang_ingest_refusals", "Events ingest refused into quarantine, by kind of refusal "
                          "(service.ingest.RefusalKind)", ["kind"], registry=CENTER)
INGEST_BATCHES = Counter("shouwang_ingest_batches", "Batches ingest committed and acked", registry=CENTER)
RECEIPTS = Counter("shouwang_receipts_published", "Receipts published on care.down", registry=CENTER)
RECEIPT_LATENCY = Histogram("shouwang_receipt_latency_seconds", "From a batch's commit to the publication of the "
                            "receipt that covers it, per site", registry=CENTER,
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
for _outcome in ("stored", "duplicate", "quarantined", "not_understood"):
    INGEST_EVENTS.labels(_outcome)


def ingested(*, stored: int, duplicates: int, not_understood: int, refused: Mapping[str, int]) -> None:
    """Count one committed (and acked) batch."""
    INGEST_BATCHES.inc()
    INGEST_EVENTS.labels("stored").inc(stored)
    INGEST_EVENTS.labels("duplicate").inc(duplicates)
    INGEST_EVENTS.labels("not_understood").inc(not_understood)
    INGEST_EVENTS.labels("quarantined").inc(sum(refused.values()))
    for kind, n in refused.items():
        INGEST_REFUSALS.labels(kind).inc(n)


def receipts_published(count: int, waited: Iterable[float]) -> None:
    """Count receipts published, and the seconds since the first commit each covers (receipts
    sent for no commit, as at the center's start, have none)."""
    RECEIPTS.inc(count)
    for seconds in waited:
        RECEIPT_LATENCY.observe(max(0.0, seconds))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log line per scrape."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class CenterMetricsServer:
    """The center's own /metrics, served from a thread; :meth:`stop` ends it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_center_metrics(settings: MetricsSettings) -> CenterMetricsServer | None:
    """Serve :data:`CENTER` at http://metrics_host:metrics_port/metrics, or nothing without a port."""
    if settings.metrics_port is None:
        return None
    inner = make_wsgi_app(CENTER)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if settings.api_metrics_token and not settings.allows(environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"the metrics token is required (SHOUWANG_API_METRICS_TOKEN)\n"]
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics here\n"]
        return inner(environ, start_response)  # type: ignore[no-any-return]

    try:
        server = make_server(settings.metrics_host, settings.metrics_port, app, _ThreadingServer,
                             handler_class=_QuietHandler)
    except OSError as err:  # taken, or an address not of this machine: the operator's to fix, one line
        raise CliError(f"SHOUWANG_METRICS_PORT: cannot listen on {settings.metrics_host}:{settings.metrics_port} "
                       f"({err.strerror or err})") from None
    thread = threading.Thread(target=server.serve_forever, name="center-metrics", daemon=True)
    thread.start()
    _log.info("center metrics served", host=settings.metrics_host, port=server.server_address[1])
    return CenterMetricsServer(server, thread)


# --- the API process: request latency and the store at scrape time ----------------------------

API = CollectorRegistry()
ProcessCollector(registry=API)
API_LATENCY = Histogram("shouwang_api_request_duration_seconds", "HTTP API requests, by route template, method "
                        "and status", ["route", "method", "status"], registry=API,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def request_timer(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: each matched request's duration under its route template (e.g.
    ``/children/{child_id}``), as litestar's router names it; the path itself never."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if str(scope["type"]) != "http":
            await app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, sending)
        except Exception as err:  # answered by the exception handlers around: their status, else 500
            code = getattr(err, "status_code", None)
            status = code if isinstance(code, int) else 500
            raise
        finally:
            route = str(scope.get("path_template") or "unmatched")
            API_LATENCY.labels(route, str(scope.get("method", "")), str(status)).observe(time.perf_counter() - start)

    return middleware


_STORE_QUERY = """
SELECT q.held, s.site_id, s.silent, s.reported_pending
  FROM (SELECT count(*) AS held FROM quarantine WHERE status = 'held') AS q
  LEFT JOIN (SELECT s.site_id, s.reported_pending,
                    extract(epoch FROM now() - coalesce(greatest(p.last_committed_at, s.reported_at),
                                                        s.registered_at))::float8 AS silent
               FROM sites s LEFT JOIN site_progress p USING (site_id)
              WHERE s.active) AS s ON true
 ORDER BY s.site_id"""


@dataclass
class StoreReading:
    held: int = 0
    silent: dict[str, float] = field(default_factory=dict)  # site -> seconds since last contact
    reported: dict[str, int] = field(default_factory=dict)  # site -> its reported backlog
    lag_seconds: float = 0.0
    lag_events: int = 0


class StoreMetrics(Collector):
    """What the store says, read at scrape time and kept :attr:`max_age` seconds."""

    def __init__(self, max_age: float = STORE_CACHE_SECONDS) -> None:
        self.max_age = max_age
        self.reading: StoreReading | None = None
        self.read_at = float("-inf")
        self.reads = 0  # how many times the store was read (a test checks the cache with it)
        self._lock = asyncio.Lock()

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read the store unless a reading younger than max_age is at hand."""
        async with self._lock:  # scrapes at once share one reading
            if time.monotonic() - self.read_at < self.max_age:
                return
            try:
                self.reading = await read_store(pool)
            except Exception as err:  # the store away: say so in the scrape (shouwang_store_up 0)
                _log.warning("metrics: the store could not be read", error=type(err).__name__)
                self.reading = None
            self.reads += 1
            self.read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        r = self.reading
        yield GaugeMetricFamily("shouwang_store_up", "1 when the last reading of the store for these metrics "
                                "succeeded", value=0 if r is None else 1)
        if r is None:
            return
        silent = GaugeMetricFamily("shouwang_site_last_contact_seconds", "Seconds since an active site's last "
                                   "contact: its last committed event or receipt request (since its registration "
                                   "if none)", labels=["site"])
        for site, s in r.silent.items():
            silent.add_metric([site], s)
        yield silent
        pending = GaugeMetricFamily("shouwang_site_reported_pending", "Events an active site last reported it "
                                    "holds unreceipted (sites.reported_pending)", labels=["site"])
        for site, n in r.reported.items():
            pending.add_metric([site], n)
        yield pending
        yield GaugeMetricFamily("shouwang_quarantine_held", "Quarantine rows held (not replayed or dismissed)",
                                value=r.held)
        yield GaugeMetricFamily("shouwang_projection_lag_seconds", "How long the oldest event not yet projected "
                                "has waited (0 when caught up)", value=r.lag_seconds)
        yield GaugeMetricFamily("shouwang_projection_lag_events", "Events committed and not yet projected",
                                value=r.lag_events)


async def read_store(pool: asyncpg.Pool) -> StoreReading:
    """One query for the sites and the quarantine, and the projections' lag."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_STORE_QUERY)
    out = StoreReading(held=int(rows[0]["held"]))
    for row in rows:
        if row["site_id"] is None:
            continue
        out.silent[row["site_id"]] = float(row["silent"])
        if row["reported_pending"] is not None:
            out.reported[row["site_id"]] = int(row["reported_pending"])
    from projections.runner import lag  # only the API's scrape needs it

    behind = await lag(pool)
    out.lag_seconds, out.lag_events = behind.seconds_behind, behind.events_behind
    return out


class _Include(Collector):
    """Another registry's metrics, as a collector of this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def api_registry(store: StoreMetrics) -> CollectorRegistry:
    """The registry an API app serves: the process-wide API metrics and this app's store reading."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Include(API))
    registry.register(store)
    return registry
