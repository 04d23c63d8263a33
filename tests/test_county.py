"""The county: a region's townships side by side (GET /county/rollups), and what a county user
may and may not read. Real PostgreSQL; events enter through the center's ingest function."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events import catalogue as c
from events.samples import sample_registration
from events.types import AidSource, PartnerKind
from projections import county as pc
from service.api import auth
from service.sites import register_site
from tests.api_world import (
    OFFICE,
    OTHER_TOWNSHIP,
    PASSWORD,
    T0,
    TOWNSHIP,
    V1,
    ZOFFICE,
    ZV1,
    World,
    open_api,
    project,
)

REGION = "gx-lp"
OTHER_REGION = "gx-qz"
QTOWN = f"{OTHER_REGION}.aa"
QV1, QOFFICE = f"{QTOWN}.v01", f"{QTOWN}.office"


async def county_world(w: World) -> dict[str, Any]:
    """Adds to the API world: work in the second township of gx-lp, a third township of gx-lp with a
    site that never sent anything, another region (gx-qz) with a child and a visit, and a county
    user for each region."""
    pool = w.pool
    await register_site(pool, f"{REGION}.yy.v01", "village", "柳湾村维权站", "柳湾乡")
    await register_site(pool, QV1, "village", "桃源村维权站", "桃源镇")
    await register_site(pool, QOFFICE, "township", "桃源镇政府", "桃源镇")
    for name, region in (("county", REGION), ("other_county", OTHER_REGION)):
        await auth.add_user(pool, name, "county", PASSWORD, region=region)
        w.tokens[name] = (await auth.issue_token(pool, name, hours=1)).token
    await w.record(ZV1, c.HomeVisitMade(child_id=w.child_z, visitor="云老师"), T0 + dt.timedelta(days=2))
    await w.record(ZOFFICE, c.AidGiven(child_id=w.child_z, amount_fen=30_000, source=AidSource.TOWNSHIP),
                   T0 + dt.timedelta(days=5))
    await w.record(OFFICE, c.AidGiven(child_id=w.child_v1, amount_fen=50_000, source=AidSource.CHARITY),
                   T0 + dt.timedelta(days=6))
    rq = sample_registration(random.Random(11), village_site=QV1)
    await w.record(QV1, rq, T0)
    await w.record(QV1, c.HomeVisitMade(child_id=rq.child_id, visitor="桃老师"), T0 + dt.timedelta(days=1))
    await project(pool)
    return {"child_q": rq.child_id, "resident_q": rq.resident_id}


def counts_sum(parts: list[Any]) -> Any:
    """Every count of several rollups (as JSON) added up, independently of the code under test:
    integers add, dicts add key by key, a share [count, pct] adds its count; percentages, dates and
    labels are left out (None)."""
    first = parts[0]
    if isinstance(first, bool | float | str) or first is None:
        return None
    if isinstance(first, int):
        return sum(parts)
    if isinstance(first, list):  # a share: [count, pct]
        return [sum(p[0] for p in parts), None]
    keys = sorted({k for p in parts for k in p})
    filler = {k: next(p[k] for p in parts if k in p) for k in keys}

    def zero(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: zero(x) for k, x in v.items()}
        return 0 if isinstance(v, int) and not isinstance(v, bool) else [0, 0.0] if isinstance(v, list) else v

    return {k: counts_sum([p.get(k, zero(filler[k])) for p in parts]) for k in keys if k != "freshness"}


def counts_only(rollup: Any) -> Any:
    return counts_sum([rollup])


async def _get(client: AsyncTestClient[Litestar], path: str, headers: dict[str, str]) -> Any:
    r = await client.get(path, headers=headers)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


async def test_county_rollup_is_the_sum_of_its_townships(database_url: str, nats_url: str, pool: asyncpg.Pool
                                                         ) -> None:
    """Every count of the county's total equals the sum of its townships' rollups, each read on its own
    by that township's own staff through /rollups; each township's row is that rollup; the silent third
    township is listed with zeros and its freshness says no site was heard from."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await county_world(w)
        for query in ("period=2026-03", "period=2026", "start=2026-03-01&end=2026-03-05"):
            county = await _get(client, f"/county/rollups?region={REGION}&{query}", w.headers("county"))
            own = {TOWNSHIP: await _get(client, f"/rollups?scope={TOWNSHIP}&{query}", w.headers("township")),
                   OTHER_TOWNSHIP: await _get(client, f"/rollups?scope={OTHER_TOWNSHIP}&{query}",
                                              w.headers("other_township"))}
            rows = {t["township"]: t for t in county["townships"]}
            assert list(rows) == [TOWNSHIP, f"{REGION}.yy", OTHER_TOWNSHIP], query
            for t, rollup in own.items():
                assert rows[t]["rollup"] == {**rollup, "freshness": []}, (query, t)
            assert counts_only(county["total"]) == counts_sum([*own.values(), rows[f"{REGION}.yy"]["rollup"]]), query
            # The region's own rollup through /rollups is the same total.
            region = await _get(client, f"/rollups?scope={REGION}&{query}", w.headers("county"))
            assert {**region, "freshness": []} == county["total"], query
        march = await _get(client, f"/county/rollups?region={REGION}&period=2026-03", w.headers("county"))
        total = march["total"]
        assert (total["children_archived"], total["home_visits"], total["aid_amount_fen"]) == (
            3, 3, 80_000)  # not a vacuous sum: both townships' children, visits and aid
        silent = {t["township"]: t for t in march["townships"]}[f"{REGION}.yy"]
        assert silent["name"] == "柳湾乡" and silent["rollup"]["children_archived"] == 0
        assert silent["freshness"] == {"sites": 1, "sites_heard": 0, "oldest_contact": None, "newest_contact": None,
                                       "newest_occurred_at": None}
        xy = {t["township"]: t for t in march["townships"]}[TOWNSHIP]
        assert xy["freshness"]["sites"] == 4 and xy["freshness"]["sites_heard"] >= 3


async def test_county_figures_are_the_projections_read(database_url: str, nats_url: str, pool: asyncpg.Pool
                                                       ) -> None:
    """What /county/rollups serves (computed, then from its cache) is projections.county.county_rollup."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await county_world(w)
        for _ in range(2):
            served = await _get(client, f"/county/rollups?region={REGION}&period=2026-03", w.headers("county"))
            read = msgspec.json.decode(msgspec.json.encode(await pc.county_rollup(pool, REGION, "2026-03")))
            assert served == read


async def test_a_county_user_reads_no_archive(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A county user gets figures and masked lists of its region, and a 403 on every read of one child
    (archive, timeline, follow-ups, as-of), on conflicts, duplicates, merges and the read log; the lists
    carry no whole resident ID, and no figure carries a child id."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await county_world(w)
        h = w.headers("county")
        for path in (f"/children/{w.child_v1}", f"/children/{w.child_v1}/timeline",
                     f"/children/{w.child_v1}/followups?period=2026-03",
                     f"/children/{w.child_v1}/as-of?committed=2026-06-01T00:00:00%2B08:00",
                     "/conflicts", "/duplicates", "/merges", "/audit/reads",
                     f"/rollups/as-of?scope={TOWNSHIP}&period=2026-03&committed=2026-06-01T00:00:00%2B08:00"):
            r = await client.get(path, headers=h)
            assert r.status_code == 403 and r.json()["field"] == "role", (path, r.status_code)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM read_log WHERE username = 'county'") == 0
        found = await _get(client, "/children/?limit=200", h)
        assert {x["child_id"] for x in found["items"]} == {w.child_v1, w.child_v2, w.child_z}
        assert w.resident_v1 and all(x["resident_id_masked"] != w.resident_v1 for x in found["items"])
        by_number = await _get(client, f"/children/?resident_id={w.resident_v1}", h)
        assert [x["child_id"] for x in by_number["items"]] == [w.child_v1]
        assert w.resident_v1 not in str(by_number)
        # The site's overdue list, under the default rules: child v1 once it has a proxy parent
        # (visited in March, due again by the end of April).
        await w.record(V1, c.PairingStarted(pairing_id="p-" + "f" * 32, child_id=w.child_v1,
                                            partner_kind=PartnerKind.PROXY_PARENT, partner_name="云晓"), T0)
        overdue = await _get(client, f"/sites/{V1}/overdue?today=2026-06-10", h)
        assert {x["child_id"] for x in overdue["items"]} == {w.child_v1}
        for path in (f"/county/rollups?region={REGION}&period=2026", f"/rollups?scope={REGION}&period=2026",
                     f"/exports/summary.json?scope={REGION}&period=2026"):
            text = (await client.get(path, headers=h)).text
            for child in (w.child_v1, w.child_v2, w.child_z):
                assert child not in text, path


async def test_a_county_sees_nothing_of_another_region(database_url: str, nats_url: str, pool: asyncpg.Pool
                                                       ) -> None:
    """The county of gx-lp asking for anything of gx-qz (its region, township, site, child) gets the same
    404 as for something that does not exist, or an empty list; the county of gx-qz sees its own."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        q = await county_world(w)
        h = w.headers("county")
        for path in (f"/county/rollups?region={OTHER_REGION}&period=2026", "/county/rollups?region=zz-none&period=2026",
                     f"/rollups?scope={OTHER_REGION}&period=2026", f"/rollups?scope={QTOWN}&period=2026",
                     f"/rollups?scope={QV1}&period=2026", f"/exports/summary.csv?scope={OTHER_REGION}&period=2026",
                     f"/sites/{QV1}", f"/sites/{QV1}/overdue"):
            r = await client.get(path, headers=h)
            assert r.status_code == 404, (path, r.status_code)
        nothing = [await client.get(p, headers=h) for p in (
            "/sites", "/sites/activity", "/children/?limit=200", f"/children/?resident_id={q['resident_q']}",
            f"/children/?site_id={QV1}", f"/county/rollups?region={REGION}&period=2026")]
        for r in nothing:
            assert r.status_code == 200 and OTHER_REGION not in r.text and q["child_q"] not in r.text, r.text[:200]
        assert (await _get(client, f"/children/?resident_id={q['resident_q']}", h))["items"] == []
        mine = await _get(client, f"/county/rollups?region={OTHER_REGION}&period=2026", w.headers("other_county"))
        assert [t["township"] for t in mine["townships"]] == [QTOWN]
        assert mine["total"]["children_archived"] == 1 and mine["townships"][0]["name"] == "桃源镇"
        kids = await _get(client, "/children/?limit=200", w.headers("other_county"))
        assert [x["child_id"] for x in kids["items"]] == [q["child_q"]]
        # Neither county is another region's township staff.
        r = await client.get(f"/county/rollups?region={REGION}&period=2026", headers=w.headers("township"))
        assert r.status_code == 403


async def test_adding_a_county_user_names_the_region(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """An admin adds a county user with a region; without one (a rule between role and region: 422), or
    with a township in its place (not the region's pattern: 400), the refusal names the field; /auth/me
    says the region."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("admin")
        for body, status in (({"username": "c1", "role": "county"}, 422),
                             ({"username": "c1", "role": "county", "region": "gx-lp.xy"}, 400)):
            r = await client.post("/users", headers=h, json={**body, "password": PASSWORD})
            assert r.status_code == status and r.json()["field"] == "region", r.text
        r = await client.post("/users", headers=h, json={"username": "c1", "role": "county", "region": REGION,
                                                          "password": PASSWORD})
        assert r.status_code == 201 and r.json()["region"] == REGION and r.json()["township"] is None, r.text
        token = (await auth.issue_token(pool, "c1", hours=1)).token
        me = await _get(client, "/auth/me", {"Authorization": f"Bearer {token}"})
        assert (me["role"], me["region"], me["township"], me["site_id"]) == ("county", REGION, None, None)


async def test_the_county_comparison_exports(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """The comparison as XLSX and CSV: a column per township by name and the total, each figure's row equal
    to the county rollup; township staff get a 403, another region a 404."""
    import csv
    import io

    import openpyxl

    async with open_api(database_url, nats_url, pool) as (client, w):
        await county_world(w)
        h = w.headers("county")
        doc = await _get(client, f"/county/rollups?region={REGION}&period=2026", h)
        names = [t["name"] for t in doc["townships"]]
        assert names == ["site gx-lp.xy.office", "柳湾乡", "site gx-lp.zz.office"]  # world offices: no township name
        x = await client.get(f"/exports/county.xlsx?region={REGION}&period=2026", headers=h)
        assert x.status_code == 200 and "attachment" in x.headers["content-disposition"]
        rows = [r for r in openpyxl.load_workbook(io.BytesIO(x.content)).worksheets[0].iter_rows(values_only=True)]
        v = await client.get(f"/exports/county.csv?region={REGION}&period=2026", headers=h)
        lines = list(csv.reader(io.StringIO(v.content.decode("utf-8-sig"))))
        for table in ([list(r) for r in rows], lines):
            head = next(r for r in table if r and r[0] == "项目")
            assert head[2:6] == [*names, "全县合计"]
            by_key = {r[-1]: r for r in table if r and len(r) == len(head)}
            want = [t["rollup"]["children_archived"] for t in doc["townships"]]
            assert [int(x) for x in by_key["children_archived"][2:5]] == want
            assert int(by_key["children_archived"][5]) == doc["total"]["children_archived"] == sum(want)
            assert float(by_key["aid_amount"][5]) == doc["total"]["aid_amount_fen"] / 100
        assert (await client.get(f"/exports/county.csv?region={REGION}&period=2026",
                                 headers=w.headers("township"))).status_code == 403
        assert (await client.get(f"/exports/county.csv?region={OTHER_REGION}&period=2026",
                                 headers=h)).status_code == 404
