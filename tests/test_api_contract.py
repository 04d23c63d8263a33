"""The API keeps the contract its OpenAPI document states, checked as a client would: schemathesis
(its command, every check it has) reads /schema/openapi.json from a real uvicorn on 127.0.0.1 over
a made-up township (real PostgreSQL), and calls every operation with a token of a role that may
use it (the document's x-roles), so authorized paths are exercised, not only 401s.

How a route states its constraints so that this passes is in docs/API.md. Three runs:

* full: every operation as one of its roles (spread so that every role takes some), with the
  examples, coverage, fuzzing and stateful phases;
* each role: every operation the role may use, examples and fuzzing phases, fewer examples;
* last, the operations that end a session or an account (log out, revoke a token, disable a user
  or a site, reset a password), each as a sacrificial admin of its own, so they cannot cut the
  branch the other runs sit on.

The one relaxation, and why: a 422 counts as accepting a schema-valid request only on an
operation whose document lists the rule it enforces (x-rules, its 422 answer): rules between
fields (exactly one of two parameters, two ids that differ) are beyond JSON Schema. Everything
else is schemathesis's own default.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from events import catalogue as c
from events.envelope import encode_event
from events.wire import up_subject
from runtime.settings import Settings
from service.api import auth
from service.api.app import create_app
from service.api.config import ApiSettings
from service.ingest import Inbound, commit_in, triage
from testbed.embedded import free_port
from tests.api_world import PASSWORD, S1, TOWNSHIP, V1, V2, World, build_world

pytestmark = pytest.mark.slow

# The roles of the made-up township's users (tests.api_world.USERS) whose tokens the runs use.
AS_ROLE = {"station": "station1", "school": "school", "township": "township", "auditor": "auditor",
           "county": "county", "admin": "admin"}
REGION = TOWNSHIP.split(".")[0]  # the made-up township's region, the county user's
# Operations that end the caller's session or someone's account: run last, as sacrificial users.
ENDING = {("DELETE", "/auth/token"), ("DELETE", "/auth/tokens/{token_id}"), ("POST", "/users/{username}/disable"),
          ("POST", "/users/{username}/reset"), ("POST", "/sites/{site_id}/disable")}
# schemathesis's default statuses for a schema-valid request (checks.positive_data_acceptance).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
CHECKS = "all"
FULL_EXAMPLES = 6  # fuzzing examples per operation in the full run
ROLE_EXAMPLES = 3  # and in each role's run


@dataclass
class Served:
    base: str
    world: World
    doc: dict[str, Any]


@pytest.fixture
async def served(database_url: str, nats_url: str, pool: asyncpg.Pool) -> AsyncIterator[Served]:
    """The API under uvicorn on a free port of 127.0.0.1 with the made-up township loaded, a county
    user over its region, a refused message in the quarantine, and sacrificial admins."""
    world = await build_world(pool)
    await auth.add_user(pool, "county", "county", PASSWORD, region=REGION)
    world.tokens["county"] = (await auth.issue_token(pool, "county", hours=1)).token
    forged = world.writer(V1).write(c.HomeVisitMade(child_id=world.child_v1, visitor="石老师"))
    async with pool.acquire() as conn, conn.transaction():  # sent on another site's subject: quarantined
        await commit_in(conn, [triage(Inbound(subject=up_subject(V2), data=encode_event(forged.event)))])
    for n in range(len(ENDING)):  # admins may use every one of them
        await auth.add_user(pool, f"spare{n}", "admin", PASSWORD)
        world.tokens[f"spare{n}"] = (await auth.issue_token(pool, f"spare{n}", hours=1)).token
    app = create_app(Settings(database_url=database_url, nats_url=nats_url), ApiSettings(connect_nats=False))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            doc = (await client.get(f"{base}/schema/openapi.json")).json()
        yield Served(base, world, doc)
    finally:
        server.should_exit = True
        thread.join(15)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) of every documented operation, in the document's order."""
    return [(m.upper(), path, op) for path, item in doc["paths"].items() for m, op in item.items()
            if m in ("get", "post", "put", "patch", "delete")]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _fits(schema: dict[str, Any], value: Any) -> bool:
    """Whether a pinned value is one the parameter's schema allows (its pattern, if it has one)."""
    schema = next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)
    return "pattern" not in schema or re.search(schema["pattern"], str(value)) is not None


def config(doc: dict[str, Any], tokens: dict[tuple[str, str], str], *, examples: int,
           phases: Iterable[str], pinned: dict[str, Any] | None = None, authorized: bool = False) -> str:
    """A schemathesis configuration: only the operations in `tokens`, each with its token, and a
    422 accepted where the operation documents the rules it answers it for. `pinned` gives some
    parameters a value (a child, site or scope the role may see), wherever an operation has them.
    `authorized`: every operation is one the token's role may use, so one that answers only 401 or
    403 fails the run (in a run with the log-in routes, their 401s for made-up passwords are right)."""
    wanted = set(phases)
    fail_on = ["unsupported_regex", "unresolvable_reference", "unmatched_filter"] + (["missing_auth"] * authorized)
    lines = [
        "continue-on-failure = true",
        "workers = 1",
        "[warnings]",
        # A pattern schemathesis cannot read, a dangling $ref: each a broken contract, not a warning.
        f"fail-on = {_toml(fail_on)}",
        "[generation]",
        f"max-examples = {examples}",
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {_toml(ACCEPTED)}",
    ]
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        lines += [f"[phases.{phase}]", f"enabled = {_toml(phase in wanted)}"]
    for method, path, op in operations(doc):
        token = tokens.get((method, path))
        lines += ["[[operations]]", f"include-name = {_toml(f'{method} {path}')}"]
        if token is None:
            lines.append("enabled = false")
            continue
        lines.append(f"headers = {_toml({'Authorization': f'Bearer {token}'})}")
        given = {p["name"]: pinned[p["name"]] for p in op.get("parameters", [])
                 if p["name"] in (pinned or {}) and _fits(p["schema"], pinned[p["name"]])}
        if given:
            lines.append(f"parameters = {_toml(given)}")
        if "422" in op["responses"]:
            assert op.get("x-rules"), f"{method} {path} documents a 422 without its rules"
            lines += ["[operations.checks.positive_data_acceptance]",
                      f"expected-statuses = {_toml([*ACCEPTED, '422'])}"]
    return "\n".join(lines) + "\n"


def run(served: Served, tmp: Path, name: str, tokens: dict[tuple[str, str], str], *, examples: int,
        phases: Iterable[str], pinned: dict[str, Any] | None = None, authorized: bool = False) -> str:
    """One schemathesis run; its output if it found any failure, else ''."""
    path = tmp / f"{name}.toml"
    phases = list(phases)
    path.write_text(config(served.doc, tokens, examples=examples, phases=phases, pinned=pinned,
                           authorized=authorized), encoding="utf-8")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(path), "run",
         f"{served.base}/schema/openapi.json", "--checks", CHECKS, "--phases", ",".join(phases), "--seed", "1",
         "--no-color", "--request-timeout", "30"],
        capture_output=True, text=True, env=env, timeout=900, check=False, cwd=tmp)  # its cache stays in tmp
    text = out.stdout + out.stderr
    (tmp / f"{name}.out").write_text(text, encoding="utf-8")
    return "" if out.returncode == 0 else f"--- {name} (exit {out.returncode}) ---\n{text[-12000:]}"


def test_api_keeps_its_openapi_contract_with_every_check(served: Served, tmp_path: Path) -> None:
    """schemathesis with all of its checks, in all of its phases, finds nothing: no 5xx, every answer
    as documented (status, content type, headers, body), every schema-valid request accepted and
    every invalid one refused, Allow and OPTIONS as documented, auth never ignored; each operation
    as a role that may use it, and each role over every operation it may use."""
    ops = operations(served.doc)
    assert len(ops) >= 40, [f"{m} {p}" for m, p, _ in ops]
    tokens = served.world.tokens
    failures: list[str] = []

    # Full: each operation as one of its roles, in turn, so that every role takes some.
    full: dict[tuple[str, str], str] = {}
    taken = dict.fromkeys(AS_ROLE, 0)
    for method, path, op in ops:
        if (method, path) in ENDING:
            continue
        roles = op.get("x-roles") or ["township"]  # a public route: any token, it is not read
        role = min(roles, key=lambda r: taken[r])
        taken[role] += 1
        full[(method, path)] = tokens[AS_ROLE[role]]
    assert all(taken.values()), taken
    failures.append(run(served, tmp_path, "full", full, examples=FULL_EXAMPLES,
                        phases=["examples", "coverage", "fuzzing", "stateful"]))

    # Each role over every operation it may use, with a child, a site and a scope it may see (a
    # generated id is almost never one, so without them the answers would be 404s).
    w = served.world
    seen = {"station": (V1, V1), "school": (S1, S1), "township": (V1, TOWNSHIP), "auditor": (V1, TOWNSHIP),
            "county": (V1, REGION), "admin": (V1, TOWNSHIP)}
    for role, user in AS_ROLE.items():
        mine = {(m, p): tokens[user] for m, p, op in ops if role in op.get("x-roles", ()) and (m, p) not in ENDING}
        site, scope = seen[role]
        pinned = {"child_id": w.child_v1, "site_id": site, "scope": scope, "region": REGION, "row_id": 1}
        failures.append(run(served, tmp_path, f"as-{role}", mine, examples=ROLE_EXAMPLES,
                            phases=["examples", "fuzzing"], pinned=pinned, authorized=True))

    # Last: what ends a session or an account, each as a sacrificial admin of its own.
    ending = {}
    for method, path, op in ops:
        if (method, path) in ENDING:
            assert "admin" in op["x-roles"], (method, path)
            ending[(method, path)] = tokens[f"spare{len(ending)}"]
    assert len(ending) == len(ENDING), sorted(ending)
    failures.append(run(served, tmp_path, "ending", ending, examples=FULL_EXAMPLES,
                        phases=["examples", "coverage", "fuzzing"]))
    failed = [f for f in failures if f]
    assert not failed, "\n\n".join(failed)
