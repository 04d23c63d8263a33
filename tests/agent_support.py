"""Support for the agent tests: a minimal center on real NATS and PostgreSQL, and site helpers.

`TestCenter` plays the center's side of the wire contract (events.wire) with the real
`EventStore`: it consumes CARE_UP, appends each batch, and publishes the site's progress as a
receipt on `care.down.<site>`. It can drop receipts or forge a lower watermark, which the real
center never does on purpose, to pin how the agent reacts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
from nats.js import api

from events.batch import is_batch, unpack
from events.envelope import DecodedEvent, Draft, decode_event
from events.samples import samples
from events.types import SiteKind
from events.validation import ValidationFailed
from events.wire import (
    DOWN_STREAM,
    KIND_EVENT,
    KIND_HEADER,
    KIND_RECEIPT,
    RECEIPT_PREFIX,
    UP_PREFIX,
    UP_STREAM,
    Receipt,
    ReceiptReply,
    down_subject,
    is_own_inbox,
    receipt_encoder,
    receipt_reply_encoder,
    site_of_subject,
)
from store.postgres import EventStore
from sync_agent.agent import stop_tasks
from sync_agent.config import SiteConfig, write_config

OCCURRED = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


async def ensure_streams(nc: Any) -> None:
    """CARE_UP and CARE_DOWN as the center creates them (only for servers no center runs on)."""
    js = nc.jetstream()
    for name, subjects in ((UP_STREAM, ["care.up.>"]), (DOWN_STREAM, ["care.down.>"])):
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await js.add_stream(api.StreamConfig(name=name, subjects=subjects, storage=api.StorageType.FILE))


class TestCenter:
    __test__ = False

    def __init__(self, nats_url: str, store: EventStore, *, batch: int = 500) -> None:
        self.nats_url = nats_url
        self.store = store
        self.batch = batch
        self.drop_receipts = False
        self.watermark_override: Callable[[Receipt], Receipt] | None = None
        self.received = 0
        self.duplicates = 0
        self.receipts_sent = 0
        self.nc: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TestCenter:
        self.nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        await ensure_streams(self.nc)
        js = self.nc.jetstream()
        await js.add_consumer(UP_STREAM, api.ConsumerConfig(durable_name="test_center", ack_policy=api.AckPolicy.ALL,
                                                            max_ack_pending=20_000))
        self._task = asyncio.create_task(self._run(), name="test-center")
        # An agent asks for its receipt on connecting (care.receipt.<site>), as of the store now.
        await self.nc.subscribe(RECEIPT_PREFIX + ">", cb=self._answer_receipt)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            # Cancelled in rounds: nats-py's fetch waits with asyncio.wait_for, which on Python
            # 3.11 can swallow a cancellation, and the loop then fetches again (a teardown hung
            # here until pytest's timeout once in CI).
            await stop_tasks([self._task], wait=0.2)
        if self.nc is not None:
            await self.nc.close()

    async def __aenter__(self) -> TestCenter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            try:
                sub = await self.nc.jetstream().pull_subscribe_bind("test_center", stream=UP_STREAM)
                while True:
                    try:
                        msgs = await sub.fetch(self.batch, timeout=0.5)
                    except TimeoutError:
                        continue
                    await self._ingest(msgs)
            except (nats.errors.Error, OSError) as err:
                if isinstance(err, nats.errors.ConnectionClosedError):
                    return
                await asyncio.sleep(0.2)

    async def _ingest(self, msgs: list[Any]) -> None:
        if not msgs:
            return
        batch: list[DecodedEvent] = []
        for m in msgs:
            # A batch (events.batch) carries many events; an old agent's message one.
            for data in unpack(m.data, m.headers) if is_batch(m.headers) else [m.data]:
                with contextlib.suppress(ValidationFailed):  # the real center quarantines; tests send valid events
                    batch.append(decode_event(data))
        result = await self.store.append(batch)
        self.received += len(result.stored)
        self.duplicates += len(result.duplicates)
        sites = {site_of_subject(m.subject, UP_PREFIX) for m in msgs} - {None}
        for site in sites:
            assert site is not None
            await self.send_receipt(site)
        await msgs[-1].ack()

    async def _receipt(self, site: str) -> Receipt:
        p = await self.store.progress(site)
        receipt = Receipt(site_id=site, watermark=p.watermark, max_seq=p.max_seq,
                          holes=[[lo, hi] for lo, hi in p.holes], center_time=dt.datetime.now(dt.UTC))
        if self.watermark_override is not None:
            receipt = self.watermark_override(receipt)
        return receipt

    async def _answer_receipt(self, msg: Any) -> None:
        site = msg.subject[len(RECEIPT_PREFIX):]
        if self.drop_receipts or not is_own_inbox(site, msg.reply):
            return
        reply = ReceiptReply(receipt=await self._receipt(site))
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(msg.reply, receipt_reply_encoder.encode(reply))

    async def send_receipt(self, site: str) -> None:
        receipt = await self._receipt(site)
        if self.drop_receipts:
            return
        await self.nc.jetstream().publish(down_subject(site), receipt_encoder.encode(receipt),
                                          headers={KIND_HEADER: KIND_RECEIPT})
        self.receipts_sent += 1

    async def fan_out(self, site: str, events: list[DecodedEvent]) -> None:
        """Deliver committed events to a site as the center's fan-out does."""
        js = self.nc.jetstream()
        for d in events:
            await js.publish(down_subject(site), msgspec.json.encode(d.event), headers={KIND_HEADER: KIND_EVENT})


def make_site(tmp: Path, site_id: str, nats_url: str, kind: SiteKind = SiteKind.VILLAGE) -> Path:
    data = tmp / site_id
    write_config(data, SiteConfig(site_id=site_id, kind=kind, name="测试站", nats_url=nats_url))
    return data


def drafts(n: int, rng: random.Random, child: str | None = None) -> list[Draft]:
    """n valid drafts of mixed, non-archive-changing types about a few made-up children."""
    kinds = ("HomeVisitMade", "ParentCallMade", "LetterWritten", "TalkHeld", "CounsellingGiven")
    children = [child] if child else ["c-" + f"{rng.getrandbits(128):032x}" for _ in range(5)]
    out = []
    for i in range(n):
        care = samples(rng, children[i % len(children)])[kinds[i % len(kinds)]]
        out.append(Draft(care=care, occurred_at=OCCURRED))
    return out


async def eventually(check: Callable[[], Any], seconds: float = 30.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
