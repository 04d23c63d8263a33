"""Receipts: after each commit, tell each sending site what the center holds (guarantee 2).

A receipt (:class:`events.wire.Receipt`, JSON, header ``Shouwang-Kind: receipt``) on
``care.down.<site>`` carries the site's contiguous watermark, the holes above it and its
highest committed site_seq, read from ``site_progress`` *after* the commit, so a receipt never
claims more than PostgreSQL holds; plus the refusals (quarantine rows) made by that commit.
Commits are coalesced per site: under load one receipt covers many batches.

A site may also ask for its receipt (``care.receipt.<site>``, core NATS request/reply,
:class:`ReceiptResponder`): the agent does on every connection and before it reports "synced",
so a receipt it kept from before the center was restored from an older backup never passes for
one of the store as it is now; a lower watermark in the answer makes it resend what the store lacks.
The answer also lists every refusal the center holds of the site's unstored events
(``refused_all``), so a refusal the restored quarantine lacks is forgotten at the site and its
event decided afresh.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from events.wire import (
    KIND_HEADER,
    KIND_RECEIPT,
    RECEIPT_PREFIX,
    Receipt,
    ReceiptReply,
    ReceiptRequest,
    Refusal,
    down_subject,
    is_own_inbox,
    receipt_encoder,
    receipt_reply_encoder,
    receipt_request_decoder,
    up_subject,
)
from runtime import log
from service import metrics
from service.sites import SiteError, check_site_id
from service.streams import publish_batch
from store.conn import Conn
from store.postgres import holes_of

_log = log.get("service.receipts")


async def receipts_for(conn: Conn, sites: list[str],
                       refusals: dict[str, list[Refusal]] | None = None) -> list[Receipt]:
    """The receipts of these sites as committed now (one query for all of them)."""
    refusals = refusals or {}
    now = dt.datetime.now(dt.UTC)
    rows = await conn.fetch("SELECT site_id, watermark, max_seq, pending FROM site_progress WHERE site_id = ANY($1)",
                            sorted(sites))
    by_site = {r["site_id"]: r for r in rows}
    out = []
    for site_id in sorted(sites):
        r = by_site.get(site_id)
        watermark, max_seq, pending = (r["watermark"], r["max_seq"], r["pending"]) if r else (0, 0, [])
        out.append(Receipt(site_id=site_id, watermark=watermark, max_seq=max_seq,
                           holes=[[lo, hi] for lo, hi in holes_of(watermark, pending)],
                           refused=refusals.get(site_id, []), center_time=now))
    return out


async def publish_receipts(js: JetStreamContext, receipts: list[Receipt]) -> None:
    await publish_batch(js, [(down_subject(r.site_id), receipt_encoder.encode(r), {KIND_HEADER: KIND_RECEIPT})
                             for r in receipts])


class ReceiptPublisher:
    """Collects the sites of committed batches and publishes their receipts, coalesced."""

    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext) -> None:
        self.pool = pool
        self.js = js
        self._pending: dict[str, list[Refusal]] = {}
        self._since: dict[str, float] = {}  # site -> monotonic time of the first commit not yet receipted
        self._wake = asyncio.Event()
        self.published = 0

    def notify(self, sites: set[str] | list[str], refusals: dict[str, list[Refusal]] | None = None, *,
               committed: float | None = None) -> None:
        """Ask for a receipt to each site (non-blocking; called right after a commit, whose
        ``time.monotonic()`` is ``committed``: the receipt latency is measured from it)."""
        for s in sites:
            self._pending.setdefault(s, [])
            if committed is not None:
                self._since.setdefault(s, committed)
        for s, refs in (refusals or {}).items():
            self._pending.setdefault(s, []).extend(refs)
        if self._pending:
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            since, self._since = self._since, {}
            if not pending:
                continue
            delay = 0.1
            while True:
                try:
                    async with self.pool.acquire() as conn:
                        receipts = await receipts_for(conn, list(pending), pending)
                    await publish_receipts(self.js, receipts)
                    self.published += len(receipts)
                    now = time.monotonic()
                    metrics.receipts_published(len(receipts),
                                               [now - since[r.site_id] for r in receipts if r.site_id in since])
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # database or NATS away: keep the sites, try again
                    _log.warning("receipts not published; retrying", sites=len(pending), error=type(err).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    for s, refs in self._pending.items():  # merge what arrived meanwhile
                        pending.setdefault(s, []).extend(refs)
                    self._pending = {}
                    for s, t in self._since.items():
                        since[s] = min(t, since.get(s, t))
                    self._since = {}


class ReceiptResponder:
    """Answers ``care.receipt.<site>`` with the site's receipt read from the store now (queue group
    ``center-receipts``: any center process may answer). Only replies below the asking site's own
    inbox are answered; a site that is not registered and active gets an error, not a receipt."""

    def __init__(self, pool: asyncpg.Pool, nc: NATS) -> None:
        self.pool = pool
        self.nc = nc
        self._sub: Subscription | None = None
        self.answered = 0

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(RECEIPT_PREFIX + ">", queue="center-receipts", cb=self._on_msg)
        await self.nc.flush()  # subscribed at the server before the center counts as started

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as err:  # the connection is already gone: nothing to undo
                _log.debug("receipt responder unsubscribe failed", error=type(err).__name__)
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        site_id = msg.subject[len(RECEIPT_PREFIX):]
        if not is_own_inbox(site_id, msg.reply):
            _log.warning("receipt request with a reply subject outside the site's inbox; not answered",
                         site_id=site_id[:80])
            return
        try:
            reply = await self.answer(site_id, msg.data)
        except Exception as err:  # the database is away: say so, the agent asks again
            _log.warning("receipt request failed", site_id=site_id, error=type(err).__name__)
            reply = ReceiptReply(error=f"the center cannot read its store now ({type(err).__name__}); try again later")
        try:
            await self.nc.publish(msg.reply, receipt_reply_encoder.encode(reply))
            self.answered += 1
        except Exception as err:
            _log.warning("receipt reply not sent", site_id=site_id, error=type(err).__name__)

    async def answer(self, site_id: str, body: bytes = b"") -> ReceiptReply:
        """The reply for one site: its receipt as committed now, or why there is none. What the
        site reports of its backlog (the request's body) is kept for the dashboard."""
        try:
            check_site_id(site_id)
        except SiteError as err:
            return ReceiptReply(error=str(err))
        try:
            request = receipt_request_decoder.decode(body) if body.strip() else ReceiptRequest()
        except msgspec.DecodeError as err:
            return ReceiptReply(error=f"bad receipt request: {err}")
        async with self.pool.acquire() as conn:
            active = await conn.fetchval("SELECT active FROM sites WHERE site_id = $1", site_id)
            if not active:
                return ReceiptReply(error=f"site {site_id} is not registered or not active at this center")
            if request.pending is not None:
                await conn.execute("UPDATE sites SET reported_pending = $2, reported_at = now() WHERE site_id = $1",
                                   site_id, request.pending)
            # What its agent reads on the way down (service/fanout.py batches for it); an agent that
            # says nothing (an older one, or one put back) gets one event per message again.
            await conn.execute("UPDATE sites SET down_batches = $2 WHERE site_id = $1 "
                               "AND down_batches IS DISTINCT FROM $2", site_id, request.batches)
            (receipt,) = await receipts_for(conn, [site_id])
            receipt = await with_all_refusals(conn, receipt)
        return ReceiptReply(receipt=receipt)


# At most this many refusals go in an answer; a site with more (one that sent a flood of bad
# events) gets none listed and keeps the refusals it has (refused_all false).
MAX_LISTED_REFUSALS = 200


async def with_all_refusals(conn: Conn, receipt: Receipt) -> Receipt:
    """`receipt` with every refusal the quarantine holds, held or dismissed, of an event its site
    sent on its own subject (not the copies a township office relayed) above the watermark that
    the store has not taken since (``refused_all``); one per event, the newest row's. Read
    through the index `quarantine_site_refusals` (migration 0042)."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (site_seq, event_id) id, event_id::text AS event_id, site_seq, reason,
                  encode(sha256(raw), 'hex') AS digest
           FROM quarantine
           WHERE site_id = $1 AND status IN ('held', 'dismissed') AND site_seq > $2 AND event_id IS NOT NULL
             AND subject = $4
           ORDER BY site_seq, event_id, id DESC
           LIMIT $3""",
        receipt.site_id, receipt.watermark, MAX_LISTED_REFUSALS + 1, up_subject(receipt.site_id))
    if len(rows) > MAX_LISTED_REFUSALS:
        return receipt

    def stored(seq: int) -> bool:  # above the watermark: stored unless in a hole or above max_seq
        return seq <= receipt.max_seq and not any(lo <= seq <= hi for lo, hi in receipt.holes)

    refused = [Refusal(quarantine_id=r["id"], reason=r["reason"], event_id=r["event_id"], site_seq=r["site_seq"],
                       digest=r["digest"]) for r in rows if not stored(r["site_seq"])]
    return msgspec.structs.replace(receipt, refused=refused, refused_all=True)
