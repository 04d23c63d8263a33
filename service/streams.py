"""JetStream streams and the ingest consumer, created (or brought up to date) at every start.

* ``CARE_UP`` holds ``care.up.>``: sites to center. Work-queue retention: a message leaves
  the stream when the ingester acks it, which it does only after the PostgreSQL commit. A
  message that reaches MaxDeliver without being acked stays in the stream, is quarantined by
  the center (service/quarantine.py) and then removed.
* ``CARE_DOWN`` holds ``care.down.>``: receipts and fanned-out events. Limits retention with a
  maximum age, because a site reads it through its own durable consumer whenever it is online
  (a site that has not created its consumer yet must still find its messages later).
"""

from __future__ import annotations

import asyncio

import msgspec
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from events.wire import DOWN_PREFIX, DOWN_STREAM, UP_PREFIX, UP_STREAM, down_consumer, down_subject

INGEST_CONSUMER = "center-ingest"
DAY = 24 * 3600.0


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the center's streams and ingest consumer are configured."""

    batch: int = 500  # messages per ingest fetch
    max_deliver: int = 6
    # Redelivery delays in seconds; the ingester sends "in progress" while it waits for
    # PostgreSQL, so these only run out for messages whose ingester died or stalled.
    backoff: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0, 600.0)
    down_max_age: float = 90 * DAY  # how long a site may stay offline and still get its messages
    up_max_age: float = 365 * DAY
    duplicate_window: float = 120.0
    # Copies of each stream (and of its consumers, which follow the stream) on a JetStream
    # cluster: 3 on the three-server cluster of deploy/nats/cluster-*.conf, where a stream's
    # leader can die and another takes over with every acknowledged message; 1 on one server.
    # An existing stream is brought to this count at the next start (update_stream).
    replicas: int = 1
    # On start, the fan-out resends what it sent in this many seconds before its checkpoint:
    # CARE_DOWN is not fsynced per message (deploy/nats/README.md), so a power cut at the center
    # can lose recent fanned-out events after their checkpoint was saved. Agents keep each
    # event_id once, so a resend is harmless.
    fanout_resend_window: float = 150.0

    @property
    def max_ack_pending(self) -> int:
        # Two batches in flight: one being written while the next is fetched (several
        # ingesters share the consumer, each with its own two).
        return self.batch * 8


def ingest_consumer_config(settings: StreamSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=INGEST_CONSUMER,
        name=INGEST_CONSUMER,
        filter_subject=UP_PREFIX + ">",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_deliver=settings.max_deliver,
        backoff=list(settings.backoff),
        ack_wait=settings.backoff[0],
        max_ack_pending=settings.max_ack_pending,
        max_waiting=512,
    )


def site_consumer_config(site_id: str) -> ConsumerConfig:
    """The durable consumer through which a site reads care.down.<site> (the agent may create
    it itself with this same config; the center creates it when the site is registered)."""
    name = down_consumer(site_id)
    return ConsumerConfig(
        durable_name=name,
        name=name,
        filter_subject=down_subject(site_id),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30.0,
    )


async def ensure_streams(js: JetStreamContext, settings: StreamSettings | None = None) -> None:
    """Create CARE_UP, CARE_DOWN and the ingest consumer, or update them to this config."""
    settings = settings or StreamSettings()
    up = StreamConfig(
        name=UP_STREAM,
        subjects=[UP_PREFIX + ">"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=settings.up_max_age,
        duplicate_window=settings.duplicate_window,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
    )
    down = StreamConfig(
        name=DOWN_STREAM,
        subjects=[DOWN_PREFIX + ">"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.down_max_age,
        duplicate_window=settings.duplicate_window,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
    )
    for config in (up, down):
        await _ensure_stream(js, config)
    await js.add_consumer(UP_STREAM, ingest_consumer_config(settings))


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


async def ensure_site_consumer(js: JetStreamContext, site_id: str) -> None:
    await js.add_consumer(DOWN_STREAM, site_consumer_config(site_id))


class PublishTimeout(Exception):
    """JetStream did not acknowledge every publish in time (a reconnect lost some acks)."""


async def publish_batch(js: JetStreamContext, messages: list[tuple[str, bytes, dict[str, str]]],
                        ack_within: float = 10.0) -> None:
    """Publish with `publish_async` and wait for every ack, at most `ack_within` seconds.

    nats-py's publish futures never time out, and each pending one holds a slot of the
    publisher's semaphore: an ack lost in a reconnect would hang the caller and, repeated, stall
    every later publish. Timing out cancels the futures (which frees their slots); the caller
    retries the whole batch, which is safe (Nats-Msg-Id, and readers keep each event once)."""
    futures = [await js.publish_async(subject, payload, headers=headers) for subject, payload, headers in messages]
    if not futures:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*futures), ack_within)
    except TimeoutError:
        raise PublishTimeout(f"{sum(not f.done() for f in futures)} of {len(futures)} publishes not acknowledged "
                             f"within {ack_within}s") from None
