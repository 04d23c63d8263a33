"""Quarantine: refused input kept byte for byte, with its subject, reason and time (guarantee 7).

Rows are written in the ingest transaction (or by the dead-letter handler when an event
reached JetStream's MaxDeliver without being committed), listed and shown by
`shouwang center quarantine list|show`, and replayed by `shouwang center quarantine replay`
after a fix (a site registered late, a center upgraded to know a newer type): the raw bytes go
through the same decode, authorization and append as live input, in one transaction with the
row's new status. A replay that fails again leaves the row held, with the new reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from events.types import SiteId
from events.wire import Refusal
from runtime import log
from store.conn import Conn

_log = log.get("service.quarantine")


class QuarantineError(Exception):
    """A quarantine operation was refused (no such row, already replayed)."""


class Quarantined(msgspec.Struct, frozen=True):
    """One refused message as the center keeps it."""

    id: int
    received_at: dt.datetime
    subject: str
    site_id: str | None
    event_id: str | None
    site_seq: int | None
    reason: str
    size: int
    status: str
    attempts: int
    deliveries: int | None
    resolved_at: dt.datetime | None
    resolution: str | None


class NewRow(msgspec.Struct, frozen=True):
    """A row to insert: what arrived and why it was refused."""

    subject: str
    site_id: str | None
    reason: str
    raw: bytes
    msgpack: bool = False
    event_id: str | None = None
    site_seq: int | None = None
    stream_seq: int | None = None
    deliveries: int | None = None


_COLUMNS = ("subject", "site_id", "event_id", "site_seq", "reason", "raw", "msgpack", "stream_seq", "deliveries")


async def insert_rows(conn: Conn, rows: Sequence[NewRow]) -> list[int]:
    """Insert quarantine rows inside the caller's transaction; returns their ids in order."""
    if not rows:
        return []
    ids = await conn.fetch(
        """INSERT INTO quarantine (subject, site_id, event_id, site_seq, reason, raw, msgpack, stream_seq, deliveries)
           SELECT a, b, c, d, e, f, g, h, i
           FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::text[], $6::bytea[],
                       $7::boolean[], $8::bigint[], $9::int[])
                    WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i, n)
           ORDER BY n
           RETURNING id""",
        [r.subject for r in rows], [r.site_id for r in rows],
        [uuid.UUID(r.event_id) if r.event_id else None for r in rows], [r.site_seq for r in rows],
        [r.reason for r in rows], [r.raw for r in rows], [r.msgpack for r in rows],
        [r.stream_seq for r in rows], [r.deliveries for r in rows],
    )
    out = sorted(int(r["id"]) for r in ids)  # a bigserial in one INSERT ... ORDER BY: ascending = input order
    by_site: dict[str, int] = {}
    for r in rows:
        if r.site_id is not None:
            by_site[r.site_id] = by_site.get(r.site_id, 0) + 1
    if by_site:
        await conn.execute(
            """UPDATE sites s SET quarantined = s.quarantined + v.n
               FROM unnest($1::text[], $2::bigint[]) AS v(site_id, n) WHERE s.site_id = v.site_id""",
            list(by_site), list(by_site.values()),
        )
    return out


def refusal(row_id: int, row: NewRow) -> Refusal:
    """What the sending site is told in its receipt about a refused event."""
    return Refusal(quarantine_id=row_id, reason=row.reason, event_id=row.event_id, site_seq=row.site_seq,
                   digest=hashlib.sha256(row.raw).hexdigest())


_SELECT = """SELECT id, received_at, subject, site_id, event_id::text AS event_id, site_seq, reason,
                    octet_length(raw) AS size, status, attempts, deliveries, resolved_at, resolution
             FROM quarantine"""


async def list_rows(
    pool: asyncpg.Pool, *, site_id: str | None = None, include_replayed: bool = False, limit: int = 100
) -> list[Quarantined]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""{_SELECT} WHERE ($1::text IS NULL OR site_id = $1) AND ($2 OR status = 'held')
                ORDER BY id LIMIT $3""",
            site_id, include_replayed, limit,
        )
    return [Quarantined(**dict(r)) for r in rows]


async def get_row(pool: asyncpg.Pool, row_id: int) -> tuple[Quarantined, bytes, bool]:
    """A row, its raw bytes and whether they are MessagePack."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f"{_SELECT.replace('FROM', ', raw, msgpack FROM', 1)} WHERE id = $1", row_id)
    if row is None:
        raise QuarantineError(f"quarantine row {row_id} does not exist (see `shouwang center quarantine list`)")
    fields = dict(row)
    raw, msgpack = bytes(fields.pop("raw")), bool(fields.pop("msgpack"))
    return Quarantined(**fields), raw, msgpack


async def count_held(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM quarantine WHERE status = 'held'"))


# --- replay ---------------------------------------------------------------------------------


_RETURNING = """id, received_at, subject, site_id, event_id::text AS event_id, site_seq, reason,
                octet_length(raw) AS size, status, attempts, deliveries, resolved_at, resolution"""


class ReplayResult(msgspec.Struct, frozen=True):
    id: int
    site_id: str | None
    outcome: str  # "stored", "duplicate" or "refused"
    reason: str | None = None


async def replay(pool: asyncpg.Pool, row_id: int) -> ReplayResult:
    """Run a held row's raw bytes through triage, authorization and append again, in one
    transaction with the row's new status."""
    from service.ingest import Inbound, commit_in, triage  # ingest writes quarantine rows itself

    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, subject, site_id, raw, msgpack, status FROM quarantine WHERE id = $1 FOR UPDATE", row_id
        )
        if row is None:
            raise QuarantineError(f"quarantine row {row_id} does not exist (see `shouwang center quarantine list`)")
        if row["status"] != "held":
            raise QuarantineError(f"quarantine row {row_id} was already replayed")
        item = triage(Inbound(subject=row["subject"], data=bytes(row["raw"]), msgpack=row["msgpack"]))
        out = await commit_in(conn, [item], quarantine=False)
        if out.rejected:
            reason = out.rejected[0].reason
            await conn.execute(
                "UPDATE quarantine SET reason = $2, attempts = attempts + 1 WHERE id = $1", row_id, reason
            )
            return ReplayResult(row_id, row["site_id"], "refused", reason)
        outcome = "stored" if out.stored else "duplicate"
        await conn.execute(
            """UPDATE quarantine SET status = 'replayed', attempts = attempts + 1, resolved_at = now(),
                   resolution = $2 WHERE id = $1""", row_id, outcome,
        )
        return ReplayResult(row_id, row["site_id"], outcome)


async def dismiss(pool: asyncpg.Pool, row_id: int, by: str, note: str) -> Quarantined:
    """Mark a held row dismissed (not to be replayed), saying who and why; the row and its bytes
    stay, and the center's log records the decision."""
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval("SELECT status FROM quarantine WHERE id = $1 FOR UPDATE", row_id)
        if status is None:
            raise QuarantineError(f"quarantine row {row_id} does not exist (see `shouwang center quarantine list`)")
        if status != "held":
            raise QuarantineError(f"quarantine row {row_id} was already {status}")
        row = await conn.fetchrow(
            f"""UPDATE quarantine SET status = 'dismissed', resolved_at = now(), resolution = $2
                 WHERE id = $1 RETURNING {_RETURNING}""", row_id, f"dismissed by {by}: {note}"[:500])
    assert row is not None  # the row was locked above
    _log.warning("quarantine row dismissed", quarantine_id=row_id, by=by, site_id=row["site_id"])
    return Quarantined(**dict(row))


async def held_ids(pool: asyncpg.Pool, site_id: str | None = None) -> list[int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id FROM quarantine WHERE status = 'held' AND ($1::text IS NULL OR site_id = $1) ORDER BY id",
            site_id,
        )
    return [int(r["id"]) for r in rows]


# --- dead letters ---------------------------------------------------------------------------


class DeadLetters:
    """Quarantines messages that reached the ingest consumer's MaxDeliver without a commit.

    JetStream publishes an advisory when it gives up redelivering; the message itself stays in
    the work-queue stream. We copy its raw bytes into quarantine (without decoding them again:
    they may be what kills an ingester), then delete it from the stream."""

    def __init__(self, pool: asyncpg.Pool, nc: NATS, js: JetStreamContext) -> None:
        self.pool = pool
        self.nc = nc
        self.js = js
        self.handled = 0
        self._sub: Subscription | None = None

    async def start(self) -> None:
        from events.wire import UP_STREAM
        from service.streams import INGEST_CONSUMER

        subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{UP_STREAM}.{INGEST_CONSUMER}"
        self._sub = await self.nc.subscribe(subject, cb=self._on_advisory)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = msgspec.json.decode(msg.data, type=_MaxDeliveries)
        except msgspec.DecodeError:
            return
        try:
            await self.handle(advisory.stream_seq, advisory.deliveries)
        except Exception as err:  # the advisory is not resent; the message stays in the stream
            _log.error("dead letter not quarantined", stream_seq=advisory.stream_seq, error=type(err).__name__)

    async def handle(self, stream_seq: int, deliveries: int) -> int | None:
        """Quarantine stream message `stream_seq` of CARE_UP; returns the row id (None if gone)."""
        from events.wire import CONTENT_TYPE_HEADER, MSGPACK, UP_STREAM, site_of_subject

        try:
            raw = await self.js.get_msg(UP_STREAM, stream_seq)
        except NotFoundError:
            return None
        site = site_of_subject(raw.subject or "")
        try:
            site = msgspec.convert(site, type=SiteId) if site else None
        except msgspec.ValidationError:
            site = None
        headers = raw.headers or {}
        reason = (f"delivered {deliveries} times without being committed (an ingester failed on it each time); "
                  "check the center's log, then replay")
        async with self.pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval(
                "SELECT id FROM quarantine WHERE stream_seq = $1 AND dead_letter", stream_seq
            )
            if exists is None:
                [row_id] = await insert_rows(conn, [NewRow(
                    subject=raw.subject or "", site_id=site, reason=reason, raw=bytes(raw.data or b""),
                    msgpack=headers.get(CONTENT_TYPE_HEADER) == MSGPACK, stream_seq=stream_seq,
                    deliveries=deliveries)])
                await conn.execute("UPDATE quarantine SET dead_letter = true WHERE id = $1", row_id)
            else:
                row_id = int(exists)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(UP_STREAM, stream_seq)
        self.handled += 1
        _log.warning("dead letter quarantined", stream_seq=stream_seq, deliveries=deliveries, quarantine_id=row_id)
        return row_id


class _MaxDeliveries(msgspec.Struct):
    stream_seq: int
    deliveries: int
