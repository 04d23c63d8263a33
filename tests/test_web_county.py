"""The county's pages in a real Chromium on a real center: two simulated townships of one region side
by side, drill-down to a township and to a site, every page by name (no township or site id in
what the page shows), the figures equal to the API's, and the comparison export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page

from events import encode_event
from events.wire import up_subject
from projections.runner import Runner
from service.api import auth
from service.ingest import Inbound, commit_in, triage
from service.sites import register_site
from testbed.simulation import Scenario, generate, seal_all
from tests.browser import SCREENSHOTS, chromium
from tests.test_web_dashboard import PASSWORD, _serve

VIEW = {"width": 1366, "height": 768}
TOWNSHIPS = (("qingshi", "青石镇", 0, 11), ("liuwan", "柳湾乡", 4, 12))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def _county(pool: asyncpg.Pool) -> list[Scenario]:
    """Two simulated townships of region 'demo', stored through ingest and projected, and a county user."""
    scenarios = []
    for township, name, first_village, seed in TOWNSHIPS:
        sc = generate(children=30, villages=2, schools=1, days=60, seed=seed, township=township,
                      township_name=name, first_village=first_village)
        for site in sc.sites:
            await register_site(pool, site.site_id, site.kind, site.name, name)
        for events in seal_all(sc).values():
            items = [triage(Inbound(subject=up_subject(d.event.site_id), data=encode_event(d.event))) for d in events]
            async with pool.acquire() as conn, conn.transaction():
                await commit_in(conn, items)
        scenarios.append(sc)
    await Runner(pool).catch_up()
    await auth.add_user(pool, "county", "county", PASSWORD, region="demo")
    return scenarios


async def _login(browser: Browser, base: str, lang: str = "zh") -> Page:
    page = await browser.new_page(locale="zh-CN" if lang == "zh" else "en-US", viewport=VIEW)
    await page.goto(f"{base}/ui/login?lang={lang}")
    await page.fill("#username", "county")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/county")
    return page


async def _no_ids(page: Page, scenarios: list[Scenario]) -> str:
    """The page's visible text, checked to name no township and no site by id."""
    text = await page.inner_text("body")
    for sc in scenarios:
        assert sc.township_id not in text, (page.url, sc.township_id)
        for site in sc.sites:
            assert site.site_id not in text, (page.url, site.site_id)
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url
    return text


async def test_county_pages_compare_townships_and_drill_down_by_name(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    scenarios = await _county(pool)
    async with _serve(database_url, nats_url) as base:
        token = (await auth.issue_token(pool, "county", hours=1)).token
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
            doc = (await api.get("/county/rollups", params={"region": "demo", "period": "2025"})).json()
        want = {t["name"]: t["rollup"]["children_archived"] for t in doc["townships"]}
        assert set(want) == {"青石镇", "柳湾乡"} and all(want.values())

        page = await _login(browser, base)
        await page.goto(f"{base}/ui/county?period=2025")
        text = await _no_ids(page, scenarios)
        assert "全县各乡镇对比" in text
        rows = page.locator("#county-townships tbody tr")
        assert await rows.count() == 3  # two townships and the total
        shown = {}
        for i in range(2):
            row = rows.nth(i)
            shown[(await row.locator("th a").inner_text()).strip()] = int(
                (await row.locator("td").first.inner_text()).replace(",", ""))
        assert shown == want
        total = int((await rows.nth(2).locator("td").first.inner_text()).replace(",", ""))
        assert total == doc["total"]["children_archived"] == sum(want.values())
        assert "青石镇" in (await page.inner_html("#county-picked svg"))  # the chart names townships
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-county.png"), full_page=True)

        csv_href = await page.get_attribute("a[href*='/county/export/csv']", "href") or ""
        got = await page.request.get(f"{base}{csv_href}")
        assert got.status == 200 and "attachment" in got.headers["content-disposition"]
        lines = list(csv.reader(io.StringIO((await got.body()).decode("utf-8-sig"))))
        head = next(line for line in lines if line and line[0] == "项目")
        assert head[2:5] == ["柳湾乡", "青石镇", "全县合计"] or head[2:5] == ["青石镇", "柳湾乡", "全县合计"]
        archived = next(line for line in lines if line and line[-1] == "children_archived")
        assert {head[2]: int(archived[2]), head[3]: int(archived[3])} == want
        assert int(archived[4]) == sum(want.values())

        await page.click("#county-townships a:text('柳湾乡')")
        await page.wait_for_url("**/ui/county/township/**")
        text = await _no_ids(page, scenarios)
        assert "柳湾乡" in await page.inner_text("h1")
        liuwan = scenarios[1]
        names = [s.name for s in liuwan.sites]
        sites = [(await a.inner_text()).strip() for a in await page.locator("#township-sites tbody th a").all()]
        assert sorted(sites) == sorted(names)
        assert not any(s.name in text for s in scenarios[0].sites if s.name not in names)  # the other township's
        await page.click(f"#township-sites a:text('{liuwan.sites[1].name}')")
        await page.wait_for_url("**/ui/county/site/**")
        text = await _no_ids(page, scenarios)
        assert liuwan.sites[1].name in await page.inner_text("h1") and "柳湾乡" in text

        # The county reads no child: its pages link to none, and a child's page is refused.
        assert await page.locator("a[href*='/ui/child/']").count() == 0
        kid = next(p.draft["child_id"] for p in liuwan.records if p.draft.get("type") == "ChildRegistered")
        r = await page.goto(f"{base}/ui/child/{kid}")
        assert r is not None and r.status >= 400
        assert kid not in await page.inner_text("body") or r.status == 404

        # Another page's id in the path that is not of the region is a 404 page, a bad one a 400.
        r = await page.goto(f"{base}/ui/county/township/zz.none?period=2025")
        assert r is not None and r.status == 404
        r = await page.goto(f"{base}/ui/county/township/NOT-A-TOWNSHIP")
        assert r is not None and r.status == 400 and "township" in await page.inner_text("body")

        # The year-end summary of the whole county opens for the county too.
        r = await page.goto(f"{base}/ui/summary?period=2025")
        assert r is not None and r.status == 200

        en = await _login(browser, base, "en")
        await en.goto(f"{base}/ui/county?period=2025&lang=en")
        assert "side by side" in await _no_ids(en, scenarios)
