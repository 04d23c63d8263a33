"""The township office hands a restored center the events its backup lacks (service/relay.py).

The office's inbox holds every event of its township's sites that the center committed while
the office was syncing, each whole copy with the center's seal (sync_agent/download.py). A round:
ask the center (``care.relay.<office>``) what it holds of each site of the township, then offer,
in the order they arrived, the sealed copies of events it lacks (by the same rule as a receipt:
above the watermark, in a hole or above max_seq), in requests of at most RELAY_PAGE_BYTES. The
center checks each seal and decides each event as if its own site had sent it; copies it refuses
are remembered and never offered again (each refusal is a quarantine row at the center).

On an ordinary day the center holds everything and a round is one small question. After the
center's restore from an older backup, a round puts back what the stations committed since,
before any of them has reconnected: a station whose disk died in between gets all of its events
back from `agent restore`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import nats.errors

from events.wire import (
    RELAY_PAGE_BYTES,
    RelayReply,
    RelayRequest,
    relay_reply_decoder,
    relay_request_encoder,
    relay_subject,
)
from runtime import log
from sync_agent.locallog import LocalLog, ReceiptState

_log = log.get("sync_agent.relay")
MAX_EVENTS = 500  # per request (the center takes at most 1000)


class RelayUnavailable(Exception):
    """The center did not answer a relay request usefully; the message says why."""


@dataclasses.dataclass(slots=True)
class RelayReport:
    """One round: how many copies the center lacked and what became of them."""

    sites: int = 0  # sites of the township the center told about
    offered: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0


async def relay_round(nc: Any, log_: LocalLog, site_id: str, within: float) -> RelayReport:
    """Ask the center what it holds of the township, and offer it what it lacks. Raises
    RelayUnavailable (or a NATS error) when the center does not answer."""
    report = RelayReport()
    answer = await _ask(nc, site_id, RelayRequest(), within)
    if answer.no_key:  # the center makes no seals, so no copy here could be taken back
        _log.debug("the center has no relay key; nothing to relay", site_id=site_id)
        return report
    held = {p.site_id: ReceiptState(p.watermark, p.max_seq, tuple((h[0], h[1]) for h in p.holes))
            for p in answer.progress}
    report.sites = len(held)

    def lacking(site: str, seq: int) -> bool:
        state = held.get(site)
        return state is not None and not state.committed(seq)

    key_id = answer.key_id or ""
    after = 0
    while True:
        batch, after = log_.relay_candidates(lacking, after, RELAY_PAGE_BYTES, MAX_EVENTS, key_id)
        if not batch:
            break
        request = RelayRequest(events=[msgspec.Raw(body) for _, body, _ in batch], seals=[s for _, _, s in batch])
        answer = await _ask(nc, site_id, request, within)
        report.offered += len(batch)
        report.stored += answer.stored
        report.duplicates += answer.duplicates
        report.refused += len(answer.refused)
        known = [r for r in answer.refused if 0 <= r.index < len(batch)]
        refused = [(batch[r.index][0], r.reason) for r in known]
        log_.note_relay_refused([x for x, r in zip(refused, known, strict=True) if not r.seal],
                                [batch[r.index][0] for r in known if r.seal], key_id)
        for eid, why in refused[:5]:
            _log.warning("relayed copy refused by the center", event_id=eid, reason=why[:200])
    if report.offered:
        _log.info("relayed copies the center lacked", site_id=site_id, offered=report.offered, stored=report.stored,
                  duplicates=report.duplicates, refused=report.refused)
    return report


async def _ask(nc: Any, site_id: str, request: RelayRequest, within: float) -> RelayReply:
    try:
        msg = await nc.request(relay_subject(site_id), relay_request_encoder.encode(request), timeout=within)
    except nats.errors.NoRespondersError:
        raise RelayUnavailable("no center answers relay requests (care.relay): is `shouwang center run` up with "
                               "its 'ingest' part, and may this site's NATS user ask (users file rendered by "
                               "this version)?") from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise RelayUnavailable(f"the center did not answer a relay request within {within:g} s") from None
    try:
        answer = relay_reply_decoder.decode(msg.data)
    except msgspec.DecodeError as err:
        raise RelayUnavailable(f"the center's answer cannot be read: {err}") from None
    if answer.error is not None:
        raise RelayUnavailable(f"the center refused the relay: {answer.error}")
    return answer
