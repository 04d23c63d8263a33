"""Writes made through the API become events of the township office's own site, stored by the
same function that stores every agent's events (:func:`service.ingest.commit_in`).

The township user's site (a township-kind site) is the author: each event is sealed with
:func:`events.envelope.seal` as the next link of that site's log as the store holds it (the
highest ``site_seq`` of the site and its hash), in a transaction that first locks the site's
``api_site_clock`` row, so two API writes for one site take consecutive numbers and chain. The
sealed event is handed to ingest as a value (:func:`service.ingest.commit_events`), sent as the
township site: the checks a message on ``care.up.<site>`` gets after decoding (validated, its
``site_id`` the sender's, the site registered and active), then appended once and the fan-out
scope updated, by the same ``commit_in``. A refusal is answered to the person at once (409 with
the reason) and the transaction rolls back: nothing half-written stays, and nothing is
quarantined (the person who would replay it has the reason already). The fan-out sends a stored
event to the sites that see the child, as it does every event.

The HLC (``recorded_at``) of an API event exceeds every event of the children it concerns:
the person deciding saw them, and the archive reducer uses this to know which updates a
resolution settles.

One rule follows: a township office site whose log the API writes must not also run a site
agent under the same id (two writers of one log). Register a separate township site for the
office's agent if it has one.
"""

from __future__ import annotations

import datetime as dt
import time

import msgspec

from events.catalogue import CareEventBase
from events.envelope import GENESIS_HASH, seal
from events.hlc import pack
from events.ids import new_event_id
from service.api.auth import Caller
from service.api.errors import ApiError
from service.ingest import commit_events
from store.conn import Conn


class Recorded(msgspec.Struct, frozen=True):
    """An event the API recorded for the township office."""

    event_id: str
    type: str
    site_id: str
    site_seq: int
    recorded_at: int
    occurred_at: dt.datetime


async def record(conn: Conn, caller: Caller, care: CareEventBase, *,
                 based_on: dict[str, str] | None = None, occurred_at: dt.datetime | None = None) -> Recorded:
    """Seal and store one event as the caller's township site, inside the caller's transaction."""
    site_id = caller.site_id
    if caller.role != "township" or site_id is None:
        raise ApiError(403, "only township staff record events through the API", field="role", value=caller.role)
    await conn.execute("INSERT INTO api_site_clock (site_id) VALUES ($1) ON CONFLICT DO NOTHING", site_id)
    last_hlc = await conn.fetchval("SELECT last_hlc FROM api_site_clock WHERE site_id = $1 FOR UPDATE", site_id)
    last = await conn.fetchrow(
        "SELECT site_seq, hash FROM events WHERE site_id = $1 ORDER BY site_seq DESC LIMIT 1", site_id)
    seen = await conn.fetchval(
        "SELECT max(recorded_at) FROM events WHERE children && $1::text[]", list(care.child_ids())) or 0
    hlc = max(pack(time.time_ns() // 1_000_000, 0), last_hlc + 1, seen + 1)
    sealed = seal(
        care, site_id=site_id, site_seq=(last["site_seq"] + 1) if last else 1,
        prev_hash=bytes(last["hash"]).hex() if last else GENESIS_HASH, recorded_at=hlc,
        occurred_at=occurred_at or dt.datetime.now(dt.UTC), actor=caller.username, event_id=new_event_id(),
        based_on=based_on,
    )
    outcome = await commit_events(conn, site_id, [sealed.event], quarantine=False)
    if not outcome.stored:
        reason = outcome.rejected[0].reason if outcome.rejected else "refused"
        raise ApiError(409, f"the center refused the event: {reason}", code="refused", field="site_id",
                       value=site_id)
    await conn.execute("UPDATE api_site_clock SET last_hlc = $2 WHERE site_id = $1", site_id, hlc)
    e = sealed.event
    return Recorded(event_id=e.event_id, type=e.type, site_id=e.site_id, site_seq=e.site_seq, recorded_at=hlc,
                    occurred_at=e.occurred_at)
