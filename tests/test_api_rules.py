"""The rules through the API: each rule with its figures for a scope, a township supervisor's
change recorded as an event that every figure from its day follows, and who may do what."""

from __future__ import annotations

import datetime as dt

import asyncpg

from events import catalogue as c
from events.labels import ENUM_LABELS
from events.rules import DEFAULT_RULES
from events.types import PartnerKind
from store.postgres import EventStore
from tests.api_world import OFFICE, T0, TOWNSHIP, V1, open_api, project


def _by_id(items: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(x["rule_id"]): x for x in items}


async def test_rules_figures_and_a_supervisors_change(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Paired with a proxy parent on 2 March, visited 5 March and 3 April: April and May due,
    April met; from 1 April two visits a month: April no longer met. A station reads its own
    scope, cannot set a rule; a bad rule is a 422 naming the field (rules beyond its types)."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await w.record(V1, c.PairingStarted(pairing_id="p-" + "c" * 32, child_id=w.child_v1,
                                            partner_kind=PartnerKind.PROXY_PARENT, partner_name="云晓"), T0)
        await w.record(V1, c.HomeVisitMade(child_id=w.child_v1, visitor="云晓"), T0 + dt.timedelta(days=32))
        query = {"scope": TOWNSHIP, "period": "2026", "as_of": "2026-05-31"}
        r = await client.get("/rules", params=query, headers=w.headers("township"))
        assert r.status_code == 200, r.text
        visit = _by_id(r.json())["proxy_visit"]
        assert (visit["zh"], visit["applies_zh"], visit["due"], visit["met"], visit["overdue"]) == (
            "代管家长每月家访一次", f"有{ENUM_LABELS['partner']['proxy_parent'][0]}结对的建档儿童", 2, 1, [])
        assert visit["applies_zh"] == "有代理家长结对的建档儿童"  # the catalogue's word (events/labels.py)
        mine = _by_id((await client.get("/rules", params={**query, "scope": V1},
                                        headers=w.headers("station1"))).json())["proxy_visit"]
        assert (mine["due"], mine["met"]) == (2, 1)
        theirs = _by_id((await client.get("/rules", params={**query, "scope": "gx-lp.xy.v02"},
                                          headers=w.headers("station2"))).json())["proxy_visit"]
        assert (theirs["applies_to"], theirs["due"]) == (0, 0)
        assert (await client.get("/rules", params={**query, "scope": "gx-lp.zz"},
                                 headers=w.headers("township"))).status_code == 404

        cal = (await client.get("/rules/calendar", params={"scope": V1, "school_year": 2026},
                                headers=w.headers("station1"))).json()
        assert cal == {"township": TOWNSHIP, "set_by_township": False, "calendar": {
            "school_year": 2026, "terms": [["2026-09-01", "2027-01-20"], ["2027-02-20", "2027-07-10"]]}}
        rule = {**__import__("msgspec").to_builtins(DEFAULT_RULES[0]), "zh": "代管家长每月家访两次"}
        rule["counts"] = {"event_types": ["HomeVisitMade"], "at_least": 2}
        body = {"rule": rule, "effective_from": "2026-04-01", "note": "加密家访"}
        assert (await client.post("/rules", json=body, headers=w.headers("station1"))).status_code == 403
        bad = await client.post("/rules", json={**body, "rule": {**rule, "counts": {"event_types": ["Nope"]}}},
                                headers=w.headers("township"))
        assert bad.status_code == 422 and bad.json()["field"] == "rule" and "'Nope'" in bad.json()["message"], bad.text
        async with pool.acquire() as conn:
            before = await conn.fetchval("SELECT max(committed_at) FROM events")
        made = await client.post("/rules", json=body, headers=w.headers("township"))
        assert made.status_code == 201, made.text
        assert made.json()["type"] == "FollowUpRuleSet" and made.json()["site_id"] == OFFICE
        stored = await EventStore(pool).get(made.json()["event_id"])
        assert stored is not None and stored.event.actor == "township"
        await project(pool)
        visit = _by_id((await client.get("/rules", params=query, headers=w.headers("township"))).json())["proxy_visit"]
        assert (visit["zh"], visit["at_least"], visit["due"], visit["met"]) == ("代管家长每月家访两次", 2, 2, 0)
        # as the center held it before the change: the default rule
        then = await client.get("/rules/as-of", params={**query, "committed": before.isoformat()},
                                headers=w.headers("auditor"))
        assert then.status_code == 200, then.text
        visit = _by_id(then.json())["proxy_visit"]
        assert (visit["at_least"], visit["due"], visit["met"]) == (1, 2, 1)
        assert (await client.get("/rules/as-of", params={**query, "committed": before.isoformat()},
                                 headers=w.headers("station1"))).status_code == 403
        # as of 31 March the rule in force was the default
        early = {**query, "as_of": "2026-03-31"}
        visit = _by_id((await client.get("/rules", params=early, headers=w.headers("township"))).json())["proxy_visit"]
        assert (visit["at_least"], visit["effective_from"]) == (1, None)
        history = _by_id((await client.get("/rules/history", params={"scope": TOWNSHIP, "day": "2026-05-01"},
                                           headers=w.headers("auditor"))).json())["proxy_visit"]
        assert history["in_force"]["zh"] == "代管家长每月家访两次"
        assert [v["effective_from"] for v in history["versions"]] == ["1970-01-01", "2026-04-01"]
        retired = await client.post("/rules/proxy_visit/retire", json={"effective_from": "2026-05-01"},
                                    headers=w.headers("township"))
        assert retired.status_code == 201, retired.text
        later = {**query, "period": "2026-06", "as_of": "2026-06-30"}
        assert "proxy_visit" not in _by_id((await client.get("/rules", params=later,
                                                             headers=w.headers("township"))).json())


async def test_a_rule_may_name_every_site_kind(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A rule held by every kind of site (village, school, township office, community) is accepted; a kind that is
    not one is refused, naming the field and the value."""
    import msgspec

    from events.types import SiteKind

    async with open_api(database_url, nats_url, pool) as (client, w):
        site_rule = next(r for r in DEFAULT_RULES if r.applies.target.value == "site")
        rule = msgspec.to_builtins(site_rule)
        rule["applies"]["site_kinds"] = [k.value for k in SiteKind]
        assert len(rule["applies"]["site_kinds"]) == 4
        body = {"rule": rule, "effective_from": "2026-04-01", "note": "各类站点"}
        made = await client.post("/rules", json=body, headers=w.headers("township"))
        assert made.status_code == 201, made.text
        rule["applies"]["site_kinds"] = ["village", "hamlet"]
        bad = await client.post("/rules", json=body, headers=w.headers("township"))
        refusal = bad.json()
        assert bad.status_code == 400 and refusal["field"] == "rule.applies.site_kinds[1]", bad.text
        assert "'hamlet'" in refusal["message"], bad.text
