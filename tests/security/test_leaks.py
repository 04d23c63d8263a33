"""No child id or detail outside the receiver's scope: the fan-out's redacted copies, the history
a site gets on entering a child's scope, the restore inbox pages, and the API's timelines,
merged-archive read log and 404s (docs/SECURITY.md, "Redacted copies and the API's scope")."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import asyncpg
import msgspec
import nats

from events import catalogue as c
from events.envelope import Draft, Event, event_hash
from events.samples import sample_registration
from events.types import ActivityKind, Occasion
from events.wire import RestoreRequest
from service.center import run_center
from service.restore import RestoreResponder
from service.sites import register_site
from store.postgres import ORIGIN, EventStore
from sync_agent.agent import Agent
from sync_agent.view import as_json
from tests.agent_support import eventually, make_site
from tests.api_world import OFFICE, V1, open_api, project
from tests.center_kit import SiteInbox, publish
from tests.factory import SiteWriter
from tests.test_agent_sync import FAST

T = "gx-lp.qs"
VA, VB, VC, SCHOOL, SCHOOL2, TOWN = (f"{T}.v01", f"{T}.v02", f"{T}.v03", f"{T}.s01", f"{T}.s02", f"{T}.office")
WHEN = dt.datetime(2026, 2, 10, 9, 0, tzinfo=dt.UTC)
_decoder = msgspec.json.Decoder(Event)


def _named(e: Event) -> set[str]:
    """Every child id an event names: its envelope and anywhere in its payload."""
    return set(e.children) | set(re.findall(r"(?<![a-z])c-[0-9a-f]{32}", bytes(e.payload).decode()))


async def test_a_township_visit_reaches_each_station_with_only_its_own_child(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, nats_url: str) -> None:
    """A township condolence visit and a school activity naming children of several villages reach each village
    station, its offline view, its restore inbox pages and a school entering one child's scope with only that
    station's (or that child's) id; the township office gets the whole list."""
    rng = random.Random(2026)
    for site, kind in ((VA, "village"), (VB, "village"), (VC, "village"), (SCHOOL, "school"),
                       (SCHOOL2, "school"), (TOWN, "township")):
        await register_site(pool, site, kind, "测试站")
    ra = sample_registration(rng, village_site=VA, school_site=SCHOOL)
    rb = sample_registration(rng, village_site=VB, school_site=SCHOOL)
    rc = sample_registration(rng, village_site=VC)
    a, b, kid_c = ra.child_id, rb.child_id, rc.child_id
    town, school = SiteWriter(TOWN), SiteWriter(SCHOOL)
    async with run_center(database_url, nats_url):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        town_inbox, school2_inbox = SiteInbox(js, TOWN), SiteInbox(js, SCHOOL2)
        await town_inbox.drain()
        await school2_inbox.drain()
        agents = {s: make_site(tmp_path / s, s, nats_url) for s in (VA, VB, VC)}
        async with Agent(agents[VA], tuning=FAST) as at_a, Agent(agents[VB], tuning=FAST) as at_b, \
                Agent(agents[VC], tuning=FAST) as at_c:
            for agent, reg in ((at_a, ra), (at_b, rb), (at_c, rc)):
                agent.log.record([Draft(care=reg, occurred_at=WHEN)], default_actor="station")
                agent.uploader.notify()
                assert await agent.wait_synced(60)
            visit = town.write(c.CondolenceVisitMade(child_ids_list=[a, b, kid_c], occasion=Occasion.SPRING_FESTIVAL,
                                                     gifts="书包", money_fen_each=20000), WHEN)
            activity = school.write(c.ActivityHeld(activity_id="ac-" + "5" * 32, kind=ActivityKind.CONTEST,
                                                   title="朗诵比赛", child_ids_list=[a, b], participants_total=40),
                                    WHEN)
            await publish(js, [visit, activity])
            for agent in (at_a, at_b, at_c):
                await eventually(lambda agent=agent: agent.log.inbox_count() >= 1 + (agent is not at_c), 30,
                                 "the visit and the activity at the stations")
            for agent, own in ((at_a, a), (at_b, b), (at_c, kid_c)):
                assert agent.log.children() == [own]
                for e in agent.log.child_events(own):
                    assert _named(e) <= {own}, e.type
                doc = as_json(own, agent.log.child_events(own))
                assert all(item["children"] == [own] for item in doc["timeline"])
                # Marked as redacted, with the hash the center holds of the original.
                assert agent.log.redacted_copies()[visit.event.event_id] == visit.hash
            # The township office's site sees its whole township: the school's full list.
            events = await town_inbox.wait_events(4)
            got = next(e for e in events if e.event_id == activity.event.event_id)
            assert sorted(got.children) == sorted([a, b]) and event_hash(got) == activity.hash

            # A school entering child a's scope gets a's history, cut to a.
            at_a.log.record([Draft(care=c.ChildTransferred(child_id=a, to_school_site=SCHOOL2, school="二小"),
                                   occurred_at=WHEN + dt.timedelta(days=1))], default_actor="station")
            at_a.uploader.notify()
            assert await at_a.wait_synced(60)
            history = await school2_inbox.wait_events(4)
            assert {e.event_id for e in history} >= {visit.event.event_id, activity.event.event_id}
            for e in history:
                assert _named(e) <= {a}, e.type

        # The restore inbox pages a station asks for after its disk died: no other child either.
        page = await RestoreResponder(pool, nc).page(
            VA, msgspec.json.encode(RestoreRequest(from_seq=1, inbox_after=str(ORIGIN))))
        assert page.error is None and len(page.events) >= 2
        for raw in page.events:
            assert _named(_decoder.decode(raw)) <= {a}
        await nc.close()
    # The center keeps the original, whole: its chain still verifies.
    report = await EventStore(pool).verify_chain(TOWN)
    assert report.ok


async def test_a_stations_timeline_names_no_child_outside_its_scope(
        database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A township visit naming children of two villages shows in station 1's timeline of its child without the
    other village's child, in the line's children and in its payload."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await w.record(OFFICE, c.CondolenceVisitMade(child_ids_list=[w.child_v1, w.child_v2],
                                                     occasion=Occasion.CHILDRENS_DAY, gifts="文具"))
        r = await client.get(f"/children/{w.child_v1}/timeline", headers=w.headers("station1"))
        assert r.status_code == 200
        body = r.text
        assert w.child_v2 not in body and w.child_z not in body
        visit = next(x for x in r.json()["items"] if x["type"] == "CondolenceVisitMade")
        assert visit["children"] == [w.child_v1] and visit["payload"]["child_ids"] == [w.child_v1]
        # The township office sees both of its children.
        r = await client.get(f"/children/{w.child_v1}/timeline", headers=w.headers("township"))
        visit = next(x for x in r.json()["items"] if x["type"] == "CondolenceVisitMade")
        assert sorted(visit["children"]) == sorted([w.child_v1, w.child_v2])


async def test_reading_a_merged_archive_logs_every_child_of_the_group(
        database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Station 1 reading the archive and the timeline of a child into which another village's child was merged
    leaves a read-log row for both children."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await w.record(OFFICE, c.ArchivesMerged(kept_child_id=w.child_v1, merged_child_id=w.child_v2, note="同一人"))
        await project(pool)
        for suffix in ("", "/timeline"):
            before = await pool.fetchval("SELECT max(id) FROM read_log") or 0
            r = await client.get(f"/children/{w.child_v1}{suffix}", headers=w.headers("station1"))
            assert r.status_code == 200
            logged = await pool.fetch("SELECT child_id, outcome FROM read_log WHERE id > $1 AND username = $2",
                                      before, "station1")
            assert {(x["child_id"], x["outcome"]) for x in logged} == {(w.child_v1, "served"),
                                                                       (w.child_v2, "served")}, suffix


async def test_a_404_is_the_same_for_another_sites_child_and_no_child(
        database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Every child route answers station 1 the same way, but for the id it asked about, for a child of another
    village or township and for a child that does not exist."""
    nobody = "c-" + "e" * 32
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("station1")
        for suffix in ("", "/timeline", "/followups?period=2026-03"):
            answers = []
            for cid in (w.child_v2, w.child_z, nobody):
                r = await client.get(f"/children/{cid}{suffix}", headers=h)
                answers.append((r.status_code, r.text.replace(cid, "<id>"), sorted(r.headers.keys())))
            assert answers[0] == answers[1] == answers[2], suffix
            assert answers[0][0] == 404
        r = await client.get(f"/children?site_id={V1}", headers=h)
        assert w.child_v2 not in r.text and w.child_z not in r.text
