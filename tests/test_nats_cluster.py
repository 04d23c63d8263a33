"""The center on a JetStream cluster of three nats-servers (issue 19): the testbed's cluster, the
streams replicated 3 times, one server killed with -9 and started again; and the lists of server
URLs every NATS option takes. The agents' and the center's behaviour under the same fault, with
everything else the chaos harness does, is tests/test_chaos_cluster.py."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from nats.js.errors import APIError, ServiceUnavailableError

from events.catalogue import HomeVisitMade
from events.envelope import DecodedEvent
from events.wire import DOWN_STREAM, UP_STREAM
from runtime import natsurl
from service.center import run_center
from service.sites import register_site
from service.streams import INGEST_CONSUMER, PublishTimeout, StreamSettings
from store.postgres import EventStore
from sync_agent.config import check_nats_url
from testbed.embedded import EmbeddedNats, NatsCluster
from tests.center_kit import connect, publish, wait_for
from tests.factory import SiteWriter

SITES = ["gx-lp.xy.v01", "gx-lp.xy.v02", "gx-lp.xy.s01"]
CHILD = "c-" + "c" * 32
R3 = StreamSettings(batch=100, max_deliver=3, backoff=(2.0, 4.0), replicas=3)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three servers for this test; every one stopped after it, whatever happened."""
    c = NatsCluster(tmp_path / "cluster").start()
    try:
        yield c
    finally:
        c.stop()
        assert c.running() == []


# --- server lists -------------------------------------------------------------------------


def test_a_nats_url_option_takes_one_server_or_a_comma_separated_list() -> None:
    three = "tls://n1.example:4222, tls://n2.example:4222,tls://n3.example"
    assert natsurl.servers(three) == ["tls://n1.example:4222", "tls://n2.example:4222", "tls://n3.example"]
    assert natsurl.servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    assert check_nats_url(three) == three  # what `agent init --nats` and site.json accept
    for bad, why in [("", "not a NATS URL"), ("nats://a:1,,nats://b:2", "empty URL"), ("nats://a:1,", "empty URL"),
                     ("nats://a:1,htp://b", "must start with"), ("nats://a:1,ws://b:2", "mixes websocket"),
                     ("nats://a b:1", "no spaces"), ("nats://a:0", "port 0")]:
        with pytest.raises(ValueError, match=why):
            check_nats_url(bad)
    assert natsurl.redact("nats://center:s3cret@a:1,nats://center:s3cret@b:2") == \
        "nats://center:***@a:1,nats://center:***@b:2"


# --- the cluster --------------------------------------------------------------------------


async def _publish_until_acked(js: object, subject: str, n: int, prefix: str, within: float = 60) -> None:
    """Publish n messages, each retried until JetStream acknowledges it (a leader is being elected)."""
    deadline = time.monotonic() + within
    for i in range(n):
        while True:
            try:
                await js.publish(subject, b"x", headers={"Nats-Msg-Id": f"{prefix}-{i}"})  # type: ignore[attr-defined]
                break
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def _holds(cluster: NatsCluster, i: int, n: int) -> bool:
    return await asyncio.to_thread(cluster.stored_on, i, "T") == n


async def _leader(nc: NATS, stream: str) -> str:
    info = await nc.jetstream(timeout=5).stream_info(stream)
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


async def _messages(nc: NATS, stream: str, within: float = 60) -> int:
    deadline = time.monotonic() + within
    while True:
        try:
            return int((await nc.jetstream(timeout=5).stream_info(stream)).state.messages)
        except (nats.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_killed_stream_leader_loses_nothing_and_its_copy_catches_up(cluster: NatsCluster) -> None:
    """kill -9 the leader of a stream with 3 replicas: the client moves to another server, every
    message acknowledged before or after is kept; restarted, the server catches up, so that
    when the next leader is killed the stream still holds everything."""
    nc = await connect(cluster.url.split(","))  # type: ignore[arg-type]
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="T", subjects=["t.>"], num_replicas=3))
        await _publish_until_acked(js, "t.a", 200, "before")
        first = cluster.index_of(await _leader(nc, "T"))
        cluster.kill(first)
        await _publish_until_acked(js, "t.a", 200, "during")
        assert first not in cluster.running()
        assert await _messages(nc, "T") == 400
        cluster.start_node(first)
        await asyncio.to_thread(cluster.wait_healthy, first)
        await wait_for(lambda: _holds(cluster, first, 400), within=30, what="the restarted server's own copy")
        second = cluster.index_of(await _leader(nc, "T"))
        assert second != first
        cluster.kill(second)  # now the restarted server must hold its copy
        await _publish_until_acked(js, "t.a", 100, "after")
        assert await _messages(nc, "T") == 500
        cluster.start_node(second)
        await asyncio.to_thread(cluster.wait_healthy, second)
        assert sorted(cluster.running()) == [0, 1, 2]
    finally:
        await nc.close()


async def test_a_server_replaced_with_an_empty_store_copies_every_stream_back(cluster: NatsCluster) -> None:
    """The runbook's "replace a machine": a server whose disk died comes back under its old name
    with an empty store, copies the stream from the other two, and once it says it is healthy
    the other copies can be lost in turn without losing a message."""
    nc = await connect(cluster.url.split(","))  # type: ignore[arg-type]
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="T", subjects=["t.>"], num_replicas=3))
        await _publish_until_acked(js, "t.a", 300, "m")
        dead = cluster.index_of(await _leader(nc, "T"))
        cluster.kill(dead)
        shutil.rmtree(cluster.nodes[dead].store_dir / "js")  # the disk died
        await _publish_until_acked(js, "t.a", 100, "meanwhile")
        cluster.start_node(dead)
        await asyncio.to_thread(cluster.wait_healthy, dead)
        await wait_for(lambda: _holds(cluster, dead, 400), within=30, what="the new server's own copy")
        for other in [i for i in range(3) if i != dead]:  # each old copy lost in turn, one at a time
            cluster.kill(other)
            assert await _messages(nc, "T") == 400
            cluster.start_node(other)
            await asyncio.to_thread(cluster.wait_healthy, other)
    finally:
        await nc.close()


async def test_the_center_on_a_cluster_replicates_its_streams_and_ingests_through_a_killed_leader(
        cluster: NatsCluster, database_url: str, pool: asyncpg.Pool) -> None:
    """`run_center` with replicas=3 on the servers' list: CARE_UP, CARE_DOWN and the ingest
    consumer are kept on all three; the leader of CARE_UP is killed while events are published
    and ingested, and every event is stored exactly once, with no hole."""
    for s in SITES:
        await register_site(pool, s, "school" if ".s" in s else "village", "站点")
    writers = [SiteWriter(s) for s in SITES]
    events: list[DecodedEvent] = [writers[i % 3].write(HomeVisitMade(child_id=CHILD, visitor="石晓"))
                                  for i in range(1500)]
    store = EventStore(pool)
    async with run_center(database_url, cluster.url, settings=R3, parts=("ingest", "receipts")) as center:
        for stream in (UP_STREAM, DOWN_STREAM):
            info = await center.js.stream_info(stream)
            assert info.config.num_replicas == 3 and info.cluster is not None
            assert len(info.cluster.replicas or []) == 2, info.cluster
        consumer = await center.js.consumer_info(UP_STREAM, INGEST_CONSUMER)
        assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2
        nc = await connect(cluster.url.split(","))  # type: ignore[arg-type]
        try:
            await _publish_retrying(nc, events[:700])
            await wait_for(lambda: _stored(store, 100), within=60, what="the first commits")
            victim = cluster.index_of(await _leader(nc, UP_STREAM))
            cluster.kill(victim)
            await _publish_retrying(nc, events[700:])
            await wait_for(lambda: _stored(store, len(events)), within=120, what="every event after the kill")
            cluster.start_node(victim)
            await asyncio.to_thread(cluster.wait_healthy, victim)
            await wait_for(lambda: _up_empty(nc), within=60, what="every message acked")
        finally:
            await nc.close()
    assert await store.count() == len(events)
    for site in SITES:
        p = await store.progress(site)
        assert (p.watermark, p.events_stored, p.holes) == (500, 500, [])


async def _publish_retrying(nc: NATS, events: list[DecodedEvent], within: float = 90) -> None:
    """As an agent does: a batch whose acks did not all come is sent again (Nats-Msg-Id and the
    store keep each event once)."""
    deadline = time.monotonic() + within
    for i in range(0, len(events), 100):
        while True:
            try:
                await publish(nc.jetstream(timeout=5), events[i:i + 100])
                break
            except (AssertionError, PublishTimeout, nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def _stored(store: EventStore, n: int) -> bool:
    return await store.count() >= n


async def _up_empty(nc: NATS) -> bool:
    try:
        return (await nc.jetstream(timeout=5).stream_info(UP_STREAM)).state.messages == 0
    except (nats.errors.Error, TimeoutError):
        return False


async def test_three_replicas_asked_of_a_single_server_is_refused_at_once(tmp_path: Path, database_url: str) -> None:
    """A center set up for a cluster (SHOUWANG_NATS_REPLICAS=3) but pointed at one server stops at
    start with JetStream's refusal; it does not wait for an answer that will never change."""
    single = EmbeddedNats(tmp_path / "nats").start()
    try:
        with pytest.raises(APIError) as refused:
            async with run_center(database_url, single.url, settings=R3, parts=("ingest",)):
                pass
        assert not isinstance(refused.value, ServiceUnavailableError)
    finally:
        single.stop()
