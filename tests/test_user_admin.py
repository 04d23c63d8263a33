"""User administration: admins add users (with a one-time code or a password typed twice),
disable and enable them, and reset passwords with a one-time code; everyone changes their own
password; each action lands in the append-only log of account actions, which admins and auditors
read. Through the API, the command line and the dashboard in a real Chromium (axe-core clean in
Chinese and English)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page

from service.api import auth
from tests.api_world import OFFICE, PASSWORD, V1, build_world, open_api
from tests.browser import chromium
from tests.test_web_dashboard import _serve

NEW = "a sentence only wang remembers"
NEWER = "another sentence wang keeps"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def _log(pool: asyncpg.Pool) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT actor, action, target FROM api_user_log ORDER BY id")
    return [(r["actor"], r["action"], r["target"]) for r in rows]


async def test_admin_adds_resets_disables_and_enables_through_the_api(database_url: str, nats_url: str,
                                                                      pool: asyncpg.Pool) -> None:
    """An admin adds a user without a password and issues a one-time code; the code typed as a
    password is recognised (403, no token), sets the user's own password once, and is then used up;
    disabling stops the log-in and enabling restores it; a reset makes the old password and tokens
    stop working; every action is in the log with who did it, and the log holds no password or code."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        admin = w.headers("admin")
        r = await client.post("/users", json={"username": "wang.v01", "role": "station", "site_id": V1}, headers=admin)
        assert r.status_code == 201, r.text
        assert r.json()["last_login_at"] is None
        r = await client.post("/users/wang.v01/reset", headers=admin)
        assert r.status_code == 201, r.text
        code = r.json()["code"]
        r = await client.post("/auth/token", json={"username": "wang.v01", "password": code})
        assert r.status_code == 403 and r.json()["code"] == "one_time_code", r.text
        r = await client.post("/auth/password/code", json={"code": code, "new_password": "short"})
        assert r.status_code == 400 and r.json()["field"] == "new_password", r.text
        r = await client.post("/auth/password/code", json={"code": code, "new_password": "wang.v01 and more"})
        assert r.status_code == 422 and r.json()["field"] == "new_password", r.text
        r = await client.post("/auth/password/code", json={"code": code.lower(), "new_password": NEW})
        assert r.status_code == 200 and r.json() == {"username": "wang.v01", "password_set": True}, r.text
        r = await client.post("/auth/password/code", json={"code": code, "new_password": NEWER})
        assert r.status_code == 401 and r.json()["field"] == "code", r.text
        r = await client.post("/auth/token", json={"username": "wang.v01", "password": NEW})
        assert r.status_code == 201, r.text
        wang = {"Authorization": f"Bearer {r.json()['token']}"}
        listed = {u["username"]: u for u in (await client.get("/users", headers=admin)).json()["items"]}
        assert listed["wang.v01"]["last_login_at"] is not None and listed["wang.v01"]["code_expires_at"] is None

        assert (await client.post("/users/wang.v01/disable", headers=admin)).status_code == 200
        assert (await client.get("/auth/me", headers=wang)).status_code == 401
        assert (await client.post("/auth/token", json={"username": "wang.v01", "password": NEW})).status_code == 401
        r = await client.post("/users/wang.v01/enable", headers=admin)
        assert r.status_code == 200 and r.json()["active"] is True and r.json()["disabled_at"] is None
        assert (await client.post("/auth/token", json={"username": "wang.v01", "password": NEW})).status_code == 201

        r = await client.post("/users/wang.v01/reset", params={"hours": 2}, headers=admin)
        assert r.status_code == 201
        second = r.json()["code"]
        assert second != code
        assert (await client.post("/auth/token", json={"username": "wang.v01", "password": NEW})).status_code == 401
        assert (await client.get("/auth/me", headers=wang)).status_code == 401
        assert (await client.post("/users/nobody/enable", headers=admin)).status_code == 404
        r = await client.post("/users/admin/reset", headers=admin)
        assert r.status_code == 422 and r.json()["field"] == "username"
        r = await client.post("/users", json={"username": "x.v01", "role": "station"}, headers=admin)
        assert r.status_code == 422 and r.json()["field"] == "site_id", r.text
        r = await client.post("/users", json={"username": "x.v01", "role": "station", "site_id": V1,
                                              "password": "1234567890"}, headers=admin)
        assert r.status_code == 422 and r.json()["field"] == "password", r.text

        log = (await client.get("/account-log", headers=w.headers("auditor"))).json()["items"]
        assert [(e["actor"], e["action"], e["target"]) for e in reversed(log) if e["target"] == "wang.v01"] == [
            ("admin", "added", "wang.v01"), ("admin", "code_issued", "wang.v01"),
            ("wang.v01", "password_set_with_code", "wang.v01"), ("admin", "disabled", "wang.v01"),
            ("admin", "enabled", "wang.v01"), ("admin", "code_issued", "wang.v01")]
        dumped = str(await pool.fetch("SELECT * FROM api_user_log"))
        for secret in (code, second, NEW, code.replace("-", "")):
            assert secret not in dumped
        stored = await pool.fetchrow("SELECT password_hash, reset_code_hash FROM api_users WHERE username = 'wang.v01'")
        assert second.encode() not in bytes(stored["reset_code_hash"]) and bytes(stored["password_hash"]) == b"!"


async def test_a_user_changes_their_own_password(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Anyone changes their own password with the old one (a wrong old one or a weak new one is a 422
    naming the field); the old password stops working, this token keeps working, other tokens stop."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        me = w.headers("station1")
        other = (await auth.issue_token(pool, "station1", hours=1)).token
        r = await client.post("/auth/password", json={"old_password": "not it at all", "new_password": NEW},
                              headers=me)
        assert r.status_code == 422 and r.json()["field"] == "old_password", r.text
        r = await client.post("/auth/password", json={"old_password": PASSWORD, "new_password": "aaaaabbbbb"},
                              headers=me)
        assert r.status_code == 422 and r.json()["field"] == "new_password", r.text
        r = await client.post("/auth/password", json={"old_password": PASSWORD, "new_password": NEW}, headers=me)
        assert r.status_code == 200, r.text
        assert (await client.get("/auth/me", headers=me)).status_code == 200
        assert await auth.caller_of_token(pool, other) is None
        assert (await client.post("/auth/token", json={"username": "station1", "password": PASSWORD})).status_code \
            == 401
        assert (await client.post("/auth/token", json={"username": "station1", "password": NEW})).status_code == 201
        assert ("station1", "password_changed", "station1") in await _log(pool)


async def test_non_admins_cannot_administer_users_and_the_log_cannot_be_changed(
        database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Every role but admin gets 403 from the user routes (and changes nothing); only admins and
    auditors read the log; the log refuses UPDATE and DELETE."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        for who in ("station1", "school", "township", "auditor"):
            h = w.headers(who)
            assert (await client.get("/users", headers=h)).status_code == 403
            for action in ("disable", "enable", "reset"):
                assert (await client.post(f"/users/station2/{action}", headers=h)).status_code == 403
            r = await client.post("/users", json={"username": "sneaky", "role": "admin", "password": NEW}, headers=h)
            assert r.status_code == 403
        for who in ("station1", "school", "township"):
            assert (await client.get("/account-log", headers=w.headers(who))).status_code == 403
        assert (await client.get("/account-log", headers=w.headers("auditor"))).status_code == 200
    assert await pool.fetchval("SELECT count(*) FROM api_users WHERE username = 'sneaky'") == 0
    assert await pool.fetchval("SELECT reset_code_hash FROM api_users WHERE username = 'station2'") is None
    for statement in ("UPDATE api_user_log SET actor = 'someone else'", "DELETE FROM api_user_log"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(statement)


def _shouwang(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url, "SHOUWANG_LOG_LEVEL": "warning"}
    command = [sys.executable, "-c", "import sys; from shouwang.cli import main; sys.exit(main())", "center", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          check=False)


async def test_the_command_line_adds_with_a_code_resets_and_enables(database_url: str, pool: asyncpg.Pool) -> None:
    """`center user add --code` and `center user reset` print a one-time code that sets the password,
    `center user enable` re-enables a disabled user, and each is in the log under the command line."""
    await build_world(pool)
    run = asyncio.to_thread
    added = await run(_shouwang, database_url, "user", "add", "li.v01", "--role", "station", "--site", V1, "--code")
    assert added.returncode == 0, added.stderr
    assert await auth.set_password_with_code(pool, added.stdout.strip(), NEW) == "li.v01"
    reset = await run(_shouwang, database_url, "user", "reset", "li.v01", "--hours", "1")
    assert reset.returncode == 0, reset.stderr
    refused = auth.login(pool, "li.v01", NEW, hours=1, throttle=auth.Throttle())
    with pytest.raises(auth.LoginRefused):
        await refused
    assert await auth.set_password_with_code(pool, reset.stdout.strip(), NEWER) == "li.v01"
    assert (await run(_shouwang, database_url, "user", "disable", "li.v01")).returncode == 0
    enabled = await run(_shouwang, database_url, "user", "enable", "li.v01")
    assert enabled.returncode == 0, enabled.stderr
    assert (await auth.login(pool, "li.v01", NEWER, hours=1, throttle=auth.Throttle())).username == "li.v01"
    missing = await run(_shouwang, database_url, "user", "reset", "nobody")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    actions = [(a, t) for actor, a, t in await _log(pool) if actor.startswith("cli")]
    assert actions == [("added", "li.v01"), ("code_issued", "li.v01"), ("code_issued", "li.v01"),
                       ("disabled", "li.v01"), ("enabled", "li.v01")]


async def _login(page: Page, base: str, user: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/ui/login")
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/")


async def _axe_clean(page: Page, url: str) -> None:
    """The page at `url`, in Chinese and in English, has no serious or critical axe-core violation."""
    for lang in ("zh", "en"):
        await page.goto(f"{url}{'&' if '?' in url else '?'}lang={lang}")
        results = await Axe().run(page)
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
               for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, f"{url} ({lang}): {bad}"
    await page.goto(f"{url}{'&' if '?' in url else '?'}lang=zh")


def _watch_csp(page: Page, problems: list[str]) -> None:
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)


async def test_user_administration_in_the_dashboard(pool: asyncpg.Pool, database_url: str, nats_url: str,
                                                    browser: Browser) -> None:
    """In a real Chromium an admin adds a user with a one-time code shown once; the user types the code
    at the log-in form, sets their password and is signed in; the admin disables and re-enables them
    and resets the password (the old one stops working, the link with the code sets a new one); the user
    changes their own password; a township user cannot reach the page or its forms; the auditor reads
    the log with every action; the pages pass axe-core in Chinese and English with no CSP violation."""
    await build_world(pool)
    problems: list[str] = []
    async with _serve(database_url, nats_url) as base:
        admin = await browser.new_page(locale="zh-CN", viewport={"width": 1366, "height": 900})
        _watch_csp(admin, problems)
        await _login(admin, base, "admin")
        await admin.click("nav a[href='/ui/users']")
        await admin.wait_for_url(f"{base}/ui/users")
        await _axe_clean(admin, f"{base}/ui/users")
        await admin.fill("#new-username", "wang.v01")
        await admin.fill("#new-display-name", "王芳")
        await admin.select_option("#new-role", "station")
        await admin.select_option("#new-site", V1)
        await admin.check("#how-code")
        await admin.click("#add-user button[type=submit]")
        code = (await admin.text_content("#code-value") or "").strip()
        assert len(code) == 23, code
        link = (await admin.text_content("#code-link") or "").strip()
        assert link.startswith(f"{base}/ui/password?code=")
        await _axe_clean(admin, f"{base}/ui/users")  # the code is shown once: not on the next visit
        assert await admin.locator("#one-time-code").count() == 0
        row = admin.locator("tr[data-user='wang.v01']")
        assert "村站" in (await row.text_content() or "")
        assert await row.locator("td.where").text_content() == f"site {V1} · {V1}"  # the site's registered name first
        auditor = admin.locator("tr[data-user='auditor'] td.where")
        assert (await auditor.text_content() or "").startswith(f"site {OFFICE} · ")  # a township by its office's name

        # The user types the code at the log-in form, sets their password, and is signed in.
        wang = await browser.new_page(locale="zh-CN")
        _watch_csp(wang, problems)
        await wang.goto(f"{base}/ui/login")
        await wang.fill("#username", "wang.v01")
        await wang.fill("#password", code)
        await wang.click("button[type=submit]")
        await wang.wait_for_selector("#password-form #code")
        await _axe_clean(wang, f"{base}/ui/password?code={code}")
        await wang.fill("#new_password", NEW)
        await wang.fill("#new_password2", "something else entirely")
        await wang.click("#password-form button[type=submit]")
        assert "不一致" in (await wang.text_content("#password-error") or "")
        await wang.fill("#new_password", NEW)
        await wang.fill("#new_password2", NEW)
        await wang.click("#password-form button[type=submit]")
        await wang.wait_for_selector("#password-done")
        assert "wang.v01" in (await wang.text_content("header.top") or "")

        # Disable, then enable.
        await admin.reload()
        await admin.click("tr[data-user='wang.v01'] button.disable")
        await admin.wait_for_selector("#users-done")
        assert "已停用" in (await row.locator("td.state").text_content() or "")
        await wang.goto(f"{base}/ui/")
        assert wang.url.endswith("/ui/login")
        await admin.click("tr[data-user='wang.v01'] button.enable")
        await admin.wait_for_selector("#users-done")
        await _login(wang, base, "wang.v01", NEW)
        await admin.reload()
        assert "从未登录" not in (await row.locator("td.last-login").text_content() or "")

        # Reset: the old password stops working; the link with the code sets a new one.
        await admin.click("tr[data-user='wang.v01'] button.reset")
        second = (await admin.text_content("#code-value") or "").strip()
        assert second and second != code
        await wang.goto(f"{base}/ui/login")
        await wang.fill("#username", "wang.v01")
        await wang.fill("#password", NEW)
        await wang.click("button[type=submit]")
        await wang.wait_for_selector("#login-error")
        await wang.goto(f"{base}/ui/password?code={second}")
        await wang.fill("#new_password", NEWER)
        await wang.fill("#new_password2", NEWER)
        await wang.click("#password-form button[type=submit]")
        await wang.wait_for_selector("#password-done")

        # The user changes their own password on the page.
        await _axe_clean(wang, f"{base}/ui/password")
        await wang.fill("#old_password", NEWER)
        await wang.fill("#new_password", NEW)
        await wang.fill("#new_password2", NEW)
        await wang.click("#password-form button[type=submit]")
        await wang.wait_for_selector("#password-done")
        assert (await auth.login(pool, "wang.v01", NEW, hours=1, throttle=auth.Throttle())).username == "wang.v01"

        # A township user: no link, no page, no form.
        township = await browser.new_page(locale="zh-CN")
        await _login(township, base, "township")
        assert await township.locator("nav a[href='/ui/users']").count() == 0
        response = await township.goto(f"{base}/ui/users")
        assert response is not None and response.status == 403
        async with township.expect_navigation():
            await township.evaluate(  # the township's own session and CSRF token, a form an admin would send
                """async () => { const f = document.createElement('form'); f.method = 'post';
                   f.action = '/ui/users/station2/reset'; document.body.appendChild(f); f.submit(); }""")
        assert await pool.fetchval("SELECT reset_code_hash FROM api_users WHERE username = 'station2'") is None

        # The auditor reads the log: every action, who and to whom.
        auditor = await browser.new_page(locale="zh-CN", viewport={"width": 1366, "height": 900})
        _watch_csp(auditor, problems)
        await _login(auditor, base, "auditor")
        await auditor.click("nav a[href='/ui/users']")
        await auditor.wait_for_url(f"{base}/ui/users")
        assert await auditor.locator("#add-user").count() == 0
        actions = [await r.get_attribute("data-action") for r in await auditor.locator(
            "#account-log tr[data-target='wang.v01']").all()]
        assert list(reversed(actions)) == ["added", "code_issued", "password_set_with_code", "disabled", "enabled",
                                           "code_issued", "password_set_with_code", "password_changed"]
        text = await auditor.text_content("#account-log") or ""
        assert "admin" in text and "用验证码设置密码" in text and code not in text and second not in text
        await _axe_clean(auditor, f"{base}/ui/users")
    assert problems == [], problems
