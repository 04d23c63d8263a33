"""Download: this site's durable consumer on `care.down.<site>`: receipts and fanned-out events.

Messages are acknowledged only after what they carry is committed to the local SQLite log, so
a crash in between makes JetStream redeliver them, and applying them twice changes nothing
(receipts are snapshots; events are kept once by event_id).

An event naming several children may arrive as a redacted copy (``Shouwang-Redacted: 1``): the
center cut out the children outside this site's scope, so its hash is not the sender's; the
original's hash (``Shouwang-Original-Hash``) is kept beside it in the inbox for an auditor.
The site trusts such a copy because it came from the center on its own authenticated subject.

Events may come many to a message (``Shouwang-Kind: events``, events/batch.py; the center sends
them so only to an agent that said in its receipt request that it reads them): each entry is
judged as a message of its own, its id naming the site it is for.
A whole copy may carry the center's seal (``Shouwang-Seal``, service/seals.py), kept beside it: a
township office hands sealed copies back to a center restored from an older backup
(sync_agent/relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from events.batch import BatchError, unpack
from events.envelope import Event
from events.wire import (
    DOWN_STREAM,
    KIND_EVENT,
    KIND_EVENTS,
    KIND_HEADER,
    KIND_RECEIPT,
    SEAL_HEADER,
    Receipt,
    down_entry_decoder,
    down_subject,
    receipt_decoder,
)
from runtime import log
from sync_agent.backoff import Backoff
from sync_agent.locallog import LocalLog, ReceiptEffect
from sync_agent.tuning import SyncTuning
from sync_agent.upload import TRANSIENT, raise_if_cancelling

_log = log.get("sync_agent.download")
# Set by the center's fan-out on a copy cut to this site's children (service/fanout.py).
REDACTED_HEADER = "Shouwang-Redacted"
ORIGINAL_HASH_HEADER = "Shouwang-Original-Hash"
_event_decoder = msgspec.json.Decoder(Event)


class Downloader:
    def __init__(self, log_: LocalLog, site_id: str, durable: str, tuning: SyncTuning,
                 on_receipt: Callable[[ReceiptEffect], None], on_error: Callable[[str], None],
                 rng: random.Random | None = None, js_domain: str | None = None) -> None:
        self.log = log_
        self.site_id = site_id
        self.js_domain = js_domain  # the hub's JetStream domain, behind a township leaf node
        self.durable = durable
        self.tuning = tuning
        self._on_receipt = on_receipt
        self._on_error = on_error
        self._rng = rng or random.Random()
        self.nc: Any = None
        self.receipts = 0
        self.events = 0
        self.unreadable = 0
        self.foreign = 0  # other sites' messages JetStream put on this subject (a reply-subject trick)

    async def run(self) -> None:
        backoff = Backoff(self.tuning.retry_base, self.tuning.retry_cap, self._rng)
        while True:
            raise_if_cancelling()
            nc = self.nc
            if nc is None or not nc.is_connected:
                await asyncio.sleep(self.tuning.idle_poll)
                continue
            sub = None
            try:
                sub = await self._subscribe(nc)
                backoff.reset()
                while True:
                    raise_if_cancelling()
                    try:
                        msgs = await sub.fetch(self.tuning.fetch_batch, timeout=self.tuning.fetch_timeout)
                    except TimeoutError:
                        continue
                    await self.handle(msgs)
                    backoff.reset()
            except TRANSIENT as err:
                raise_if_cancelling()
                self._on_error(f"download: {type(err).__name__}: {err}")
                await asyncio.sleep(backoff.next())
            finally:
                if sub is not None:
                    with contextlib.suppress(*TRANSIENT):
                        await sub.unsubscribe()

    async def _subscribe(self, nc: Any) -> Any:
        js = nc.jetstream(domain=self.js_domain)
        try:
            # The center creates the consumer when it registers the site; bind to it as it is.
            await js.consumer_info(DOWN_STREAM, self.durable)
        except nats.js.errors.NotFoundError:
            # Same configuration as the center's (service.streams.site_consumer_config).
            config = api.ConsumerConfig(
                durable_name=self.durable,
                name=self.durable,
                filter_subject=down_subject(self.site_id),
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30.0,
            )
            await js.add_consumer(DOWN_STREAM, config)
        return await js.pull_subscribe_bind(self.durable, stream=DOWN_STREAM)

    def _batch(self, msg: Any, inbound: list[tuple[Event, bytes]], redacted: dict[str, str],
               seals: dict[str, str]) -> None:
        """The events of a batch (events.batch), each judged as a message of its own: an entry
        for another site (its id names it) is dropped, as is the whole batch when its message id
        names another site. Raises BatchError or a DecodeError for an unreadable batch."""
        other = _foreign(self.site_id, (msg.headers or {}).get("Nats-Msg-Id"))
        if other is not None:
            self.foreign += 1
            _log.warning("another site's care.down batch on this site's subject; dropped", addressed=other,
                         stream_seq=_seq(msg))
            return
        for raw in unpack(bytes(msg.data), msg.headers):
            try:
                entry = down_entry_decoder.decode(raw)
                event = _event_decoder.decode(bytes(entry.event))
            except msgspec.DecodeError as err:  # one bad entry: skipped, the others kept
                self.unreadable += 1
                _log.warning("unreadable entry of a care.down batch", stream_seq=_seq(msg), error=str(err))
                continue
            other = _foreign(self.site_id, entry.id)
            if other is not None or addressee(entry.id) is None:
                self.foreign += 1
                _log.warning("a batch entry not addressed to this site; dropped", addressed=other or "-",
                             stream_seq=_seq(msg))
                continue
            inbound.append((event, bytes(entry.event)))
            if entry.original_hash is not None:
                redacted[event.event_id] = entry.original_hash
            elif entry.seal is not None:
                seals[event.event_id] = entry.seal

    async def handle(self, msgs: list[Any]) -> None:
        latest: Receipt | None = None
        refused: list[Any] = []
        inbound: list[tuple[Event, bytes]] = []
        redacted: dict[str, str] = {}
        seals: dict[str, str] = {}
        for msg in msgs:
            kind = (msg.headers or {}).get(KIND_HEADER)
            try:
                if kind == KIND_RECEIPT:
                    r = receipt_decoder.decode(msg.data)
                    if r.site_id != self.site_id:
                        continue
                    refused += r.refused
                    latest = r
                elif kind == KIND_EVENT:
                    addressed = addressee((msg.headers or {}).get("Nats-Msg-Id"))
                    if addressed is not None and addressed != self.site_id:
                        # Another site's copy (the fan-out names the site it sends to): JetStream
                        # put it on this subject because that site asked for its own messages
                        # "on care.down.<this site>" (NATS does not check reply subjects). It is
                        # not for this site: acked and dropped, never kept or shown.
                        self.foreign += 1
                        _log.warning("another site's care.down message on this site's subject; dropped",
                                     addressed=addressed, stream_seq=_seq(msg))
                        continue
                    event = _event_decoder.decode(msg.data)
                    inbound.append((event, bytes(msg.data)))
                    if (msg.headers or {}).get(REDACTED_HEADER) == "1":
                        # A copy without other children (docs/SECURITY.md): keep the original's hash.
                        redacted[event.event_id] = (msg.headers or {}).get(ORIGINAL_HASH_HEADER, "")
                    elif (seal := (msg.headers or {}).get(SEAL_HEADER)) is not None:
                        seals[event.event_id] = seal
                elif kind == KIND_EVENTS:
                    self._batch(msg, inbound, redacted, seals)
                else:
                    self.unreadable += 1
                    _log.warning("unknown message kind on care.down", kind=kind, stream_seq=_seq(msg))
            except (msgspec.DecodeError, BatchError) as err:
                # Acked and skipped, so one bad message cannot block the site's inbox forever.
                self.unreadable += 1
                _log.warning("unreadable message on care.down", kind=kind, stream_seq=_seq(msg), error=str(err))
        if inbound:
            self.events += await asyncio.to_thread(self.log.apply_inbound, inbound, redacted, seals)
        if latest is not None:
            # Receipts are snapshots; the last of a batch supersedes the others, but the
            # refusals each carried are all kept.
            if refused:
                latest = msgspec.structs.replace(latest, refused=refused)
            effect = await asyncio.to_thread(self.log.apply_receipt, latest)
            self.receipts += 1
            self._on_receipt(effect)
        for msg in msgs:  # only now that SQLite has committed what they carried
            await msg.ack()


def _foreign(self_site: str, msg_id: str | None) -> str | None:
    """The other site a message or a batch entry names as its addressee, if it names another."""
    addressed = addressee(msg_id)
    return addressed if addressed is not None and addressed != self_site else None


def addressee(msg_id: str | None) -> str | None:
    """The site a fan-out message was sent to: its Nats-Msg-Id is ``<event id>@<site>`` (and
    ``#<digest>`` for a redacted copy). None when the message says nothing of it."""
    if not msg_id or "@" not in msg_id:
        return None
    return msg_id.split("#", 1)[0].rpartition("@")[2] or None


def _seq(msg: Any) -> int | None:
    try:
        return int(msg.metadata.sequence.stream)
    except (nats.errors.Error, AttributeError):  # informational only; a plain message has none
        return None
