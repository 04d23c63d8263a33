"""The figures the seed's year-end summaries count, each beside its hand count, and the one
catalogue of labels that the API and the exports share.

Beside the API world's two children (tests/api_world.py: one at v01, one at v02, both registered
2026-03-02), five made-up children, all registered 2026-03-02:
  A1  v01, guardian 王奶奶 13800000001, 青石村, both parents away; proxy parent from 03-03
  A2  v01, the same guardian (A1's sister: one household); loving mother 03-03 and proxy parent 03-04
  A3  v01, guardian 李爷爷 13800000002, poverty; paired with a teacher 03-04; closed 03-10, dropped out
  A4  v02, guardian 赵外婆 (no phone), single parent + other difficulty; closed 03-11, dropped out
  A5  v02, no guardian named, one parent away; closed 03-12, the parents came home
Condolence visits: the office 03-05 (A1 A2 A3 A4, 100 yuan each), v02 03-06 (A4 A5).

March 2026 for the township, by hand: archived 4 (the world's two, A1, A2); children with a proxy
parent 2 of 4 (50.0%), proxy pairings active 3, children newly matched 2, proxy pairings started 3,
pairings started 4; closed 3: dropped out 2, parents returned 1; drop-outs by reason: poverty 1,
single parent 1, other difficulty 1; poverty drop-outs 1; condolence visits 2, children 5,
households 4 (A1+A2, A3, A4, A5), money 400 yuan.
"""

from __future__ import annotations

import datetime as dt
import io
import random

import asyncpg
import msgspec
import openpyxl

from events import catalogue as c
from events.samples import sample_registration
from events.types import ClosingReason, GuardianshipType, Occasion, PartnerKind, Reason
from projections import figures as pf
from projections.rollups import Rollup
from tests.api_world import OFFICE, T0, TOWNSHIP, V1, V2, World, open_api

A1, A2, A3, A4, A5 = (f"c-{i:032x}" for i in (0xB1, 0xB2, 0xB3, 0xB4, 0xB5))
MARCH = f"scope={TOWNSHIP}&period=2026-03"


def day(d: int) -> dt.datetime:
    return dt.datetime(2026, 3, d, 10, 0, tzinfo=dt.UTC)


def registration(rng: random.Random, cid: str, site: str, reasons: list[Reason], guardian: c.Guardian
                 ) -> c.ChildRegistered:
    base = sample_registration(rng, village_site=site)
    fields = {f: getattr(base, f) for f in base.__struct_fields__}
    return c.ChildRegistered(**{**fields, "child_id": cid, "reasons": reasons, "guardian": guardian,
                                "household_village": "青石村", "resident_id": None})


async def seed_work(w: World) -> None:
    rng = random.Random(17)
    grandma = c.Guardian(type=GuardianshipType.GRANDPARENTS, name="王奶奶", relation="祖母", phone="13800000001")
    for cid, site, reasons, guardian in (
        (A1, V1, [Reason.BOTH_PARENTS_AWAY], grandma),
        (A2, V1, [Reason.BOTH_PARENTS_AWAY], grandma),
        (A3, V1, [Reason.POVERTY], c.Guardian(type=GuardianshipType.GRANDPARENTS, name="李爷爷", phone="13800000002")),
        (A4, V2, [Reason.SINGLE_PARENT, Reason.OTHER_DIFFICULTY],
         c.Guardian(type=GuardianshipType.RELATIVES, name="赵外婆")),
        (A5, V2, [Reason.ONE_PARENT_AWAY], c.Guardian(type=GuardianshipType.NONE)),
    ):
        await w.record(site, registration(rng, cid, site, reasons, guardian), T0)
    for n, (cid, kind, when) in enumerate(((A1, PartnerKind.PROXY_PARENT, 3), (A2, PartnerKind.LOVING_MOTHER, 3),
                                           (A2, PartnerKind.PROXY_PARENT, 4), (A3, PartnerKind.TEACHER, 4))):
        await w.record(V1, c.PairingStarted(pairing_id=f"p-{n:032x}", child_id=cid, partner_kind=kind,
                                            partner_name="夏朵朵"), day(when))
    await w.record(V1, c.ArchiveClosed(child_id=A3, reason=ClosingReason.DROPPED_OUT), day(10))
    await w.record(V2, c.ArchiveClosed(child_id=A4, reason=ClosingReason.DROPPED_OUT), day(11))
    await w.record(V2, c.ArchiveClosed(child_id=A5, reason=ClosingReason.PARENTS_RETURNED), day(12))
    await w.record(OFFICE, c.CondolenceVisitMade(child_ids_list=[A1, A2, A3, A4], occasion=Occasion.SPRING_FESTIVAL,
                                                 money_fen_each=10_000), day(5))
    await w.record(V2, c.CondolenceVisitMade(child_ids_list=[A4, A5], occasion=Occasion.OTHER), day(6))


async def test_seed_figures_beside_their_hand_count(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Children with a proxy parent (not pairings), closings and drop-outs by reason, condolence households:
    each equals the count in the module's docstring, for the township and for one station."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await seed_work(w)
        h = w.headers("township")
        r = msgspec.convert((await client.get(f"/rollups?{MARCH}", headers=h)).json(), Rollup)
        assert r.children_archived == 4
        assert (r.proxy_parent_children.count, r.proxy_parent_children.pct) == (2, 50.0)
        assert (r.proxy_parents_matched, r.proxy_parent_children_new, r.proxy_parents_new) == (3, 2, 3)
        assert r.pairings_started == 4
        assert r.children_closed == 3
        assert r.closed_by_reason == {"dropped_out": 2, "parents_returned": 1}
        assert r.dropped_out == 2
        assert r.dropped_out_by_reason == {"other_difficulty": 1, "poverty": 1, "single_parent": 1}
        assert r.dropped_out_poverty == 1
        assert (r.condolence_visits, r.condolence_children, r.condolence_households) == (2, 5, 4)
        assert r.condolence_amount_fen == 40_000
        # v02 recorded one visit (A4, A5: two households); its own children closed: A4 dropped out, A5 not.
        v2 = msgspec.convert((await client.get(f"/rollups?scope={V2}&period=2026-03", headers=h)).json(), Rollup)
        assert (v2.condolence_visits, v2.condolence_children, v2.condolence_households) == (1, 2, 2)
        assert (v2.dropped_out, v2.dropped_out_poverty, v2.closed_by_reason) == (
            1, 0, {"dropped_out": 1, "parents_returned": 1})
        # February: nothing happened yet, the headline is zero.
        feb = msgspec.convert((await client.get(f"/rollups?scope={TOWNSHIP}&period=2026-02", headers=h)).json(),
                              Rollup)
        assert (feb.dropped_out, feb.dropped_out_poverty, feb.condolence_households) == (0, 0, 0)


async def test_api_and_exports_label_figures_from_one_catalogue(database_url: str, nats_url: str,
                                                                pool: asyncpg.Pool) -> None:
    """GET /rollups/figures, the JSON export and the XLSX export name every figure with the catalogue's label,
    the proxy-parent figures as children (人) apart from pairings (对), and values agree across the three."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await seed_work(w)
        h = w.headers("auditor")
        answer = await client.get(f"/rollups/figures?{MARCH}", headers=h)
        assert answer.status_code == 200, answer.text
        api = answer.json()
        api_en = (await client.get(f"/rollups/figures?{MARCH}&lang=en", headers=h)).json()
        exported = (await client.get(f"/exports/summary.json?{MARCH}", headers=h)).json()["figures"]
        x = await client.get(f"/exports/summary.xlsx?{MARCH}", headers=h)
        sheet = openpyxl.load_workbook(io.BytesIO(x.content)).active
        assert sheet is not None
        rows = list(sheet.iter_rows(values_only=True))
        header = rows.index(("项目", "数值", "单位", "占比（%）", "代码"))
        xlsx = {str(r[4]): (r[0], r[1], r[2] or "") for r in rows[header + 1:]}  # an empty cell reads None

        by_key = {f["key"]: f for f in api}
        assert {k: (f["label"], f["value"], f.get("unit", "")) for k, f in by_key.items()} == xlsx
        assert {f["key"]: f["label"] for f in exported} == {k: f["label"] for k, f in by_key.items()}
        # Figures per site name their sites by the names they were registered with (GET /sites), not their ids.
        names = {s["site_id"]: s["name"] for s in (await client.get("/sites", headers=h)).json()["items"]}
        assert len(names) >= 4 and all(name != site for site, name in names.items())
        for key, f in by_key.items():
            assert f["label"] == pf.label_of(key, "zh", names), key
            if key.startswith(("by_site.", "freshness.")):
                assert any(name in f["label"] for name in names.values()), f
        assert {f["key"]: f["label"] for f in api_en} == {k: pf.label_of(k, "en", names) for k in by_key}
        assert by_key["proxy_parent_children"]["value"] == 2 and by_key["proxy_parent_children"]["unit"] == "人"
        assert "儿童" in by_key["proxy_parent_children"]["label"]
        assert by_key["proxy_parents_matched"]["value"] == 3 and by_key["proxy_parents_matched"]["unit"] == "对"
        assert by_key["condolence_households"]["value"] == 4 and by_key["condolence_households"]["unit"] == "户"
        assert by_key["dropped_out_by_reason.poverty"]["label"] == "辍学儿童的建档原因：贫困"
        assert by_key["closed_by_reason.dropped_out"]["value"] == 2
        assert by_key["dropped_out_poverty"]["value"] == 1
        # The dashboard's chart of guardianship and the export say the same words.
        assert by_key["by_guardianship.grandparents"]["label"] == "监护类型：隔代监护（祖辈）"
        # The overview's headline figures are named by the catalogue too, and show the same values.
        client.cookies.set("sw_token", w.tokens["township"])
        overview = (await client.get("/ui/?period=2026-03")).text
        for key in ("children_archived", "proxy_parent_children", "condolence_households", "safety_incidents"):
            assert f'title="{key}">{by_key[key]["value"]}</b><span>{pf.label_of(key, "zh")}' in overview, key
        assert "监护类型" in overview and "隔代监护（祖辈）" in overview
        # The auditor's figures as of a past day: every figure, named by the catalogue, values as they stood.
        client.cookies.set("sw_token", w.tokens["auditor"])
        asof = await client.get("/ui/asof?day=2026-03-31&clock=occurred&period=2026-03")
        assert asof.status_code == 200, asof.text[:300]
        for key in ("proxy_parent_children", "condolence_households", "dropped_out_poverty"):
            row = f'<td>{pf.label_of(key, "zh")}</td><td class="num" title="{key}"><span>{by_key[key]["value"]}</span> '
            assert row in asof.text, key
        assert 'title="proxy_parent_children"><span>2</span> 人 (50.0%)' in asof.text


def test_the_catalogue_labels_every_figure_of_a_rollup() -> None:
    """Every field of a rollup has a label in the catalogue (a new figure without one fails here), and
    value_of reads each labelled key back to the number listed."""
    from projections.rollups import Freshness, RuleFigure, Share

    r = Rollup(scope="gx.xy", period="2026", start=dt.date(2026, 1, 1), end=dt.date(2027, 1, 1),
               as_of=dt.date(2026, 12, 31), children_archived=3, children_registered=1, children_closed=1,
               by_site={"gx.xy.v01": 3}, by_guardianship={"grandparents": Share(3, 100.0)},
               by_grade_band={"1-3": Share(3, 100.0)}, by_reason={"poverty": Share(1, 33.3)},
               individual_plan=Share(0, 0.0), children_paired=Share(2, 66.7), paired_by={"teacher": 2},
               proxy_parents_matched=1, proxy_parents_new=1, pairings_started=2, pairings_ended=0,
               rules={"proxy_visit": RuleFigure(done=4, due=6, met=3, pct_met=50.0, overdue=1,
                                                zh="代管家长每月家访一次", en="proxy visit")},
               overdue_children=1,
               aid_children=1, aid_events=1, aid_amount_fen=12_345, aid_by_source={"charity": 12_345},
               condolence_visits=1, condolence_children=2, condolence_amount_fen=20_000, activities=1,
               activities_by_kind={"contest": 1}, activity_participants=9, activity_children=2,
               tutoring_sessions=1, counselling_sessions=1, guardian_trainings=1, guardians_trained=3, meetings=1,
               meeting_attendees=7, safety_incidents=1, incidents_by_severity={"minor": 1}, rights_cases_opened=1,
               rights_cases_closed=1, rights_cases_open=0,
               freshness=[Freshness(site_id="gx.xy.v01", last_committed_at=None, newest_occurred_at=None)],
               proxy_parent_children=Share(1, 33.3), proxy_parent_children_new=1, closed_by_reason={"dropped_out": 1},
               dropped_out=1, dropped_out_by_reason={"poverty": 1}, dropped_out_poverty=1, condolence_households=1,
               conflicts_open=2, home_visits=4, parent_calls=2, letters=1, talks=3)
    listed = pf.labelled(r, "zh", now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    keys = {f.key for f in listed}
    for name in Rollup.__struct_fields__:
        if name in ("scope", "period", "start", "end", "as_of"):
            continue
        stem = {"aid_amount_fen": "aid_amount", "condolence_amount_fen": "condolence_amount"}.get(name, name)
        assert any(k == stem or k.startswith(stem + ".") for k in keys), f"figure {name} has no labelled key"
    for f in listed:
        assert f.label and not f.label.startswith(f.key), f.key
        if not f.key.startswith("freshness."):
            assert pf.value_of(r, f.key, now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == f.value, f.key
    assert pf.value_of(r, "aid_amount") == 123.45 and pf.value_of(r, "children_paired.pct") == 66.7
    assert pf.value_of(r, "stale_sites", now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == 1
