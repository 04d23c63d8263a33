"""The OpenAPI document describes every route with examples; the error shape, bounds and
pagination, health and readiness. (That the API keeps to the document, checked by schemathesis
against a live server, is tests/test_api_contract.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import schemathesis

from events import catalogue as c
from events.envelope import encode_event
from events.wire import up_subject
from service.ingest import Inbound, commit_in, triage
from tests.api_world import TOWNSHIP, V1, open_api


async def test_openapi_describes_every_route_with_examples(database_url: str, nats_url: str,
                                                           pool: asyncpg.Pool) -> None:
    """Every operation has a summary, an example for each parameter, body and response, and the
    error shape for refusals; the routes that need no token say so."""
    async with open_api(database_url, nats_url, pool) as (client, _):
        doc = (await client.get("/schema/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    count = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "delete"):
                continue
            count += 1
            where = f"{method.upper()} {path}"
            assert op.get("summary"), where
            for p in op.get("parameters", []):
                assert p.get("examples"), (where, p["name"])
            body = op.get("requestBody", {}).get("content", {})
            for media in body.values():
                assert media.get("examples"), where
            assert "default" in op["responses"], where
            for status, resp in op["responses"].items():
                for media in (resp.get("content") or {}).values():
                    assert media.get("examples"), (where, status)
            if (path, method) in (("/health", "get"), ("/ready", "get"), ("/auth/token", "post"),
                                  ("/auth/password/code", "post")):
                assert op["security"] == [], where
            else:
                assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
    assert count >= 31


async def test_errors_share_one_shape_and_inputs_are_bounded(database_url: str, nats_url: str,
                                                            pool: asyncpg.Pool) -> None:
    """Bad parameters, unknown routes, wrong methods, huge bodies and queries, NUL characters and
    page sizes past the maximum all answer {status, code, message, field, value}."""
    async with open_api(database_url, nats_url, pool, max_body_bytes=4096) as (client, w):
        h = w.headers("township")
        cases = [
            (await client.get(f"/rollups?scope={TOWNSHIP}&period=2026-13", headers=h), 400, "period", "2026-13"),
            (await client.get("/children?limit=1000", headers=h), 400, "limit", "1000"),
            (await client.get("/children/not-a-child", headers=h), 400, "child_id", "not-a-child"),
            (await client.get("/children?name=%00", headers=h), 400, "query", "%00"),
            (await client.get("/children?name=" + "x" * 3000, headers=h), 414, "query", None),
            (await client.get(f"/rollups?scope={TOWNSHIP}&start=2026-02-01&end=2026-01-01", headers=h), 422, "end",
             "2026-01-01"),
            (await client.post("/merges", headers=h, json={"kept_child_id": "x"}), 400, None, None),
            (await client.post("/conflicts/resolve", headers=h, content=b"{" + b" " * 5000 + b"}"), 413, None, None),
            (await client.get("/no/such/route", headers=h), 404, None, None),
            (await client.put("/children", headers=h), 405, None, None),
        ]
        for r, status, field, value in cases:
            body = r.json()
            assert r.status_code == status, (r.request.url, r.text)
            assert body["status"] == status and body["code"] and body["message"], r.text
            if field is not None:
                assert body["field"] == field, r.text
            if value is not None:
                assert body["value"] == value, r.text


async def test_pagination_walks_every_child_once(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Pages of one child each, following next_cursor, list every child in scope exactly once."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        seen: list[str] = []
        cursor = ""
        while True:
            r = (await client.get(f"/children?limit=1{cursor}", headers=w.headers("township"))).json()
            seen += [c["child_id"] for c in r["items"]]
            if r["next_cursor"] is None:
                break
            cursor = f"&cursor={r['next_cursor']}"
        assert seen == sorted({w.child_v1, w.child_v2})


async def test_health_and_readiness(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """/health answers without a token; /ready reports the store, NATS and projection lag, and is 503
    while the projections are further behind than the bound."""
    async with open_api(database_url, nats_url, pool, connect_nats=True, max_projection_lag=1) as (client, w):
        assert (await client.get("/health")).json() == {"status": "ok"}
        deadline = time.monotonic() + 10
        while True:
            r = await client.get("/ready")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # the lifespan connects to NATS in the background
        assert r.status_code == 200, r.text
        assert {x["name"] for x in r.json()["checks"]} == {"store", "nats", "projections"}
        # An event the projections have not applied, waiting longer than the bound: not ready.
        d = w.writer(V1).write(c.HomeVisitMade(child_id=w.child_v1, visitor="石老师"))
        async with pool.acquire() as conn, conn.transaction():
            await commit_in(conn, [triage(Inbound(subject=up_subject(V1), data=encode_event(d.event)))])
        await pool.execute("UPDATE events SET committed_at = now() - interval '1 minute' WHERE event_id = $1::uuid",
                           d.event.event_id)
        r = await client.get("/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert [x["name"] for x in r.json()["checks"] if not x["ok"]] == ["projections"]


def _concrete(path: str, item: dict[str, Any]) -> str:
    """The path with each {parameter} replaced by the document's own example of it."""
    for op in item.values():
        for p in op.get("parameters", []) if isinstance(op, dict) else []:
            if p["in"] == "path":
                example = next(iter(p["examples"].values()))["value"]
                path = path.replace("{" + p["name"] + "}", str(example))
    return path


async def test_answers_over_real_data_are_as_documented(database_url: str, nats_url: str,
                                                         pool: asyncpg.Pool) -> None:
    """A child's archive (months counted), its as-of view, timeline and follow-ups, the children list,
    the rollups with their shares and the summary, as served over the made-up township, validate
    against the OpenAPI document (schemathesis's validator): months and shares are objects, as
    documented; every path's OPTIONS answers Allow with exactly the methods the document gives it;
    no page of the dashboard (HTML) is in the document."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        doc = (await client.get("/schema/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(doc)
        h = w.headers("township")
        calls = [
            ("/children/{child_id}", f"/children/{w.child_v1}"),
            ("/children/{child_id}/as-of", f"/children/{w.child_v1}/as-of?occurred=2026-12-01T00:00:00%2B08:00"),
            ("/children/{child_id}/timeline", f"/children/{w.child_v1}/timeline"),
            ("/children/{child_id}/followups", f"/children/{w.child_v1}/followups?period=2026-03"),
            ("/children", "/children?sort=name"),
            ("/rollups", f"/rollups?scope={TOWNSHIP}&period=2026-03"),
            ("/rollups/as-of", f"/rollups/as-of?scope={TOWNSHIP}&period=2026-03&committed=2030-01-01T00:00:00Z"),
            ("/exports/summary.json", f"/exports/summary.json?scope={TOWNSHIP}&period=2026"),
        ]
        for template, url in calls:
            r = await client.get(url, headers=h)
            assert r.status_code == 200, (url, r.text)
            schema[template]["GET"].validate_response(r)
        months = (await client.get(f"/children/{w.child_v1}", headers=h)).json()["archive"]["months"]
        assert months == [{"month": "2026-03", "visits": 1, "calls": 0, "letters": 0, "talks": 0}]
        rollup = (await client.get(f"/rollups?scope={TOWNSHIP}&period=2026-03", headers=h)).json()
        assert set(rollup["children_paired"]) == {"count", "pct"}

        for path, item in doc["paths"].items():
            documented = {m.upper() for m in item if m in ("get", "post", "put", "patch", "delete")}
            r = await client.options(_concrete(path, item))
            assert r.status_code == 204, (path, r.text)
            assert set(r.headers["allow"].split(", ")) == documented | {"OPTIONS"}, (path, r.headers["allow"])
        assert not [p for p in doc["paths"] if p.startswith("/ui")]
        assert "text/html" not in str(doc)


async def test_the_bounds_the_document_states_are_the_bounds_the_server_keeps(
        database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Each bound at its edge, in the document and at the server: a 64-bit row id is looked up and
    one past it refused, a negative cursor refused, the year 0000 refused and 1900 accepted, a
    number for a time refused, a parameter given twice refused; a merge of a child with itself is
    the 422 of the rule the operation lists, and unknown body fields are refused as documented."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        doc = (await client.get("/schema/openapi.json")).json()
        params = {p["name"]: p["schema"] for p in doc["paths"]["/quarantine/{row_id}"]["get"]["parameters"]}
        assert params["row_id"]["maximum"] == 2**63 - 1 and isinstance(params["row_id"]["maximum"], int)
        cursor = {p["name"]: p["schema"] for p in doc["paths"]["/quarantine"]["get"]["parameters"]}["cursor"]
        assert cursor["anyOf"][0]["minimum"] == 0
        assert doc["components"]["schemas"]["Merge"]["additionalProperties"] is False
        admin, h = w.headers("admin"), w.headers("township")
        cases = [
            (await client.get(f"/quarantine/{2**63 - 1}", headers=admin), 404, "row_id"),
            (await client.get(f"/quarantine/{2**63}", headers=admin), 400, "row_id"),
            (await client.get("/quarantine?cursor=-1", headers=admin), 400, "cursor"),
            (await client.get(f"/rollups?scope={TOWNSHIP}&period=0000", headers=h), 400, "period"),
            (await client.get(f"/rollups?scope={TOWNSHIP}&period=1900", headers=h), 200, None),
            (await client.get("/audit/reads?until=0.5", headers=w.headers("auditor")), 400, "until"),
            (await client.get("/children?limit=5&limit=6", headers=h), 400, "limit"),
            (await client.post("/merges", headers=h, json={"kept_child_id": w.child_v1, "merged_child_id": w.child_v1}),
             422, "merged_child_id"),
            (await client.post("/merges", headers=h, json={"kept_child_id": w.child_v1, "merged_child_id": w.child_v2,
                                                          "extra": 1}), 400, None),
        ]
        for r, status, field in cases:
            assert r.status_code == status, (r.request.url, r.text)
            if field is not None:
                assert r.json()["field"] == field, r.text
        rule = (await client.post("/merges", headers=h, json={"kept_child_id": w.child_v1,
                                                              "merged_child_id": w.child_v1})).json()["message"]
        assert any(listed in rule for listed in doc["paths"]["/merges"]["post"]["x-rules"]), rule
