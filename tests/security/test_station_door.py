"""The station's door (sync_agent/door.py): `shouwang agent serve` as a real process, its pages in
a real Chromium, attacks from other programs on the machine and from other web pages in the
station's browser; and the station's read log reaching the center's read log."""

from __future__ import annotations

import asyncio
import http.server
import json
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from playwright.async_api import Browser

from events.samples import sample_registration
from service.center import run_center
from service.sites import register_site
from sync_agent.config import log_path
from sync_agent.locallog import LocalLog
from sync_agent.readlog import reads_path
from testbed.embedded import EmbeddedNats, free_port
from tests.browser import chromium, shouwang, stop, wait_for_port
from tests.station_kit import PASSWORD, add_user, issue_token, login

SITE = "demo.qingshi.v07"
CHILD = "c-" + "5" * 32
USER = "teacher-li"  # not the site's default actor: events must carry the logged-in user


@dataclass
class Station:
    data: Path
    url: str
    port: int
    nats_port: int
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def events(self) -> list[str]:
        """(type, actor) of every event in the local log, in order."""
        with LocalLog(log_path(self.data), SITE) as log:
            return [f"{e.event.type}:{e.event.actor}" for e in log.read_site(SITE, 1, 10_000)]


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shouwang", "agent", *args], input=stdin, capture_output=True,
                          text=True, check=False)


def _registration(rng_seed: int = 3) -> dict[str, object]:
    reg = msgspec.to_builtins(sample_registration(random.Random(rng_seed), CHILD))
    return {**reg, "occurred_at": "2026-03-01T08:00:00Z"}


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    """A village station (NATS not reachable yet) with user teacher-li, a token, and one registered child."""
    data = tmp_path / "station"
    nats_port = free_port()
    init = _cli("init", "--site", SITE, "--kind", "village", "--name", "青石村维权站", "--data", str(data),
                "--nats", f"nats://127.0.0.1:{nats_port}", "--allowed-host", "station-07.lan")
    assert init.returncode == 0, init.stderr
    add_user(data, USER)
    token = issue_token(data, USER)
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), log=tmp_path / "serve.log")
    try:
        wait_for_port(port, proc)
        st = Station(data, f"http://127.0.0.1:{port}", port, nats_port, token)
        r = httpx.post(st.url + "/events", content=json.dumps(_registration()), headers=st.auth)
        assert r.status_code == 201, r.text
        yield st
    finally:
        stop(proc)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


class _Attacker:
    """Another web server on this machine (another 127.0.0.x address or port) serving one page."""

    def __init__(self, host: str, html: str) -> None:
        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Attacker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_pages_and_events_refuse_without_a_log_in(station: Station) -> None:
    """Without a session or token, pages redirect to /login, the JSON routes answer 401 and nothing is written."""
    before = station.events()
    for path in ("/", "/overdue", f"/child/{CHILD}", "/record/HomeVisitMade"):
        r = httpx.get(station.url + path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (path, r.status_code)
        assert CHILD not in r.text
    for path in ("/status", f"/children/{CHILD}"):
        assert httpx.get(station.url + path).status_code == 401, path
    visit = {"type": "HomeVisitMade", "child_id": CHILD, "visitor": "村干部", "findings": "x",
             "occurred_at": "2026-03-02T08:00:00Z"}
    r = httpx.post(station.url + "/events", content=json.dumps(visit), headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    bad = httpx.post(station.url + "/events", content=json.dumps(visit),
                     headers={"Content-Type": "application/json", "Authorization": "Bearer swt_made-up"})
    assert bad.status_code == 401
    assert station.events() == before


async def test_log_in_and_the_actor_is_the_user(station: Station, browser: Browser) -> None:
    """A person logs in on the Chinese log-in page; what they record by form or by POST /events with their
    session carries them as actor, and a draft naming someone else is refused."""
    page = await browser.new_page(locale="zh-CN")
    await page.goto(station.url + "/")
    assert "/login" in page.url
    assert await page.text_content("label[for=username]") == "用户名"
    assert await page.text_content("label[for=password]") == "密码"
    await page.fill("#username", USER)
    await page.fill("#password", "wrong-password-1")
    await page.click("#login-form button[type=submit]")
    assert "用户名或密码不对" in (await page.text_content("#login-error") or "")
    await login(page, station.url, USER)
    assert USER in (await page.text_content("#station-user") or "")
    await page.goto(f"{station.url}/record/HomeVisitMade?child={CHILD}")
    await page.fill("#f-visitor", "村儿童主任")
    await page.fill("#f-findings", "孩子学习认真")
    await page.click("#event-form button[type=submit]")
    await page.wait_for_selector("#saved")
    csrf = await page.get_attribute("#event-form input[name=csrf_token]", "value")
    call = {"type": "ParentCallMade", "child_id": CHILD, "parent": "母亲", "occurred_at": "2026-03-03T10:00:00Z"}
    status = await page.evaluate(
        """async ([body, csrf]) => (await fetch('/events', {method: 'POST', body: JSON.stringify(body),
             headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}})).status""", [call, csrf])
    assert status == 201
    no_csrf = await page.evaluate(
        """async (body) => (await fetch('/events', {method: 'POST', body: JSON.stringify(body),
             headers: {'Content-Type': 'application/json'}})).status""", call)
    assert no_csrf == 403
    async with httpx.AsyncClient() as client:
        other = await client.post(station.url + "/events", headers=station.auth,
                                  content=json.dumps({**call, "actor": "director-07"}))
    assert other.status_code == 422 and other.json()["problems"][0]["field"] == "actor"
    assert station.events() == [f"ChildRegistered:{USER}", f"HomeVisitMade:{USER}", f"ParentCallMade:{USER}"]
    await page.click("#logout-form input[type=submit]")
    await page.wait_for_url(station.url + "/login")
    await page.goto(station.url + "/")
    assert "/login" in page.url


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "127.0.0.2"])
async def test_a_cross_origin_form_post_is_refused(station: Station, browser: Browser, attacker_host: str) -> None:
    """A page from another origin (another port of 127.0.0.1, or 127.0.0.2) in the logged-in station browser
    auto-submits a registration form and a text/plain 'JSON' form to the station: 403, nothing written."""
    page = await browser.new_page(locale="zh-CN")
    await login(page, station.url, USER)
    before = station.events()
    html = f"""<!doctype html><html><body>
<form id="f" method="post" action="{station.url}/record/ChildRegistered">
<input name="name" value="假冒儿童"><input name="sex" value="female"><input name="birth_date" value="2016-05-17">
<input name="household_village" value="青石村"><input name="reasons" value="both_parents_away">
<input name="guardian.type" value="grandparents"><input name="guardian.name" value="石奶奶">
<input name="occurred_at" value="2026-03-02T09:00"></form>
<script>document.getElementById('f').submit();</script></body></html>"""
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.startswith(station.url + "/record") else None)
    with _Attacker(attacker_host, html) as attacker:
        await page.goto(attacker.url)
        await page.wait_for_load_state("networkidle")
    assert statuses == [403], statuses
    draft = (f'{{"type": "HomeVisitMade", "child_id": "{CHILD}", "visitor": "x", "findings": "x", '
             '"occurred_at": "2026-03-02T08:00:00Z", "pad": "')
    text_json = f"""<!doctype html><html><body>
<form id="f" method="post" enctype="text/plain" action="{station.url}/events">
<input name='{draft}' value='"}}'></form>
<script>document.getElementById('f').submit();</script></body></html>"""
    statuses.clear()
    page.on("response", lambda r: statuses.append(r.status) if r.url == station.url + "/events" else None)
    with _Attacker(attacker_host, text_json) as attacker:
        await page.goto(attacker.url)
        await page.wait_for_load_state("networkidle")
    assert statuses and statuses[0] in (401, 403, 415), statuses
    assert station.events() == before


async def test_a_foreign_host_gets_no_page_and_no_resident_id(station: Station) -> None:
    """With a valid token or session, a request whose Host is not this station's (DNS rebinding) gets 421 and
    no child data; a configured name (agent init --allowed-host) is served."""
    resident_id = str(_registration()["resident_id"])
    async with httpx.AsyncClient() as client:
        for path in ("/", f"/child/{CHILD}", f"/children/{CHILD}", "/status", "/login"):
            r = await client.get(station.url + path, headers={**station.auth, "Host": "evil.example:8470"})
            assert r.status_code == 421, (path, r.status_code)
            assert resident_id not in r.text and CHILD not in r.text and "resident" not in r.text
        ok = await client.get(f"{station.url}/children/{CHILD}", headers={**station.auth, "Host": "station-07.lan"})
        assert ok.status_code == 200 and ok.json()["resident_id"] == resident_id


def test_json_without_application_json_is_refused(station: Station) -> None:
    """POST /events with a token but a text/plain or form content type answers 415 and writes nothing."""
    before = station.events()
    body = json.dumps({"type": "ParentCallMade", "child_id": CHILD, "parent": "母亲",
                       "occurred_at": "2026-03-03T10:00:00Z"})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = httpx.post(station.url + "/events", content=body,
                       headers={"Authorization": f"Bearer {station.token}", "Content-Type": ctype})
        assert r.status_code == 415, (ctype, r.status_code)
    assert station.events() == before


def test_a_token_works_until_revoked(station: Station) -> None:
    """A token issued with `agent token issue` records as its user; after `agent token revoke` it gets 401."""
    call = {"type": "ParentCallMade", "child_id": CHILD, "parent": "父亲", "occurred_at": "2026-03-03T10:00:00Z"}
    r = httpx.post(station.url + "/events", content=json.dumps(call), headers=station.auth)
    assert r.status_code == 201
    listed = json.loads(_cli("token", "list", "--data", str(station.data), "--json").stdout)
    assert station.token not in json.dumps(listed)  # kept only as a hash
    revoke = _cli("token", "revoke", str(listed[0]["id"]), "--data", str(station.data))
    assert revoke.returncode == 0, revoke.stderr
    again = httpx.post(station.url + "/events", content=json.dumps(call), headers=station.auth)
    assert again.status_code == 401
    assert station.events()[-1] == f"ParentCallMade:{USER}" and len(station.events()) == 2


def test_accounts_refuse_weak_passwords_and_stay_private(station: Station) -> None:
    """`agent user add` refuses an empty or short password with a clear message; the accounts file is 0600;
    a disabled user's token stops working."""
    empty = _cli("user", "add", "nobody", "--data", str(station.data), stdin="\n")
    assert empty.returncode == 2 and "empty" in empty.stderr
    short = _cli("user", "add", "nobody", "--data", str(station.data), stdin="short\n")
    assert short.returncode == 2 and "too short" in short.stderr
    assert (station.data / "accounts.sqlite").stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in (station.data / "accounts.sqlite").read_bytes().decode("latin-1")
    assert _cli("user", "disable", USER, "--data", str(station.data)).returncode == 0
    assert httpx.get(station.url + "/status", headers=station.auth).status_code == 401


def test_security_headers_on_every_response(station: Station) -> None:
    """Pages, static files, refusals and unknown paths carry the CSP (no inline code), nosniff and a referrer policy."""
    for path, auth in (("/login", False), ("/static/app.css", False), ("/status", True), ("/status", False),
                       ("/no-such-page", True), (f"/children/{CHILD}", True)):
        r = httpx.get(station.url + path, headers=station.auth if auth else {})
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
        assert r.headers.get("x-content-type-options") == "nosniff", path
        assert r.headers.get("referrer-policy") in ("no-referrer", "same-origin"), path


async def test_a_child_read_reaches_the_center_read_log(
        station: Station, browser: Browser, database_url: str, tmp_path: Path) -> None:
    """Opening a child's page offline is written to the station's read log; when the line is back the agent
    uploads it and the center's read_log holds it with the site id, once; the station then forgets it."""
    page = await browser.new_page(locale="zh-CN")
    await login(page, station.url, USER)
    await page.goto(f"{station.url}/child/{CHILD}")
    await page.wait_for_selector("#child-name")
    with sqlite3.connect(reads_path(station.data)) as local:
        rows = local.execute("SELECT id, username, role, child_id, route, outcome FROM reads").fetchall()
    assert [r[1:] for r in rows] == [(USER, "staff", CHILD, "GET /child/{id}", "served")]
    local_id = rows[0][0]

    nats = EmbeddedNats(tmp_path / "nats", port=station.nats_port).start()
    try:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            await register_site(pool, SITE, "village", "青石村维权站")
            async with run_center(database_url, nats.url):
                for _ in range(600):
                    got = await pool.fetch("SELECT username, role, child_id, route, outcome, site_id, site_read_id "
                                           "FROM read_log WHERE site_id = $1", SITE)
                    if got:
                        break
                    await asyncio.sleep(0.1)
                assert [tuple(r) for r in got] == [(USER, "staff", CHILD, "GET /child/{id}", "served", SITE,
                                                    local_id)]
                for _ in range(100):
                    with sqlite3.connect(reads_path(station.data)) as local:
                        left = local.execute("SELECT count(*) FROM reads").fetchone()[0]
                    if left == 0:
                        break
                    await asyncio.sleep(0.1)
                assert left == 0, "uploaded rows are dropped after the center's answer"
        finally:
            await pool.close()
    finally:
        nats.stop()


def test_agent_show_is_written_to_the_read_log(station: Station) -> None:
    """`shouwang agent show` on the station's machine writes the read (the login name, role cli) before printing."""
    shown = _cli("show", CHILD, "--data", str(station.data))
    assert shown.returncode == 0, shown.stderr
    with sqlite3.connect(reads_path(station.data)) as local:
        rows = local.execute("SELECT username, role, child_id, route, outcome FROM reads").fetchall()
    assert [r[1:] for r in rows] == [("cli", CHILD, "agent show", "served")] and rows[0][0].startswith("os:")
