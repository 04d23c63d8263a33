"""Bad input at every door (issue 10, item 4): a corpus of malformed events and requests,
thrown at the running township after the faults stop.

* the agent's local HTTP endpoint (``POST /events``) and ``shouwang agent record``: truncated,
  oversize, wrong types, injection strings, NUL characters, deep nesting, forged envelope
  fields; each must be refused (4xx naming what is wrong / a non-zero exit with the problems,
  never a traceback), nothing of it recorded;
* the ingest, by raw publishes on ``care.up.*``: truncated, garbage, oversize, MessagePack
  garbage, wrong types, forged sites (another site's event, a sequence number the site has not
  used yet), an unregistered site, a subject that names no site, a replayed event id with other
  content; each must land in quarantine, one row per message, with its bytes;
* the HTTP API: no token, a garbage token, a replayed (revoked) token, malformed and oversize
  log-ins, injection strings in paths and queries, wrong types in a write, a station reading
  outside its scope; each refused with a 4xx and an error body.

Afterwards every process must still be running. Returns counts by door and the problems found.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import asyncpg
import httpx
import msgspec
import nats

from events.wire import CONTENT_TYPE_HEADER, MSGPACK, up_subject
from runtime import natsurl
from tests.chaos.town import Town, local_events, open_pool

INJECTIONS = ["'; DROP TABLE events; --", "<script>alert(1)</script>", "${jndi:ldap://x/a}", "../../etc/passwd",
              "c-1' OR '1'='1", "%00", "\u202e\u0000"]


def _draft(**over: Any) -> dict[str, Any]:
    return {"type": "HomeVisitMade", "occurred_at": "2026-03-02T09:30:00+08:00", "child_id": "c-" + "1" * 32,
            "visitor": "张老师", **over}


def agent_corpus() -> list[tuple[str, bytes]]:
    good = json.dumps(_draft()).encode()
    cases: list[tuple[str, bytes]] = [
        ("empty body", b""),
        ("truncated", good[: len(good) // 2]),
        ("not JSON", b"\xff\xfe\x00garbage"),
        ("a bare number", b"42"),
        ("empty list", b"[]"),
        ("unknown type", json.dumps(_draft(type="DropTables")).encode()),
        ("wrong types", json.dumps(_draft(occurred_at=123, child_id=5, visitor=["x"])).encode()),
        ("missing fields", json.dumps({"type": "HomeVisitMade"}).encode()),
        ("future occurred_at", json.dumps(_draft(occurred_at="2099-01-01T00:00:00Z")).encode()),
        ("oversize text", json.dumps(_draft(visitor="字" * 300_000)).encode()),
        ("oversize batch", json.dumps([_draft()] * 10_001).encode()),
        ("NUL in text", json.dumps(_draft(findings="ok\u0000")).encode()),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
        ("forged site_id", json.dumps(_draft(site_id="demo.qingshi.v99")).encode()),
        ("forged envelope", json.dumps(_draft(site_seq=1, prev_hash="00" * 32, event_id="x")).encode()),
        ("one bad in a batch", json.dumps([_draft(), _draft(child_id="c-bad")]).encode()),
    ]
    for i, text in enumerate(INJECTIONS):
        cases.append((f"injection {i} in child_id", json.dumps(_draft(child_id=text)).encode()))
    return cases


async def agent_http(town: Town, problems: list[str]) -> int:
    n = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for site, station in town.stations.items():
            before = len(local_events(station.data))
            for name, body in agent_corpus():
                n += 1
                try:
                    r = await client.post(station.url + "/events", content=body, headers=station.headers)
                except httpx.HTTPError as err:
                    problems.append(f"agent {site} POST /events {name}: no answer ({err!r})")
                    continue
                if r.status_code not in (400, 413, 415, 422):
                    problems.append(f"agent {site} POST /events {name}: status {r.status_code} {r.text[:200]}")
                elif not _clear(r):
                    problems.append(f"agent {site} POST /events {name}: unclear error body {r.text[:200]}")
            after = len(local_events(station.data))
            if after != before:
                problems.append(f"agent {site}: bad input recorded {after - before} events")
            break_after_first = os.environ.get("SHOUWANG_CHAOS_ALL_AGENTS") != "1"
            if break_after_first:
                break  # one station takes the whole corpus; they all run the same code
    return n


def _clear(r: httpx.Response) -> bool:
    """An error body that says what was wrong (the agent's problems list, or an error text)."""
    try:
        doc = r.json()
    except ValueError:
        return bool(r.text.strip())
    if isinstance(doc, dict):
        probs = doc.get("problems")
        if isinstance(probs, list) and probs and all(p.get("field") and p.get("message") for p in probs):
            return True
        return bool(doc.get("error") or doc.get("detail") or doc.get("message"))
    return False


async def agent_cli(town: Town, problems: list[str]) -> int:
    station = next(iter(town.stations.values()))
    before = len(local_events(station.data))
    cases = [(n, b) for n, b in agent_corpus() if n in ("truncated", "wrong types", "NUL in text", "deep nesting",
                                                       "forged envelope")]
    for name, body in cases:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            f.write(body)
        try:
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "shouwang", "agent", "record", "--data", str(station.data),
                                 f.name], capture_output=True, text=True, timeout=120, check=False,
                env={**os.environ, **town._env()})
        finally:
            os.unlink(f.name)
        if out.returncode == 0:
            problems.append(f"agent record {name}: accepted")
        elif "Traceback" in out.stderr or not out.stderr.strip():
            problems.append(f"agent record {name}: exit {out.returncode} without a clear error: {out.stderr[-300:]}")
    missing = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "shouwang", "agent", "record", "--data", str(station.data),
                         "/nonexistent/drafts.json"], capture_output=True, text=True, timeout=120, check=False)
    if missing.returncode == 0 or "Traceback" in missing.stderr:
        problems.append(f"agent record of a missing file: exit {missing.returncode} {missing.stderr[-300:]}")
    if len(local_events(station.data)) != before:
        problems.append("agent record: bad input was recorded")
    return len(cases) + 1


def ingest_corpus(town: Town, stored: set[str]) -> list[tuple[str, str, bytes, bool]]:
    """(name, subject, bytes, msgpack) of messages the ingest must quarantine, one row each.
    `stored`: the ids of site A's events the center holds now; the altered copy is of the last of
    them (of an event the center has not received yet, the first copy to arrive is all it can
    know, and an agent whose event was taken by a forgery is told so by its refusal)."""
    sites = list(town.stations)
    a, b = sites[1], sites[2]
    a_events = local_events(town.stations[a].data)
    _, _, _, real = a_events[-1]
    doc = msgspec.json.decode(real)
    known = [body for _, eid, _, body in a_events if eid in stored]
    assert known, f"the center holds no event of {a} before the bad input"
    b_last = len(local_events(town.stations[b].data))
    forged_ahead = dict(doc, site_seq=b_last + 1)  # A's event, renumbered to B's next sequence number
    altered = dict(msgspec.json.decode(known[-1]), actor="someone-else")  # a stored event id, other content
    wrong_types = dict(doc, site_seq="five", recorded_at=-1)
    injected = dict(doc, payload=dict(doc["payload"], child_id=INJECTIONS[0]))
    enc = msgspec.json.encode
    return [
        ("truncated", up_subject(a), real[: len(real) // 2], False),
        ("garbage", up_subject(a), os.urandom(200), False),
        ("empty", up_subject(a), b"", False),
        ("oversize", up_subject(a), b'{"x":"' + b"a" * 100_000 + b'"}', False),
        ("msgpack garbage", up_subject(a), b"\xc1\xc1\xc1" + os.urandom(50), True),
        ("wrong types", up_subject(a), enc(wrong_types), False),
        ("injection in child_id", up_subject(a), enc(injected), False),
        ("deep nesting", up_subject(a), b"[" * 30_000 + b"]" * 30_000, False),
        ("forged site", up_subject(b), real, False),
        ("forged site, a sequence number the site has not used yet", up_subject(b), enc(forged_ahead), False),
        ("unregistered site", "care.up.demo.qingshi.v99", enc(dict(doc, site_id="demo.qingshi.v99")), False),
        ("subject names no site", "care.up.NOT_A_SITE", real, False),
        ("replayed id, other content", up_subject(a), enc(altered), False),
    ]


async def stored_of(pool: asyncpg.Pool, site: str, within: float = 240.0) -> set[str]:
    """The ids of `site`'s events the center holds, once it holds one: after a restore of the
    center's database, or a line cut for most of the run, the site's backlog may still be on its
    way when the faults end (the checks that follow find it if it never arrives)."""
    deadline = time.monotonic() + within
    while True:
        stored = {str(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM events WHERE site_id = $1",
                                                              site)}
        if stored or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(1.0)


async def ingest(town: Town, problems: list[str]) -> tuple[int, int]:
    pool = await open_pool(town.db_url)
    try:
        a = list(town.stations)[1]
        stored = await stored_of(pool, a)
        corpus = ingest_corpus(town, stored)
        async with pool.acquire() as conn:
            top = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM quarantine"))
        assert town.nats is not None
        nc = await nats.connect(natsurl.servers(town.center_nats_url))
        try:
            js = nc.jetstream(timeout=10)
            for _, subject, data, mp in corpus:
                headers = {CONTENT_TYPE_HEADER: MSGPACK} if mp else None
                await js.publish(subject, data, headers=headers)
        finally:
            await nc.close()
        # Only the rows of these messages count: a station's own resends may be refused at the
        # same moment (after the center's restore, a transfer can arrive before its child's
        # registration and wait in quarantine until it comes), and whether such an event is
        # finally stored is what the checks of every recorded event decide.
        sent = {(subject, data) for _, subject, data, _ in corpus}
        deadline = time.monotonic() + 120
        rows: list[asyncpg.Record] = []
        while time.monotonic() < deadline:
            async with pool.acquire() as conn:
                rows = [r for r in await conn.fetch("SELECT subject, raw, reason FROM quarantine WHERE id > $1", top)
                        if (r["subject"], bytes(r["raw"])) in sent]
            if len(rows) >= len(corpus):
                break
            await asyncio.sleep(0.5)
    finally:
        await pool.close()
    kept = {(r["subject"], bytes(r["raw"])) for r in rows}
    for name, subject, data, _ in corpus:
        if (subject, data) not in kept:
            problems.append(f"ingest {name}: not in quarantine (lost)")
    if len(rows) != len(corpus):
        problems.append(f"ingest: {len(corpus)} bad messages made {len(rows)} quarantine rows")
    for r in rows:
        if not r["reason"]:
            problems.append(f"ingest: a quarantine row on {r['subject']} has no reason")
    return len(corpus), len(rows)


async def api(town: Town, problems: list[str]) -> int:
    base = f"http://127.0.0.1:{town.http_port}"
    n = 0

    async def expect(name: str, method: str, path: str, *, token: str | None = None, want: tuple[int, ...] = (),
                     **kw: Any) -> None:
        nonlocal n
        n += 1
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            r = await client.request(method, base + path, headers=headers, **kw)
        except httpx.HTTPError as err:
            problems.append(f"API {name}: no answer ({err!r})")
            return
        if r.status_code >= 500 or r.status_code < 400 or (want and r.status_code not in want):
            problems.append(f"API {name}: status {r.status_code} {r.text[:200]}")
        elif not _clear(r):
            problems.append(f"API {name}: unclear error body {r.text[:200]}")

    async with httpx.AsyncClient(timeout=60) as client:
        station_token = await town._token(client, "director1")
        stale = await town._token(client, "supervisor")
        r = await client.delete(base + "/auth/token", headers={"Authorization": f"Bearer {stale}"})
        if r.status_code != 200:
            problems.append(f"API log-out failed: {r.status_code} {r.text[:200]}")
        other_village = next(s for s, st in town.stations.items()
                             if st.spec.kind == "village" and s != _site_of(town, "director1"))
        foreign = next((p.draft["child_id"] for p in town.scenario.records
                        if p.site_id == other_village and p.draft.get("type") == "ChildRegistered"), None)
        await expect("no token", "GET", "/children/", want=(401,))
        await expect("garbage token", "GET", "/children/", token="garbage." + "x" * 40, want=(401,))
        await expect("replayed revoked token", "GET", "/rollups/", token=stale,
                     params={"scope": town.scenario.township_id}, want=(401,))
        await expect("oversize token", "GET", "/children/", token="t" * 100_000, want=(400, 401, 413, 431))
        await expect("log-in, malformed JSON", "POST", "/auth/token", content=b'{"username": "adm',
                     headers={"Content-Type": "application/json"}, want=(400, 422))
        await expect("log-in, wrong types", "POST", "/auth/token", json={"username": 5, "password": ["x"]},
                     want=(400, 422))
        await expect("log-in, injection", "POST", "/auth/token",
                     json={"username": INJECTIONS[0], "password": INJECTIONS[4]}, want=(400, 401, 422, 429))
        await expect("log-in, oversize", "POST", "/auth/token",
                     json={"username": "u" * 2_000_000, "password": "p"}, want=(400, 413, 422))
        await expect("log-in, NUL", "POST", "/auth/token", json={"username": "ad\u0000min", "password": "p"},
                     want=(400, 401, 422))
        for text in INJECTIONS[:5]:
            await expect(f"child id injection {text!r}", "GET", "/children/" + httpx.URL(text).path.lstrip("/"),
                         token=station_token, want=(400, 404, 422))
            await expect(f"rollup scope injection {text!r}", "GET", "/rollups/", token=station_token,
                         params={"scope": text}, want=(400, 403, 422))
        await expect("rollup, wrong period", "GET", "/rollups/", token=station_token,
                     params={"scope": _site_of(town, "director1"), "period": "2025-13"}, want=(400, 422))
        if foreign is not None:
            await expect("station reads another village's child", "GET", f"/children/{foreign}",
                         token=station_token, want=(403, 404))
        await expect("station resolves a conflict", "POST", "/conflicts/resolve", token=station_token,
                     json={"child_id": "c-" + "1" * 32, "field": "guardian", "chosen_event_id": "x"},
                     want=(400, 403, 422))
        await expect("merge, wrong types", "POST", "/merges", token=await town._token(client, "supervisor"),
                     json={"kept_child_id": 5, "merged_child_id": ["x"]}, want=(400, 422))
        await expect("NUL in query", "GET", "/children/", token=station_token, params={"q": "a\u0000"},
                     want=(400, 422))
        await expect("truncated write", "POST", "/merges", token=await town._token(client, "supervisor"),
                     content=b'{"kept_child_id": "c-', headers={"Content-Type": "application/json"},
                     want=(400, 422))
        health = await client.get(base + "/health")
        if health.status_code != 200:
            problems.append(f"API health after the corpus: {health.status_code}")
    return n


def _site_of(town: Town, user: str) -> str:
    assert user == "director1"
    return next(s.site_id for s in town.scenario.sites if s.kind == "village")


async def run_all(town: Town) -> dict[str, Any]:
    problems: list[str] = []
    exits_before = dict(town.unexpected_exits)
    agent_n = await agent_http(town, problems)
    cli_n = await agent_cli(town, problems)
    ingest_n, quarantined = await ingest(town, problems)
    api_n = await api(town, problems)
    dead = [n for n in town.all_names() if not town.alive(n)]
    if dead:
        problems.append(f"processes not running after the bad input: {dead}")
    await asyncio.sleep(1.0)  # the supervisor looks every half second
    for name, count in town.unexpected_exits.items():
        if count != exits_before.get(name, 0):
            problems.append(f"{name} exited during the bad input")
    return {"agent_http": agent_n, "agent_cli": cli_n, "ingest": ingest_n, "ingest_quarantined": quarantined,
            "api": api_n, "problems": problems}
