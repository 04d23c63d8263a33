"""Fan-out when a child's registration reaches the center after other sites' events about it."""

from __future__ import annotations

import random

import asyncpg
from nats.aio.client import Client as NATS

from events.catalogue import TalkHeld
from events.samples import sample_registration
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import SiteInbox, client, own_nats, publish, wait_for
from tests.factory import SiteWriter

__all__ = ["client", "own_nats"]

V1, S1, OFFICE = "gx-lp.xy.v01", "gx-lp.xy.s01", "gx-lp.xy.office"
CHILD = "c-" + "3" * 32


async def test_the_registering_station_gets_what_others_recorded_before_its_registration_arrived(
        database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats, client: NATS) -> None:
    """The school's talks about a child committed before the village's registration of it (the
    station was offline, or the center was restored from a backup and the station resent later)
    reach the village station when the registration puts it in the child's scope; the station
    then holds the child's whole archive (found by the chaos harness: it never got them)."""
    for site, kind in ((V1, "village"), (S1, "school"), (OFFICE, "township")):
        await register_site(pool, site, kind, site)
    rng = random.Random(5)
    village, school = SiteWriter(V1), SiteWriter(S1)
    js = client.jetstream()
    inbox = SiteInbox(js, V1)
    async with run_center(database_url, own_nats.url):
        talks = [school.write(TalkHeld(child_id=CHILD, teacher="云老师", record_card="想念父母")) for _ in range(2)]
        await publish(js, talks)
        await wait_for(lambda: _stored(pool, 2))
        registration = village.write(sample_registration(rng, CHILD, school_site=S1))
        await publish(js, registration)
        await wait_for(lambda: _stored(pool, 3))
        await inbox.wait_events(2)
        assert inbox.event_ids() == {t.event.event_id for t in talks}


async def _stored(pool: asyncpg.Pool, n: int) -> bool:
    return await EventStore(pool).count() == n
