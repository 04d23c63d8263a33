"""Reply-subject tricks, run for real on the deploy NATS config with per-site users: a station
asks JetStream and the center for answers "on care.up.<another site>" (NATS checks the subject a
client publishes on, never the reply subject). Nothing lands under the other site's name: the
center does not answer outside the asking site's inbox, and what JetStream publishes there is
recognised at ingest and kept unattributed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from events.catalogue import HomeVisitMade
from events.envelope import encode_event
from events.wire import DOWN_STREAM, UP_STREAM, down_consumer, restore_subject, up_subject
from service.center import run_center
from service.sites import register_site, write_users_file
from tests.center_kit import SiteInbox, wait_for
from tests.factory import SiteWriter
from tests.test_center_deploy import CENTER_PASSWORD, deployed, site_client, start_server

A, B = "gx-lp.xy.v01", "gx-lp.xy.v02"
__all__ = ["deployed"]  # the fixture, imported for pytest


async def _rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT site_id, reason FROM quarantine ORDER BY id")


async def test_replies_reflected_into_another_sites_care_up_are_not_its_own(
        deployed: Path, tmp_path: Path, database_url: str, pool: asyncpg.Pool) -> None:
    """A pull of A's own consumer, a JetStream API call and a restore request, each with the reply
    subject care.up.B: nothing is stored or quarantined under B; JetStream's reflected answers are
    quarantined without a site, and the center does not answer the restore request at all."""
    creds = {s: await register_site(pool, s, "village", s) for s in (A, B)}
    await write_users_file(pool, deployed / "users.conf")
    server = start_server(deployed, tmp_path / "js")
    try:
        async with run_center(database_url, server.url, nats_options={"user": "center", "password": CENTER_PASSWORD}):
            errors: list[str] = []
            async with site_client(server.url, A, creds[A].password, errors) as nc:
                js = nc.jetstream()
                own = SiteWriter(A).write(HomeVisitMade(child_id="c-" + "3" * 32, visitor="石晓"))
                await js.publish(up_subject(A), encode_event(own.event), stream=UP_STREAM)
                await SiteInbox(js, A).wait_receipt(lambda r: r.watermark == 1)  # A's consumer exists
                # The restore request: the center must not answer on care.up.B.
                await nc.publish(restore_subject(A), b'{"from_seq": 1}', reply=up_subject(B))
                await nc.flush()
                await asyncio.sleep(1.0)
                assert await _rows(pool) == []
                # A JetStream API call and a pull of its own consumer, answered on care.up.B.
                await nc.publish(f"$JS.API.CONSUMER.INFO.{DOWN_STREAM}.{down_consumer(A)}", b"", reply=up_subject(B))
                await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{DOWN_STREAM}.{down_consumer(A)}",
                                 b'{"batch": 5, "no_wait": true}', reply=up_subject(B))
                await nc.flush()
                await wait_for(lambda: _at_least(pool, 2), what="the reflected answers quarantined")
            rows = await _rows(pool)
            assert all(r["site_id"] is None and r["reason"].startswith("not sent by a site") for r in rows), rows
            assert not await pool.fetchval("SELECT count(*) FROM quarantine WHERE site_id = $1", B)
            assert not await pool.fetchval("SELECT count(*) FROM events WHERE site_id = $1", B)
            assert not errors or all("permissions violation" not in e.lower() for e in errors)
    finally:
        server.proc.terminate()
        server.proc.wait(10)


async def _at_least(pool: asyncpg.Pool, n: int) -> bool:
    return len(await _rows(pool)) >= n
