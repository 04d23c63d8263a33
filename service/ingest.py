"""Ingest: care events from JetStream (CARE_UP) into the PostgreSQL event store, exactly once.

Each ingester pulls batches from the shared durable consumer ``center-ingest``. A fetch runs
while the previous batch is being written (nats-py's fetch is the slowest step of a raw
ingester, as measured on the build machines).
A message carries one event (agents before batches) or a batch of them (events/batch.py: many
events, compressed); :func:`inbounds_of` makes each event of a batch an item of its own, so
everything below is per event: a batch refused in part keeps its good events.
For each batch of fetched messages:

1. **Triage** every event outside any transaction: the subject must name a site, the bytes
   must decode and validate (:func:`events.envelope.decode_event`), and the envelope's
   ``site_id`` must be the site in the subject (a site cannot write into another's log).
   Events that are values already (the API's writes) enter at :func:`commit_events`: the same
   checks and refusals by :func:`admit`, minus decoding bytes, then the same commit.
2. **Commit** in one transaction: check the sending sites are registered and active, append
   the good events (:func:`store.postgres.append_in`), quarantine the refused ones (with the
   store's own refusals: a known id with other content, a taken site_seq), update the fan-out
   scope, count events of types this center does not know.
3. **Ack** every message of the batch, only after the commit returned (guarantee 2: the agent
   drops an event only on a receipt, and receipts come from the commit). A crash between
   commit and ack redelivers the batch; the store reports the events as duplicates.
4. **Notify** the receipt publisher and the fan-out.

Failures: PostgreSQL unreachable or restarting -> the batch is retried, forever, with the
messages kept alive by "in progress" acks (no redelivery, no MaxDeliver spent). A batch the
database refuses for a data reason -> split in halves until the offending event is alone, then
quarantined with the database's reason. An ingester that dies on a message every time -> after
MaxDeliver JetStream emits an advisory; :class:`DeadLetters` quarantines the message.

Every refusal carries a :class:`RefusalKind` for code to branch on, beside its reason text for
people (the site's receipt, the quarantine row, the API's 409 show the text).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.batch import BatchError, is_batch, unpack
from events.envelope import MAX_EVENT_BYTES, DecodedEvent, Event, decode_event, encode_event, validate_event
from events.types import SiteId
from events.validation import ValidationFailed, problem_from_msgspec
from events.wire import CONTENT_TYPE_HEADER, KIND_HEADER, MSGPACK, UP_STREAM, Refusal, site_of_subject, up_subject
from runtime import log
from service import metrics
from service.authority import already_stored, authorize, load_facts, lock_scope_changes
from service.quarantine import NewRow, insert_rows, refusal
from service.scope import apply_scope
from service.streams import INGEST_CONSUMER, StreamSettings
from store.conn import Conn
from store.postgres import append_in

_log = log.get("service.ingest")
COMMIT_EVENTS = 2000  # events in one ingest transaction at most


class Inbound(msgspec.Struct, frozen=True):
    """One message as it arrived on care.up.<site>."""

    subject: str
    data: bytes
    msgpack: bool = False
    stream_seq: int | None = None
    deliveries: int | None = None
    # Why the message was not sent by a site's agent, when it shows (see `reflected_by`).
    reflected: str | None = None
    # Why a batch message (events.batch) could not be read at all: then `data` is the whole message.
    unreadable: str | None = None


class Submitted(msgspec.Struct, frozen=True):
    """An event handed to ingest as a value in this process (the API's writes), sent as
    ``site_id``: what the subject's site is for a message on the wire."""

    site_id: str
    event: Event

    @property
    def subject(self) -> str:
        """The subject this site's events arrive on (what a quarantine row and a reason name)."""
        return up_subject(self.site_id)


Origin = Inbound | Submitted


class RefusalKind(enum.StrEnum):
    """Why ingest refused an event: the value code branches on (the reason text is for people)."""

    NO_SITE = "no_site"  # the subject (or the sender given) names no site
    TOO_LARGE = "too_large"  # over MAX_EVENT_BYTES as the wire carries it
    INVALID = "invalid"  # not a valid event (events.envelope): malformed bytes, envelope or payload
    MALFORMED = "malformed"  # input the decoder failed on outside its own checks
    WRONG_SITE = "wrong_site"  # the event names another site than the one that sent it
    SITE_UNKNOWN = "site_unknown"  # the sending site is not registered at the center
    SITE_DISABLED = "site_disabled"  # the sending site is registered but disabled
    # The store refused it: its event_id is stored with other content, or its site_seq is used by
    # another event (store.postgres reports both as one kind of refusal, the text says which).
    STORE_CONFLICT = "store_conflict"
    STORE_REFUSED = "store_refused"  # the database raised an error on this event alone (ingest's split)
    UNAUTHORIZED = "unauthorized"  # the sending site has no authority for it (service/authority.py)
    REFLECTED = "reflected"  # published on care.up by JetStream or the center, not by a site (a reply-subject trick)


class Accepted(msgspec.Struct, frozen=True):
    origin: Origin
    site_id: str
    decoded: DecodedEvent


class Rejected(msgspec.Struct, frozen=True):
    origin: Origin
    site_id: str | None
    kind: RefusalKind
    reason: str
    event_id: str | None = None
    site_seq: int | None = None

    def row(self) -> NewRow:
        o = self.origin
        if isinstance(o, Submitted):  # kept as the bytes it would have been sent as
            return NewRow(subject=o.subject, site_id=self.site_id, reason=self.reason, raw=encode_event(o.event),
                          event_id=self.event_id, site_seq=self.site_seq)
        return NewRow(subject=o.subject, site_id=self.site_id, reason=self.reason, raw=o.data, msgpack=o.msgpack,
                      event_id=self.event_id, site_seq=self.site_seq, stream_seq=o.stream_seq,
                      deliveries=o.deliveries)


Triaged = Accepted | Rejected


@dataclass(slots=True)
class Outcome:
    """What one committed batch did."""

    stored: list[DecodedEvent] = field(default_factory=list)
    duplicates: int = 0
    not_understood: int = 0
    refusals: dict[str, list[Refusal]] = field(default_factory=dict)  # by sending site
    quarantined: int = 0
    sites: set[str] = field(default_factory=set)  # sites to send a receipt to
    rejected: list[Rejected] = field(default_factory=list)  # when not quarantined by commit_in
    refused_kinds: dict[str, int] = field(default_factory=dict)  # quarantined, by RefusalKind (service/metrics.py)


def _valid_site(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return msgspec.convert(text, type=SiteId)
    except msgspec.ValidationError:
        return None


_generic = msgspec.json.Decoder()


def _identity(inb: Inbound) -> tuple[str | None, int | None]:
    """event_id and site_seq of refused bytes, when they can be read (to tell the site which)."""
    try:
        doc = msgspec.msgpack.decode(inb.data) if inb.msgpack else _generic.decode(inb.data)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
        return None, None
    return _identity_of(doc)


def _identity_of(doc: Any) -> tuple[str | None, int | None]:
    if not isinstance(doc, dict):
        return None, None
    eid, seq = doc.get("event_id"), doc.get("site_seq")
    try:
        eid = str(uuid.UUID(eid)) if isinstance(eid, str) else None
    except ValueError:
        eid = None
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq < 2**62 else None
    return eid, seq


def _no_site(origin: Origin) -> Rejected:
    return Rejected(origin, None, RefusalKind.NO_SITE,
                    f"subject {origin.subject!r} does not name a site (care.up.<region.township.site>)")


def _too_large(origin: Origin, site_id: str, size: int) -> Rejected:
    return Rejected(origin, site_id, RefusalKind.TOO_LARGE, f"event is {size} bytes, the limit is {MAX_EVENT_BYTES}")


def _malformed(origin: Origin, site_id: str, err: Exception, msgpack: bool, eid: str | None,
               seq: int | None) -> Rejected:
    # The decoder should turn every bad input into ValidationFailed; input it chokes on
    # otherwise (e.g. invalid UTF-8 inside MessagePack raises UnicodeDecodeError) is refused
    # all the same, never allowed to stop the ingester.
    kind = "MessagePack" if msgpack else "JSON"
    return Rejected(origin, site_id, RefusalKind.MALFORMED,
                    f"invalid event: malformed {kind} ({type(err).__name__}: {str(err)[:160]})", eid, seq)


def _from_sender(origin: Origin, site_id: str, decoded: DecodedEvent) -> Triaged:
    """The check after decoding, on both paths: a site may only send its own events."""
    e = decoded.event
    if e.site_id != site_id:
        return Rejected(origin, site_id, RefusalKind.WRONG_SITE,
                        f"forged site: the event says site_id {e.site_id!r} but was sent on {origin.subject!r}; "
                        "a site may only send its own events", e.event_id, e.site_seq)
    return Accepted(origin, site_id, decoded)


def triage(inb: Inbound, now: dt.datetime | None = None) -> Triaged:
    """Decode, validate and check the sender of one message (no database needed)."""
    if inb.reflected is not None:
        # Not the named site's: kept unattributed (no site), so it is neither receipted to nor
        # counted against the site whose subject it was reflected into.
        return Rejected(inb, None, RefusalKind.REFLECTED,
                        f"not sent by a site: {inb.reflected} published on {inb.subject!r} (a request whose reply "
                        "subject named care.up); kept unattributed")
    site_id = _valid_site(site_of_subject(inb.subject))
    if site_id is None:
        return _no_site(inb)
    if inb.unreadable is not None:
        return Rejected(inb, site_id, RefusalKind.INVALID, f"invalid batch: {inb.unreadable}")
    if len(inb.data) > MAX_EVENT_BYTES:
        return _too_large(inb, site_id, len(inb.data))
    try:
        decoded = decode_event(inb.data, msgpack=inb.msgpack, now=now)
    except ValidationFailed as err:
        eid, seq = _identity(inb)
        return Rejected(inb, site_id, RefusalKind.INVALID, f"invalid event: {err}", eid, seq)
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        eid, seq = _identity(inb)
        return _malformed(inb, site_id, err, inb.msgpack, eid, seq)
    return _from_sender(inb, site_id, decoded)


def admit(sub: Submitted, now: dt.datetime | None = None) -> Triaged:
    """:func:`triage` for an event that is a value, not bytes: the same checks and refusals (and
    reason texts), minus decoding. The event is validated as if it had arrived: nothing about a
    struct built in code is taken on trust."""
    site_id = _valid_site(sub.site_id)
    if site_id is None:
        return _no_site(sub)
    e = sub.event
    wire = encode_event(e)  # the limit is on the event as it travels (the fan-out sends it to sites)
    if len(wire) > MAX_EVENT_BYTES:
        return _too_large(sub, site_id, len(wire))
    eid, seq = _identity_of({"event_id": e.event_id, "site_seq": e.site_seq})  # as the wire would read them
    try:
        try:
            # A struct built in code has not had its fields' constraints checked (decoding does
            # that): converting its fields checks them as the wire's decoder would.
            envelope = msgspec.convert(msgspec.structs.asdict(e), type=Event)
        except msgspec.ValidationError as err:
            raise ValidationFailed([problem_from_msgspec(err, _generic.decode(wire))]) from None
        decoded = validate_event(envelope, now=now)
    except ValidationFailed as err:
        return Rejected(sub, site_id, RefusalKind.INVALID, f"invalid event: {err}", eid, seq)
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        return _malformed(sub, site_id, err, False, eid, seq)
    return _from_sender(sub, site_id, decoded)


async def commit_in(conn: Conn, items: Sequence[Triaged], *, quarantine: bool = True,
                    retry_waiting: bool = True) -> Outcome:
    """Authorize and store a triaged batch inside the caller's transaction. Refused items are
    quarantined, or with ``quarantine=False`` returned in ``Outcome.rejected`` (a replay, a
    relayed copy, a write of the API). Whatever the path, a stored event that gives or moves a
    child's scope decides again the held refusals waiting for it (``retry_waiting``; those
    are added to ``Outcome.stored``)."""
    out = Outcome()
    subject_sites = sorted({i.site_id for i in items if i.site_id is not None})
    site_rows = await conn.fetch("SELECT site_id, kind, active FROM sites WHERE site_id = ANY($1)", subject_sites)
    registered = {r["site_id"]: r for r in site_rows}
    good: list[Accepted] = []
    rejected: list[Rejected] = []
    for item in items:
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        site = registered.get(item.site_id)
        if site is None or not site["active"]:
            kind, why = (RefusalKind.SITE_UNKNOWN, "is not registered") if site is None \
                else (RefusalKind.SITE_DISABLED, "is disabled")
            e = item.decoded.event
            rejected.append(Rejected(item.origin, item.site_id, kind,
                                     f"site {item.site_id} {why} at the center; register it, then replay",
                                     e.event_id, e.site_seq))
        else:
            good.append(item)
    if good:
        # Scope is granted, never taken: each event against its sender's authority, from the
        # store's state in commit order (service/authority.py).
        batch = [a.decoded for a in good]
        await lock_scope_changes(conn, batch)
        refused = authorize(batch, await load_facts(conn, batch), await already_stored(conn, batch))
        for i, why in refused.items():
            e = good[i].decoded.event
            rejected.append(Rejected(good[i].origin, good[i].site_id, RefusalKind.UNAUTHORIZED, why, e.event_id,
                                     e.site_seq))
        good = [a for i, a in enumerate(good) if i not in refused]
    result = await append_in(conn, [a.decoded for a in good])
    if result.refused:
        by_id = {a.decoded.event.event_id: a for a in good}
        for r in result.refused:
            a = by_id[r.event_id]
            rejected.append(Rejected(a.origin, a.site_id, RefusalKind.STORE_CONFLICT, r.reason, r.event_id,
                                     r.site_seq))
    stored_ids = set(result.stored)
    seen: set[str] = set()
    for a in good:
        eid = a.decoded.event.event_id
        if eid in stored_ids and eid not in seen:
            seen.add(eid)
            out.stored.append(a.decoded)
    out.duplicates = len(result.duplicates)
    out.sites = {a.site_id for a in good}
    if out.stored:
        await apply_scope(conn, out.stored, {k: r["kind"] for k, r in registered.items()})
        unknown: dict[str, int] = {}
        for d in out.stored:
            if not d.understood:
                unknown[d.event.site_id] = unknown.get(d.event.site_id, 0) + 1
        if unknown:
            out.not_understood = sum(unknown.values())
            await conn.execute(
                """UPDATE sites s SET not_understood = s.not_understood + v.n
                   FROM unnest($1::text[], $2::bigint[]) AS v(site_id, n) WHERE s.site_id = v.site_id""",
                list(unknown), list(unknown.values()),
            )
    if rejected and not quarantine:
        out.rejected = rejected
    elif rejected:
        rows = [r.row() for r in rejected]
        ids = await insert_rows(conn, rows)
        out.quarantined = len(ids)
        for rej in rejected:
            out.refused_kinds[rej.kind.value] = out.refused_kinds.get(rej.kind.value, 0) + 1
        for row_id, row in zip(ids, rows, strict=True):
            if row.site_id is not None:
                out.refusals.setdefault(row.site_id, []).append(refusal(row_id, row))
                out.sites.add(row.site_id)
    if retry_waiting and out.stored:
        # After this batch's own refusals are in the quarantine: an event refused early in the
        # batch may wait for a registration or transfer later in it (a station's resent event and
        # the registration it recorded since, in one batch).
        before = len(out.stored)
        await _retry_waiting_for_scope(conn, out)
        if len(out.stored) > before and out.refusals:
            # The sender is not told of a refusal whose event is stored now.
            now_stored = {d.event.event_id for d in out.stored[before:]}
            out.refusals = {site: kept for site, refs in out.refusals.items()
                            if (kept := [r for r in refs if r.event_id not in now_stored])}
    return out


# The children a refusal of service/authority.py waits for ("child X is not registered at the
# center", "this site does not hold child X", "names X, not in this site's scope"): the
# expression of the quarantine's index `quarantine_waits_for` (migration 0042), spelled the same
# so that the retry below reads through it.
# A row of an event this transaction stored already (the row an admin replays, say) is left as
# it is: decided again it would only be a duplicate.
WAITING_ROWS = """SELECT id, subject, raw, msgpack FROM quarantine
                   WHERE status = 'held' AND subject LIKE 'care.up.%'
                     AND shouwang_quarantine_waits_for(reason) && $1::text[]
                     AND event_id <> ALL($2::uuid[])
                   ORDER BY id FOR UPDATE SKIP LOCKED"""

# What gives or moves a child's scope (service/scope.py, authority._apply).
SCOPE_TYPES = frozenset({"ChildRegistered", "ChildTransferred", "ArchivesMerged"})


def _scope_changed(stored: Sequence[DecodedEvent]) -> list[str]:
    return sorted({c for d in stored if d.event.type in SCOPE_TYPES for c in d.event.children})


async def _retry_waiting_for_scope(conn: Conn, out: Outcome) -> None:
    """Events refused only because their sender had no scope over a child yet, decided again in
    this transaction once an event that gives or moves that child's scope is stored.

    Sites resend in any order after the center's store is restored from an older backup: a
    school's visit can arrive before the village's transfer that gave the school the child, a
    transfer before the registration the restore lost, and each would otherwise wait in
    quarantine for an operator's replay (the figures short by it until then). Each is authorized
    afresh, as `shouwang center quarantine replay` does, against the sender's scope now, and its
    quarantine row is marked replayed; refused again, the row keeps its new reason. A retried
    event that itself moves a scope (a transfer stored once its registration was) retries the
    rows of its children in turn; each row is stored at most once, so the rounds end."""
    children = _scope_changed(out.stored)
    tried: set[int] = set()
    while children:
        done = [d.event.event_id for d in out.stored]
        rows = [r for r in await conn.fetch(WAITING_ROWS, children, done) if r["id"] not in tried]
        stored: list[DecodedEvent] = []
        for row in rows:
            tried.add(row["id"])
            item = triage(Inbound(subject=row["subject"], data=bytes(row["raw"]), msgpack=row["msgpack"]))
            again = await commit_in(conn, [item], quarantine=False, retry_waiting=False)
            if again.rejected:
                await conn.execute("UPDATE quarantine SET reason = $2, attempts = attempts + 1 WHERE id = $1",
                                   row["id"], again.rejected[0].reason)
                continue
            await conn.execute(
                """UPDATE quarantine SET status = 'replayed', attempts = attempts + 1, resolved_at = now(),
                       resolution = $2 WHERE id = $1""",
                row["id"], "stored once its sender's scope over the child was" if again.stored else "duplicate")
            stored.extend(again.stored)
            out.stored.extend(again.stored)
            out.sites |= again.sites
            _log.info("waiting refusal stored once its child's scope changed", quarantine_id=row["id"])
        # A row refused in one round may pass after a later row of the same round moved the
        # child's scope: the children of what this round stored are tried again, their rows too.
        children = _scope_changed(stored)
        if children:
            tried.clear()


async def commit_events(conn: Conn, site_id: str, events: Sequence[Event], *,
                        quarantine: bool = True, now: dt.datetime | None = None) -> Outcome:
    """Check, authorize and store events that are values (sealed in this process), sent as
    ``site_id``, inside the caller's transaction: :func:`admit` each, then :func:`commit_in`, as
    the wire path does after decoding."""
    return await commit_in(conn, [admit(Submitted(site_id, e), now) for e in events], quarantine=quarantine)


# --- errors: which ones are worth waiting out --------------------------------------------

_TRANSIENT_CLASSES = ("08", "53", "57", "40", "55")  # connection, resources, shutdown, rollback, lock


# The center's own schema, privileges or server are wrong (a migration not applied, a revoked
# grant, an internal error): every event would fail the same way, so none is the event's fault.
_CENTER_FAULT_CLASSES = ("42", "0A", "XX", "58", "3D", "3F", "28", "F0")


def is_center_fault(err: BaseException) -> bool:
    """True when the error is about the center's database setup, not the data being written."""
    if isinstance(err, asyncpg.PostgresError):
        state = getattr(err, "sqlstate", None) or ""
        return state[:2] in _CENTER_FAULT_CLASSES
    return False


def is_transient(err: BaseException) -> bool:
    """True when retrying the same batch later can succeed (the database, not the data)."""
    if isinstance(err, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)):
        return True
    if isinstance(err, asyncpg.PostgresError):
        state = getattr(err, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_CLASSES
    return False


def ack_metadata(reply: str) -> tuple[int | None, int | None]:
    """(stream sequence, deliveries) from a JetStream ack subject, without nats-py's slower parse:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` or the newer form
    with ``<domain>.<account hash>`` after ``$JS.ACK`` and a token at the end."""
    t = reply.split(".")
    try:
        if len(t) == 9:
            return int(t[5]), int(t[4])
        if len(t) >= 12:
            return int(t[7]), int(t[6])
    except ValueError:
        pass
    return None, None


def reflected_by(headers: dict[str, str], data: bytes) -> str | None:
    """What published a message on care.up, when it was not a site's agent.

    NATS checks the subject a client publishes on, never the reply subject it asks an answer on:
    a site may ask JetStream (a pull of its own care.down consumer, an API call) or a center
    responder for an answer "on care.up.<another site>", and the answer lands in CARE_UP under
    that site's name. The center's responders answer only below the asking site's inbox
    (events.wire.is_own_inbox); what JetStream publishes is recognised here: a care.down message
    (our kind header), a status message, a JetStream API response, or an empty body. An agent's
    event never looks like any of these."""
    if KIND_HEADER in headers:
        return f"a care.down {headers[KIND_HEADER]} message"
    if "Status" in headers:
        return f"a JetStream status message ({headers['Status']})"
    if not data.strip():
        return "an empty message"
    if data[:1] == b"{" and _JS_RESPONSE.search(data[:200]):
        return "a JetStream API response"
    return None


_JS_RESPONSE = re.compile(rb'"type"\s*:\s*"io\.nats\.')


def inbound_of(msg: Msg) -> Inbound:
    """The message as one Inbound (an old agent's message: one event)."""
    return inbounds_of(msg)[0]


def inbounds_of(msg: Msg) -> list[Inbound]:
    """The events a message carries, each an Inbound of its own: one for an old agent's message,
    every event of a batch (events.batch) otherwise, each with its own bytes as the site sealed
    them, so each is triaged, stored or quarantined on its own and a batch refused in part keeps
    its good events. A batch that cannot be read at all is one Inbound marked ``unreadable``."""
    headers = msg.headers or {}
    data = bytes(msg.data)
    stream_seq, deliveries = ack_metadata(msg.reply) if msg.reply else (None, None)
    reflected = reflected_by(headers, data)
    if reflected is None and is_batch(headers):
        try:
            items = unpack(data, headers)
        except BatchError as err:
            return [Inbound(subject=msg.subject, data=data, stream_seq=stream_seq, deliveries=deliveries,
                            unreadable=str(err))]
        return [Inbound(subject=msg.subject, data=item, stream_seq=stream_seq, deliveries=deliveries)
                for item in items]
    return [Inbound(
        subject=msg.subject,
        data=data,
        msgpack=headers.get(CONTENT_TYPE_HEADER) == MSGPACK,
        stream_seq=stream_seq,
        deliveries=deliveries,
        reflected=reflected,
    )]


class PullFeed:
    """Messages of a pull consumer, flowing in while the ingester writes.

    nats-py's ``fetch`` awaits each message through a queue with a timeout and a task per
    message, which took 62% of a raw ingester's time when measured on the build machines. Here one
    pull request is kept outstanding (``batch`` messages, expiring after ``expires`` seconds); delivered
    messages land in a buffer from a subscription callback, so they arrive while the previous
    batch is being committed, and :meth:`take` hands over whatever is there. A request ends when
    it has delivered its ``batch`` or with a status message (404/408 no messages or expired,
    409 refused); the next one is sent then, unless ``2 * batch`` messages are already waiting.
    """

    def __init__(self, nc: NATS, stream: str, consumer: str, batch: int, expires: float = 1.0) -> None:
        self.nc = nc
        self.batch = batch
        self.expires = expires
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self.buffer: list[Msg] = []
        self._ready = asyncio.Event()
        self._asked = 0  # messages asked for by the outstanding request (0: none outstanding)
        self._got = 0
        self._sent_at = 0.0
        self.refusals = 0

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)
        await self._request()

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _request(self) -> None:
        body = b'{"batch":%d,"expires":%d}' % (self.batch, int(self.expires * 1e9))
        self._asked, self._got, self._sent_at = self.batch, 0, time.monotonic()
        await self.nc.publish(self._next_subject, body, reply=self._inbox)

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stream message (its reply subject is where the ack goes)
            self.buffer.append(msg)
            self._got += 1
            self._ready.set()
            if self._got < self._asked:
                return
        else:
            status = (msg.headers or {}).get("Status", "")
            if status == "100":  # idle heartbeat / flow control
                return
            if status == "409":
                self.refusals += 1
                _warn("pull request refused", status=status, detail=(msg.headers or {}).get("Description", ""))
        self._asked = 0
        if len(self.buffer) < 2 * self.batch:
            await self._request()
        else:
            self._ready.set()

    async def take(self) -> list[Msg]:
        """The messages delivered so far (at most ``batch``), waiting for at least one."""
        while not self.buffer:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), self.expires + 1.0)
            stale = self._asked and time.monotonic() - self._sent_at > self.expires + 2.0
            if not self.buffer and (not self._asked or stale):
                # no request outstanding (it ended, was refused, or its answer was lost to a reconnect)
                if self.refusals:
                    await asyncio.sleep(0.2)
                    self.refusals = 0
                with contextlib.suppress(Exception):
                    await self._request()
        out, self.buffer = self.buffer[: self.batch], self.buffer[self.batch:]
        if not self._asked and len(self.buffer) < 2 * self.batch:
            with contextlib.suppress(Exception):
                await self._request()
        return out


@dataclass(slots=True)
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    not_understood: int = 0
    batches: int = 0
    db_retries: int = 0


OnCommit = Callable[[Outcome], None]


class Ingester:
    """One ingest loop on the shared consumer. Several may run, in one process or many."""

    def __init__(self, pool: asyncpg.Pool, nc: NATS, settings: StreamSettings, *,
                 on_commit: OnCommit | None = None, name: str = "ingest-1") -> None:
        self.pool = pool
        self.nc = nc
        self._feed: PullFeed | None = None
        self.settings = settings
        self.on_commit = on_commit
        self.name = name
        self.stats = IngestStats()
        self._held: dict[int, tuple[float, Msg]] = {}  # messages fetched and not yet acked
        # Test hook: after a commit, touch this file and hang (a test then kills the process
        # with SIGKILL, so the crash falls exactly between commit and ack).
        pause = os.environ.get("SHOUWANG_TEST_PAUSE_AFTER_COMMIT")
        self._pause_after_commit = Path(pause) if pause else None

    async def run(self) -> None:
        """Take delivered messages and write them until cancelled."""
        self._feed = PullFeed(self.nc, UP_STREAM, INGEST_CONSUMER, self.settings.batch)
        await self._feed.start()
        keeper = asyncio.create_task(self._keep_alive(), name=f"{self.name}-keepalive")
        try:
            while True:
                msgs = await self._feed.take()
                now = time.monotonic()
                for m in msgs:
                    self._held[id(m)] = (now, m)
                try:
                    await self._write(msgs)
                except Exception as err:
                    # Not even quarantining worked. Leave the batch unacked: JetStream redelivers
                    # it after its ack wait and, after MaxDeliver, the dead-letter handler keeps it.
                    _log.error("batch not committed; left for redelivery", ingester=self.name,
                               error=type(err).__name__, events=len(msgs))
                    for m in msgs:
                        self._held.pop(id(m), None)
                    await asyncio.sleep(1.0)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self._feed.stop()

    async def _keep_alive(self) -> None:
        """While messages wait (for the database, or in the feed's buffer), tell JetStream they
        are being worked on, three times per ack wait, so they are neither redelivered nor
        charged a delivery against MaxDeliver."""
        period = max(0.1, min(self.settings.backoff) / 3)
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - period / 2
            waiting = [m for since, m in list(self._held.values()) if since < cutoff]
            if self._feed is not None:
                waiting += list(self._feed.buffer)  # delivered, not yet taken: the writer is busy
            for m in waiting:
                with contextlib.suppress(Exception):
                    await m.in_progress()

    async def _write(self, msgs: list[Msg]) -> None:
        items = [triage(i) for m in msgs for i in inbounds_of(m)]
        self.stats.received += len(items)
        # Batches carry many events a message: one transaction takes at most COMMIT_EVENTS of them,
        # and each is receipted and fanned out as soon as it commits (receipts say what PostgreSQL
        # holds, so they need not wait for the acks); every message is acked only once all of its
        # events are committed.
        stored = 0
        chunks = [items[i:i + COMMIT_EVENTS] for i in range(0, len(items), COMMIT_EVENTS)]
        for n, chunk in enumerate(chunks, 1):
            outcome = await self._commit(chunk)
            stored += len(outcome.stored)
            self._count(outcome)
            if self.on_commit is not None and n < len(chunks):
                self.on_commit(outcome)
        if self._pause_after_commit is not None:
            self._pause_after_commit.write_text(str(stored))
            await asyncio.Event().wait()
        for m in msgs:
            self._held.pop(id(m), None)
            with contextlib.suppress(Exception):  # NATS away: the batch is redelivered, as duplicates
                await m.ack()
        if self.on_commit is not None and chunks:
            self.on_commit(outcome)

    async def _commit(self, items: Sequence[Triaged]) -> Outcome:
        """Commit a batch; wait out a database outage; isolate an event the database refuses."""
        delay = 0.1
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    return await commit_in(conn, items)
            except Exception as err:
                if is_transient(err):
                    self.stats.db_retries += 1
                    _warn("database unavailable; retrying the batch", ingester=self.name,
                          error=type(err).__name__, events=len(items))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if is_center_fault(err):
                    # Quarantining would blame every event for the center's own defect: hold the
                    # batch (kept alive, not redelivered) and retry until an operator fixes it.
                    self.stats.db_retries += 1
                    _log.error("the center's database setup is broken; holding the batch until it is fixed",
                               ingester=self.name, error=type(err).__name__,
                               sqlstate=getattr(err, "sqlstate", None), detail=str(err)[:200], events=len(items))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                # The data, or a defect this input triggers: find the event(s) responsible.
                return await self._split(items, err)

    async def _split(self, items: Sequence[Triaged], err: Exception) -> Outcome:
        if len(items) == 1 and isinstance(items[0], Rejected) and items[0].kind is RefusalKind.STORE_REFUSED:
            # Even quarantining it fails: stop loudly. The batch is not acked; JetStream
            # redelivers it and, after MaxDeliver, the dead-letter handler keeps the bytes.
            raise err
        if len(items) == 1:
            item = items[0]
            eid, seq = (item.decoded.event.event_id, item.decoded.event.site_seq) if isinstance(item, Accepted) \
                else (item.event_id, item.site_seq)
            state = getattr(err, "sqlstate", None)
            reason = (f"the event store refused it: {type(err).__name__}"
                      f"{f' ({state})' if state else ''}: {str(err)[:200]}")
            _warn("event refused by the store; quarantined", ingester=self.name, error=type(err).__name__,
                  sqlstate=state)
            return await self._commit([Rejected(item.origin, item.site_id, RefusalKind.STORE_REFUSED, reason, eid,
                                                seq)])
        half = len(items) // 2
        first = await self._commit(items[:half])
        second = await self._commit(items[half:])
        return _merge(first, second)

    def _count(self, o: Outcome) -> None:
        s = self.stats
        s.batches += 1
        s.stored += len(o.stored)
        s.duplicates += o.duplicates
        s.quarantined += o.quarantined
        s.not_understood += o.not_understood
        metrics.ingested(stored=len(o.stored), duplicates=o.duplicates, not_understood=o.not_understood,
                         refused=o.refused_kinds)


def _merge(a: Outcome, b: Outcome) -> Outcome:
    out = Outcome(stored=a.stored + b.stored, duplicates=a.duplicates + b.duplicates,
                  not_understood=a.not_understood + b.not_understood, quarantined=a.quarantined + b.quarantined,
                  sites=a.sites | b.sites)
    for src in (a.refusals, b.refusals):
        for site, refs in src.items():
            out.refusals.setdefault(site, []).extend(refs)
    for kinds in (a.refused_kinds, b.refused_kinds):
        for kind, n in kinds.items():
            out.refused_kinds[kind] = out.refused_kinds.get(kind, 0) + n
    return out


def _warn(event: str, **fields: Any) -> None:
    _log.warning(event, **fields)
