"""The running agent: one NATS connection, the uploader and the downloader, owned and stopped here.

Start-up verifies the whole local hash chain first (guarantee 8): a damaged or edited log is
refused with `LogCorrupted` and nothing is sent. The agent owns its connection: it connects
once (nats-py's own retry loop is off, so a cancelled connect really stops), and when the
line is down or the connection is lost it connects again after a capped, jittered backoff
(`SyncTuning.connect_retry_cap`, a minute by default). A change of state is logged once
("center unreachable", "center reachable again"), not every attempt.

On every connection the agent asks the center for a fresh receipt (`care.receipt.<site>`,
service/receipts.py): a receipt kept from before a center's restore must never pass for one of
the store as it is now (guarantee 2). A lower watermark in the answer makes the uploader resend
what the restored store lacks; `wait_synced` reports "synced" only when the newest receipt it
applied is such a fresh one and nothing is pending. The local log keeps the same fact for `agent
status` (the connection's token beside the receipt, sync_agent/status.py); when a receipt from
care.down leaves nothing pending, the running agent asks once more, so a station that syncs
through `agent serve` is shown synced on the center's word about its store now.

A township office's agent also relays (sync_agent/relay.py): once its own events are confirmed
on a connection, and then every `SyncTuning.relay_every`, it asks the center what it holds of
the township's sites and hands back the sealed copies of what it lacks (a center restored from an
older backup). For an office, "synced" also needs such a round finished on this connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors

from events.batch import readable
from events.types import SiteKind
from events.wire import (
    Receipt,
    ReceiptReply,
    ReceiptRequest,
    receipt_reply_decoder,
    receipt_request_encoder,
    receipt_subject,
)
from runtime import log, natsurl
from sync_agent.backoff import Backoff
from sync_agent.config import SiteConfig, connect_options, load_config, log_path
from sync_agent.download import Downloader
from sync_agent.locallog import CONNECTION, ChainReport, LocalLog, LocalLogError, ReceiptEffect
from sync_agent.readlog import ReadLog, ReadUploader
from sync_agent.relay import RelayReport, RelayUnavailable, relay_round
from sync_agent.status import CONFIRMED_AT, CONNECTED_AT  # when connected; when the center last confirmed
from sync_agent.tuning import SyncTuning
from sync_agent.upload import Uploader, raise_if_cancelling

_log = log.get("sync_agent.agent")
CONNECT_ERRORS: tuple[type[Exception], ...] = (TimeoutError, nats.errors.Error, OSError)
WARN_EVERY = 60.0  # the same kind of sync error is logged as a warning at most once a minute


class ReceiptUnavailable(Exception):
    """The center did not answer a receipt request with a receipt; the message says why."""


CONFIRM_ERRORS: tuple[type[Exception], ...] = (ReceiptUnavailable, *CONNECT_ERRORS, LocalLogError)
RELAY_ERRORS: tuple[type[Exception], ...] = (RelayUnavailable, *CONNECT_ERRORS, LocalLogError)


async def stop_tasks(tasks: Collection[asyncio.Task[Any]], *, rounds: int = 10, wait: float = 0.5) -> None:
    """Cancel `tasks` and wait, a bounded time, until each has ended.

    Cancelling once is not enough on Python 3.11: ``asyncio.wait_for`` (nats-py connects and
    requests with it) can swallow a cancellation that arrives as its inner future completes,
    and the task carries on. A task still running after a round is cancelled again; one that
    survives every round is logged and left, so stopping never hangs."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            return
        for t in pending:
            t.cancel()
        _done, pending = await asyncio.wait(pending, timeout=wait)
    for t in pending:
        _log.error("task did not stop when cancelled", task=t.get_name())


async def close_within(nc: Any, seconds: float) -> None:
    """Close a NATS connection, waiting at most `seconds` (a close can wait for ever on a
    connection whose peer vanished without a reset)."""
    task = asyncio.create_task(nc.close(), name="nats-close")
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        _log.warning("NATS connection did not close in time; dropped", within_s=seconds)
        await stop_tasks([task], rounds=2, wait=0.2)
    elif not task.cancelled() and task.exception() is not None:
        _log.debug("NATS close failed", error=type(task.exception()).__name__)


class Agent:
    def __init__(self, data_dir: Path, *, tuning: SyncTuning | None = None, nats_url: str | None = None,
                 config: SiteConfig | None = None, rng: random.Random | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.config = config or load_config(self.data_dir)
        self.nats_url = nats_url or self.config.nats_url
        self.tuning = tuning or SyncTuning()
        self._rng = rng or random.Random()
        self.log = LocalLog(log_path(self.data_dir), self.config.site_id)
        self.chain: ChainReport | None = None
        self.uploader = Uploader(self.log, self.config.site_id, self.tuning, self._error, self._rng)
        self.downloader = Downloader(self.log, self.config.site_id, self.config.durable_name, self.tuning,
                                     self._on_down_receipt, self._error, self._rng,
                                     js_domain=self.config.js_domain)
        # The station's read log goes up beside the events (sync_agent/readlog.py).
        self.read_log = ReadLog(self.data_dir)
        self.reads = ReadUploader(self.read_log, self.config.site_id, self._error, self._rng,
                                  retry_base=self.tuning.retry_base, retry_cap=self.tuning.retry_cap)
        self.nc: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._confirm_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._options: dict[str, object] = {}
        self._connect_error: Exception | None = None  # why the last connect attempt failed
        self._connect_backoff = Backoff(self.tuning.retry_base, self.tuning.connect_cap, self._rng)
        self._last_error: tuple[str, float] = ("", 0.0)
        self._warned: dict[str, float] = {}  # kind of sync error -> when it was last logged as a warning
        # None until the first attempt; False while the center cannot be reached.
        self.reachable: bool | None = None
        self._offline_since: float | None = None
        self.connections = 0  # connections made by this process (each one asks for a fresh receipt)
        self._token = ""  # the current connection's token in the local log (meta CONNECTION)
        self._receipts_applied = 0  # receipts applied by this process, from care.down or asked for
        # (connection, receipts applied) when the last fresh receipt was applied: synced only if
        # nothing has been applied since, on this connection
        self._fresh_mark: tuple[int, int] | None = None
        self._center_reads_batches = True  # False once a center from before batches refused the field
        # A township office relays (sync_agent/relay.py): the connection on which a round last
        # finished, and what the rounds of this process did.
        self.relays = self.config.kind is SiteKind.TOWNSHIP
        self._relayed_on: int | None = None
        self._relay_wake = asyncio.Event()
        self.relayed = RelayReport()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, parts: tuple[str, ...] = ("upload", "download", "reads")) -> None:
        """Verify the chain (raises LogCorrupted), then connect and sync in the background.

        `parts` picks the loops to run (tests run the upload alone to lose receipts on purpose).
        A credentials or CA file that cannot be used raises ConfigError here, not in the loop."""
        self._options = connect_options(self.config)
        self.chain = await asyncio.to_thread(self.log.verify)
        _log.info("local log verified", site_id=self.config.site_id, events=self.chain.events)
        self._tasks = [asyncio.create_task(self._connection_loop(), name="agent-connect")]
        if "upload" in parts:
            self._tasks.append(asyncio.create_task(self.uploader.run(), name="agent-upload"))
        if "download" in parts:
            self._tasks.append(asyncio.create_task(self.downloader.run(), name="agent-download"))
        if "reads" in parts:
            self._tasks.append(asyncio.create_task(self.reads.run(), name="agent-reads"))
        if self.relays and "upload" in parts:
            self._tasks.append(asyncio.create_task(self._relay_loop(), name="agent-relay"))

    async def stop(self) -> None:
        """Stop every loop and close the connection, in bounded time whatever the line does."""
        self._stopping = True  # no loop starts a receipt request any more (it would outlive the log)
        tasks = [*self._tasks, *([self._confirm_task] if self._confirm_task is not None else [])]
        await stop_tasks(tasks)
        if self._confirm_task is not None and self._confirm_task not in tasks:  # started while stopping
            await stop_tasks([self._confirm_task])
        self._tasks = []
        self._confirm_task = None
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            await close_within(nc, 3.0)
        self.log.close()
        self.read_log.close()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the connection -----------------------------------------------------------------

    async def _connection_loop(self) -> None:
        while True:
            raise_if_cancelling()
            closed = asyncio.Event()

            async def on_closed(closed: asyncio.Event = closed) -> None:
                closed.set()

            try:
                # nats-py's own reconnecting is off: it retries every reconnect_time_wait for ever
                # (inside a connect that a cancellation may not stop) and reports every attempt.
                # (max_reconnect_attempts=1: nats-py's connect gives up after a second try; with 0
                # it would try for ever.)
                self._connect_error = None
                nc = await nats.connect(
                    natsurl.servers(self.nats_url), name=f"shouwang-agent {self.config.site_id}",
                    connect_timeout=self.tuning.connect_timeout, allow_reconnect=False,
                    max_reconnect_attempts=1, reconnect_time_wait=0.1,
                    **self._options, error_cb=self._nats_error, closed_cb=on_closed,
                )
            except CONNECT_ERRORS as err:
                raise_if_cancelling()
                cause = self._connect_error if isinstance(err, nats.errors.NoServersError) and self._connect_error \
                    else err
                self._unreachable(f"connect to {redact_url(self.nats_url)}: {type(cause).__name__}: {cause}")
                await asyncio.sleep(self._connect_backoff.next())
                continue
            self._attach(nc)
            await _until_closed(nc, closed)
            raise_if_cancelling()
            why = nc.last_error
            self._detach()
            self._unreachable(f"connection to {redact_url(self.nats_url)} lost"
                              + (f": {type(why).__name__}: {why}" if why is not None else ""))
            await asyncio.sleep(self._connect_backoff.next())

    def _attach(self, nc: Any) -> None:
        self.connections += 1
        self._token = uuid.uuid4().hex
        self.nc = nc
        self.uploader.nc = nc
        self.downloader.nc = nc
        self.reads.nc = nc
        with contextlib.suppress(LocalLogError):
            self.log.set_meta(**{CONNECTED_AT: dt.datetime.now(dt.UTC).isoformat(), CONNECTION: self._token})
        if self.reachable is False and self._offline_since is not None:
            _log.info("center reachable again", site_id=self.config.site_id,
                      offline_s=round(time.monotonic() - self._offline_since, 1))
        else:
            _log.info("connected", site_id=self.config.site_id)
        self.reachable = True
        self._offline_since = None
        self.uploader.connected()
        self.reads.notify()
        if self._confirm_task is not None:
            self._confirm_task.cancel()
        if not self._stopping:
            self._confirm_task = asyncio.create_task(self._confirm_on_connect(self.connections),
                                                     name="agent-confirm")

    def _on_down_receipt(self, effect: ReceiptEffect) -> None:
        """A receipt from care.down (it cleared the log's fresh mark). Once it leaves nothing
        pending, ask the center again, so the station is shown synced on a fresh answer."""
        self._on_receipt(effect)
        if self.relays and not effect.progressed:
            # A receipt that moves nothing of ours: the center's start-up receipt (service/center.py)
            # among them, so an office connected through a center's restore relays at once.
            self._relay_wake.set()
        if self._stopping or self.nc is None or (self._confirm_task is not None and not self._confirm_task.done()):
            return
        try:
            pending = self.pending()
        except LocalLogError as err:
            self._error(f"receipt: {type(err).__name__}: {err}")
            return
        if pending == 0:
            self._confirm_task = asyncio.create_task(self._confirm_on_connect(self.connections),
                                                     name="agent-confirm")

    def _detach(self) -> None:
        self.nc = self.uploader.nc = self.downloader.nc = self.reads.nc = None

    def _unreachable(self, message: str) -> None:
        """The center cannot be reached: logged once when it happens, then only at debug level."""
        self._remember(message)
        if self.reachable is False:
            _log.debug("center still unreachable", site_id=self.config.site_id, error=message)
            return
        self.reachable = False
        self._offline_since = time.monotonic()
        _log.warning("center unreachable", site_id=self.config.site_id, error=message,
                     retry="with backoff up to " + f"{self.tuning.connect_cap:g} s")

    async def _nats_error(self, err: Exception) -> None:
        if self.nc is None:  # a failed connect: the connection loop reports it
            self._connect_error = err
            _log.debug("nats error while connecting", error=f"{type(err).__name__}: {err}")
            return
        self._error(f"nats: {type(err).__name__}: {err}")

    # --- fresh receipts -------------------------------------------------------------------

    def _on_receipt(self, effect: ReceiptEffect) -> None:
        self._receipts_applied += 1
        self.uploader.on_receipt(effect)
        if effect.went_back:  # the center was restored: it may lack other sites' events too
            self._relay_wake.set()

    async def _confirm_on_connect(self, connection: int) -> None:
        """Ask for a fresh receipt once per connection, again with backoff until one comes."""
        backoff = Backoff(self.tuning.retry_base, self.tuning.retry_cap, self._rng)
        while self.connections == connection and self.nc is not None:
            raise_if_cancelling()
            try:
                await self.confirm(self.tuning.ack_timeout)
                self._connect_backoff.reset()  # a whole round trip to the center: the line works
                self._relay_wake.set()
                return
            except CONFIRM_ERRORS as err:
                raise_if_cancelling()
                self._error(f"receipt request: {type(err).__name__}: {err}")
                await asyncio.sleep(backoff.next())
            except Exception as err:
                # A defect met while applying one answer must not end the asking: this task
                # dying unseen left a station publishing nothing on its connection (chaos run).
                raise_if_cancelling()
                _log.error("receipt request failed unexpectedly; asking again", site_id=self.config.site_id,
                           error=f"{type(err).__name__}: {err}", exc_info=True)
                self._error(f"receipt request: {type(err).__name__}: {err}")
                await asyncio.sleep(backoff.next())

    async def confirm(self, within: float) -> ReceiptEffect:
        """Ask the center for this site's receipt as its store holds it now, and apply it (a
        lower watermark than the local one makes the uploader resend). Raises
        ReceiptUnavailable, a NATS error or TimeoutError when no receipt comes within `within`."""
        nc = self.nc
        if nc is None or not nc.is_connected:
            raise ReceiptUnavailable("not connected")
        connection = self.connections
        try:
            pending, _ = await asyncio.to_thread(self.log.pending)
            # Say which batches this agent reads on care.down (events/batch.py); a center from
            # before batches refuses a request naming them, and is then asked without.
            batches = readable() if self._center_reads_batches else None
            body = receipt_request_encoder.encode(ReceiptRequest(pending=pending, batches=batches))
            msg = await nc.request(receipt_subject(self.config.site_id), body, timeout=within)
            if batches is not None and b"bad receipt request" in msg.data:
                self._center_reads_batches = False
                body = receipt_request_encoder.encode(ReceiptRequest(pending=pending))
                msg = await nc.request(receipt_subject(self.config.site_id), body, timeout=within)
        except nats.errors.NoRespondersError:
            raise ReceiptUnavailable("no center answers receipt requests (care.receipt): is `shouwang center "
                                     "run` up with its 'receipts' part, and may this site's NATS user ask?") from None
        except nats.errors.TimeoutError:
            raise ReceiptUnavailable(f"the center did not answer a receipt request within {within:g} s") from None
        receipt = _receipt_of(msg.data, self.config.site_id)
        fresh_for = self._token if connection == self.connections else None
        effect = await asyncio.to_thread(self.log.apply_receipt, receipt, fresh_for=fresh_for)
        self._on_receipt(effect)
        if connection == self.connections:
            self._fresh_mark = (connection, self._receipts_applied)
            self.uploader.fresh()
        now = dt.datetime.now(dt.UTC).isoformat()
        with contextlib.suppress(LocalLogError):
            self.log.set_meta(**{CONFIRMED_AT: now})
        return effect

    def confirmed(self) -> bool:
        """The newest receipt applied is one the center gave on this connection, from its store now."""
        return self.nc is not None and self._fresh_mark == (self.connections, self._receipts_applied)

    # --- relaying (a township office) ---------------------------------------------------

    def relayed_here(self) -> bool:
        """Not an office, or a relay round finished on this connection."""
        return not self.relays or (self.nc is not None and self._relayed_on == self.connections)

    async def _relay_loop(self) -> None:
        """Rounds when woken (a connection's fresh receipt, a receipt that went back) and every
        relay_every; only once the office's own events are confirmed, so that what it recorded
        itself (a transfer, say) is back at the center before other sites' events that need it."""
        backoff = Backoff(self.tuning.retry_base, self.tuning.retry_cap, self._rng)
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tuning.relay_every):
                    await self._relay_wake.wait()
            self._relay_wake.clear()
            connection, nc = self.connections, self.nc
            if nc is None or not nc.is_connected:
                continue
            try:
                if self.pending() != 0 or not self.confirmed():
                    await asyncio.sleep(self.tuning.idle_poll)
                    self._relay_wake.set()  # look again soon
                    continue
                report = await relay_round(nc, self.log, self.config.site_id, self.tuning.ack_timeout)
            except RELAY_ERRORS as err:
                raise_if_cancelling()
                self._error(f"relay: {type(err).__name__}: {err}")
                await asyncio.sleep(backoff.next())
                self._relay_wake.set()
                continue
            backoff.reset()
            for f in dataclasses.fields(report):
                setattr(self.relayed, f.name, getattr(self.relayed, f.name) + getattr(report, f.name))
            if connection == self.connections:
                self._relayed_on = connection

    # --- errors ---------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        """A sync error: logged as a warning once a minute per kind (debug otherwise, and while the
        center is unreachable, when errors are expected); the last one is kept for `agent status`."""
        kind = ":".join(message.split(":", 2)[:2])
        now = time.monotonic()
        if self.reachable is not False and now - self._warned.get(kind, -1e9) >= WARN_EVERY:
            self._warned[kind] = now
            _log.warning("sync error", site_id=self.config.site_id, error=message)
        else:
            _log.debug("sync error", site_id=self.config.site_id, error=message)
        self._remember(message)

    def _remember(self, message: str) -> None:
        """Remember the last error for `agent status` (written at most every few seconds)."""
        last, at = self._last_error
        now = time.monotonic()
        if message != last or now - at > 5:
            self._last_error = (message, now)
            with contextlib.suppress(LocalLogError):  # status bookkeeping must never stop the sync
                self.log.set_meta(last_error=message, last_error_at=dt.datetime.now(dt.UTC).isoformat())

    # --- progress -----------------------------------------------------------------------

    def pending(self) -> int:
        return self.log.pending(self.uploader.receipt)[0]

    async def wait_synced(self, seconds: float, on_progress: Callable[[int, int], None] | None = None) -> bool:
        """Until nothing is pending by a fresh receipt, or `seconds`; True if synced.

        Synced means: every event is receipted or refused, and the newest receipt applied is one
        the center gave on this connection when asked (`confirm`), so a receipt from before a
        center's restore never counts; at a township office, a relay round finished on this
        connection too. When the receipts say nothing is pending but the newest was not asked
        for, the agent asks (at most until the deadline)."""
        deadline = time.monotonic() + seconds
        while True:
            pending = self.pending()
            if on_progress is not None:
                on_progress(pending, self.log.last_seq())
            if pending == 0 and self.confirmed() and self.relayed_here():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if pending == 0 and self.confirmed():  # an office's relay round is still to finish
                self._relay_wake.set()
            elif pending == 0 and self.nc is not None and self.nc.is_connected:
                try:
                    await self.confirm(max(0.5, min(self.tuning.ack_timeout, left)))
                    continue
                except CONFIRM_ERRORS as err:
                    raise_if_cancelling()
                    self._error(f"receipt request: {type(err).__name__}: {err}")
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _receipt_of(data: bytes, site_id: str) -> Receipt:
    try:
        reply: ReceiptReply = receipt_reply_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise ReceiptUnavailable(f"the center's answer cannot be read: {err}") from None
    if reply.error is not None or reply.receipt is None:
        raise ReceiptUnavailable(f"the center gave no receipt: {reply.error or 'empty answer'}")
    if reply.receipt.site_id != site_id:
        raise ReceiptUnavailable(f"the center answered for site {reply.receipt.site_id}, not {site_id}")
    return reply.receipt


async def _until_closed(nc: Any, closed: asyncio.Event, every: float = 1.0) -> None:
    """Until the connection is closed: its closed callback has run, or nats-py says it is closed.

    The callback alone is not enough. When the socket dies with data still queued to send,
    nats-py marks the connection closed and then raises on the final flush before it calls the
    callback, so a loop that waits only for the callback keeps a dead connection for ever: the
    chaos run on a NATS cluster (tests/test_chaos_cluster.py) found an agent "not connected"
    for minutes after the server behind its line was killed, its events never sent."""
    while not closed.is_set() and not nc.is_closed:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), every)


def redact_url(url: str) -> str:
    """A NATS URL (or list) without the password it may carry (nats://user:password@host)."""
    return natsurl.redact(url)
