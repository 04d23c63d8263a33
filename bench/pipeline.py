"""The raw pipeline the issue measures ingest and catch-up against: the same bytes published to
JetStream (``publish_async``, with their ``Nats-Msg-Id``), pulled back by a durable consumer
(nats-py's own ``fetch``), written with one plain ``COPY`` per batch and acked, with no decoding,
no validation, no dedup and no receipts. Publisher and consumer run at once, as sites and the
center do; the rate is events from the first publish to the last commit.

It is the best a center could do on this transport and this database without looking inside an
event, so "ours / pipeline" says what the center's own work (decode, validate, dedup, the hash
chain, per-site watermarks, receipts) costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import asyncpg
import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench.servers import fresh_database

STREAM = "BENCH_PIPE"
PREFIX = "bench.pipe."

Message = tuple[str, bytes, str]  # (subject suffix, payload, Nats-Msg-Id)


async def raw_pipeline(admin_url: str, nats_url: str, messages: Sequence[Message], *, batch: int = 500) -> float:
    """Events/s through publish -> JetStream -> fetch -> COPY -> ack, publisher and consumer concurrent."""
    n = len(messages)
    pub = await nats.connect(nats_url, connect_timeout=5)
    sub = await nats.connect(nats_url, connect_timeout=5)
    try:
        js = pub.jetstream(publish_async_max_pending=4000)
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(STREAM)
        await js.add_stream(StreamConfig(name=STREAM, subjects=[PREFIX + ">"], storage=StorageType.FILE))
        async with fresh_database(admin_url) as url:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("CREATE TABLE pipe (stream_seq bigint PRIMARY KEY, subject text NOT NULL, "
                                   "msg_id text NOT NULL, data bytea NOT NULL)")
                psub = await sub.jetstream().pull_subscribe(
                    PREFIX + ">", durable="pipe", stream=STREAM,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=4 * batch))
                committed = 0
                finished_at = 0.0

                async def consume() -> None:
                    nonlocal committed, finished_at
                    while committed < n:
                        try:
                            msgs = await psub.fetch(batch, timeout=1)
                        except NatsTimeout:
                            continue
                        rows = [(m.metadata.sequence.stream, m.subject, (m.headers or {}).get("Nats-Msg-Id", ""),
                                 m.data) for m in msgs]
                        async with conn.transaction():
                            await conn.copy_records_to_table("pipe", records=rows,
                                                             columns=("stream_seq", "subject", "msg_id", "data"))
                        for m in msgs:
                            await m.ack()
                        committed += len(msgs)
                    finished_at = time.perf_counter()

                consumer = asyncio.create_task(consume())
                started = time.perf_counter()
                futures = [await js.publish_async(PREFIX + suffix, payload, headers={"Nats-Msg-Id": msg_id})
                           for suffix, payload, msg_id in messages]
                await asyncio.gather(*futures)
                await asyncio.wait_for(consumer, 600)
                return n / (finished_at - started)
            finally:
                await conn.close()
                with contextlib.suppress(Exception):
                    await js.delete_stream(STREAM)
    finally:
        await sub.close()
        await pub.close()
