"""The running agent: one NATS connection, the uploader and the downloader, owned and stopped here.

Start-up verifies the whole local hash chain first (guarantee 8): a damaged or edited log is
refused with `LogCorrupted` and nothing is sent. The connection is retried with capped,
jittered backoff for as long as the line is down; once up, nats-py reconnects by itself and
the two loops carry on from what the local log says.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors

from runtime import log
from sync_agent.backoff import Backoff
from sync_agent.config import SiteConfig, connect_options, load_config, log_path
from sync_agent.download import Downloader
from sync_agent.locallog import ChainReport, LocalLog, LocalLogError
from sync_agent.readlog import ReadLog, ReadUploader
from sync_agent.tuning import SyncTuning
from sync_agent.upload import Uploader, raise_if_cancelling

_log = log.get("sync_agent.agent")


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
                                     self.uploader.on_receipt, self._error, self._rng,
                                     js_domain=self.config.js_domain)
        # The station's read log goes up beside the events (sync_agent/readlog.py).
        self.read_log = ReadLog(self.data_dir)
        self.reads = ReadUploader(self.read_log, self.config.site_id, self._error, self._rng,
                                  retry_base=self.tuning.retry_base, retry_cap=self.tuning.retry_cap)
        self.nc: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_error: tuple[str, float] = ("", 0.0)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, parts: tuple[str, ...] = ("upload", "download", "reads")) -> None:
        """Verify the chain (raises LogCorrupted), then connect and sync in the background.

        `parts` picks the loops to run (tests run the upload alone to lose receipts on purpose)."""
        self.chain = await asyncio.to_thread(self.log.verify)
        _log.info("local log verified", site_id=self.config.site_id, events=self.chain.events)
        self._tasks = [asyncio.create_task(self._connect_loop(), name="agent-connect")]
        if "upload" in parts:
            self._tasks.append(asyncio.create_task(self.uploader.run(), name="agent-upload"))
        if "download" in parts:
            self._tasks.append(asyncio.create_task(self.downloader.run(), name="agent-download"))
        if "reads" in parts:
            self._tasks.append(asyncio.create_task(self.reads.run(), name="agent-reads"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await self.nc.close()
            self.nc = None
        self.log.close()
        self.read_log.close()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _connect_loop(self) -> None:
        backoff = Backoff(self.tuning.retry_base, self.tuning.retry_cap, self._rng)
        while self.nc is None:
            raise_if_cancelling()
            try:
                nc = await nats.connect(
                    self.nats_url, name=f"shouwang-agent {self.config.site_id}",
                    connect_timeout=self.tuning.connect_timeout, allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    **connect_options(self.config),
                    error_cb=self._nats_error, disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                )
            except (TimeoutError, nats.errors.Error, OSError) as err:
                self._error(f"connect to {self.nats_url}: {type(err).__name__}: {err}")
                await asyncio.sleep(backoff.next())
                continue
            self.nc = nc
            self.uploader.nc = nc
            self.downloader.nc = nc
            self.reads.nc = nc
            self.uploader.notify()
            self.reads.notify()
            _log.info("connected", site_id=self.config.site_id)

    async def _nats_error(self, err: Exception) -> None:
        self._error(f"nats: {type(err).__name__}: {err}")

    async def _disconnected(self) -> None:
        _log.info("disconnected", site_id=self.config.site_id)

    async def _reconnected(self) -> None:
        _log.info("reconnected", site_id=self.config.site_id)
        self.uploader.notify()
        self.reads.notify()

    def _error(self, message: str) -> None:
        """Remember the last error for `agent status` (written at most every few seconds)."""
        _log.warning("sync error", site_id=self.config.site_id, error=message)
        last, at = self._last_error
        now = time.monotonic()
        if message != last or now - at > 5:
            self._last_error = (message, now)
            with contextlib.suppress(LocalLogError):  # status bookkeeping must never stop the sync
                self.log.set_meta(last_error=message, last_error_at=dt.datetime.now(dt.UTC).isoformat())

    # --- progress -----------------------------------------------------------------------

    def pending(self) -> int:
        return self.log.pending(self.uploader.receipt)[0]

    async def wait_synced(self, seconds: float, on_progress: Any = None) -> bool:
        """Until nothing is pending (every event receipted or refused) or `seconds`; True if synced."""
        deadline = time.monotonic() + seconds
        while True:
            pending = self.pending()
            if on_progress is not None:
                on_progress(pending, self.log.last_seq())
            if pending == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
