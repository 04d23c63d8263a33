"""Rollups, exports (XLSX, CSV, JSON with Chinese labels), follow-ups and the quarantine through the API."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random

import asyncpg
import msgspec
import openpyxl

from events import catalogue as c
from events.envelope import encode_event
from events.samples import SampleSite, sample_registration
from events.types import AidSource, PartnerKind
from events.wire import up_subject
from projections import followups, queries
from service.ingest import Inbound, commit_in, triage
from service.sites import register_site
from tests.api_world import OFFICE, T0, TOWNSHIP, V1, V2, open_api, project


async def test_rollups_for_a_site_a_township_and_a_range(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """The township's rollup counts both stations' children and visits; a station's counts its own; a date range
    that ends before the visits counts none of them; a new visit shows at once after it is projected."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("township")
        town = (await client.get(f"/rollups?scope={TOWNSHIP}&period=2026-03", headers=h)).json()
        site = (await client.get(f"/rollups?scope={V1}&period=2026-03", headers=h)).json()
        early = (await client.get(f"/rollups?scope={TOWNSHIP}&start=2026-03-01&end=2026-03-04", headers=h)).json()
        assert town["children_archived"] == 2 and town["home_visits"] == 2
        assert site["children_archived"] == 1 and site["home_visits"] == 1
        assert early["home_visits"] == 0 and early["period"] == "2026-03-01..2026-03-04"
        assert early["end"] == "2026-03-05"
        # A computed rollup is reused only while the read models stand still.
        await w.record(V1, c.HomeVisitMade(child_id=w.child_v1, visitor="石老师"), T0 + dt.timedelta(days=10))
        again = (await client.get(f"/rollups?scope={TOWNSHIP}&period=2026-03", headers=h)).json()
        assert again["home_visits"] == 3


async def test_range_rollup_counts_a_merged_child_once(database_url: str, nats_url: str, pool: asyncpg.Pool
                                                      ) -> None:
    """A duplicate registration with aid of its own: before the merge the range rollup counts two aided
    children and three archived; after it (the read models moved on, so nothing computed before is reused)
    the duplicate's aid counts for the kept child: one aided child, two archived, in every range."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("township")
        reg = w.registration_v1
        assert reg is not None and isinstance(reg.care, c.ChildRegistered)
        dup_id = "c-" + "e" * 32
        await w.record(V2, c.ChildRegistered(**{**{f: getattr(reg.care, f) for f in reg.care.__struct_fields__},
                                                "child_id": dup_id, "village_site": V2, "school_site": None}),
                       T0 + dt.timedelta(days=1))
        for child in (w.child_v1, dup_id):
            await w.record(OFFICE, c.AidGiven(child_id=child, amount_fen=50_000, source=AidSource.TOWNSHIP),
                           T0 + dt.timedelta(days=5))
        await project(pool)
        march = f"/rollups?scope={TOWNSHIP}&start=2026-03-01&end=2026-03-31"
        before = (await client.get(march, headers=h)).json()
        assert (before["aid_children"], before["aid_events"], before["children_archived"]) == (2, 2, 3)
        m = await client.post("/merges", headers=h, json={"kept_child_id": w.child_v1, "merged_child_id": dup_id})
        assert m.status_code == 201, m.text
        await project(pool)
        for path in (march, f"/rollups?scope={TOWNSHIP}&start=2026-03-02&end=2026-03-30"):
            after = (await client.get(path, headers=h)).json()
            assert (after["aid_children"], after["aid_events"], after["children_archived"]) == (1, 2, 2), path


async def test_api_rollup_is_the_projections_read(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """What /rollups serves, computed or from its cache, is exactly :func:`projections.queries.rollup` (the read
    the projection tests check) for a township, a site, a month and a date range."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("township")
        asks = [(TOWNSHIP, "period=2026-03", "2026-03"), (V1, "period=2026-03", "2026-03"),
                (TOWNSHIP, "start=2026-03-01&end=2026-03-04",
                 followups.Period("2026-03-01..2026-03-04", dt.date(2026, 3, 1), dt.date(2026, 3, 5)))]
        for scope, query, period in asks:
            for _ in range(2):  # the second answer comes from the cache
                served = (await client.get(f"/rollups?scope={scope}&{query}", headers=h)).json()
                read = msgspec.json.decode(msgspec.json.encode(await queries.rollup(pool, scope, period)))
                assert served == read, (scope, query)


async def test_exports_label_every_figure_in_chinese(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """XLSX, CSV and JSON carry the same figures; each has a Chinese label and the values agree with the rollup."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("auditor")
        q = f"scope={TOWNSHIP}&period=2026"
        as_json = (await client.get(f"/exports/summary.json?{q}", headers=h)).json()
        rollup = (await client.get(f"/rollups?{q}", headers=h)).json()
        figures = as_json["figures"]
        assert as_json["rollup"] == rollup
        by_key = {f["key"]: f for f in figures}
        assert by_key["children_archived"]["value"] == 2
        assert by_key["children_archived"]["label"] == "建档儿童数（期末在册）"
        assert by_key["home_visits"]["value"] == 2
        assert all(any("\u4e00" <= ch <= "\u9fff" for ch in f["label"]) for f in figures)

        x = await client.get(f"/exports/summary.xlsx?{q}", headers=h)
        assert x.status_code == 200 and x.headers["content-type"].startswith("application/vnd.openxmlformats")
        assert "attachment" in x.headers["content-disposition"]
        sheet = openpyxl.load_workbook(io.BytesIO(x.content)).active
        rows = [r for r in sheet.iter_rows(values_only=True)]
        header = rows.index(("项目", "数值", "单位", "占比（%）", "代码"))
        xlsx = {r[4]: (r[0], r[1]) for r in rows[header + 1:]}
        assert xlsx == {f["key"]: (f["label"], f["value"]) for f in figures}

        v = await client.get(f"/exports/summary.csv?{q}", headers=h)
        assert v.content.startswith("\ufeff".encode())
        lines = list(csv.reader(io.StringIO(v.content.decode("utf-8-sig"))))
        start = lines.index(["项目", "数值", "单位", "占比（%）", "代码"])
        as_csv = {r[4]: r[0] for r in lines[start + 1:]}
        assert as_csv == {f["key"]: f["label"] for f in figures}


async def test_followups_and_overdue(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A child's follow-ups and the site's overdue list follow the township's rules (the defaults
    here): the proxy parent's monthly visit holds the child once it has one (paired 2 March,
    visited 5 March): March is not due (paired after its first day), April is due and not met, and
    the child is overdue from 1 May, 41 days on 10 June."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("station1")
        late = (await client.get(f"/sites/{V1}/overdue?today=2026-06-10", headers=h)).json()
        assert "proxy_visit" not in {x["rule"] for x in late["items"]}
        before = (await client.get(f"/children/{w.child_v1}/followups?period=2026-04", headers=h)).json()
        visit = {f["rule_id"]: f for f in before["rules"]}["proxy_visit"]
        assert (visit["applies_to"], visit["due"], visit["met"]) == (0, 0, 0)
        await w.record(V1, c.PairingStarted(pairing_id="p-" + "d" * 32, child_id=w.child_v1,
                                            partner_kind=PartnerKind.PROXY_PARENT, partner_name="云晓"), T0)
        f = (await client.get(f"/children/{w.child_v1}/followups?period=2026-04", headers=h)).json()
        assert (f["period"], f["on"]) == ("2026-04", "2026-04-30")
        visit = {x["rule_id"]: x for x in f["rules"]}["proxy_visit"]
        assert (visit["applies_to"], visit["due"], visit["met"], visit["overdue"]) == (1, 1, 0, [])
        march = (await client.get(f"/children/{w.child_v1}/followups?period=2026-03", headers=h)).json()
        visit = {x["rule_id"]: x for x in march["rules"]}["proxy_visit"]
        assert (visit["due"], visit["met"], visit["done"]) == (0, 0, 1)
        assert all(o["subject"] == w.child_v1 for x in f["rules"] for o in x["overdue"])
        june = (await client.get(f"/children/{w.child_v1}/followups?period=2026-06", headers=h)).json()
        late_visit = {x["rule_id"]: x for x in june["rules"]}["proxy_visit"]["overdue"]
        assert [(o["subject"], o["due_on"]) for o in late_visit] == [(w.child_v1, "2026-04-30")]
        late = (await client.get(f"/sites/{V1}/overdue?today=2026-06-10", headers=h)).json()
        visit = [x for x in late["items"] if x["rule"] == "proxy_visit"]
        assert [x["child_id"] for x in visit] == [w.child_v1]
        assert visit[0]["last_done"] == "2026-03-05" and visit[0]["days_overdue"] == 41  # due by 30 April
        assert visit[0]["rule_zh"] == "代管家长每月家访一次"
        bad = await client.get(f"/children/{w.child_v1}/followups?period=2026-13", headers=h)
        assert bad.status_code == 400 and bad.json()["field"] == "period"


async def test_quarantine_list_show_replay(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """An event from an unregistered site is held; township staff see it without its bytes, admins with them;
    after the site is registered an admin replays it into the store."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        late = SampleSite(f"{TOWNSHIP}.v77")
        d = late.write(sample_registration(random.Random(3), village_site=late.site_id), T0)
        async with pool.acquire() as conn, conn.transaction():
            await commit_in(conn, [triage(Inbound(subject=up_subject(late.site_id), data=encode_event(d.event)))])
        rows = (await client.get("/quarantine", headers=w.headers("township"))).json()["items"]
        assert len(rows) == 1 and rows[0]["site_id"] == late.site_id and "not registered" in rows[0]["reason"]
        row_id = rows[0]["id"]
        assert (await client.get("/quarantine", headers=w.headers("other_township"))).json()["items"] == []
        seen = (await client.get(f"/quarantine/{row_id}", headers=w.headers("township"))).json()
        assert seen["raw_text"] is None
        full = (await client.get(f"/quarantine/{row_id}", headers=w.headers("admin"))).json()
        assert d.event.event_id in full["raw_text"]
        await register_site(pool, late.site_id, "village", "late station")
        r = await client.post(f"/quarantine/{row_id}/replay", headers=w.headers("admin"))
        assert r.status_code == 200 and r.json()["outcome"] == "stored", r.text
        again = await client.post(f"/quarantine/{row_id}/replay", headers=w.headers("admin"))
        assert again.status_code == 409
        await project(pool)
        assert (await client.get(f"/children/{d.event.children[0]}", headers=w.headers("township"))).status_code == 200
