"""A center restored from a backup: the agent's resends reach it inside JetStream's duplicate window."""

from __future__ import annotations

import random
from pathlib import Path

import asyncpg
import nats
from nats.js import api

from events.wire import DOWN_STREAM, UP_STREAM
from store.postgres import EventStore
from sync_agent.agent import Agent
from testbed.embedded import EmbeddedNats
from tests.agent_support import TestCenter, drafts, eventually, make_site
from tests.test_agent_sync import FAST


async def test_events_a_restored_center_forgot_are_resent_past_jetstreams_dedup(
        tmp_path: Path, pool: asyncpg.Pool, store: EventStore) -> None:
    """After the center forgets a site's events (restored from a backup) and says so in a receipt,
    the agent's resends carry one-off Nats-Msg-Ids, so JetStream does not drop them as copies of
    the first sends it saw minutes ago, and the center gets every event back (found by the chaos
    harness: only one event per resend round got through until the window ended)."""
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        for name, subjects in ((UP_STREAM, ["care.up.>"]), (DOWN_STREAM, ["care.down.>"])):
            await js.add_stream(api.StreamConfig(name=name, subjects=subjects, storage=api.StorageType.FILE,
                                                 duplicate_window=3600.0))
        await nc.close()
        rng = random.Random(11)
        site = f"gx-lp.xy.v{rng.getrandbits(32):08x}"
        data = make_site(tmp_path, site, server.url)
        async with TestCenter(server.url, store) as center, Agent(data, tuning=FAST) as agent:
            agent.log.record(drafts(200, rng), default_actor="station")
            agent.uploader.notify()
            assert await agent.wait_synced(60)
            async with pool.acquire() as conn, conn.transaction():  # the restore: the center forgets
                await conn.execute("DELETE FROM event_index WHERE event_id IN (SELECT event_id FROM events "
                                   "WHERE site_id = $1)", site)
                await conn.execute("DELETE FROM events WHERE site_id = $1", site)
                await conn.execute("DELETE FROM site_progress WHERE site_id = $1", site)
            await center.send_receipt(site)

            async def all_back() -> bool:
                return len(await store.read_site(site, 1, 1000)) == 200

            await eventually(all_back, 30, "the 200 forgotten events back at the center")
            assert await agent.wait_synced(30)
    finally:
        server.stop()
