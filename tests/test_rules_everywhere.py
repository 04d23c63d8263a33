"""Issue 17: a rule a supervisor changes is followed by every figure from its day on, the same in
GET /rules, the rollups (and so the exports and the summary), GET /sites/{id}/overdue, the
dashboard's overview and the children list's overdue filter.

Child v1 (village v01) is paired with a proxy parent on 2 March and visited on 5 March and
3 April. Under the default proxy_visit (a visit a month): March is not due (the pairing started
after its first day), April is due and met, May due and not met; on 31 May nobody is overdue (the
April visit holds until the end of May). From 1 April the township asks two visits a month: April
and May are due and neither is met, March is as before, and on 31 May the child is overdue since
30 April (31 days: no month ever had two visits, so its clock runs from the pairing in March).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg
import msgspec

from events import catalogue as c
from events.localtime import local_today
from events.rules import DEFAULT_RULES
from events.types import PartnerKind
from projections import rule_queries
from projections.followups import parse_period
from tests.api_world import T0, TOWNSHIP, V1, open_api, project

TWICE = "代管家长每月家访两次"


async def _live(pool: asyncpg.Pool, scope: str, period: str) -> dict[str, tuple[int, int, int, int]]:
    """Per rule id: (done, due, met, overdue) summed over the townships, from rule_figures_live
    judged on the period's last day."""
    p = parse_period(period)
    out: dict[str, list[Any]] = {}
    for f in await rule_queries.rule_figures_live(pool, scope, p, p.last_day):
        acc = out.setdefault(f.rule_id, [0, 0, 0, set()])
        acc[0] += f.done
        acc[1] += f.due
        acc[2] += f.met
        acc[3] |= {o.subject for o in f.overdue}
    return {k: (d, due, met, len(late)) for k, (d, due, met, late) in out.items()}


def _rollup_rules(doc: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    return {k: (f["done"], f["due"], f["met"], f["overdue"]) for k, f in doc["rules"].items()}


async def test_a_rule_changed_mid_year_changes_every_figure_from_its_day(
        database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("township")
        await w.record(V1, c.PairingStarted(pairing_id="p-" + "c" * 32, child_id=w.child_v1,
                                            partner_kind=PartnerKind.PROXY_PARENT, partner_name="云晓"), T0)
        await w.record(V1, c.HomeVisitMade(child_id=w.child_v1, visitor="云晓"), T0 + dt.timedelta(days=32))

        async def rollup(period: str) -> dict[str, Any]:
            r = await client.get("/rollups", params={"scope": TOWNSHIP, "period": period}, headers=h)
            assert r.status_code == 200, r.text
            return dict(r.json())

        async def site_overdue(day: str) -> list[tuple[str, str, int, str]]:
            r = await client.get(f"/sites/{V1}/overdue", params={"today": day}, headers=h)
            assert r.status_code == 200, r.text
            return [(x["child_id"], x["rule"], x["days_overdue"], x["rule_zh"]) for x in r.json()["items"]]

        async def live_overdue(day: dt.date) -> list[tuple[str, str, int, str]]:
            found = await rule_queries.rule_figures_live(pool, V1, f"{day:%Y-%m}", day)
            late = [(o.subject, f.rule_id, o.days_overdue, f.zh) for f in found if f.target == "child"
                    for o in f.overdue]
            return sorted(late, key=lambda x: (-x[2], x[1], x[0]))

        before = {m: await rollup(m) for m in ("2026-03", "2026-04", "2026-05")}
        assert [before[m]["rules"]["proxy_visit"]["due"] for m in before] == [0, 1, 1]  # hand count (docstring)
        assert [before[m]["rules"]["proxy_visit"]["met"] for m in before] == [0, 1, 0]
        assert before["2026-05"]["rules"]["proxy_visit"]["overdue"] == 0
        for m, doc in before.items():
            assert _rollup_rules(doc) == await _live(pool, TOWNSHIP, m), m
        assert ("proxy_visit" not in {rule for _, rule, _, _ in await site_overdue("2026-05-31")})
        assert await site_overdue("2026-05-31") == await live_overdue(dt.date(2026, 5, 31))

        rule = {**msgspec.to_builtins(DEFAULT_RULES[0]), "zh": TWICE}
        rule["counts"] = {"event_types": ["HomeVisitMade"], "at_least": 2}
        made = await client.post("/rules", json={"rule": rule, "effective_from": "2026-04-01"}, headers=h)
        assert made.status_code == 201, made.text
        await project(pool)

        after = {m: await rollup(m) for m in before}
        assert after["2026-03"]["rules"] == before["2026-03"]["rules"]  # before its day: unchanged
        assert [after[m]["rules"]["proxy_visit"]["due"] for m in after] == [0, 1, 1]
        assert [after[m]["rules"]["proxy_visit"]["met"] for m in after] == [0, 0, 0]
        assert after["2026-05"]["rules"]["proxy_visit"]["overdue"] == 1
        assert after["2026-05"]["rules"]["proxy_visit"]["zh"] == TWICE
        assert after["2026-05"]["overdue_children"] >= 1
        for m, doc in after.items():
            assert _rollup_rules(doc) == await _live(pool, TOWNSHIP, m), m
        late = await site_overdue("2026-05-31")
        assert (w.child_v1, "proxy_visit", 31, TWICE) in late
        assert late == await live_overdue(dt.date(2026, 5, 31))
        assert ("proxy_visit" not in {rule for _, rule, _, _ in await site_overdue("2026-03-31")})

        # The exports and the summary read the same rollup.
        figures = (await client.get("/rollups/figures", params={"scope": TOWNSHIP, "period": "2026-05"},
                                    headers=h)).json()
        shown = {f["key"]: f for f in figures}
        assert shown["rules.proxy_visit.overdue"]["value"] == 1 and TWICE in shown["rules.proxy_visit.due"]["label"]
        exported = (await client.get("/exports/summary.json", params={"scope": TOWNSHIP, "period": "2026-05"},
                                     headers=h)).json()
        assert exported["rollup"]["rules"] == after["2026-05"]["rules"]

        # The dashboard's overview of May: its overdue count and list follow the new rule.
        client.cookies.set("sw_token", w.tokens["township"])
        page = await client.get("/ui/", params={"period": "2026-05"})
        assert page.status_code == 200, page.text[:500]
        kpi = re.search(r'<b title="overdue_children">(\d+)</b>', page.text)
        assert kpi is not None and int(kpi.group(1)) == after["2026-05"]["overdue_children"]
        table = page.text[page.text.index('id="overdue"'):]
        assert TWICE in table and w.child_v1 in table

        # The children list's overdue filter judges today by the same rules.
        today = local_today()
        listed = (await client.get("/children", params={"overdue_rule": "proxy_visit", "limit": 200},
                                   headers=h)).json()
        found = await rule_queries.rule_figures_live(pool, TOWNSHIP, f"{today:%Y-%m}", today)
        want = {o.subject for f in found if f.rule_id == "proxy_visit" for o in f.overdue}
        assert {x["child_id"] for x in listed["items"]} == want and w.child_v1 in want
        assert all("proxy_visit" in x["overdue_rules"] for x in listed["items"])
