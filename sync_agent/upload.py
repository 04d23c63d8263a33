"""Upload: publish the site's unreceipted events to `care.up.<site>` until the center receipts them.

Guarantee 2 (nothing lost in transit): an event stays pending until a *receipt* from the
center covers it; a PubAck only means JetStream has it in memory (it acks before fsync), so it
moves the publishing cursor, never the safe mark. When receipts stop progressing while events
are outstanding, everything above what the center reported is published again, after a delay
that doubles with jitter up to a cap. Holes the center reports are resent; a watermark lower
than before (a center restored from a backup) rewinds the cursor at once. Resending is always
safe: `Nats-Msg-Id = event_id` drops copies inside JetStream's window and the store keeps each
event_id once forever (guarantee 3).

Events go up many to a message, compressed with a dictionary (events/batch.py: about 64 KiB of
events to a message, a few KiB on the wire), so a village line pays headers, a subject and a
PubAck once per message, not per event. Each message's Nats-Msg-Id is derived from the ids of the
events it carries. A weak line is not a failed publish: at most about two seconds of what the
line has been seen to carry is in flight (`window_bytes`, learnt from how long PubAcks take), and
a PubAck's deadline grows with the bytes ahead of it. After a cut, nothing is published on the
new connection until the center's fresh receipt of that connection is applied (Agent.confirm),
so what already reached the center is not sent again.

Memory is bounded however large the backlog: events are read from SQLite a page at a time,
at most `window_bytes` of messages wait for their PubAck, and at most `window` events are
published beyond the center's watermark before waiting for receipts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import time
from typing import Any

import nats.errors
import nats.js.errors

from events.batch import MAX_BATCH_EVENTS, batch_msg_id, pack
from events.wire import up_subject
from runtime import log
from sync_agent.backoff import Backoff
from sync_agent.locallog import LocalLog, LocalLogError, Outgoing, ReceiptEffect, ReceiptState
from sync_agent.tuning import SyncTuning

_log = log.get("sync_agent.upload")

TRANSIENT: tuple[type[BaseException], ...] = (nats.errors.Error, asyncio.TimeoutError, OSError, LocalLogError)


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that was swallowed on the way, so a stopped loop really stops.

    nats-py's publish_async turns a CancelledError into TooManyStalledMsgsError while it waits
    for an in-flight slot, and Python 3.11's asyncio.wait_for can lose a cancellation that
    arrives as its timeout fires; each loop checks at every turn instead of trusting either.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclasses.dataclass(slots=True)
class _Flight:
    """A message published and not yet acknowledged by JetStream."""

    last_seq: int  # the highest site_seq it carries
    events: int
    fut: asyncio.Future[Any]
    size: int  # bytes of the message's body
    ahead: int  # body bytes in flight when it was published, its own included
    sent_at: float
    deadline: float


class PublishFailed(Exception):
    """A publish was not acknowledged by JetStream; the events stay pending and are resent."""


RETRYABLE: tuple[type[BaseException], ...] = (*TRANSIENT, PublishFailed)


class Uploader:
    def __init__(self, log_: LocalLog, site_id: str, tuning: SyncTuning, on_error: Any, rng: random.Random | None = None
                 ) -> None:
        self.log = log_
        self.subject = up_subject(site_id)
        self.tuning = tuning
        self._on_error = on_error
        self._rng = rng or random.Random()
        self.receipt: ReceiptState = log_.receipt_state()
        self.refused: set[int] = log_.refused_seqs()
        # The next site_seq to publish. On start-up everything the center has not reported is
        # resent: a previous run's publishes may never have reached it.
        self.next_seq = self.receipt.max_seq + 1
        self.published = 0  # events published by this process (their message's PubAck received)
        self.bytes_sent = 0  # bytes of message bodies published by this process
        self.window_bytes = tuning.in_flight_bytes  # compressed bytes in flight, learnt from the line
        self._rate: float | None = None  # bytes/s the line has been seen to carry
        # A new connection publishes nothing until the center's fresh receipt of that connection
        # is applied (Agent.confirm): what reached the center before a cut is then never sent again.
        self.await_fresh_until: float | None = None
        self.first_publish_at: float | None = None  # time.perf_counter() of the first publish
        self.last_progress_at: float | None = None  # ... of the last receipt that moved anything
        self._holes: list[tuple[int, int]] = []
        self._hole_sent: dict[tuple[int, int], float] = {}
        self._wake = asyncio.Event()
        self._last_progress = time.monotonic()
        self._resend_delay = tuning.resend_after
        # Events at or below this site_seq go out with a one-off Nats-Msg-Id: the center said it
        # lacks them (holes, or a watermark that went back), so JetStream must not drop them as
        # copies of what it saw in its two-minute duplicate window (see _publish).
        self._fresh_until = 0
        self._probe = False
        self.nc: Any = None
        self._js: Any = None
        self._js_of: Any = None

    # --- called by the downloader and by recorders in this process ------------------------

    def on_receipt(self, effect: ReceiptEffect) -> None:
        self.receipt = effect.state
        self.refused = self.log.refused_seqs()
        if effect.went_back:
            # The center lost what it had receipted: resend from its new watermark on.
            _log.warning("center watermark went back; resending", watermark=effect.state.watermark,
                         max_seq=effect.state.max_seq)
            self._fresh_until = max(self._fresh_until, self.next_seq - 1)
            self.next_seq = min(self.next_seq, effect.state.max_seq + 1)
        if effect.forgotten:
            # Refused before, and the center no longer holds the refusal (restored from a backup
            # taken before it): sent again with one-off ids (JetStream's window would drop them).
            self._fresh_until = max(self._fresh_until, effect.forgotten[-1])
            above = [seq for seq in effect.forgotten if seq > effect.state.max_seq]
            if above:
                self.next_seq = min(self.next_seq, above[0])
        if effect.progressed or effect.went_back:
            self.last_progress_at = time.perf_counter()
            self._last_progress = time.monotonic()
            self._resend_delay = self.tuning.resend_after
        self._holes = list(effect.state.holes)
        self._wake.set()

    def connected(self) -> None:
        """A new connection: wait (a bounded time) for its fresh receipt before publishing, so what
        the center got before the line was cut (its PubAck lost with the line) is not sent again."""
        self.await_fresh_until = time.monotonic() + 2 * self.tuning.ack_timeout
        self._wake.set()

    def fresh(self) -> None:
        """The center's receipt of this connection is applied: publish from what it holds."""
        self.await_fresh_until = None
        self._wake.set()

    def notify(self) -> None:
        """New events were recorded: publish them without waiting for the next poll."""
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(self.tuning.retry_base, self.tuning.retry_cap, self._rng)
        while True:
            raise_if_cancelling()
            try:
                await self.step()
                backoff.reset()
            except RETRYABLE as err:
                raise_if_cancelling()
                self._on_error(f"upload: {type(err).__name__}: {err}")
                await asyncio.sleep(backoff.next())

    def outstanding(self) -> bool:
        """Some event was published (or should have been) and the center has not reported it."""
        return self.log.last_seq() > max(self.receipt.max_seq, self.receipt.watermark) or bool(self._holes)

    async def step(self) -> None:
        nc = self.nc
        if nc is None or not nc.is_connected:
            await self._wait(self.tuning.idle_poll)
            return
        if self.await_fresh_until is not None:
            left = self.await_fresh_until - time.monotonic()
            if left > 0:
                await self._wait(min(left, self.tuning.idle_poll))
                return
            self.await_fresh_until = None  # no fresh receipt in time: publish on what is known
        state = self.receipt
        now = time.monotonic()
        for hole in self._holes:
            if now - self._hole_sent.get(hole, -1e9) >= self._resend_delay:
                self._hole_sent[hole] = now
                self._fresh_until = max(self._fresh_until, hole[1])
                await self._publish(max(hole[0], state.watermark + 1), hole[1])
        last = self.log.last_seq()
        start = max(self.next_seq, state.max_seq + 1, state.watermark + 1)
        limit = min(last, state.watermark + self.tuning.window)
        if start <= limit:
            self.next_seq = start
            await self._publish(start, limit)
            return
        if not self.outstanding():
            await self._wait(self.tuning.idle_poll)
            return
        # Everything is published; wait for receipts. If none progress in time, resend.
        waited = time.monotonic() - self._last_progress
        if waited < self._resend_delay:
            await self._wait(min(self._resend_delay - waited, self.tuning.idle_poll))
            return
        rewind = max(state.max_seq, state.watermark) + 1
        _log.info("no receipt progress; resending", from_seq=rewind, to_seq=last, after_s=round(waited, 1))
        self.next_seq = rewind
        self._probe = True
        self._last_progress = time.monotonic()
        self._resend_delay = min(self.tuning.resend_cap, self._resend_delay * 2) * self._rng.uniform(0.75, 1.0)
        self._resend_delay = max(self._resend_delay, self.tuning.resend_after)

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _publish(self, first: int, last: int) -> None:
        """Publish [first, last] in order, many events to a message (events.batch) unless the
        tuning says one, with a bounded number of compressed bytes in flight; advance next_seq
        over each contiguous PubAck. Raises PublishFailed (or a NATS error) on the first failure."""
        t = self.tuning
        if self._js_of is not self.nc:  # one context per connection: each makes a reply subscription
            # Twice our own cap, so its semaphore never blocks: we wait for PubAcks ourselves,
            # with a timeout, once max_in_flight are outstanding.
            self._js = self.nc.jetstream(publish_async_max_pending=2 * t.max_in_flight)
            self._js_of = self.nc
        js = self._js
        inflight: collections.deque[_Flight] = collections.deque()
        seq = first
        group: list[Outgoing] = []
        size = 0
        # A message never spans two blocks of batch_events site_seqs: a resend that starts anywhere
        # (a rewind, a probe) differs from the first round in its first block only, and the rest
        # carry the same Nats-Msg-Ids, which JetStream drops as repeats inside its window.
        block = min(max(1, t.batch_events), MAX_BATCH_EVENTS)
        try:
            while seq <= last:
                page = self.log.read_range(seq, last, t.page)
                if not page:
                    break
                for out in page:
                    if out.site_seq in self.refused:
                        continue
                    if group and (not t.batch_bytes or size + len(out.body) > t.batch_bytes
                                  or (out.site_seq - 1) // block != (group[0].site_seq - 1) // block):
                        await self._send(js, group, inflight)
                        group, size = [], 0
                    if self._probe:
                        # A probe (see _send) is the first event alone, sent once more in its block:
                        # small, and the blocks keep the ids of the first round.
                        await self._send(js, [out], inflight)
                    group.append(out)
                    size += len(out.body)
                seq = page[-1].site_seq + 1
                await asyncio.sleep(0)  # a page is published without yielding; let the rest of the loop run
            if group:
                await self._send(js, group, inflight)
            while inflight:
                await self._settle(inflight.popleft())
            if self.next_seq < seq:
                self.next_seq = seq
        finally:
            for f in inflight:  # releases the context's in-flight slots
                f.fut.cancel()

    async def _send(self, js: Any, group: list[Outgoing], inflight: collections.deque[_Flight]) -> None:
        """Publish one message carrying `group`, once the bytes in flight leave room for it."""
        t = self.tuning
        ids = [o.event_id for o in group]
        if t.batch_bytes:
            body, headers = pack([o.body for o in group])
            msg_id = batch_msg_id(ids)
        else:  # as agents before batches: the event itself, its id as the message id
            body, headers, msg_id = group[0].body, {}, group[0].event_id
        if group[0].site_seq <= self._fresh_until:
            msg_id = f"{msg_id}.resend.{time.time_ns()}"
        elif self._probe:
            # JetStream drops a copy whose Nats-Msg-Id it saw in the last two minutes, so if the
            # receipts (not the events) were lost, a resend inside that window would never reach the
            # center and never earn a new receipt. A resend round starts with its first event alone,
            # with a one-off id: the center sees it (a duplicate by event_id, which the store keeps
            # once) and answers with a fresh receipt.
            msg_id = f"{msg_id}.resend.{time.time_ns()}"
            self._probe = False
        headers["Nats-Msg-Id"] = msg_id
        while inflight and (inflight[0].fut.done() or len(inflight) >= t.max_in_flight
                            or sum(f.size for f in inflight) + len(body) > self.window_bytes):
            await self._settle(inflight.popleft())
        if self.first_publish_at is None:
            self.first_publish_at = time.perf_counter()
        ahead = sum(f.size for f in inflight) + len(body)
        # No wait_stall: with one, every publish goes through a timed task and yields the loop,
        # and nats-py then flushes each message in its own write.
        fut = await js.publish_async(self.subject, body, headers=headers)
        now = time.monotonic()
        rate = max(t.slowest_line, self._rate or t.slowest_line)
        inflight.append(_Flight(group[-1].site_seq, len(group), fut, len(body), ahead, now,
                                now + t.ack_timeout + 2 * ahead / rate))
        self.bytes_sent += len(body)

    async def _settle(self, f: _Flight) -> None:
        nc = self.nc
        try:
            while not f.fut.done():  # (wait_for yields even for a done future: not in the hot path)
                if nc is None or not nc.is_connected or self.nc is not nc:
                    # the line was cut: its PubAck will never come; the new connection's fresh
                    # receipt says what reached the center
                    raise PublishFailed(f"connection lost before the PubAck of site_seq {f.last_seq}")
                left = f.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(f.fut), min(left, 0.5))
            f.fut.result()
        except TimeoutError:
            raise PublishFailed(f"no PubAck for the message ending at site_seq {f.last_seq} in "
                                f"{time.monotonic() - f.sent_at:.1f} s") from None
        except nats.js.errors.Error as err:
            raise PublishFailed(f"site_seq {f.last_seq} was not stored by JetStream: {err}") from None
        self.published += f.events
        self._learn(f, time.monotonic() - f.sent_at)
        if f.last_seq >= self.next_seq:
            self.next_seq = f.last_seq + 1

    def _learn(self, f: _Flight, took: float) -> None:
        """What the line carries: the bytes that were ahead of this message (itself included)
        over the time its PubAck took; the window is about two seconds of that."""
        t = self.tuning
        if took <= 0:
            return
        rate = f.ahead / took
        self._rate = rate if self._rate is None else 0.8 * self._rate + 0.2 * rate
        self.window_bytes = int(min(t.in_flight_bytes_max, max(t.in_flight_bytes_min, 2.0 * self._rate)))
