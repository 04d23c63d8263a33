"""Receipts: after each commit, tell each sending site what the center holds (guarantee 2).

A receipt (:class:`events.wire.Receipt`, JSON, header ``Shouwang-Kind: receipt``) on
``care.down.<site>`` carries the site's contiguous watermark, the holes above it and its
highest committed site_seq, read from ``site_progress`` *after* the commit, so a receipt never
claims more than PostgreSQL holds; plus the refusals (quarantine rows) made by that commit.
Commits are coalesced per site: under load one receipt covers many batches.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
from nats.js import JetStreamContext

from events.wire import KIND_HEADER, KIND_RECEIPT, Receipt, Refusal, down_subject, receipt_encoder
from runtime import log
from service.streams import publish_batch
from store.postgres import holes_of

_log = log.get("service.receipts")


async def receipts_for(conn: asyncpg.Connection, sites: list[str],
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
        self._wake = asyncio.Event()
        self.published = 0

    def notify(self, sites: set[str] | list[str], refusals: dict[str, list[Refusal]] | None = None) -> None:
        """Ask for a receipt to each site (non-blocking; called right after a commit)."""
        for s in sites:
            self._pending.setdefault(s, [])
        for s, refs in (refusals or {}).items():
            self._pending.setdefault(s, []).extend(refs)
        if self._pending:
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            if not pending:
                continue
            delay = 0.1
            while True:
                try:
                    async with self.pool.acquire() as conn:
                        receipts = await receipts_for(conn, list(pending), pending)
                    await publish_receipts(self.js, receipts)
                    self.published += len(receipts)
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
