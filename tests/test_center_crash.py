"""The center under failure: servers restarted under it, ingesters racing and killed, messages
that no ingester ever commits. Each test starts the servers it kills."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS

from events.catalogue import HomeVisitMade
from events.envelope import DecodedEvent, encode_event
from events.wire import UP_STREAM
from runtime.db import create_pool
from service.center import run_center
from service.quarantine import get_row, list_rows, replay
from service.sites import register_site
from service.streams import INGEST_CONSUMER, StreamSettings, ensure_streams
from store import migrate
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats, EmbeddedPostgres
from tests.center_kit import SiteInbox, client, connect, own_nats, publish, wait_for
from tests.factory import SiteWriter

__all__ = ["client", "own_nats"]

SITES = ["gx-lp.xy.v01", "gx-lp.xy.v02", "gx-lp.xy.s01"]
CHILD = "c-" + "b" * 32
FAST = StreamSettings(batch=100, max_deliver=3, backoff=(2.0, 4.0))


def make_events(n: int, sites: list[str] = SITES) -> list[DecodedEvent]:
    writers = [SiteWriter(s) for s in sites]
    return [writers[i % len(writers)].write(HomeVisitMade(child_id=CHILD, visitor="石晓")) for i in range(n)]


async def register_all(pool: asyncpg.Pool, sites: list[str] = SITES) -> None:
    for s in sites:
        await register_site(pool, s, "school" if ".s" in s else "village", "站点")


async def _count(store: EventStore, n: int) -> bool:
    return await store.count() >= n


async def _stream_empty(js_client: NATS) -> bool:
    info = await js_client.jetstream().stream_info(UP_STREAM)
    return info.state.messages == 0


async def kill_postgres(pg: EmbeddedPostgres) -> None:
    """SIGKILL the postmaster and wait until it is reaped (a zombie still holds postmaster.pid)."""
    pid = int((pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    pg.kill()
    for _ in range(200):
        if not Path(f"/proc/{pid}").exists():  # noqa: ASYNC240 - procfs, no disk I/O
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"postmaster {pid} was not reaped after SIGKILL")


async def assert_exactly_once(store: EventStore, events: list[DecodedEvent]) -> None:
    assert await store.count() == len(events)
    for site in {d.event.site_id for d in events}:
        mine = [d for d in events if d.event.site_id == site]
        p = await store.progress(site)
        assert (p.watermark, p.events_stored, p.holes) == (len(mine), len(mine), [])


async def test_postgres_killed_mid_batch(own_nats: EmbeddedNats, client: NATS) -> None:
    """PostgreSQL killed and restarted while batches are being written: every event ends up committed exactly once,
    so nothing was acked without its commit, and the ingester resumes by itself."""
    # Not under pytest's tmp_path: a pytest session starting meanwhile resets its root to 0700,
    # and the server (run as another user when we are root) could not open its data to restart.
    tmp = tempfile.TemporaryDirectory(prefix="shouwang-test-pg-")
    pg = EmbeddedPostgres(Path(tmp.name) / "pg").start()
    try:
        conn = await asyncpg.connect(pg.url)
        await conn.execute("CREATE DATABASE center")
        await conn.close()
        url = pg.url_for("center")
        events = make_events(3000)
        async with run_center(url, own_nats.url, settings=FAST) as center:
            await register_all(center.pool)
            await publish(client.jetstream(), events)
            await wait_for(lambda: _count(center.store, 200), what="the first commits")
            await kill_postgres(pg)
            pg.start()
            await wait_for(lambda: _count(center.store, len(events)), within=60, what="all events after the restart")
            await wait_for(lambda: _stream_empty(client), what="every message acked")
            assert center.stats()["db_retries"] > 0, "the kill must have hit the ingester"
            await assert_exactly_once(center.store, events)
            assert await list_rows(center.pool) == []
    finally:
        pg.stop()
        tmp.cleanup()


async def test_nats_restarted(database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats) -> None:
    """NATS restarted under a running center: events published before and after are all stored once, and receipts
    flow again after the restart."""
    await register_all(pool)
    events = make_events(1000)
    async with run_center(database_url, own_nats.url, settings=FAST) as center:
        nc = await connect(own_nats.url)
        await publish(nc.jetstream(), events[:500])
        await nc.close()
        own_nats.restart()
        nc = await connect(own_nats.url)
        try:
            js = nc.jetstream()
            await publish(js, events[500:])
            await wait_for(lambda: _count(center.store, 1000), within=60, what="all events after the restart")
            inbox = SiteInbox(js, SITES[0])
            receipt = await inbox.wait_receipt(lambda r: r.watermark == 334)
            assert receipt.holes == []
            await assert_exactly_once(center.store, events)
        finally:
            await nc.close()


async def test_two_ingesters_racing(database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats,
                                    client: NATS) -> None:
    """Two center processes' worth of ingesters (three loops) on one consumer, every event sent twice: each is stored
    once and the second copy counted as a duplicate."""
    await register_all(pool)
    events = make_events(1500)
    settings = StreamSettings(batch=50)
    async with run_center(database_url, own_nats.url, ingesters=2, settings=settings) as a, \
            run_center(database_url, own_nats.url, parts=("ingest",), settings=settings) as b:
        js = client.jetstream()
        for i in range(0, len(events), 100):  # the resend races the original through different ingesters
            chunk = events[i:i + 100]
            await asyncio.gather(publish(js, chunk), publish(js, list(reversed(chunk)), msg_id=False))
        await wait_for(lambda: _stream_empty(client), within=60, what="every message acked")
        stats = [a.stats(), b.stats()]
        assert sum(s["stored"] for s in stats) == len(events)
        assert sum(s["duplicates"] for s in stats) == len(events)
        assert all(s["batches"] > 0 for s in stats), "both processes must have taken part"
    await assert_exactly_once(EventStore(pool), events)


async def test_ingester_killed_between_commit_and_ack(tmp_path: Path, database_url: str, pool: asyncpg.Pool,
                                                      own_nats: EmbeddedNats, client: NATS) -> None:
    """`shouwang center run` killed with SIGKILL after a commit and before its acks: the batch is redelivered to the
    next center, reported as duplicates, and stored once."""
    await register_all(pool)
    events = make_events(120)
    marker = tmp_path / "committed"
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url, "SHOUWANG_NATS_URL": own_nats.url,
           "SHOUWANG_TEST_PAUSE_AFTER_COMMIT": str(marker), "SHOUWANG_INGEST_BATCH": "500",
           "SHOUWANG_LOG_LEVEL": "warning"}
    await ensure_streams(client.jetstream(), StreamSettings(max_deliver=5, backoff=(0.5, 1.0)))
    await publish(client.jetstream(), events)
    log = (tmp_path / "center.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - the process runs beside the test, which only signals it
[sys.executable, "-m", "shouwang", "center", "run", "--backoff", "0.5,1",
                             "--max-deliver", "5"], env=env, stdout=log, stderr=log)
    try:
        await wait_for(lambda: _exists(marker, proc), within=60, what="the commit marker")
        committed = int(marker.read_text())
        assert committed > 0 and await EventStore(pool).count() == committed
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    async with run_center(database_url, own_nats.url, settings=StreamSettings(max_deliver=5, backoff=(0.5, 1.0))) \
            as center:
        await wait_for(lambda: _count(center.store, len(events)), within=60, what="the rest after the restart")
        await wait_for(lambda: _stream_empty(client), what="every message acked")
        assert center.stats()["duplicates"] >= committed
        receipt = await SiteInbox(client.jetstream(), SITES[0]).wait_receipt(lambda r: r.watermark == 40)
        assert receipt.refused == []
    await assert_exactly_once(EventStore(pool), events)


async def _exists(marker: Path, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the center exited early with {proc.returncode}")
    return marker.exists() and marker.read_text() != ""  # noqa: ASYNC240 - a tiny local file


async def test_dead_letter_after_max_deliver(database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats,
                                             client: NATS) -> None:
    """A message delivered MaxDeliver times without ever being acked (its ingester dies each time) is quarantined
    with its raw bytes, removed from the stream, and can then be replayed into the store."""
    await register_all(pool)
    [event] = make_events(1)
    settings = StreamSettings(max_deliver=2, backoff=(0.3,))
    async with run_center(database_url, own_nats.url, parts=("deadletters", "receipts"), settings=settings):
        js = client.jetstream()
        await publish(js, event)
        stuck = await js.pull_subscribe_bind(INGEST_CONSUMER, UP_STREAM)
        for _ in range(2):  # an ingester that takes the message and dies, twice
            await _fetch_one(stuck)
        # The next ingester asks again: JetStream gives up on the message (it would be a third
        # delivery) and emits the max-deliveries advisory instead.
        try:
            await stuck.fetch(1, timeout=1.5)
            raise AssertionError("the message was delivered more than MaxDeliver times")
        except (TimeoutError, nats.errors.TimeoutError):
            pass
        await wait_for(lambda: _held_dead_letter(pool), what="the dead letter in quarantine")
        await wait_for(lambda: _stream_empty(client), what="the dead letter removed from the stream")
    [row] = await list_rows(pool)
    _, raw, _ = await get_row(pool, row.id)
    assert raw == encode_event(event.event) and row.deliveries == 2 and "delivered 2 times" in row.reason
    result = await replay(pool, row.id)
    assert result.outcome == "stored" and await EventStore(pool).count() == 1


async def _fetch_one(sub: object) -> None:
    for _ in range(50):
        try:
            await sub.fetch(1, timeout=0.5)  # type: ignore[attr-defined]
            return
        except (TimeoutError, nats.errors.TimeoutError):
            continue
    raise AssertionError("the message was not redelivered")


async def _held_dead_letter(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT count(*) FROM quarantine WHERE dead_letter"))


async def test_streams_and_migrations_are_idempotent(database_url: str, own_nats: EmbeddedNats) -> None:
    """Starting the center twice (and twice at once) leaves one set of streams and consumers and a migrated
    database, with no error."""
    async with run_center(database_url, own_nats.url), run_center(database_url, own_nats.url):
        pass
    async with run_center(database_url, own_nats.url) as center:
        names = sorted([s.config.name for s in await center.js.streams_info()])
        assert names == ["CARE_DOWN", "CARE_UP"]
        info = await center.js.consumer_info(UP_STREAM, INGEST_CONSUMER)
        assert info.config.max_deliver == StreamSettings().max_deliver
        async with center.pool.acquire() as conn:
            assert await migrate.current_version(conn) >= 2
    pool = await create_pool(database_url)
    await pool.close()
