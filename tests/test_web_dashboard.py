"""The township dashboard in a real Chromium: the overview with its charts, a child's timeline,
and a station user kept away from another station's child."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
import uvicorn
from playwright.async_api import Browser, Page

from events.wire import up_subject
from projections.runner import Runner
from runtime.settings import Settings
from service.api import auth
from service.api.app import create_app
from service.api.config import ApiSettings
from service.ingest import Inbound, commit_in, triage
from service.sites import register_site
from testbed.embedded import free_port
from testbed.simulation import Scenario, generate, seal_all
from tests.browser import SCREENSHOTS, chromium

PASSWORD = "a long made-up passphrase"


async def _load_township(pool: asyncpg.Pool) -> Scenario:
    scenario = generate(children=40, days=120, seed=11)
    for site in scenario.sites:
        await register_site(pool, site.site_id, site.kind, site.name)
    sealed = seal_all(scenario)
    for events in sealed.values():
        items = [triage(Inbound(subject=up_subject(d.event.site_id), data=_wire(d))) for d in events]
        async with pool.acquire() as conn, conn.transaction():
            await commit_in(conn, items)
    await Runner(pool).catch_up()  # the read models the API serves
    office = next(s.site_id for s in scenario.sites if s.kind == "township")
    villages = [s.site_id for s in scenario.sites if s.kind == "village"]
    await auth.add_user(pool, "supervisor", "township", PASSWORD, site_id=office)
    await auth.add_user(pool, "director1", "station", PASSWORD, site_id=villages[0])
    return scenario


def _wire(d: object) -> bytes:
    from events import encode_event

    return encode_event(d.event)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def _serve(database_url: str, nats_url: str) -> AsyncIterator[str]:
    app = create_app(Settings(database_url=database_url, nats_url=nats_url), ApiSettings(connect_nats=False))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started, "the center's web server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def _login(page: Page, base: str, user: str) -> None:
    await page.goto(f"{base}/ui/login")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/")


async def test_overview_child_timeline_and_station_isolation(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """A supervisor sees the overview with figures and drawn charts and a child's timeline; a
    station director cannot open a child of another station (a 404, as for no child at all)."""
    scenario = await _load_township(pool)
    async with _serve(database_url, nats_url) as base:
        page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
        await _login(page, base, "supervisor")
        assert int(await page.text_content("#kpi-children") or "0") > 0
        for chart in ("#chart-guardianship", "#chart-reason", "#chart-site", "#chart-rules"):
            assert await page.locator(f"{chart} svg").count() == 1, chart
        assert await page.locator("#chart-guardianship svg path").count() >= 2
        # the page names its township, and the chart per site each site by its registered name, never ids
        office = next(s for s in scenario.sites if s.kind == "township")
        heading = await page.text_content("h1 small") or ""
        assert heading.startswith(f"{office.name} · ") and office.site_id.rsplit(".", 1)[0] not in heading, heading
        by_site = await page.text_content("#chart-site") or ""
        with_work = [s for s in scenario.sites if s.name in by_site]
        assert with_work and not any(s.site_id in by_site for s in scenario.sites), by_site
        assert await page.locator("#freshness tbody tr").count() == len(scenario.sites)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "township-overview.png"), full_page=True)

        await page.goto(f"{base}/ui/children")
        first = page.locator("#children-table tbody a").first
        await first.click()
        await page.wait_for_selector("#timeline")
        assert await page.locator("#timeline tbody tr").count() >= 2
        timeline = await page.text_content("#timeline") or ""
        assert "建档登记" in timeline

        villages = [s.site_id for s in scenario.sites if s.kind == "village"]
        other = next(p.draft["child_id"] for p in scenario.records
                     if p.site_id == villages[1] and p.draft["type"] == "ChildRegistered")
        own = next(p.draft["child_id"] for p in scenario.records
                   if p.site_id == villages[0] and p.draft["type"] == "ChildRegistered")
        station = await browser.new_page(locale="zh-CN")
        await _login(station, base, "director1")
        response = await station.goto(f"{base}/ui/child/{other}")
        assert response is not None and response.status == 404
        assert await station.locator("#timeline").count() == 0
        response = await station.goto(f"{base}/ui/child/{own}")
        assert response is not None and response.status == 200
        assert await station.locator("#timeline tbody tr").count() >= 1


async def test_dashboard_needs_a_login(pool: asyncpg.Pool, database_url: str, nats_url: str,
                                       browser: Browser) -> None:
    """Without a session the pages send the browser to the log-in form; a wrong password is
    refused with a message and no session cookie."""
    await _load_township(pool)
    async with _serve(database_url, nats_url) as base:
        page = await browser.new_page(locale="zh-CN")
        await page.goto(f"{base}/ui/")
        assert page.url.endswith("/ui/login")
        await page.fill("#username", "supervisor")
        await page.fill("#password", "wrong")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#login-error")
        cookies = await page.context.cookies()
        assert not any(c["name"] == "sw_token" for c in cookies)


async def test_conflicts_duplicates_and_quarantine_pages(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """The supervisor sees the scenario's open conflict and duplicate pair; keeping one side of
    the conflict and merging the pair go through the API as township events, after which the
    projections show the conflict closed; the quarantine page loads."""
    await _load_township(pool)
    async with _serve(database_url, nats_url) as base:
        page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
        await _login(page, base, "supervisor")
        await page.goto(f"{base}/ui/conflicts")
        assert await page.locator("#conflicts tbody form").count() >= 2, "each side of the conflict has a form"
        await page.locator("#conflicts tbody form button").first.click()
        await page.wait_for_url(f"{base}/ui/conflicts?done=1")
        await Runner(pool).catch_up()
        await page.goto(f"{base}/ui/conflicts")
        assert await page.locator("#conflicts tbody form").count() == 0, "the resolved conflict is gone"

        await page.goto(f"{base}/ui/duplicates")
        assert await page.locator("#duplicates tbody form button").count() == 1
        await page.locator("#duplicates tbody form button").click()
        await page.wait_for_url(f"{base}/ui/duplicates?done=1")
        async with pool.acquire() as conn:
            merges = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'ArchivesMerged'")
            resolutions = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'ConflictResolved'")
        assert (merges, resolutions) == (1, 1)

        response = await page.goto(f"{base}/ui/quarantine")
        assert response is not None and response.status == 200
        assert await page.locator("#quarantine").count() == 1
