"""Takes the stations' reads into the center's read log (``read_log``, guarantee 9).

A station writes every read of a child's data down locally (sync_agent/readlog.py) and sends
them, in batches, as core NATS requests on ``care.reads.<site>`` (``events.wire.reads_subject``;
a site's NATS user may publish only its own). This responder (queue group ``center-reads``: any
center process may answer):

* answers only when the reply subject is below the asking site's own inbox
  (``events.wire.is_own_inbox``): otherwise a site could make the center publish anywhere;
* takes batches from registered, active sites only;
* validates the batch (msgspec, bounded: at most `MAX_BATCH` rows, `MAX_BYTES` bytes, each text
  bounded) and refuses a bad one whole, with ``{"error"}``;
* inserts the rows with the site id and the site's own row id; the unique index of migration
  0006 keeps a batch sent twice (a lost answer) once; ``read_log`` stays append-only;
* answers ``{"kept": <highest local id of the batch>}`` after the commit, and only then does the
  station drop those rows.

Wire, as sync_agent/readlog.py sends it: ``{"reads": [{"id", "read_at", "username", "role",
"child_id", "route", "outcome"}]}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.wire import READS_PREFIX, is_own_inbox
from runtime import log
from service.sites import SiteError, check_site_id

_log = log.get("service.reads")
MAX_BATCH = 500
MAX_BYTES = 512 * 1024

Text64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class StationRead(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=1, le=2**62)]
    read_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    username: Text64
    role: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    child_id: Text64
    route: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    outcome: Literal["served", "not_found"]


class ReadBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reads: Annotated[list[StationRead], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


_decoder = msgspec.json.Decoder(ReadBatch)
_encoder = msgspec.json.Encoder()

_INSERT = """
INSERT INTO read_log (read_at, username, role, child_id, route, outcome, site_id, site_read_id)
SELECT r.read_at, r.username, r.role, r.child_id, r.route, r.outcome, $1, r.id
  FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
       AS r (id, read_at, username, role, child_id, route, outcome)
ON CONFLICT (site_id, site_read_id) DO NOTHING
"""


class ReadsResponder:
    """Serves the stations' read-log uploads."""

    def __init__(self, pool: asyncpg.Pool, nc: NATS) -> None:
        self.pool = pool
        self.nc = nc
        self._sub: Subscription | None = None
        self.stored = 0

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(READS_PREFIX + ">", queue="center-reads", cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as err:  # the connection is already gone: nothing to undo
                _log.debug("reads unsubscribe failed", error=type(err).__name__)
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        site_id = msg.subject[len(READS_PREFIX):]
        if not is_own_inbox(site_id, msg.reply):
            _log.warning("reads request refused: reply not below the site's inbox", site_id=site_id[:80])
            return
        try:
            answer = await self.take(site_id, msg.data)
        except Exception as err:  # the database is away: say so, the station keeps its rows and retries
            _log.warning("reads not stored", site_id=site_id, error=type(err).__name__)
            answer = {"error": f"the center cannot store reads now ({type(err).__name__}); try again later"}
        try:
            await self.nc.publish(msg.reply, _encoder.encode(answer))
        except Exception as err:
            _log.warning("reads answer not sent", site_id=site_id, error=type(err).__name__)

    async def take(self, site_id: str, data: bytes) -> dict[str, object]:
        """Validate and store one batch; the answer for the station."""
        try:
            check_site_id(site_id)
        except SiteError as err:
            return {"error": str(err)}
        if len(data) > MAX_BYTES:
            return {"error": f"batch of {len(data)} bytes: at most {MAX_BYTES}"}
        try:
            batch = _decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            return {"error": f"invalid batch: {err}"}
        rows = batch.reads
        async with self.pool.acquire() as conn, conn.transaction():
            active = await conn.fetchval("SELECT active FROM sites WHERE site_id = $1", site_id)
            if not active:
                return {"error": f"site {site_id} is not registered or not active at this center"}
            status = await conn.execute(
                _INSERT, site_id, [r.id for r in rows], [r.read_at for r in rows], [r.username for r in rows],
                [r.role for r in rows], [r.child_id for r in rows], [r.route for r in rows], [r.outcome for r in rows])
        stored = int(status.rsplit(" ", 1)[-1])
        self.stored += stored
        _log.info("station reads stored", site_id=site_id, rows=len(rows), new=stored)
        return {"kept": max(r.id for r in rows)}
