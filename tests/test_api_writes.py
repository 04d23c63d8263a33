"""Writes through the API (conflict resolutions, merges, unmerges, corrections) become events of
the township office's own site, sealed and chained like any agent's and stored by the ingest path."""

from __future__ import annotations

import datetime as dt

import asyncpg

from events import catalogue as c
from events.envelope import GENESIS_HASH
from events.types import GuardianshipType
from store.postgres import EventStore
from tests.api_world import OFFICE, S1, T0, V1, V2, open_api, project


async def test_conflict_listed_then_resolved_as_a_township_event(database_url: str, nats_url: str,
                                                                 pool: asyncpg.Pool) -> None:
    """Two concurrent, disagreeing guardian changes show as an open conflict; resolving records a
    ConflictResolved of the office site (seq 1, genesis-linked), after which the conflict is closed
    and the archive shows the chosen value."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        reg = w.registration_v1
        assert reg is not None
        base = {"guardian": reg.event.event_id}
        a = await w.record(V1, c.GuardianChanged(child_id=w.child_v1, guardian=c.Guardian(
            type=GuardianshipType.RELATIVES, name="石姑姑", relation="姑姑")), T0 + dt.timedelta(days=9), base)
        b = await w.record(S1, c.GuardianChanged(child_id=w.child_v1, guardian=c.Guardian(
            type=GuardianshipType.ONE_PARENT, name="石爸爸", relation="父亲")), T0 + dt.timedelta(days=9), base)
        listed = (await client.get("/conflicts", headers=w.headers("township"))).json()["items"]
        assert [(x["child_id"], x["field"], sorted(x["heads"])) for x in listed] == [
            (w.child_v1, "guardian", sorted([a.event.event_id, b.event.event_id]))]
        assert (await client.get("/conflicts", headers=w.headers("station2"))).json()["items"] == []

        wrong = await client.post("/conflicts/resolve", headers=w.headers("township"), json={
            "child_id": w.child_v1, "field": "guardian", "chosen_event_id": reg.event.event_id})
        assert wrong.status_code == 409 and wrong.json()["field"] == "chosen_event_id"  # not a side of it now
        r = await client.post("/conflicts/resolve", headers=w.headers("township"), json={
            "child_id": w.child_v1, "field": "guardian", "chosen_event_id": a.event.event_id, "note": "核实为姑姑"})
        assert r.status_code == 201, r.text
        rec = r.json()
        assert rec["type"] == "ConflictResolved" and rec["site_id"] == OFFICE and rec["site_seq"] == 1
        stored = await EventStore(pool).get(rec["event_id"])
        assert stored is not None and stored.event.prev_hash == GENESIS_HASH and stored.event.actor == "township"
        assert stored.event.recorded_at > max(a.event.recorded_at, b.event.recorded_at)
        await project(pool)  # the read models follow the store (the runner does this continuously)

        assert (await client.get("/conflicts", headers=w.headers("township"))).json()["items"] == []
        archive = (await client.get(f"/children/{w.child_v1}", headers=w.headers("township"))).json()["archive"]
        assert archive["guardian"]["name"] == "石姑姑"
        again = await client.post("/conflicts/resolve", headers=w.headers("township"), json={
            "child_id": w.child_v1, "field": "guardian", "chosen_event_id": a.event.event_id})
        assert again.status_code == 409


async def test_merge_and_unmerge_are_events(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A duplicate registration is listed; merging records ArchivesMerged and joins the archives;
    undoing records ArchivesUnmerged naming it and parts them; the office log chains both."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        reg = w.registration_v1
        assert reg is not None and isinstance(reg.care, c.ChildRegistered)
        dup_id = "c-" + "d" * 32
        dup = c.ChildRegistered(child_id=dup_id, name=reg.care.name, sex=reg.care.sex, birth_date=reg.care.birth_date,
                                household_village=reg.care.household_village, reasons=reg.care.reasons,
                                guardian=reg.care.guardian, resident_id=reg.care.resident_id, village_site=V2)
        await w.record(V2, dup, T0 + dt.timedelta(days=20))
        pairs = (await client.get("/duplicates", headers=w.headers("township"))).json()["items"]
        assert [(sorted(p["child_ids"]), p["reason"]) for p in pairs] == [
            (sorted([w.child_v1, dup_id]), "resident_id")]
        assert w.resident_v1 not in str(pairs)

        m = await client.post("/merges", headers=w.headers("township"),
                              json={"kept_child_id": w.child_v1, "merged_child_id": dup_id, "note": "同一身份证号"})
        assert m.status_code == 201, m.text
        merge_id = m.json()["event_id"]
        assert m.json()["site_seq"] == 1
        await project(pool)
        stub = (await client.get(f"/children/{dup_id}", headers=w.headers("township"))).json()["archive"]
        assert stub["merged_into"] == w.child_v1
        kept = (await client.get(f"/children/{w.child_v1}", headers=w.headers("township"))).json()["archive"]
        assert kept["merged_from"] == [dup_id]
        twice = await client.post("/merges", headers=w.headers("township"),
                                  json={"kept_child_id": w.child_v1, "merged_child_id": dup_id})
        assert twice.status_code == 409

        u = await client.post(f"/merges/{merge_id}/undo", headers=w.headers("township"), json={"note": "并非同一人"})
        assert u.status_code == 201, u.text
        assert u.json()["type"] == "ArchivesUnmerged" and u.json()["site_seq"] == 2
        await project(pool)
        apart = (await client.get(f"/children/{dup_id}", headers=w.headers("township"))).json()["archive"]
        assert apart["merged_into"] is None and apart["name"] == reg.care.name
        assert (await client.post(f"/merges/{merge_id}/undo", headers=w.headers("township"),
                                  json={})).status_code == 409
        chain = (await client.get(f"/audit/chains/{OFFICE}", headers=w.headers("auditor"))).json()
        assert chain == {"site_id": OFFICE, "verified": 2, "ok": True, "problems": []}


async def test_correction_keeps_history(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Retracting a visit records EventCorrected: the timeline keeps the visit, marked retracted, beside
    the correction, and the archive no longer counts it; a replacement of another type is refused."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        tl = (await client.get(f"/children/{w.child_v1}/timeline", headers=w.headers("township"))).json()["items"]
        visit = next(x for x in tl if x["type"] == "HomeVisitMade")
        bad = await client.post(f"/children/{w.child_v1}/corrections", headers=w.headers("township"), json={
            "corrected_event_id": visit["event_id"], "reason": "类型填错",
            "replacement": {"type": "LetterWritten", "child_id": w.child_v1}})
        assert bad.status_code == 422 and bad.json()["field"] == "replacement.type"
        r = await client.post(f"/children/{w.child_v1}/corrections", headers=w.headers("township"),
                              json={"corrected_event_id": visit["event_id"], "reason": "重复录入"})
        assert r.status_code == 201, r.text
        await project(pool)
        tl = (await client.get(f"/children/{w.child_v1}/timeline", headers=w.headers("township"))).json()["items"]
        original = next(x for x in tl if x["event_id"] == visit["event_id"])
        assert original["retracted"] is True and original["corrected_by"] == r.json()["event_id"]
        assert any(x["type"] == "EventCorrected" and x["corrects"] == visit["event_id"] for x in tl)
        archive = (await client.get(f"/children/{w.child_v1}", headers=w.headers("township"))).json()["archive"]
        assert archive["last_visit"] is None


async def test_write_refused_when_the_office_site_is_disabled(database_url: str, nats_url: str,
                                                             pool: asyncpg.Pool) -> None:
    """A disabled office site cannot record: 409 naming the reason, and nothing is stored."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        assert (await client.post(f"/sites/{OFFICE}/disable", headers=w.headers("admin"))).status_code == 200
        tl = (await client.get(f"/children/{w.child_v1}/timeline", headers=w.headers("township"))).json()["items"]
        r = await client.post(f"/children/{w.child_v1}/corrections", headers=w.headers("township"),
                              json={"corrected_event_id": tl[-1]["event_id"], "reason": "重复录入"})
        assert r.status_code == 409 and "disabled" in r.json()["message"]
        assert await pool.fetchval("SELECT count(*) FROM events WHERE site_id = $1", OFFICE) == 0
