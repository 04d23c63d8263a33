"""Helpers for the center's tests: a private NATS server per test, publishing like an agent,
reading a site's care.down the way an agent does (its own durable consumer), and waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events.envelope import DecodedEvent, Event, encode_event
from events.wire import DOWN_STREAM, KIND_EVENT, KIND_HEADER, KIND_RECEIPT, Receipt, receipt_decoder, up_subject
from service.streams import PublishTimeout, publish_batch, site_consumer_config
from testbed.embedded import EmbeddedNats

_event_decoder = msgspec.json.Decoder(Event)


@pytest.fixture
def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:  # type: ignore[misc]
    """A NATS server with JetStream for this test only (streams are not shared between tests)."""
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def client(own_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    """A NATS connection to this test's server, playing the sites; closed after the test."""
    nc = await connect(own_nats.url)
    yield nc
    await nc.close()


async def connect(url: str, **kw: object) -> NATS:
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2,
                              **kw)  # type: ignore[arg-type]


async def publish(js: JetStreamContext, events: list[DecodedEvent] | DecodedEvent, subject_site: str | None = None,
                  *, msg_id: bool = True) -> None:
    """Publish events as an agent does: each on care.up.<site>, Nats-Msg-Id = event_id."""
    batch = events if isinstance(events, list) else [events]
    messages = [(up_subject(subject_site or d.event.site_id), encode_event(d.event),
                 {"Nats-Msg-Id": d.event.event_id} if msg_id else {}) for d in batch]
    for _ in range(5):  # an ack lost in a reconnect: publish again, as an agent does
        try:
            await publish_batch(js, messages, ack_within=5)
            return
        except PublishTimeout:
            continue
    raise AssertionError("JetStream did not acknowledge the publishes")


async def publish_raw(js: JetStreamContext, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
    await js.publish(subject, data, headers=headers)


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 20.0, what: str = "condition") -> None:
    """Poll `check` until it is true; fail the test with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


class SiteInbox:
    """Reads care.down.<site> through the site's durable consumer, as its agent would."""

    def __init__(self, js: JetStreamContext, site_id: str) -> None:
        self.js = js
        self.site_id = site_id
        self.receipts: list[Receipt] = []
        self.events: list[Event] = []
        self._sub: JetStreamContext.PullSubscription | None = None

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is None:
            config = site_consumer_config(self.site_id)
            await self.js.add_consumer(DOWN_STREAM, config)
            self._sub = await self.js.pull_subscribe_bind(config.durable_name, DOWN_STREAM)
        return self._sub

    async def drain(self) -> None:
        sub = await self._subscription()
        while True:
            try:
                msgs = await sub.fetch(500, timeout=0.2)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            for m in msgs:
                kind = (m.headers or {}).get(KIND_HEADER)
                if kind == KIND_RECEIPT:
                    self.receipts.append(receipt_decoder.decode(m.data))
                elif kind == KIND_EVENT:
                    self.events.append(_event_decoder.decode(m.data))
                else:
                    raise AssertionError(f"care.down message without a known {KIND_HEADER}: {kind!r}")
                await m.ack()

    async def wait_receipt(self, check: Callable[[Receipt], bool], within: float = 20.0) -> Receipt:
        found: list[Receipt] = []

        async def ok() -> bool:
            await self.drain()
            found[:] = [r for r in self.receipts if check(r)]
            return bool(found)

        await wait_for(ok, within, f"a receipt for {self.site_id}")
        return found[-1]

    async def wait_events(self, n: int, within: float = 20.0) -> list[Event]:
        async def ok() -> bool:
            await self.drain()
            return len({e.event_id for e in self.events}) >= n

        await wait_for(ok, within, f"{n} events at {self.site_id}")
        return self.events

    def event_ids(self) -> set[str]:
        return {e.event_id for e in self.events}
