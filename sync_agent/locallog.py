"""The site's local log: SQLite in WAL mode with synchronous=FULL, one file per site.

Tables:
* ``log``: the site's own events, the whole history, in ``site_seq`` order, each row the
  exact JSON that is published (``body``) and its hash. Rows are never updated or deleted.
* ``inbox``: committed events of other sites received from the center (children in scope).
* ``inbox_redacted``: which inbox rows are copies the center redacted to this site's children,
  with the hash of the original (docs/SECURITY.md).
* ``inbox_seal``: the center's seal of each whole copy (a township office relays those to a
  restored center, sync_agent/relay.py), in the order they arrived; ``relay_refused``: copies the
  center would not take back, never offered again; ``relay_seal_refused``: copies refused for their
  seal alone, offered again only to a center with another key.
* ``child_event``: which events (own or received) concern which child, for the offline view.
* ``refused``: what the center refused and keeps in quarantine.
* ``meta``: the HLC high-water mark, the last receipt, last contact and last error.

Guarantee 1 (recorded means durable): `record` returns only after COMMIT, and with WAL plus
synchronous=FULL SQLite fsyncs the WAL at every commit, so a power cut afterwards loses
nothing. Guarantees 3 and 8 (gapless sequence, hash chain): sealing reads the last row and
the HLC, seals and inserts inside one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's
write lock before the read. A second process (the CLI while the agent runs) therefore waits
for the lock and then sees the first one's rows; no two events can get one ``site_seq`` or
one ``prev_hash``. A failure anywhere in the batch rolls the whole batch back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from events.envelope import (
    GENESIS_HASH,
    DecodedEvent,
    Draft,
    Event,
    care_of,
    decode_event,
    encode_event,
    event_hash,
    seal,
)
from events.hlc import HybridClock, to_datetime
from events.ids import new_event_id
from events.validation import Problem, ValidationFailed, join_path
from events.wire import Receipt, Refusal, receipt_decoder, receipt_encoder
from runtime import log
from sync_agent import view
from sync_agent.clock import site_wall_ms

_log = log.get("sync_agent.locallog")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    site_seq    INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    hash        TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    body        BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    event_id    TEXT PRIMARY KEY,
    site_id     TEXT NOT NULL,
    site_seq    INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    body        BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_redacted (
    event_id      TEXT PRIMARY KEY,
    original_hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_seal (
    n        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    seal     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS relay_refused (
    event_id TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    at       TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS relay_seal_refused (
    event_id TEXT PRIMARY KEY,
    key_id   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS child_event (
    child_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (child_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refused (
    quarantine_id INTEGER PRIMARY KEY,
    event_id      TEXT,
    site_seq      INTEGER,
    reason        TEXT NOT NULL,
    received_at   TEXT NOT NULL
);
"""

_event_decoder = msgspec.json.Decoder(Event)
RULE_TYPES = ("FollowUpRuleSet", "FollowUpRuleRetired", "SchoolCalendarSet")  # the township's rules (events.rules)
# Set in meta while `agent restore` fills the log from the center; recording waits until it ends.
RESTORING = "restoring"
# meta: the token of the agent's current connection to the center (a new one per connection), and
# the token of the connection on which the last receipt applied was asked for (absent when the
# last receipt came any other way). Tokens, not times: a station's clock may jump.
CONNECTION = "connection"
RECEIPT_FRESH_FOR = "receipt_fresh_for"


class LocalLogError(Exception):
    """The local log cannot be used; the message says what happened and what to do."""


class LogLocked(LocalLogError):
    """Another program holds the local log's write lock for longer than we wait."""


class LogFull(LocalLogError):
    """The disk (or the log's size limit) is full; nothing of the batch was written."""


class RestoreMismatch(LocalLogError):
    """Events offered to `restore_own` do not continue this log; nothing was written."""

    def __init__(self, site_seq: int, what: str) -> None:
        self.site_seq = site_seq
        super().__init__(f"restore stopped at site_seq {site_seq}: {what}; nothing of this page was written")


class LogCorrupted(LocalLogError):
    """The hash chain or the sequence of the local log is broken: an edited or damaged file."""

    def __init__(self, path: Path, site_seq: int, what: str) -> None:
        self.site_seq = site_seq
        super().__init__(
            f"the local log {path} is damaged or was edited at site_seq {site_seq}: {what}. "
            "It is refused rather than re-chained; keep the file for the auditor and restore "
            "the site's log from a backup (`shouwang agent verify` shows the first broken link)")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _translate(err: sqlite3.Error, path: Path, busy_timeout: float) -> LocalLogError:
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return LogLocked(f"the local log {path} is locked by another program (waited {busy_timeout:g} s); "
                         "nothing was recorded. Close the other program or retry")
    if name.startswith("SQLITE_FULL") or "full" in text:
        return LogFull(f"the disk holding {path} is full; nothing was recorded and the sequence is "
                       "unchanged. Free some space and retry")
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return LocalLogError(f"the local log {path} is read-only ({text}); nothing was recorded")
    return LocalLogError(f"the local log {path} failed: {text} ({name or 'sqlite error'})")


@dataclasses.dataclass(frozen=True, slots=True)
class Recorded:
    event_id: str
    site_seq: int
    hash: str


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    site_seq: int
    event_id: str
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiptState:
    """What the center last said it has of this site; every site_seq it does not cover is pending."""

    watermark: int = 0
    max_seq: int = 0
    holes: tuple[tuple[int, int], ...] = ()

    def committed(self, seq: int) -> bool:
        if seq <= self.watermark:
            return True
        return seq <= self.max_seq and not any(lo <= seq <= hi for lo, hi in self.holes)


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiptEffect:
    state: ReceiptState
    went_back: bool  # the center lost events it had receipted (restored from a backup)
    progressed: bool
    # Own events refused before whose refusal the center no longer holds (a receipt with
    # refused_all): pending again, to be sent and decided afresh.
    forgotten: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ChainReport:
    events: int
    head_seq: int
    head_hash: str


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One of the site's own events as the log holds it: the event and its stored hash."""

    event: Event
    hash: str


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """A sealed event `append` would not take, and why."""

    event_id: str
    site_seq: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class AppendOutcome:
    """What `append` did with each sealed event (ids in the caller's order)."""

    stored: list[str]
    duplicates: list[str]
    refused: list[Refused]


@dataclasses.dataclass(frozen=True, slots=True)
class ChainAudit:
    """`verify` as a report rather than an exception: what `verify_chain` returns."""

    site_id: str
    verified: int
    ok: bool
    problems: list[str]


class LocalLog:
    """One connection to a site's SQLite log. Thread-safe (one lock); open one per process/task."""

    def __init__(self, path: Path, site_id: str, *, busy_timeout: float = 10.0,
                 wall_ms: Callable[[], int] | None = None) -> None:
        self.path = Path(path)
        self.site_id = site_id
        self.busy_timeout = busy_timeout
        # The wall clock the HLC reads for recorded_at (SHOUWANG_CLOCK_SKEW_SECONDS shifts it).
        self._wall_ms = wall_ms or site_wall_ms()
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._write():
                for statement in _statements():  # not executescript: it would COMMIT our transaction
                    self._conn.execute(statement)
                owner = self._meta("site_id")
                if owner is None:
                    self._set_meta("site_id", site_id)
                    self._set_meta("created_at", _now().isoformat())
                elif owner != site_id:
                    raise LocalLogError(f"the local log {self.path} belongs to site {owner!r}, not {site_id!r}")
        except sqlite3.Error as err:
            raise _translate(err, self.path, busy_timeout) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LocalLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ------------------------------------------------------------------

    class _Tx:
        def __init__(self, log: LocalLog) -> None:
            self.log = log

        def __enter__(self) -> sqlite3.Connection:
            self.log._lock.acquire()
            try:
                self.log._conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.log._lock.release()
                raise
            return self.log._conn

        def __exit__(self, typ: object, exc: object, tb: object) -> None:
            try:
                if typ is None:
                    self.log._conn.execute("COMMIT")
                elif self.log._conn.in_transaction:  # SQLite already rolled back on SQLITE_FULL
                    self.log._conn.execute("ROLLBACK")
            finally:
                self.log._lock.release()

    def _write(self) -> LocalLog._Tx:
        return LocalLog._Tx(self)

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                           "excluded.value", (key, value))

    def meta(self, key: str) -> str | None:
        with self._lock:
            return self._meta(key)

    def clear_meta(self, *keys: str) -> None:
        try:
            with self._write() as conn:
                conn.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in keys])
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None

    def set_meta(self, **values: str) -> None:
        try:
            with self._write():
                for k, v in values.items():
                    self._set_meta(k, v)
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None

    # --- recording -----------------------------------------------------------------------

    def record(self, drafts: Sequence[Draft], *, default_actor: str, now: dt.datetime | None = None) -> list[Recorded]:
        """Seal and store a batch of drafts atomically; return their ids once durable.

        Raises ValidationFailed (every problem, by field) with nothing written, or a LocalLogError.
        """
        if not drafts:
            return []
        now = now or _now()
        try:
            with self._write() as conn:
                if self._meta(RESTORING) is not None:
                    raise LocalLogError(f"the local log {self.path} is being restored from the center and the "
                                        "restore has not finished; nothing was recorded. Run `shouwang agent "
                                        "restore` again (it resumes where it stopped)")
                seq, prev = _head(conn)
                clock = HybridClock(int(self._meta("hlc") or 0), self._wall_ms)
                bases: dict[str, dict[str, str]] = {}  # child -> field -> event id, this batch included
                problems: list[Problem] = []
                rows: list[tuple[int, str, str, int, bytes]] = []
                links: list[tuple[str, str]] = []
                single = len(drafts) == 1
                for i, draft in enumerate(drafts):
                    seq += 1
                    children = draft.care.child_ids()
                    based_on = draft.based_on
                    fields = draft.care.fields_set()
                    if based_on is None and fields and len(children) == 1:
                        known = bases.get(children[0])
                        if known is None:
                            known = view.field_bases(view.build_view(children[0], self._child_events(children[0])))
                            bases[children[0]] = known
                        based_on = {f: known[f] for f in fields if f in known}
                    sealed = seal(draft.care, site_id=self.site_id, site_seq=seq, prev_hash=prev,
                                  recorded_at=clock.now(), occurred_at=draft.occurred_at,
                                  actor=draft.actor or default_actor, event_id=new_event_id(), based_on=based_on)
                    body = encode_event(sealed.event)
                    try:  # the sealed event must pass exactly what the center will check
                        decode_event(body, now=now)
                    except ValidationFailed as err:
                        prefix = "" if single else f"[{i}]"
                        problems += [Problem(join_path(prefix, p.field), p.message, p.value) for p in err.problems]
                        continue
                    if len(children) == 1 and fields:
                        bases.setdefault(children[0], {}).update({f: sealed.event.event_id for f in fields})
                    rows.append((seq, sealed.event.event_id, sealed.hash, sealed.event.recorded_at, body))
                    links += [(child, sealed.event.event_id) for child in children]
                    prev = sealed.hash
                if problems:
                    raise ValidationFailed(problems)
                conn.executemany("INSERT INTO log(site_seq, event_id, hash, recorded_at, body) VALUES (?,?,?,?,?)",
                                 rows)
                conn.executemany("INSERT OR IGNORE INTO child_event(child_id, event_id) VALUES (?, ?)", links)
                self._set_meta("hlc", str(clock.last))
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None
        return [Recorded(r[1], r[0], r[2]) for r in rows]

    def record_sealed_for_test(self, events: Sequence[DecodedEvent]) -> None:
        """Insert events sealed elsewhere, unchecked (tests that forge a damaged log use it)."""
        with self._write() as conn:
            conn.executemany("INSERT INTO log(site_seq, event_id, hash, recorded_at, body) VALUES (?,?,?,?,?)",
                             [(d.event.site_seq, d.event.event_id, d.hash, d.event.recorded_at,
                               encode_event(d.event)) for d in events])

    def restore_own(self, bodies: Sequence[bytes]) -> ChainReport:
        """Append this site's own events as the center returned them (``agent restore``), in one
        transaction, after checking that they continue this log exactly: the next site_seq, this
        site, each prev_hash the previous event's hash. Nothing is re-sealed: the events keep
        their ids, times and hashes, so the center sees the same log it holds. Raises
        RestoreMismatch, with nothing written, at the first event that does not fit."""
        try:
            with self._write() as conn:
                seq, prev = _head(conn)
                hlc = int(self._meta("hlc") or 0)
                rows: list[tuple[int, str, str, int, bytes]] = []
                links: list[tuple[str, str]] = []
                for body in bodies:
                    seq += 1
                    try:
                        event = _event_decoder.decode(body)
                    except msgspec.DecodeError as err:
                        raise RestoreMismatch(seq, f"the center's copy cannot be read ({err})") from None
                    if event.site_id != self.site_id:
                        raise RestoreMismatch(seq, f"the center sent an event of site {event.site_id!r}")
                    if event.site_seq != seq:
                        raise RestoreMismatch(seq, f"the center sent site_seq {event.site_seq} where {seq} was due")
                    if event.prev_hash != prev:
                        raise RestoreMismatch(seq, "its prev_hash is not the previous event's hash")
                    prev = event_hash(event)
                    rows.append((seq, event.event_id, prev, event.recorded_at, bytes(body)))
                    links += [(child, event.event_id) for child in event.children]
                    hlc = max(hlc, event.recorded_at)
                conn.executemany("INSERT INTO log(site_seq, event_id, hash, recorded_at, body) VALUES (?,?,?,?,?)",
                                 rows)
                conn.executemany("INSERT OR IGNORE INTO child_event(child_id, event_id) VALUES (?, ?)", links)
                self._set_meta("hlc", str(hlc))  # the next event's recorded_at comes after every restored one
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None
        return ChainReport(len(rows), seq, prev)

    def append(self, batch: Sequence[DecodedEvent]) -> AppendOutcome:
        """Append events sealed elsewhere, in one transaction, keeping the promises of the
        center's store (store/contract.py, checked by tests/test_store_contract.py on both):
        an event already in the log with the same hash is a duplicate and changes nothing; the
        same id with other content, another site's event, an event claiming a site_seq that
        is taken, one that would leave a gap, and one that does not continue the chain are
        refused, and the log is left as it was for them. New events of this site are recorded
        with `record`; this is for events that already have their ids and hashes."""
        stored: list[str] = []
        duplicates: list[str] = []
        refused: list[Refused] = []
        if not batch:
            return AppendOutcome(stored, duplicates, refused)
        try:
            with self._write() as conn:
                seq, prev = _head(conn)
                hlc = int(self._meta("hlc") or 0)
                for d in batch:
                    e = d.event
                    row = conn.execute("SELECT hash FROM log WHERE event_id = ?", (e.event_id,)).fetchone()
                    if row is not None:
                        if str(row[0]) == d.hash:  # the hash covers site_id and site_seq too
                            duplicates.append(e.event_id)
                        else:
                            refused.append(Refused(e.event_id, e.site_seq, f"event_id {e.event_id} is already "
                                                   "stored with different content; the stored event is kept, "
                                                   "this one is refused"))
                        continue
                    reason = self._misfit(conn, d, seq, prev)
                    if reason is not None:
                        refused.append(Refused(e.event_id, e.site_seq, reason))
                        continue
                    # Inserted one by one, so a repeat later in the batch finds it (a duplicate).
                    conn.execute("INSERT INTO log(site_seq, event_id, hash, recorded_at, body) VALUES (?,?,?,?,?)",
                                 (e.site_seq, e.event_id, d.hash, e.recorded_at, encode_event(e)))
                    conn.executemany("INSERT OR IGNORE INTO child_event(child_id, event_id) VALUES (?, ?)",
                                     [(child, e.event_id) for child in e.children])
                    seq, prev, hlc = e.site_seq, d.hash, max(hlc, e.recorded_at)
                    stored.append(e.event_id)
                if stored:
                    self._set_meta("hlc", str(hlc))  # the next event's recorded_at comes after these
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None
        return AppendOutcome(stored, duplicates, refused)

    def _misfit(self, conn: sqlite3.Connection, d: DecodedEvent, seq: int, prev: str) -> str | None:
        """Why a new event id cannot go on a log whose head is (seq, prev), or None if it can."""
        e = d.event
        if e.site_id != self.site_id:
            return f"the event belongs to site {e.site_id!r}; this log keeps the events of {self.site_id!r}"
        if e.site_seq <= seq:
            holder = conn.execute("SELECT event_id FROM log WHERE site_seq = ?", (e.site_seq,)).fetchone()
            return (f"site_seq {e.site_seq} of site {e.site_id} is already used by event "
                    f"{holder[0] if holder else 'another event'}; a site's sequence numbers must be unique")
        if e.site_seq != seq + 1:
            return f"site_seq {e.site_seq} would leave a gap: site_seq {seq + 1} is due"
        if e.prev_hash != prev:
            return "its prev_hash is not the previous event's hash"
        if event_hash(e) != d.hash:
            return "its content does not match its hash"
        return None

    # --- reading -------------------------------------------------------------------------

    def read_site(self, site_id: str, from_seq: int = 1, limit: int = 1000) -> list[LoggedEvent]:
        """The site's own events with site_seq >= from_seq, by site_seq, at most `limit`, as the
        contract's reads return them (store/contract.py). Any other site's: none (events
        received from the center are in the inbox, not in this log)."""
        if site_id != self.site_id:
            return []
        with self._lock:
            rows = self._conn.execute("SELECT hash, body FROM log WHERE site_seq >= ? ORDER BY site_seq LIMIT ?",
                                      (from_seq, limit)).fetchall()
        return [LoggedEvent(_event_decoder.decode(r[1]), str(r[0])) for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT max(site_seq) FROM log").fetchone()
        return int(row[0] or 0)

    def read_range(self, first: int, last: int, limit: int = 500) -> list[Outgoing]:
        """Own events with first <= site_seq <= last, in order, at most `limit` (a page)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT site_seq, event_id, body FROM log WHERE site_seq BETWEEN ? AND ? ORDER BY site_seq LIMIT ?",
                (first, last, limit)).fetchall()
        return [Outgoing(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def own_events(self) -> Iterator[Event]:
        after = 0
        while True:
            with self._lock:
                rows = self._conn.execute("SELECT site_seq, body FROM log WHERE site_seq > ? ORDER BY site_seq "
                                          "LIMIT 1000", (after,)).fetchall()
            if not rows:
                return
            for seq, body in rows:
                yield _event_decoder.decode(body)
                after = int(seq)

    def _child_events(self, child_id: str) -> list[Event]:
        rows = self._conn.execute(
            "SELECT l.body, l.event_id FROM child_event c JOIN log l ON l.event_id = c.event_id WHERE c.child_id = ? "
            "UNION ALL SELECT i.body, NULL FROM child_event c JOIN inbox i ON i.event_id = c.event_id "
            "WHERE c.child_id = ?", (child_id, child_id)).fetchall()
        refused = self._refused_ids()
        return [_event_decoder.decode(r[0]) for r in rows if r[1] is None or r[1] not in refused]

    def _refused_ids(self) -> set[str]:
        """Ids of own events the center refused and has not stored since (a refusal the center
        later overtook: a replay, or a resend after its restore, is covered by a receipt). Call
        with the lock held."""
        rows = self._conn.execute("SELECT l.site_seq, l.event_id FROM refused r JOIN log l "
                                  "ON l.site_seq = r.site_seq AND l.event_id = r.event_id").fetchall()
        if not rows:
            return set()
        raw = self._meta("receipt")
        state = ReceiptState() if raw is None else _state_of(receipt_decoder.decode(raw))
        return {str(eid) for seq, eid in rows if not state.committed(int(seq))}

    def child_events(self, child_id: str) -> list[Event]:
        """Every event this site knows of the child: its own and those received from the center.
        Its own events the center refused (kept in quarantine there, listed as refused here) are
        left out, so the station shows the child as the center does (they were never counted)."""
        with self._lock:
            return self._child_events(child_id)

    def rule_events(self) -> list[Event]:
        """The township's rules and calendars this site holds (its own, at a township office, and
        those the center fanned out), and the corrections of them (EventCorrected naming one), in
        no particular order. They name no child, so a match on the body's bytes finds them without
        an index (JSON bodies carry `"type":"<name>"`, a correction `"corrected_event_id":"<id>"`)."""
        marks = [f'"type":"{t}"'.encode() for t in RULE_TYPES]
        match = " OR ".join("instr(body, ?) > 0" for _ in marks)
        with self._lock:
            refused = self._refused_ids()
            rows = self._conn.execute(f"SELECT body, event_id FROM log WHERE {match} "
                                      f"UNION ALL SELECT body, NULL FROM inbox WHERE {match}", marks + marks).fetchall()
        events = [_event_decoder.decode(r[0]) for r in rows if r[1] is None or r[1] not in refused]
        found = [e for e in events if e.type in RULE_TYPES]
        if not found:
            return found
        fix = b'"type":"EventCorrected"'
        with self._lock:
            rows = self._conn.execute("SELECT body, event_id FROM log WHERE instr(body, ?) > 0 "
                                      "UNION ALL SELECT body, NULL FROM inbox WHERE instr(body, ?) > 0",
                                      [fix, fix]).fetchall()
        ids = {e.event_id for e in found}
        for r in rows:
            if r[1] is not None and r[1] in refused:
                continue
            e = _event_decoder.decode(r[0])
            care = care_of(e) if e.type == "EventCorrected" and not e.children else None
            if care is not None and getattr(care, "corrected_event_id", None) in ids:
                found.append(e)
        return found

    def children(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._conn.execute("SELECT DISTINCT child_id FROM child_event ORDER BY 1")]

    def change_mark(self) -> tuple[int, int]:
        """A mark that moves whenever the log may have changed: SQLite's ``data_version`` of this
        connection (it moves with every commit of any other connection: the agent's downloader,
        the CLI) and this connection's own count of rows written (``total_changes``)."""
        with self._lock:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            return version, self._conn.total_changes

    def child_event_counts(self) -> dict[str, int]:
        """Child id -> how many events (own and received) the site holds of it, its own events the
        center refused left out. Rows of ``child_event`` are only ever added, so a child whose
        events changed has a new count (an inbox copy widened by `_widen_inbound` adds rows for the
        children it newly names; a refusal takes one away)."""
        with self._lock:
            counts = {str(r[0]): int(r[1]) for r in self._conn.execute(
                "SELECT child_id, count(*) FROM child_event GROUP BY child_id")}
            refused = sorted(self._refused_ids())
            for i in range(0, len(refused), 500):
                chunk = refused[i:i + 500]
                for (child,) in self._conn.execute(
                        f"SELECT child_id FROM child_event WHERE event_id IN ({','.join('?' * len(chunk))})", chunk):
                    counts[str(child)] -= 1
            return counts

    # --- the hash chain ----------------------------------------------------------------

    def verify(self) -> ChainReport:
        """Walk the whole log: gapless site_seq from 1, each body's hash, each prev_hash link.

        Raises LogCorrupted at the first broken link; never repairs anything (guarantee 8).
        """
        expected_seq, prev, count = 1, GENESIS_HASH, 0
        after = 0
        while True:
            with self._lock:
                rows = self._conn.execute("SELECT site_seq, event_id, hash, body FROM log WHERE site_seq > ? "
                                          "ORDER BY site_seq LIMIT 2000", (after,)).fetchall()
            if not rows:
                return ChainReport(count, expected_seq - 1, prev)
            for seq, event_id, stored_hash, body in rows:
                if seq != expected_seq:
                    raise LogCorrupted(self.path, expected_seq, f"the event is missing (next present is {seq})")
                try:
                    event = _event_decoder.decode(body)
                except msgspec.DecodeError as err:
                    raise LogCorrupted(self.path, seq, f"the stored event cannot be read ({err})") from None
                if event.site_seq != seq or event.event_id != event_id or event.site_id != self.site_id:
                    raise LogCorrupted(self.path, seq, "the stored event's id, site or sequence was changed")
                if event.prev_hash != prev:
                    raise LogCorrupted(self.path, seq, "prev_hash does not match the previous event's hash")
                actual = event_hash(event)
                if actual != stored_hash:
                    raise LogCorrupted(self.path, seq, "the event's content does not match its recorded hash")
                prev = actual
                expected_seq += 1
                count += 1
                after = seq

    def verify_chain(self, site_id: str) -> ChainAudit:
        """`verify` reported rather than raised, the way the center's store reports it (the
        contract's chain check, store/contract.py): the first broken link is the problem."""
        if site_id != self.site_id:
            return ChainAudit(site_id, 0, True, [])
        try:
            report = self.verify()
        except LogCorrupted as err:
            return ChainAudit(site_id, err.site_seq - 1, False, [str(err)])
        return ChainAudit(site_id, report.events, True, [])

    # --- receipts -----------------------------------------------------------------------

    def receipt_state(self) -> ReceiptState:
        with self._lock:
            raw = self._meta("receipt")
        if raw is None:
            return ReceiptState()
        return _state_of(receipt_decoder.decode(raw))

    def apply_receipt(self, receipt: Receipt, *, fresh_for: str | None = None) -> ReceiptEffect:
        """Store the center's latest receipt for this site (and its refusals) in one transaction.

        `fresh_for`: the connection (its token, meta ``connection``) on which the center gave this
        receipt when asked (`Agent.confirm`). It is kept with the receipt, in the same
        transaction, and any other receipt applied after it (one from care.down, which may have
        waited there since before a center's restore) clears it: `agent status` counts a station
        as synced only while the last receipt applied is a fresh one of the current connection."""
        try:
            with self._write() as conn:
                before_raw = self._meta("receipt")
                before = receipt_decoder.decode(before_raw) if before_raw else None
                self._set_meta("receipt", receipt_encoder.encode(receipt).decode())
                if fresh_for is None:
                    conn.execute("DELETE FROM meta WHERE key = ?", (RECEIPT_FRESH_FOR,))
                else:
                    self._set_meta(RECEIPT_FRESH_FOR, fresh_for)
                self._set_meta("last_contact", _now().isoformat())
                forgotten: set[int] = set()
                if before is not None and receipt.watermark < before.watermark:
                    # The center was restored from an older backup: it lost the quarantine rows of
                    # what it refused since (and may give their ids to new rows). Every refused
                    # event goes once more, to be decided afresh and kept in its quarantine again.
                    conn.execute("DELETE FROM refused")
                elif receipt.refused_all:
                    # Every refusal the center holds is listed: one it lacks was made after the
                    # backup it was restored from, though its watermark did not go back (the
                    # event waited in a hole). Forget it; the event is sent again.
                    # Only refusals of own events are forgotten; one of a message this station did
                    # not send (no site_seq, or numbers it has not used) stays for its pages.
                    # (fetchall: a cursor left open by an error would hold this connection's
                    # snapshot for as long as the error is kept, and the log would look frozen.)
                    own = {(int(r[0]), str(r[1])) for r in conn.execute(
                        "SELECT r.site_seq, r.event_id FROM refused r "
                        "JOIN log l ON l.site_seq = r.site_seq AND l.event_id = r.event_id").fetchall()}
                    gone = own - {(r.site_seq, r.event_id) for r in receipt.refused}
                    conn.executemany("DELETE FROM refused WHERE site_seq = ? AND event_id = ?", sorted(gone))
                    forgotten = {seq for seq, _ in gone}
                for r in receipt.refused:
                    if not self._is_own(conn, r):
                        _log.warning("refusal of a message this station did not send; ignored",
                                     quarantine_id=r.quarantine_id, site_seq=r.site_seq)
                        continue
                    conn.execute("INSERT OR REPLACE INTO refused(quarantine_id, event_id, site_seq, reason, "
                                 "received_at) VALUES (?,?,?,?,?)",
                                 (r.quarantine_id, r.event_id, r.site_seq, r.reason, _now().isoformat()))
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None
        state = ReceiptState(receipt.watermark, receipt.max_seq, tuple((h[0], h[1]) for h in receipt.holes))
        old_wm = before.watermark if before else 0
        old_max = before.max_seq if before else 0
        if forgotten:
            forgotten = {seq for seq in forgotten if not state.committed(seq)} - self.refused_seqs()
            if forgotten:
                _log.warning("refusals the center no longer holds; sending their events again",
                             site_seqs=sorted(forgotten)[:20], count=len(forgotten))
        return ReceiptEffect(state, went_back=receipt.watermark < old_wm,
                             progressed=receipt.watermark > old_wm or receipt.max_seq > old_max,
                             forgotten=tuple(sorted(forgotten)))

    @staticmethod
    def _is_own(conn: sqlite3.Connection, r: Refusal) -> bool:
        """Whether a refusal may be about what this station sent: a refusal that carries the digest
        of the refused bytes is ours only if those are the bytes of our event of that site_seq and
        event_id (a damaged copy someone sent with our numbers is refused too, and must not stop
        us sending the real one). Without a digest (an older center), or for numbers we have not
        used, it is kept: refused_seqs() then matches on site_seq and event_id alone."""
        if r.digest is None or r.site_seq is None or r.event_id is None:
            return True
        row = conn.execute("SELECT body FROM log WHERE site_seq = ? AND event_id = ?",
                           (r.site_seq, r.event_id)).fetchone()
        return row is None or hashlib.sha256(bytes(row[0])).hexdigest() == r.digest

    def refused_seqs(self) -> set[int]:
        """Own events the center refused. A refusal counts only if it names both the site_seq
        and the event_id of an event in this log: a message someone else sent on this site's
        subject (a forged or damaged event carrying another event's numbers) must never make
        the agent stop sending one of its own events."""
        with self._lock:
            return {int(r[0]) for r in self._conn.execute(
                "SELECT r.site_seq FROM refused r JOIN log l ON l.site_seq = r.site_seq AND l.event_id = r.event_id")}

    def refusals(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT quarantine_id, event_id, site_seq, reason, received_at FROM refused "
                                      "ORDER BY quarantine_id").fetchall()
        return [dict(zip(("quarantine_id", "event_id", "site_seq", "reason", "received_at"), r, strict=True))
                for r in rows]

    def pending(self, state: ReceiptState | None = None) -> tuple[int, int | None]:
        """(count, oldest site_seq) of own events the center has not receipted and not refused."""
        state = state or self.receipt_state()
        refused = self.refused_seqs()
        count, oldest = 0, None
        with self._lock:
            for lo, hi in state.holes:
                for (seq,) in self._conn.execute("SELECT site_seq FROM log WHERE site_seq BETWEEN ? AND ?",
                                                 (max(lo, state.watermark + 1), hi)):
                    if seq not in refused:
                        count += 1
                        oldest = seq if oldest is None else min(oldest, seq)
            row = self._conn.execute("SELECT count(*), min(site_seq) FROM log WHERE site_seq > ?",
                                     (max(state.max_seq, state.watermark),)).fetchone()
        above = [s for s in refused if s > max(state.max_seq, state.watermark)]
        count += int(row[0]) - len(above)
        if row[1] is not None:
            first = int(row[1])
            while first in refused:
                first += 1
            if int(row[0]) - len(above) > 0:
                oldest = first if oldest is None else min(oldest, first)
        return count, oldest

    def recorded_time(self, seq: int) -> dt.datetime | None:
        with self._lock:
            row = self._conn.execute("SELECT recorded_at FROM log WHERE site_seq = ?", (seq,)).fetchone()
        return None if row is None else to_datetime(int(row[0]))

    # --- inbound events (fan-out from the center) ---------------------------------------

    def apply_inbound(self, events: Sequence[tuple[Event, bytes]], redacted: Mapping[str, str] | None = None,
                      seals: Mapping[str, str] | None = None) -> int:
        """Keep committed events received from the center; idempotent. Returns how many were new.
        `redacted`: event id -> the original's hash, for copies the center cut to this site's children;
        `seals`: event id -> the center's seal of a whole copy (service/seals.py)."""
        if not events:
            return 0
        new = 0
        received = _now().isoformat()
        try:
            with self._write() as conn:
                clock = HybridClock(int(self._meta("hlc") or 0))
                for event, body in events:
                    clock.observe(event.recorded_at)
                    if event.site_id == self.site_id:
                        continue  # our own event coming back: the log already has it
                    cur = conn.execute("INSERT OR IGNORE INTO inbox(event_id, site_id, site_seq, recorded_at, "
                                       "received_at, body) VALUES (?,?,?,?,?,?)",
                                       (event.event_id, event.site_id, event.site_seq, event.recorded_at, received,
                                        body))
                    if cur.rowcount:
                        new += 1
                        conn.executemany("INSERT OR IGNORE INTO child_event(child_id, event_id) VALUES (?, ?)",
                                         [(c, event.event_id) for c in event.children])
                        if redacted and event.event_id in redacted:
                            conn.execute("INSERT OR IGNORE INTO inbox_redacted(event_id, original_hash) VALUES (?, ?)",
                                         (event.event_id, redacted[event.event_id]))
                    else:
                        self._widen_inbound(conn, event, redacted)
                    if seals and event.event_id in seals and not (redacted and event.event_id in redacted):
                        conn.execute("INSERT OR IGNORE INTO inbox_seal(event_id, seal) VALUES (?, ?)",
                                     (event.event_id, seals[event.event_id]))
                # Guarantee 6's HLC promise: what we record next sorts after what we have seen.
                self._set_meta("hlc", str(clock.last))
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None
        return new

    def _widen_inbound(self, conn: sqlite3.Connection, event: Event, redacted: Mapping[str, str] | None) -> None:
        """A second copy of an event already in the inbox. The center cuts an event naming several
        children to those in this site's scope when it sends it, so a later copy (a child entered
        the scope) may name children the first did not: keep one copy naming them all."""
        row = conn.execute("SELECT body FROM inbox WHERE event_id = ?", (event.event_id,)).fetchone()
        if row is None:
            return
        old = _event_decoder.decode(bytes(row[0]))
        extra = [c for c in event.children if c not in old.children]
        if not extra:
            return
        if redacted is None or event.event_id not in redacted:
            merged, body = event, encode_event(event)  # the whole event: nothing was cut from it
            conn.execute("DELETE FROM inbox_redacted WHERE event_id = ?", (event.event_id,))
        else:
            merged = widened_copy(old, event)
            body = encode_event(merged)
        conn.execute("UPDATE inbox SET body = ? WHERE event_id = ?", (body, event.event_id))
        conn.executemany("INSERT OR IGNORE INTO child_event(child_id, event_id) VALUES (?, ?)",
                         [(c, event.event_id) for c in merged.children])

    def relay_candidates(self, lacking: Callable[[str, int], bool], after: int, max_bytes: int,
                         max_events: int, key_id: str = "") -> tuple[list[tuple[str, bytes, str]], int]:
        """Sealed whole copies of other sites' events that the center lacks by `lacking(site,
        site_seq)`, in the order they arrived, after arrival number `after`: (event_id, body,
        seal) up to `max_bytes` and `max_events`, and the arrival number to continue after
        (`after` itself when none is left). Copies the center refused before are left out, those
        refused for their seal only while the center's key is `key_id`."""
        out: list[tuple[str, bytes, str]] = []
        size = 0
        with self._lock:
            while True:
                rows = self._conn.execute(
                    "SELECT s.n, i.event_id, i.site_id, i.site_seq, i.body, s.seal FROM inbox_seal s "
                    "JOIN inbox i ON i.event_id = s.event_id WHERE s.n > ? "
                    "AND s.event_id NOT IN (SELECT event_id FROM inbox_redacted) "
                    "AND s.event_id NOT IN (SELECT event_id FROM relay_refused) "
                    "AND s.event_id NOT IN (SELECT event_id FROM relay_seal_refused WHERE key_id = ?) "
                    "ORDER BY s.n LIMIT 2000", (after, key_id)).fetchall()
                if not rows:
                    return out, after
                for n, event_id, site_id, site_seq, body, seal in rows:
                    if lacking(str(site_id), int(site_seq)):
                        if out and (size + len(body) > max_bytes or len(out) >= max_events):
                            return out, after
                        out.append((str(event_id), bytes(body), str(seal)))
                        size += len(body)
                    after = int(n)

    def note_relay_refused(self, refused: Sequence[tuple[str, str]], seal_refused: Sequence[str] = (),
                           key_id: str = "") -> None:
        """Copies the center would not take back (event_id, reason): never offered again; and
        those it refused for their seal alone under the key `key_id`: not offered again to it."""
        if not refused and not seal_refused:
            return
        try:
            with self._write() as conn:
                conn.executemany("INSERT OR REPLACE INTO relay_refused(event_id, reason, at) VALUES (?, ?, ?)",
                                 [(eid, why, _now().isoformat()) for eid, why in refused])
                conn.executemany("INSERT OR REPLACE INTO relay_seal_refused(event_id, key_id) VALUES (?, ?)",
                                 [(eid, key_id) for eid in seal_refused])
        except sqlite3.Error as err:
            raise _translate(err, self.path, self.busy_timeout) from None

    def redacted_copies(self) -> dict[str, str]:
        """Inbox event id -> the original's hash, for the copies the center redacted."""
        with self._lock:
            rows = self._conn.execute("SELECT event_id, original_hash FROM inbox_redacted").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def inbox_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM inbox").fetchone()[0])


def _state_of(r: Receipt) -> ReceiptState:
    return ReceiptState(r.watermark, r.max_seq, tuple((h[0], h[1]) for h in r.holes))


def widened_copy(old: Event, new: Event) -> Event:
    """One copy of an event naming every child of two redacted copies of it: the envelope's
    children and the payload's child lists (a correction's replacement too) as their union.
    Everything else of the two copies is the same event, as the center sent it."""
    merged = _union_children(_json.decode(old.payload), _json.decode(new.payload))
    children = list(dict.fromkeys([*old.children, *new.children]))
    return msgspec.structs.replace(old, children=children, payload=msgspec.Raw(_json_encoder.encode(merged)))


def _union_children(a: Any, b: Any) -> Any:
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return a
    out = dict(a)
    if isinstance(a.get("child_ids"), list) and isinstance(b.get("child_ids"), list):
        out["child_ids"] = list(dict.fromkeys([*a["child_ids"], *b["child_ids"]]))
    if isinstance(a.get("replacement"), dict):
        out["replacement"] = _union_children(a["replacement"], b.get("replacement"))
    return out


_json = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


def _head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The last site_seq of the log and its hash (0 and the genesis hash when empty)."""
    row = conn.execute("SELECT site_seq, hash FROM log ORDER BY site_seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)


def _statements() -> list[str]:
    return [s.strip() for s in SCHEMA.split(";") if s.strip()]
