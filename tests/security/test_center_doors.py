"""The center's doors: security headers, the dashboard's forms (CSRF token and Origin), log-in
throttling by address and by name, X-Forwarded-For only from trusted proxies, old scrypt hashes
rehashed to Argon2id, and out-of-range input answered 400 with the field named."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from runtime.settings import Settings
from service.api.app import create_app
from service.api.config import ApiSettings
from testbed.embedded import free_port
from tests.api_world import PASSWORD, TOWNSHIP, V1, build_world
from tests.browser import chromium
from web.security import CSP, csrf_token

HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
           "x-frame-options": "DENY"}


@contextlib.asynccontextmanager
async def _serve(database_url: str, nats_url: str, **api: Any) -> AsyncIterator[str]:
    """The center's app behind a real uvicorn on 127.0.0.1 (so peers have real addresses)."""
    app = create_app(Settings(database_url=database_url, nats_url=nats_url), ApiSettings(connect_nats=False, **api))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _from(base: str, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose TCP connections leave from `address` (any of 127.0.0.0/8 is this machine)."""
    return httpx.AsyncClient(base_url=base, transport=httpx.AsyncHTTPTransport(local_address=address), timeout=30)


async def _login(client: httpx.AsyncClient, password: str, user: str = "station1",
                 headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/auth/token", json={"username": user, "password": password}, headers=headers or {})


# --- headers ------------------------------------------------------------------------------------


async def test_security_headers_on_api_dashboard_and_static(pool: asyncpg.Pool, database_url: str,
                                                           nats_url: str) -> None:
    """Every kind of response (API JSON and errors, 404s, dashboard pages, static files) has the security headers."""
    await build_world(pool)
    async with _serve(database_url, nats_url) as base, _from(base) as client:
        for path in ("/health", "/children", "/no/such/route", "/schema/openapi.json", "/ui/login", "/ui/",
                     "/static/app.css", "/static/app.js"):
            r = await client.get(path)
            for name, value in HEADERS.items():
                assert r.headers.get(name) == value, (path, name, r.headers.get(name))
        assert (await client.get("/ui/login")).headers["cache-control"] == "no-store"


# --- the dashboard's forms ------------------------------------------------------------------------


def _token_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the form carries a CSRF token"
    return found.group(1)


async def _dash_login(client: httpx.AsyncClient, base: str, user: str) -> None:
    form = await client.get("/ui/login")
    data = {"username": user, "password": PASSWORD, "csrf_token": _token_in(form.text)}
    r = await client.post("/ui/login", data=data, headers={"Origin": base})
    assert r.status_code == 303, r.text


async def test_cross_origin_posts_to_the_dashboard_are_refused(pool: asyncpg.Pool, database_url: str,
                                                                nats_url: str) -> None:
    """A signed-in supervisor's browser sent a POST without the form's CSRF token, with a wrong one, from
    a foreign Origin or with no Origin at all is refused (403) and merges nothing; the log-in form is
    guarded the same way; the page's own form works, and the cookie lasts as long as the token."""
    w = await build_world(pool)
    secret = "a test key for the dashboard's form tokens"
    async with _serve(database_url, nats_url, token_hours=2, csrf_secret=secret) as base, _from(base) as client:
        await _dash_login(client, base, "township")
        cookie = next(c for c in client.cookies.jar if c.name == "sw_token")
        assert cookie.expires is not None
        lifetime = cookie.expires - int(time.time())
        assert 2 * 3600 - 60 <= lifetime <= 2 * 3600, lifetime
        assert client.cookies["sw_token"] == cookie.value
        good = csrf_token(secret.encode(), cookie.value or "")  # what the session's own pages carry
        merge = {"kept_child_id": w.child_v1, "merged_child_id": w.child_v2}
        attacks = {
            "no token": (merge, {"Origin": base}),
            "wrong token": ({**merge, "csrf_token": "A" * 43}, {"Origin": base}),
            "foreign origin": ({**merge, "csrf_token": good}, {"Origin": "http://evil.example"}),
            "null origin": ({**merge, "csrf_token": good}, {"Origin": "null"}),
            "no origin, no referer": ({**merge, "csrf_token": good}, {}),
            "foreign referer": ({**merge, "csrf_token": good}, {"Referer": "http://evil.example/x"}),
        }
        for name, (data, headers) in attacks.items():
            r = await client.post("/ui/duplicates", data=data, headers=headers)
            assert r.status_code == 403, (name, r.status_code)
            r = await client.post("/ui/conflicts", data={**data, "child_id": w.child_v1, "field": "name",
                                                         "chosen_event_id": "x"}, headers=headers)
            assert r.status_code == 403, (name, r.status_code)
        changed = "SELECT count(*) FROM events WHERE type IN ('ArchivesMerged', 'ConflictResolved')"
        assert await pool.fetchval(changed) == 0

        # The log-in form: from a foreign origin, or without the token its page gave, no session.
        async with _from(base) as other:
            form = await other.get("/ui/login")
            creds = {"username": "township", "password": PASSWORD}
            for data, headers in (({**creds, "csrf_token": _token_in(form.text)}, {"Origin": "http://evil.example"}),
                                  (creds, {"Origin": base})):
                r = await other.post("/ui/login", data=data, headers=headers)
                assert r.status_code == 403 and "sw_token" not in r.cookies

        # The page's own form, from the page's origin, goes through.
        r = await client.post("/ui/duplicates", data={**merge, "csrf_token": good}, headers={"Origin": base})
        assert r.status_code in (303, 400, 409), r.text  # reached the API (the pair need not be mergeable)


async def test_dashboard_pages_have_no_csp_violations(pool: asyncpg.Pool, database_url: str, nats_url: str) -> None:
    """In a real Chromium, every dashboard page (log-in, overview, children, a child, conflicts,
    duplicates, quarantine, summary, a message) renders its stylesheet and script with no CSP violation."""
    w = await build_world(pool)
    async with _serve(database_url, nats_url) as base, chromium() as browser:
        page = await browser.new_page(locale="zh-CN")
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
        await page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                                   "console.error('Content Security Policy violation: ' + e.violatedDirective))")
        await page.goto(f"{base}/ui/login")
        await page.fill("#username", "township")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/ui/")
        for path in ("/ui/", "/ui/children", f"/ui/child/{w.child_v1}", f"/ui/child/{w.child_v1}?as_of=2026-03-10",
                     "/ui/conflicts", "/ui/duplicates", "/ui/quarantine", "/ui/summary?period=2026",
                     "/ui/?period=abc"):
            await page.goto(base + path)
            await page.wait_for_load_state("load")
            # the stylesheet applied: the header is laid out by app.css (a flex row)
            assert await page.evaluate("getComputedStyle(document.querySelector('header.top')).display") == "flex", path
        await page.goto(f"{base}/ui/logout")
        await page.wait_for_url(f"{base}/ui/login")
        assert await page.evaluate("getComputedStyle(document.querySelector('#login-form')).maxWidth") != "none"
        assert problems == [], problems


# --- throttling -----------------------------------------------------------------------------------


async def test_a_strangers_failures_lock_the_strangers_address_not_the_account(
        pool: asyncpg.Pool, database_url: str, nats_url: str) -> None:
    """Guessing station1's password from 127.0.0.2 locks 127.0.0.2 (429, growing with each try), while
    station1's owner logs in at once from 127.0.0.3 with the right password."""
    await build_world(pool)
    async with (_serve(database_url, nats_url, login_failures=5, lockout_seconds=60) as base,
                _from(base, "127.0.0.2") as stranger, _from(base, "127.0.0.3") as owner):
        for _ in range(5):
            assert (await _login(stranger, "wrong password")).status_code == 401
        waits = []
        for _ in range(3):
            r = await _login(stranger, PASSWORD)
            assert r.status_code == 429
            waits.append(int(r.headers["retry-after"]))
        assert waits[-1] > 60  # guessing on while locked lengthens the stranger's lock
        r = await _login(owner, PASSWORD)
        assert r.status_code == 201, r.text


async def test_failures_spread_over_addresses_pause_the_name_only_briefly(
        pool: asyncpg.Pool, database_url: str, nats_url: str) -> None:
    """Failures of one name from several addresses pause that name (429), but for a fixed short time
    that further tries do not lengthen: no stranger can lock the owner out for an hour."""
    await build_world(pool)
    async with _serve(database_url, nats_url, login_failures=5, lockout_seconds=60, name_failures=8,
                      name_lock_seconds=30) as base:
        for i in range(2, 6):
            async with _from(base, f"127.0.0.{i}") as stranger:
                for _ in range(2):
                    assert (await _login(stranger, "wrong password")).status_code == 401
        async with _from(base, "127.0.0.9") as owner:
            for _ in range(6):
                r = await _login(owner, PASSWORD)
                assert r.status_code == 429
                assert 1 <= int(r.headers["retry-after"]) <= 30
            await pool.execute("UPDATE login_throttle SET locked_until = now() - interval '1 second'")
            assert (await _login(owner, PASSWORD)).status_code == 201


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(pool: asyncpg.Pool, database_url: str,
                                                                   nats_url: str) -> None:
    """Without trusted proxies X-Forwarded-For is ignored (a guesser cannot rotate it to dodge the lock);
    from a configured proxy it names the client, only its right-most untrusted entry counting."""
    await build_world(pool)
    async with _serve(database_url, nats_url, login_failures=3) as base, _from(base, "127.0.0.4") as client:
        for i in range(3):
            xff = {"X-Forwarded-For": f"198.51.100.{i}"}
            assert (await _login(client, "wrong password", headers=xff)).status_code == 401
        r = await _login(client, PASSWORD, headers={"X-Forwarded-For": "198.51.100.77"})
        assert r.status_code == 429
    await pool.execute("DELETE FROM login_throttle")
    async with (_serve(database_url, nats_url, login_failures=3, trusted_proxies="127.0.0.5, 10.0.0.0/8") as base,
                _from(base, "127.0.0.5") as proxy):
        guesser = {"X-Forwarded-For": "203.0.113.5, 10.1.2.3"}  # via two proxies of ours
        for _ in range(3):
            assert (await _login(proxy, "wrong password", headers=guesser)).status_code == 401
        assert (await _login(proxy, PASSWORD, headers=guesser)).status_code == 429
        spoof = {"X-Forwarded-For": "203.0.113.6, 203.0.113.5"}  # the guesser writes a left-hand entry
        assert (await _login(proxy, PASSWORD, headers=spoof)).status_code == 429
        owner = {"X-Forwarded-For": "203.0.113.6"}
        assert (await _login(proxy, PASSWORD, headers=owner)).status_code == 201
        rows = await pool.fetch("SELECT username FROM login_throttle")
        assert [r["username"] for r in rows] == ["addr:203.0.113.5"]


# --- passwords --------------------------------------------------------------------------------------


async def test_an_old_scrypt_hash_logs_in_and_is_rehashed_to_argon2id(pool: asyncpg.Pool, database_url: str,
                                                                     nats_url: str) -> None:
    """A user whose row still holds the old salted scrypt hash logs in with their password, after which
    the row holds an Argon2id hash that logs in too; a wrong password neither logs in nor rehashes."""
    await build_world(pool)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
    await pool.execute("UPDATE api_users SET password_salt = $1, password_hash = $2, scrypt_n = 16384, scrypt_r = 8, "
                       "scrypt_p = 1 WHERE username = 'station1'", salt, digest)
    async with _serve(database_url, nats_url) as base, _from(base) as client:
        assert (await _login(client, "not the password")).status_code == 401
        assert bytes(await pool.fetchval("SELECT password_hash FROM api_users WHERE username = 'station1'")) == digest
        assert (await _login(client, PASSWORD)).status_code == 201
        row = await pool.fetchrow("SELECT * FROM api_users WHERE username = 'station1'")
        assert bytes(row["password_hash"]).startswith(b"$argon2id$") and row["scrypt_n"] == 0
        assert (await _login(client, PASSWORD)).status_code == 201


# --- out-of-range input -------------------------------------------------------------------------------

BIG = str(2**64)
CHILD = "{child}"
# (who, path, query, field named)
API_400 = [
    ("auditor", "/audit/reads", {"cursor": "9999999999999999999"}, "cursor"),
    ("auditor", "/audit/reads", {"cursor": BIG}, "cursor"),
    ("auditor", "/audit/reads", {"cursor": "-1"}, "cursor"),
    ("auditor", "/audit/reads", {"since": "0001-01-01T00:00:00Z"}, "since"),
    ("admin", "/quarantine", {"cursor": BIG}, "cursor"),
    ("admin", "/quarantine", {"cursor": "-1"}, "cursor"),
    ("township", "/children", {"cursor": BIG}, "cursor"),
    ("township", f"/children/{CHILD}/as-of", {"occurred": "0001-01-01T00:00:00+14:00"}, "occurred"),
    ("township", f"/children/{CHILD}/as-of", {"occurred": "9999-12-31T23:59:59-14:00"}, "occurred"),
    ("township", f"/children/{CHILD}/as-of", {"committed": "0001-01-01T00:00:00+14:00"}, "committed"),
    ("township", f"/children/{CHILD}/followups", {"period": "0001-01"}, "period"),
    ("township", "/rollups", {"scope": TOWNSHIP, "period": "0001-01"}, "period"),
    ("township", "/rollups", {"scope": TOWNSHIP, "period": "0001"}, "period"),
    ("township", "/rollups", {"scope": TOWNSHIP, "start": "0001-01-01", "end": "0001-01-02"}, "start"),
    ("township", "/rollups", {"scope": TOWNSHIP, "start": "9999-12-30", "end": "9999-12-31"}, "start"),
    ("township", "/exports/summary.csv", {"scope": TOWNSHIP, "period": "0001-01"}, "period"),
    ("township", "/exports/summary.xlsx", {"scope": TOWNSHIP, "start": "0001-01-01", "end": "0001-01-02"}, "start"),
    ("station1", f"/sites/{V1}/overdue", {"today": "0001-01-01"}, "today"),
    ("station1", f"/sites/{V1}/overdue", {"today": "9999-12-31"}, "today"),
]
# (path, query, field named in the page)
DASH_400 = [
    ("/ui/", {"period": "abc"}, "period"),
    ("/ui/", {"period": "0000-01"}, "period"),
    ("/ui/", {"period": "9999-12"}, "period"),
    ("/ui/summary", {"period": "abc"}, "period"),
    ("/ui/summary", {"period": "0001"}, "period"),
    (f"/ui/child/{CHILD}", {"as_of": "abc"}, "as_of"),
    (f"/ui/child/{CHILD}", {"as_of": "0001-01-01"}, "as_of"),
    # The children list pages by number now (it paged by cursor when this case was written).
    ("/ui/children", {"page": BIG}, "page"),
    ("/ui/children", {"page": "-1"}, "page"),
    ("/ui/export/csv", {"scope": TOWNSHIP, "period": "0001-01"}, "period"),
]


@pytest.fixture
async def center(pool: asyncpg.Pool, database_url: str, nats_url: str) -> AsyncIterator[tuple[str, Any]]:
    world = await build_world(pool)
    async with _serve(database_url, nats_url) as base:
        yield base, world


@pytest.mark.parametrize(("who", "path", "query", "field"), API_400, ids=[f"{p} {q}" for _, p, q, _ in API_400])
async def test_out_of_range_api_parameters_are_400_naming_the_field(center: tuple[str, Any], who: str, path: str,
                                                                     query: dict[str, str], field: str) -> None:
    """A cursor beyond 64 bits or negative, or a date far outside any child's life, is a 400 naming it, not a 500."""
    base, w = center
    async with _from(base) as client:
        r = await client.get(path.format(child=w.child_v1), params=query, headers=w.headers(who))
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


@pytest.mark.parametrize(("path", "query", "field"), DASH_400, ids=[f"{p} {q}" for p, q, _ in DASH_400])
async def test_out_of_range_dashboard_parameters_are_400_naming_the_field(center: tuple[str, Any], path: str,
                                                                          query: dict[str, str], field: str) -> None:
    """The dashboard answers a bad period, as-of date or page with a 400 page naming it, not a 500 or an empty one."""
    base, w = center
    async with _from(base) as client:
        client.cookies.set("sw_token", w.tokens["township"])
        r = await client.get(path.format(child=w.child_v1), params=query)
    assert r.status_code == 400, r.text[:300]
    assert field in r.text


async def test_nul_in_static_paths_and_deep_json_are_400(center: tuple[str, Any]) -> None:
    """A NUL in a static file's path and a JSON body nested 30,000 deep are 400s naming path and body, not 500s."""
    base, w = center
    async with _from(base) as client:
        for path in ("/static/app.css%00", "/static/%00.css"):
            r = await client.get(path)
            assert r.status_code == 400 and r.json()["field"] == "path", (path, r.text)
        deep = b"[" * 30000 + b"]" * 30000
        for path, headers in (("/auth/token", {}), ("/conflicts/resolve", w.headers("township")),
                              ("/merges", w.headers("township"))):
            r = await client.post(path, content=deep, headers={**headers, "Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["field"] == "body", (path, r.text)
        # Ordinary nesting still passes the door (and is judged by the route as before).
        r = await client.post("/auth/token", json={"username": "nobody", "password": "[[[[{{{{"})
        assert r.status_code == 401


def _dashboard_paths() -> list[tuple[str, str]]:
    """(method, path) of every dashboard route, path parameters filled with a plausible value."""
    from service.dashboard import dashboard_routes

    fill = {"fmt:str": "csv", "row_id:int": "1"}
    out = []
    for handler in dashboard_routes():
        for path in getattr(handler, "paths", ()):
            path = re.sub(r"\{([^}]+)\}", lambda m: fill.get(m.group(1), "x"), path)
            out += [(method, path) for method in sorted(getattr(handler, "http_methods", ()))]
    return out


async def test_every_dashboard_page_asks_for_a_session_and_every_form_for_its_token(
        pool: asyncpg.Pool, database_url: str, nats_url: str) -> None:
    """Every route of the dashboard, read from its router (a page added later is covered too):
    without a session, a page sends the browser to the log-in page and a form changes nothing; with
    a session, a form posted without the session's CSRF token is refused with 403. Only the log-in
    and log-out, and the password form (which takes a one-time code before any session), differ."""
    await build_world(pool)
    routes = _dashboard_paths()
    assert len(routes) > 30, routes
    own = {("GET", "/ui/login"), ("POST", "/ui/login"), ("GET", "/ui/logout"), ("GET", "/ui/password"),
           ("POST", "/ui/password")}
    before = await pool.fetchval("SELECT count(*) FROM events")
    async with _serve(database_url, nats_url) as base:
        async with _from(base) as anonymous:
            for method, path in routes:
                if (method, path) in own:
                    continue
                r = await anonymous.request(method, path, headers={"Origin": base})
                assert r.status_code == 303 and r.headers["location"] == "/ui/login", (method, path, r.status_code)
        async with _from(base) as client:
            await _dash_login(client, base, "admin")
            for method, path in routes:
                if method != "POST" or (method, path) in own:
                    continue
                r = await client.post(path, data={"csrf_token": "A" * 43}, headers={"Origin": base})
                assert r.status_code == 403, (path, r.status_code)
    assert await pool.fetchval("SELECT count(*) FROM events") == before
