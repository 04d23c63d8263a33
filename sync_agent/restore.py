"""``shouwang agent restore``: rebuild a station's local log from the center after its disk died.

The new machine gets a fresh data directory (``agent init``, same site id, same credentials);
before anything is recorded there, ``agent restore`` asks the center for every event it holds
of this site (``care.restore.<site>``, service/restore.py) and writes them back into the empty
log, unchanged and checked link by link (site, sequence, prev_hash), then stores the center's
progress as the last receipt. The next event recorded continues the same sequence and chain, so
the center takes it as the site's next event rather than refusing a clash.

Then it asks for what other sites recorded about the children in the site's scope (its
`care.down` consumer had delivered those before, and will not again), so the station's offline
pages show the whole archive as before.

What cannot come back: events recorded on the dead machine that never reached the center. A
restore cut off halfway resumes where it stopped when run again; until it has finished, the log
refuses to record (a new event would take a sequence number the center already holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors

from events.envelope import Event
from events.wire import (
    Receipt,
    RestorePage,
    RestoreRequest,
    restore_page_decoder,
    restore_subject,
)
from runtime import natsurl
from sync_agent.config import connect_options, load_config, log_path
from sync_agent.locallog import RESTORING, LocalLog

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)
INBOX_CURSOR = "restore_inbox_after"  # meta: where a cut-off restore's inbox phase resumes


class RestoreError(Exception):
    """The restore did not finish; the message says why and what to do."""


class CenterUnreachable(RestoreError):
    """The center's NATS server could not be reached; run the restore again later (exit 1)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RestoreReport:
    site_id: str
    events: int
    head_seq: int
    head_hash: str
    watermark: int
    max_seq: int
    received: int = 0  # other sites' events about this site's children, back in its inbox


OnPage = Callable[[int, int], None]  # (events restored so far, events the center holds)


async def restore(data: Path, *, nats_url: str | None = None, answer_within: float = 30.0,
                  on_page: OnPage | None = None) -> RestoreReport:
    config = load_config(data)
    url = nats_url or config.nats_url
    with LocalLog(log_path(data), config.site_id) as log:
        have = log.last_seq()
        if have and log.meta(RESTORING) is None:
            raise RestoreError(f"the local log {log.path} already holds {have} events: a restore only fills a new, "
                               "empty log (run `shouwang agent init` into a new data directory first)")
        log.set_meta(**{RESTORING: "1"})
        failures: list[Exception] = []

        async def on_error(err: Exception) -> None:  # nats-py's default prints a traceback per attempt
            failures.append(err)

        try:
            # One connection, no reconnecting: a cut line fails the restore, which resumes when run again.
            nc = await nats.connect(natsurl.servers(url), connect_timeout=min(answer_within, 10.0),
                                    allow_reconnect=False,
                                    max_reconnect_attempts=1, reconnect_time_wait=0.5, error_cb=on_error,
                                    name=f"shouwang-agent-restore {config.site_id}", **connect_options(config))
        except (TimeoutError, OSError, nats.errors.Error) as err:
            cause = failures[-1] if failures and isinstance(err, nats.errors.NoServersError) else err
            raise CenterUnreachable(f"cannot reach the center's NATS at {natsurl.redact(url)}: "
                               f"{type(cause).__name__}: {cause}".rstrip(": ")) from None
        try:
            seq = have + 1
            head_seq, head_hash = have, log.verify().head_hash
            while True:
                page = await _ask(nc, config.site_id, RestoreRequest(from_seq=seq), answer_within)
                bodies = [bytes(e) for e in page.events]
                if page.holes:  # only what lies below the first gap can be chained
                    bodies = bodies[:max(0, page.watermark - head_seq)]
                if bodies:
                    report = log.restore_own(bodies)
                    head_seq, head_hash = report.head_seq, report.head_hash
                if page.holes:
                    gaps = ", ".join(f"{lo}-{hi}" for lo, hi in page.holes)
                    raise RestoreError(
                        f"the center holds this site's events up to site_seq {page.max_seq} but never received "
                        f"{gaps}; the hash chain cannot be rebuilt across a gap. Restored up to site_seq "
                        f"{head_seq}; ask the county office before recording here")
                if on_page is not None:
                    on_page(head_seq, page.max_seq)
                if page.next_seq is None:
                    break
                seq = page.next_seq
            if head_seq != page.max_seq:
                raise RestoreError(f"the center reports site_seq up to {page.max_seq} but sent {head_seq}; "
                                   "run the restore again")
            own = page
            # Then what other sites recorded about this site's children (its care.down consumer
            # had delivered those before the disk died, and will not again).
            received = 0
            after: str | None = log.meta(INBOX_CURSOR) or "0:0"
            while after is not None:
                page = await _ask(nc, config.site_id, RestoreRequest(from_seq=1, inbox_after=after), answer_within)
                try:
                    pairs = [(_event_decoder.decode(e), bytes(e)) for e in page.events]
                except msgspec.DecodeError as err:
                    raise RestoreError(f"an event from the center cannot be read: {err}") from None
                received += log.apply_inbound(pairs)
                after = page.next_after
                if after is not None:
                    log.set_meta(**{INBOX_CURSOR: after})
            log.apply_receipt(Receipt(site_id=config.site_id, watermark=own.watermark, max_seq=own.max_seq))
            log.clear_meta(RESTORING, INBOX_CURSOR)
            return RestoreReport(config.site_id, head_seq - have, head_seq, head_hash, own.watermark, own.max_seq,
                                 received)
        finally:
            with contextlib.suppress(Exception):  # bounded: a vanished peer must not hold the command
                await asyncio.wait_for(nc.close(), 5)


async def _ask(nc: Any, site_id: str, request: RestoreRequest, answer_within: float) -> RestorePage:
    try:
        msg = await nc.request(restore_subject(site_id), _encoder.encode(request), timeout=answer_within)
    except nats.errors.NoRespondersError:
        raise RestoreError("no center answers restore requests: is `shouwang center run` up (with its "
                           "'restore' part), and may this site's NATS user ask for it?") from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise RestoreError(f"the center did not answer within {answer_within:g} s; run the restore again "
                           "(it resumes where it stopped)") from None
    try:
        page = restore_page_decoder.decode(msg.data)
    except msgspec.DecodeError as err:
        raise RestoreError(f"the center's answer cannot be read: {err}") from None
    if page.error is not None:
        raise RestoreError(f"the center refused the restore: {page.error}")
    return page
