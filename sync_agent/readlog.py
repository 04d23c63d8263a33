"""The station's read log: every read of a child's data here (who, which child, which route,
when, served or not) is written down locally before the data is shown, and uploaded to the
center's read log (``read_log``, with this site's id and the row's local id) when the line is up.

Kept in ``<data dir>/reads.sqlite`` (mode 0600). A row leaves it only after the center has
answered that it kept it (``kept`` = the highest local id it stored), so offline reads go up
once the line is back and a lost answer only makes the center see a batch twice (its unique
index on site id and local id stores it once).

Local ids never repeat, even if the file is lost and made again: the first id of a new file is
the creation time in milliseconds times 1000, above every id an earlier file handed out.

Wire (JSON; core NATS request on ``events.wire.reads_subject(site)``, reply to a subject below
the site's own inbox, ``events.wire.inbox_prefix``):
request ``{"reads": [{"id", "read_at", "username", "role", "child_id", "route", "outcome"}]}``
(at most `BATCH` rows), answer ``{"kept": <highest id stored>}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import nats.errors

from events.wire import inbox_prefix, reads_subject
from sync_agent.backoff import Backoff
from sync_agent.upload import raise_if_cancelling

READS_NAME = "reads.sqlite"
BATCH = 500
ANSWER_WITHIN = 10.0
IDLE = 5.0  # how often an idle uploader looks for reads written by another process (agent show)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reads (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    read_at   TEXT NOT NULL,
    username  TEXT NOT NULL,
    role      TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    route     TEXT NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('served', 'not_found'))
);
"""


class ReadLogError(Exception):
    """The read log cannot be written: the read is refused rather than made unrecorded."""


class Read(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    read_at: str
    username: str
    role: str
    child_id: str
    route: str
    outcome: str


class _Answer(msgspec.Struct, frozen=True):
    kept: int | None = None
    error: str | None = None


def reads_path(data_dir: Path) -> Path:
    return Path(data_dir) / READS_NAME


class ReadLog:
    def __init__(self, data_dir: Path) -> None:
        self.path = reads_path(data_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(self.path, 0o600)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            first = int(time.time() * 1000) * 1000
            self._conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'reads', ? WHERE NOT EXISTS "
                               "(SELECT 1 FROM sqlite_sequence WHERE name = 'reads')", (first,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ReadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, username: str, role: str, child_id: str, route: str, served: bool) -> int:
        """Write one read down (durably) before the data is shown; raises ReadLogError."""
        try:
            with self._lock:
                cur = self._conn.execute(
                    "INSERT INTO reads (read_at, username, role, child_id, route, outcome) VALUES (?, ?, ?, ?, ?, ?)",
                    (dt.datetime.now(dt.UTC).isoformat(), username[:64], role[:32], child_id[:64], route[:200],
                     "served" if served else "not_found"))
        except sqlite3.Error as err:
            raise ReadLogError(f"the read log {self.path} cannot be written: {err}") from None
        return int(cur.lastrowid or 0)

    def pending(self, limit: int = BATCH) -> list[Read]:
        with self._lock:
            rows = self._conn.execute("SELECT id, read_at, username, role, child_id, route, outcome FROM reads "
                                      "ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [Read(id=r[0], read_at=r[1], username=r[2], role=r[3], child_id=r[4], route=r[5], outcome=r[6])
                for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM reads").fetchone()[0])

    def forget_upto(self, kept: int) -> int:
        """Drop the rows the center has kept (ids up to `kept`)."""
        with self._lock:
            return self._conn.execute("DELETE FROM reads WHERE id <= ?", (kept,)).rowcount


_encoder = msgspec.json.Encoder()
_answer = msgspec.json.Decoder(_Answer)


class ReadUploader:
    """Sends the read log to the center in batches whenever the agent has a connection."""

    def __init__(self, reads: ReadLog, site_id: str, on_error: Callable[[str], None],
                 rng: random.Random | None = None, *, retry_base: float = 0.2, retry_cap: float = 30.0) -> None:
        self.reads = reads
        self.site_id = site_id
        self.nc: Any = None
        self.uploaded = 0
        self._on_error = on_error
        self._wake = asyncio.Event()
        self._backoff = Backoff(retry_base, retry_cap, rng)

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            raise_if_cancelling()
            try:
                sent = await self.step()
                self._backoff.reset()
            except (nats.errors.Error, OSError, TimeoutError, msgspec.DecodeError, RuntimeError) as err:
                raise_if_cancelling()
                self._on_error(f"read log upload: {type(err).__name__}: {err}")
                await asyncio.sleep(self._backoff.next())
                continue
            if not sent:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE):
                        await self._wake.wait()

    async def step(self) -> int:
        """Send one batch if there is one and a connection; returns how many the center kept."""
        nc = self.nc
        if nc is None or not nc.is_connected:
            return 0
        batch = await asyncio.to_thread(self.reads.pending, BATCH)
        if not batch:
            return 0
        inbox = f"{inbox_prefix(self.site_id)}.reads.{secrets.token_hex(8)}"
        sub = await nc.subscribe(inbox, max_msgs=1)
        try:
            await nc.publish(reads_subject(self.site_id), _encoder.encode({"reads": batch}), reply=inbox)
            msg = await sub.next_msg(timeout=ANSWER_WITHIN)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        answer = _answer.decode(msg.data)
        if answer.error is not None or answer.kept is None:
            raise RuntimeError(f"the center did not keep the reads: {answer.error or 'no answer'}")
        kept = min(answer.kept, batch[-1].id)
        await asyncio.to_thread(self.reads.forget_upto, kept)
        done = sum(1 for r in batch if r.id <= kept)
        self.uploaded += done
        return done
