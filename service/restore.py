"""Answers a site that asks for its own events back (``shouwang agent restore``).

A station whose disk died starts again from an empty log. Before it records anything it asks
the center, on ``care.restore.<site>`` (core NATS request/reply, no stream; its NATS user may
ask for its own site only), for the events the center holds of it, page by page, and rebuilds
its log from them: the same events, the same sequence numbers, the same hash chain, so its next
event continues the chain and nothing it recorded before is refused as a clash.

Replies carry the events as their wire JSON, at most RESTORE_PAGE_BYTES a page. A page never
splits an event; a bad request gets a reply with ``error`` set, never silence.
"""

from __future__ import annotations

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.envelope import encode_event
from events.wire import (
    RESTORE_PAGE_BYTES,
    RESTORE_PREFIX,
    RestorePage,
    is_own_inbox,
    restore_request_decoder,
)
from runtime import log
from service.fanout import NOW_TX, redacted, targets_for
from service.sites import SiteError, check_site_id
from store.conn import Conn
from store.postgres import EventStore, Position, StoredEvent, progress_of, read_where

_log = log.get("service.restore")
_encoder = msgspec.json.Encoder()
_PAGE_ROWS = 2000


class RestoreResponder:
    """Serves restore requests from sites (one queue group: any center process may answer)."""

    def __init__(self, pool: asyncpg.Pool, nc: NATS) -> None:
        self.pool = pool
        self.nc = nc
        self.store = EventStore(pool)
        self._sub: Subscription | None = None
        self.served = 0

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(RESTORE_PREFIX + ">", queue="center-restore", cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as err:  # the connection is already gone: nothing to undo
                _log.debug("restore unsubscribe failed", error=type(err).__name__)
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        site_id = msg.subject[len(RESTORE_PREFIX):]
        if not is_own_inbox(site_id, msg.reply):
            # Only the asking site's own inbox: a reply subject elsewhere (care.up.<another site>,
            # care.down.<...>) would make the center publish this site's events into a stream.
            _log.warning("restore request with a reply subject outside the site's inbox; not answered",
                         site_id=site_id)
            return
        try:
            page = await self.page(site_id, msg.data)
        except Exception as err:  # the database is away: say so, the agent retries
            _log.warning("restore request failed", site_id=site_id, error=type(err).__name__)
            page = RestorePage(site_id=site_id, error=f"the center cannot read its store now ({type(err).__name__}); "
                                                      "try again later")
        try:
            await self.nc.publish(msg.reply, _encoder.encode(page))
        except Exception as err:
            _log.warning("restore reply not sent", site_id=site_id, error=type(err).__name__)

    async def page(self, site_id: str, request: bytes) -> RestorePage:
        try:
            check_site_id(site_id)
        except SiteError as err:
            return RestorePage(site_id=site_id, error=str(err))
        try:
            req = restore_request_decoder.decode(request)
        except msgspec.DecodeError as err:
            return RestorePage(site_id=site_id, error=f"bad restore request: {err}")
        async with self.pool.acquire() as conn:
            registered = await conn.fetchval("SELECT active FROM sites WHERE site_id = $1", site_id)
            if registered is None:
                return RestorePage(site_id=site_id, error=f"site {site_id} is not registered at this center")
            if req.inbox_after is not None:
                return await self._inbox_page(conn, site_id, Position.parse(req.inbox_after))
            progress = await progress_of(conn, site_id)
        stored = await self.store.read_site(site_id, req.from_seq, _PAGE_ROWS)
        events = _fill(stored)
        if len(events) < len(stored):
            next_seq: int | None = stored[len(events)].event.site_seq
        else:
            next_seq = stored[-1].event.site_seq + 1 if len(stored) == _PAGE_ROWS else None
        self.served += len(events)
        _log.info("restore page served", site_id=site_id, from_seq=req.from_seq, events=len(events))
        return RestorePage(site_id=site_id, watermark=progress.watermark, max_seq=progress.max_seq,
                           holes=[[lo, hi] for lo, hi in progress.holes], events=events, next_seq=next_seq)

    async def _inbox_page(self, conn: Conn, site_id: str, after: Position) -> RestorePage:
        """Committed events of other sites about the children in this site's scope now (and the
        children merged with them), in the global order after `after`: what the site's care.down
        consumer had brought it before its disk died. A child's whole history, as the fan-out
        sends it to a site that enters the child's scope."""
        stored = await read_where(
            conn,
            """children && ARRAY(
                   WITH own AS (SELECT DISTINCT child_id FROM child_scope WHERE site_id = $1 AND until_tx IS NULL)
                   SELECT child_id FROM own
                   UNION SELECT l.linked_child_id FROM child_links l JOIN own o USING (child_id)
                   WHERE l.until_tx IS NULL)
               AND site_id <> $1""",
            site_id, after=after, limit=_PAGE_ROWS)
        # Redacted as the fan-out does (guarantee 10): no other child of an event naming several.
        targets = await targets_for(conn, {c for s in stored for c in s.event.children})
        copies = [msgspec.structs.replace(s, event=e) for s in stored
                  if (e := redacted(s.event, targets.keeps(site_id, s.event.children, NOW_TX, s.event.site_id)))
                  is not None]
        events = _fill(copies)
        if len(events) < len(copies):
            next_after: str | None = str(copies[len(events) - 1].position)
        else:
            next_after = str(stored[-1].position) if len(stored) == _PAGE_ROWS else None
        self.served += len(events)
        return RestorePage(site_id=site_id, events=events, next_after=next_after)


def _fill(stored: list[StoredEvent]) -> list[msgspec.Raw]:
    """The wire JSON of the first events that fit in one page (at least one; never split)."""
    events: list[msgspec.Raw] = []
    size = 0
    for s in stored:
        body = encode_event(s.event)
        if events and size + len(body) > RESTORE_PAGE_BYTES:
            break
        events.append(msgspec.Raw(body))
        size += len(body)
    return events
