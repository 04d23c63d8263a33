"""The OpenAPI document and the API agree: schemathesis generates requests for every operation
with a valid token against a real uvicorn on 127.0.0.1, and no answer is a 500 or strays from
the document. Also: the error shape, bounds and pagination, health and readiness."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import hypothesis
import pytest
import schemathesis
import uvicorn
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from events import catalogue as c
from events.envelope import encode_event
from events.wire import up_subject
from runtime.settings import Settings
from service.api.app import create_app
from service.api.config import ApiSettings
from service.ingest import Inbound, commit_in, triage
from testbed.embedded import free_port
from tests.api_world import TOWNSHIP, V1, World, build_world, open_api

# Routes that would cut the branch the test sits on (log out its own token, disable its users or sites).
SKIP = {("DELETE", "/auth/token"), ("POST", "/users/{username}/disable"), ("POST", "/sites/{site_id}/disable")}


@pytest.fixture
async def served(database_url: str, nats_url: str, pool: asyncpg.Pool) -> AsyncIterator[tuple[str, World]]:
    """The API under uvicorn on a free port of 127.0.0.1, with the made-up township loaded."""
    world = await build_world(pool)
    app = create_app(Settings(database_url=database_url, nats_url=nats_url), ApiSettings(connect_nats=False))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", world
    finally:
        server.should_exit = True
        thread.join(15)


def _fuzz(strategy: object, headers: dict[str, str], checks: list[object]) -> Callable[[], None]:
    @hypothesis.settings(max_examples=10, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    return run  # type: ignore[no-any-return]


def test_schemathesis_finds_no_500_and_no_schema_mismatch(served: tuple[str, World]) -> None:
    """Generated requests to every operation, with a township and an admin token, never get a 500,
    and each answer's status, content type and body match the OpenAPI document."""
    base, world = served
    schema = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in SKIP:
            continue
        operations += 1
        for who in ("township", "admin"):
            run = _fuzz(op.as_strategy(), world.headers(who), checks)
            try:
                run()
            except (Exception, BaseExceptionGroup) as err:  # collect every operation's failure, then report
                failures.append(f"{op.method.upper()} {op.path} as {who}: {str(err)[:600]}")
    assert operations >= 28
    assert not failures, "\n\n".join(failures)


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
            (await client.get(f"/rollups?scope={TOWNSHIP}&start=2026-02-01&end=2026-01-01", headers=h), 400, "end",
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
