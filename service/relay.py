"""Relay: a township office hands a restored center the events its backup lacks.

The township office's agent receives every event of its township's sites on ``care.down``
(service/fanout.py), each whole copy sealed by the center (service/seals.py). After the center
is restored from an older backup it lacks what was committed since; the stations resend their
own (guarantee 2), but a station whose disk died meanwhile cannot, and `agent restore` would give
it back only what the backup held. So the office asks, on ``care.relay.<office>`` (core NATS
request/reply, answered only below the office's own inbox), what the center holds of each site of
its township, and offers the sealed copies of what it lacks (sync_agent/relay.py).

The center takes a copy back only when all of these hold:

* the asker is an active site of kind ``township``, and the event's site is another site of the
  same township (an office relays only its own township's sites, never its own events: those it
  resends from its own log);
* the copy decodes and validates as any event (events.envelope.decode_event);
* its seal is the center's HMAC of the copy's hash under the relay key: the center itself once
  committed and fanned out exactly this event, with its event_id, site_seq, prev_hash and hash;
* it links into its site's hash chain as the store holds it: its prev_hash is the hash of the
  site's event before it, and the event after it names its hash, where the store (or the same
  request) holds those (`chain_misfits`; with a genuine seal this always holds, and a copy that
  did not would be evidence worth keeping in quarantine);
* then it goes through ingest's commit (service/ingest.py `commit_in`) as if its own site had
  sent it: that site must be registered and active, its authority is decided as for any event
  (service/authority.py), and the store keeps each event_id once and each (site, site_seq) for
  one event (a copy that clashes with what the store holds is refused, never overwrites).

Stored copies are listed in ``relayed_events`` (who relayed which, when; migration 0012,
append-only); refused ones are quarantined with the reason, prefixed "relayed by <office>", on
the subject ``care.relay.<office>``. The event's own site gets a receipt as after any commit, so a
station still alive learns the center holds its events again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.envelope import MAX_EVENT_BYTES, DecodedEvent, decode_event
from events.validation import ValidationFailed
from events.wire import (
    RELAY_PREFIX,
    RelayRefusal,
    RelayReply,
    SiteProgress,
    is_own_inbox,
    relay_reply_encoder,
    relay_request_decoder,
    relay_subject,
)
from runtime import log
from service.ingest import Accepted, Outcome, Submitted, commit_in
from service.quarantine import NewRow, insert_rows
from service.seals import Sealer
from service.sites import SiteError, check_site_id, township_of
from store.conn import Conn
from store.postgres import holes_of

_log = log.get("service.relay")
_SEAL_REFUSED = "its seal is not this center's seal of its hash (not a copy the center fanned out, or changed since)"
MAX_RELAY_EVENTS = 1000  # events per request (the office sends at most RELAY_PAGE_BYTES a request)


class RelayResponder:
    """Answers township offices on ``care.relay.>`` (queue group ``center-relay``)."""

    def __init__(self, pool: asyncpg.Pool, nc: NATS, sealer: Sealer | None,
                 on_commit: Callable[[Outcome], None] | None = None) -> None:
        self.pool = pool
        self.nc = nc
        self.sealer = sealer
        self.on_commit = on_commit
        self._sub: Subscription | None = None
        self.stored = 0
        self._lock = asyncio.Lock()  # one relay commit at a time in this process: offices are few

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(RELAY_PREFIX + ">", queue="center-relay", cb=self._on_msg)
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as err:  # the connection is already gone: nothing to undo
                _log.debug("relay unsubscribe failed", error=type(err).__name__)
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        office = msg.subject[len(RELAY_PREFIX):]
        if not is_own_inbox(office, msg.reply):
            _log.warning("relay request with a reply subject outside the site's inbox; not answered",
                         site_id=office[:80])
            return
        try:
            reply = await self.answer(office, bytes(msg.data))
        except Exception as err:  # the database is away: say so, the office asks again later
            _log.warning("relay request failed", site_id=office, error=type(err).__name__)
            reply = RelayReply(error=f"the center cannot use its store now ({type(err).__name__}); try again later")
        try:
            await self.nc.publish(msg.reply, relay_reply_encoder.encode(reply))
        except Exception as err:
            _log.warning("relay reply not sent", site_id=office, error=type(err).__name__)

    async def answer(self, office: str, body: bytes) -> RelayReply:
        """The reply to one request of `office`: the township's progress, or what became of the
        copies it offered."""
        try:
            check_site_id(office)
        except SiteError as err:
            return RelayReply(error=str(err))
        try:
            request = relay_request_decoder.decode(body)
        except msgspec.DecodeError as err:
            return RelayReply(error=f"bad relay request: {err}")
        if self.sealer is None:  # not an error: the office has nothing it could hand back
            return RelayReply(no_key=True)
        if len(request.events) != len(request.seals):
            return RelayReply(error=f"bad relay request: {len(request.events)} events but {len(request.seals)} seals")
        if len(request.events) > MAX_RELAY_EVENTS:
            return RelayReply(error=f"bad relay request: {len(request.events)} events, at most {MAX_RELAY_EVENTS}")
        async with self.pool.acquire() as conn:
            kind = await conn.fetchval("SELECT kind FROM sites WHERE site_id = $1 AND active", office)
            if kind != "township":
                return RelayReply(error=f"site {office} is not an active township office at this center; only a "
                                        "township office relays its sites' events")
            if not request.events:
                return RelayReply(progress=await township_progress(conn, office), key_id=self.sealer.key_id)
        return await self._take(office, [bytes(e) for e in request.events], request.seals)

    async def _take(self, office: str, bodies: Sequence[bytes], seals: Sequence[str]) -> RelayReply:
        assert self.sealer is not None
        township = township_of(office)
        refused: list[RelayRefusal] = []
        rows: list[NewRow] = []
        items: list[Accepted] = []
        index: dict[str, int] = {}  # event_id -> its place in the request
        for i, (body, seal) in enumerate(zip(bodies, seals, strict=True)):
            why, item = self._check(office, township, body, seal)
            if item is None:
                refused.append(RelayRefusal(index=i, reason=why, seal=why.endswith(_SEAL_REFUSED)))
                rows.append(NewRow(subject=relay_subject(office), site_id=office, reason=f"relayed by {office}: {why}",
                                   raw=body))
            else:
                items.append(item)
                index.setdefault(item.decoded.event.event_id, i)
        async with self._lock, self.pool.acquire() as conn, conn.transaction():
            misfits = await chain_misfits(conn, [a.decoded for a in items])
            for k in sorted(misfits):
                e = items[k].decoded.event
                refused.append(RelayRefusal(index=index[e.event_id], reason=misfits[k]))
                rows.append(NewRow(subject=relay_subject(office), site_id=office,
                                   reason=f"relayed by {office}: {misfits[k]}", raw=bytes(bodies[index[e.event_id]]),
                                   event_id=e.event_id, site_seq=e.site_seq))
            items = [a for k, a in enumerate(items) if k not in misfits]
            out = await commit_in(conn, items, quarantine=False)
            for rej in out.rejected:
                refused.append(RelayRefusal(index=index.get(rej.event_id or "", -1), reason=rej.reason))
                rows.append(NewRow(subject=relay_subject(office), site_id=office,
                                   reason=f"relayed by {office}: {rej.reason}", raw=rej.row().raw,
                                   event_id=rej.event_id, site_seq=rej.site_seq))
            await insert_rows(conn, rows)
            # Only the copies relayed: out.stored also holds held refusals the relayed
            # registrations and transfers let ingest store (service/ingest.py).
            relayed = [d for d in out.stored if d.event.event_id in index]
            if relayed:
                await conn.executemany(
                    "INSERT INTO relayed_events (event_id, site_id, site_seq, relayed_by) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (event_id) DO NOTHING",
                    [(d.event.event_id, d.event.site_id, d.event.site_seq, office) for d in relayed])
        out.rejected = []  # quarantined above, with the relay named; the sites are not told of them
        if self.on_commit is not None and (out.stored or out.duplicates):
            self.on_commit(out)
        self.stored += len(relayed)
        _log.info("relayed copies taken", office=office, offered=len(bodies), stored=len(relayed),
                  waiting_stored=len(out.stored) - len(relayed),
                  duplicates=out.duplicates, refused=len(refused))
        return RelayReply(stored=len(relayed), duplicates=out.duplicates, refused=refused,
                          key_id=self.sealer.key_id)

    def _check(self, office: str, township: str, body: bytes, seal: str) -> tuple[str, Accepted | None]:
        """Why a copy is refused before the store is asked (and None), or ("", the item)."""
        assert self.sealer is not None
        if len(body) > MAX_EVENT_BYTES:
            return f"event is {len(body)} bytes, the limit is {MAX_EVENT_BYTES}", None
        try:
            decoded = decode_event(body)
        except ValidationFailed as err:
            return f"invalid event: {err}", None
        except (ValueError, TypeError, OverflowError, RecursionError) as err:
            return f"invalid event: {type(err).__name__}", None
        e = decoded.event
        if e.site_id == office or township_of(e.site_id) != township:
            return (f"event {e.event_id} is of site {e.site_id}: an office relays only the other sites of its "
                    f"township {township}"), None
        if not self.sealer.verify(decoded.hash, seal):
            return f"event {e.event_id}: {_SEAL_REFUSED}", None
        return "", Accepted(Submitted(e.site_id, e), e.site_id, decoded)


async def chain_misfits(conn: Conn, batch: Sequence[DecodedEvent]) -> dict[int, str]:
    """Index in `batch` -> why the event does not link into its site's chain: its prev_hash is
    not the hash of the site's event before it, or the event after it does not name its hash, as
    the store holds them or as earlier events of the batch have them."""
    wanted = {(d.event.site_id, d.event.site_seq + step) for d in batch for step in (-1, 1)}
    rows = await conn.fetch(
        """SELECT e.site_id, e.site_seq, encode(e.hash, 'hex') AS hash, encode(e.prev_hash, 'hex') AS prev_hash
           FROM events e JOIN unnest($1::text[], $2::bigint[]) AS w(site_id, site_seq)
             ON e.site_id = w.site_id AND e.site_seq = w.site_seq""",
        [k[0] for k in wanted], [k[1] for k in wanted])
    held = {(r["site_id"], r["site_seq"]): (r["hash"], r["prev_hash"]) for r in rows}
    misfits: dict[int, str] = {}
    for i, d in enumerate(batch):
        e = d.event
        before = held.get((e.site_id, e.site_seq - 1))
        after = held.get((e.site_id, e.site_seq + 1))
        if before is not None and before[0] != e.prev_hash:
            misfits[i] = (f"event {e.event_id} (site_seq {e.site_seq}) does not link to site_seq {e.site_seq - 1} of "
                          f"{e.site_id} as the center holds it (prev_hash differs)")
        elif after is not None and after[1] != d.hash:
            misfits[i] = (f"event {e.event_id} (site_seq {e.site_seq}) is not the one site_seq {e.site_seq + 1} of "
                          f"{e.site_id} names as its predecessor")
        else:
            held.setdefault((e.site_id, e.site_seq), (d.hash, e.prev_hash))
    return misfits


async def township_progress(conn: Conn, office: str) -> list[SiteProgress]:
    """What the store holds of each active site of the office's township (the office excepted)."""
    rows = await conn.fetch(
        """SELECT s.site_id, coalesce(p.watermark, 0) AS watermark, coalesce(p.max_seq, 0) AS max_seq,
                  coalesce(p.pending, '{}') AS pending
           FROM sites s LEFT JOIN site_progress p USING (site_id)
           WHERE s.active AND s.site_id LIKE $1 AND s.site_id <> $2 ORDER BY s.site_id""",
        township_of(office).replace("_", r"\_") + ".%", office)
    return [SiteProgress(site_id=r["site_id"], watermark=r["watermark"], max_seq=r["max_seq"],
                         holes=[[lo, hi] for lo, hi in holes_of(r["watermark"], r["pending"])]) for r in rows]
