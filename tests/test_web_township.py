"""The township's and the auditor's pages in a real Chromium on a real center: the children list
filtered down to one site's overdue children, the read log, the hash chains, a child as of a
past date, the quarantine explained and acted on, and an axe-core check of every page in
Chinese and English. Each page's screenshot goes to docs/screenshots/."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page

from events.envelope import encode_event
from events.samples import SampleSite, sample_registration
from events.wire import up_subject
from service.api import auth
from service.ingest import Inbound, commit_in, triage
from service.sites import register_site
from testbed.simulation import Scenario
from tests.browser import SCREENSHOTS, chromium
from tests.test_web_dashboard import PASSWORD, _load_township, _serve

VIEW = {"width": 1366, "height": 768}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def _township(pool: asyncpg.Pool) -> tuple[Scenario, str]:
    """The simulated township, with an auditor and an admin besides the supervisor."""
    scenario = await _load_township(pool)
    office = next(s.site_id for s in scenario.sites if s.kind == "township")
    township = office.rsplit(".", 1)[0]
    await auth.add_user(pool, "auditor", "auditor", PASSWORD, township=township)
    await auth.add_user(pool, "admin", "admin", PASSWORD)
    return scenario, township


async def _login(browser: Browser, base: str, user: str, lang: str = "zh") -> Page:
    page = await browser.new_page(locale="zh-CN" if lang == "zh" else "en-US", viewport=VIEW)
    await page.goto(f"{base}/ui/login?lang={lang}")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/")
    return page


async def _api(pool: asyncpg.Pool, base: str, user: str) -> httpx.AsyncClient:
    token = (await auth.issue_token(pool, user, hours=1)).token
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)


async def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def test_children_filtered_to_one_sites_overdue_children(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """Filtering the children list by a village station and 'overdue' shows the API's count and
    only overdue children of that station, by name; the roster CSV holds the same children."""
    scenario, _ = await _township(pool)
    village = next(s for s in scenario.sites if s.kind == "village")
    async with _serve(database_url, nats_url) as base:
        page = await _login(browser, base, "supervisor")
        await page.goto(f"{base}/ui/children")
        await page.select_option("select[name=site_id]", label=village.name)
        await page.check("input[name=overdue]")
        await page.click("#apply-filters")
        await page.wait_for_url("**/ui/children?*")
        async with await _api(pool, base, "supervisor") as api:
            r = await api.get("/children", params={"site_id": village.site_id, "overdue": "true", "sort": "name",
                                                   "limit": 200})
            assert r.status_code == 200
            want = r.json()
            bad = await api.get("/children", params={"grade_band": "10-12"})
            assert bad.status_code == 400 and bad.json()["field"] == "grade_band"
        count = await page.text_content("#children-count") or ""
        assert count == f"共 {want['total']} 名儿童", count
        assert want["total"] > 0
        rows = page.locator("#children-table tbody tr")
        assert await rows.count() == min(want["total"], 50)
        for i in range(await rows.count()):
            row = rows.nth(i)
            assert await row.locator(".overdue-rules .tag").count() >= 1
            assert village.name in (await row.locator("td").nth(1).text_content() or "")
        shown = [await rows.nth(i).get_attribute("data-child") for i in range(await rows.count())]
        assert shown == [c["child_id"] for c in want["items"][:50]]
        await _shot(page, "dashboard-children.png")

        href = await page.get_attribute("#roster-csv", "href") or ""
        roster = await page.request.get(f"{base}{href}")
        assert roster.status == 200, await roster.text()
        assert "attachment" in roster.headers["content-disposition"]
        lines = list(csv.reader(io.StringIO((await roster.body()).decode("utf-8-sig"))))
        assert lines[0][0] == "姓名" and len(lines) == want["total"] + 1
        assert all("*" in line[3] or not line[3] for line in lines[1:]), "resident IDs are masked in the roster"


async def test_auditor_read_log_chains_and_a_child_as_of_a_past_date(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """After the supervisor opens a child, the auditor finds that read in the read log by the
    child's name and today's date, sees every site's hash chain verified, and opens the child
    as of a past date with fewer timeline lines than today."""
    scenario, _ = await _township(pool)
    async with _serve(database_url, nats_url) as base:
        supervisor = await _login(browser, base, "supervisor")
        await supervisor.goto(f"{base}/ui/children?sort=last_contact&descending=1")
        href = await supervisor.locator("#children-table tbody a").first.get_attribute("href") or ""
        child_id = href.rsplit("/", 1)[1]
        await supervisor.goto(f"{base}{href}")
        name = await supervisor.text_content("#child-name") or ""
        sites_text = await supervisor.text_content("#child-sites") or ""
        assert "gx-" not in sites_text and sites_text, "the child's sites are shown by name"

        auditor = await _login(browser, base, "auditor")
        today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
        await auditor.goto(f"{base}/ui/reads")
        await auditor.fill("input[name=child]", name)
        await auditor.fill("input[name=from]", today)
        await auditor.fill("input[name=to]", today)
        await auditor.click("#reads-go")
        await auditor.wait_for_load_state()
        if await auditor.locator("#reads-choices").count():
            await auditor.click(f"#reads-choices a[href*='{child_id}']")
            await auditor.wait_for_load_state()
        found = auditor.locator(f"#reads tbody tr[data-child='{child_id}']")
        assert await found.count() >= 1
        assert "supervisor" in (await found.first.text_content() or "")
        assert name in (await found.first.text_content() or "")
        await _shot(auditor, "dashboard-reads.png")

        await auditor.goto(f"{base}/ui/chains")
        assert await auditor.locator("#chains tbody tr").count() == len(scenario.sites)
        assert await auditor.locator("#chains tbody tr.ok").count() == len(scenario.sites)
        assert "全部" in (await auditor.text_content("#chains-summary") or "")
        await _shot(auditor, "dashboard-chains.png")

        await auditor.goto(f"{base}/ui/child/{child_id}")
        now_lines = await auditor.locator("#timeline tbody tr").count()
        whens = [await auditor.locator("#timeline tbody tr td").nth(i * 5).text_content() or ""
                 for i in range(now_lines)]
        days = sorted({w.strip()[:10] for w in whens})
        past = days[len(days) // 2]
        await auditor.fill("#asof-form input[name=as_of]", past)
        await auditor.check("#asof-form input[value=occurred]")
        await auditor.click("#asof-form button")
        await auditor.wait_for_selector("#asof-shown")
        then_lines = await auditor.locator("#timeline tbody tr").count()
        assert 0 < then_lines < now_lines
        assert past in (await auditor.text_content("#asof-shown") or "")
        await _shot(auditor, "dashboard-child.png")

        await auditor.goto(f"{base}/ui/asof?day={past}&clock=occurred&period={past[:4]}")
        assert int(await auditor.text_content("#asof-children") or "0") > 0
        await _shot(auditor, "dashboard-asof.png")


async def _refused_messages(pool: asyncpg.Pool, scenario: Scenario, township: str) -> tuple[str, str]:
    """Two messages the center refuses: a registration from a station not registered yet, and an
    event that claims another site than the one whose line it came on. Returns the new site's id
    and the forged event's id."""
    new_site = f"{township}.v99"
    writer = SampleSite(new_site, actor="staff-v99")
    reg = writer.write(sample_registration(random.Random(5), village_site=new_site),
                       dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    villages = [s.site_id for s in scenario.sites if s.kind == "village"]
    forged = SampleSite(villages[0], actor="staff-x").write(sample_registration(random.Random(6),
                                                                                 village_site=villages[0]))
    items = [triage(Inbound(subject=up_subject(new_site), data=encode_event(reg.event))),
             triage(Inbound(subject=up_subject(villages[1]), data=encode_event(forged.event)))]
    async with pool.acquire() as conn, conn.transaction():
        await commit_in(conn, items)
    return new_site, forged.event.event_id


async def test_quarantine_explained_in_chinese_replayed_and_dismissed(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """The quarantine page says in Chinese what was wrong with each refused message, which site
    sent it and when; the admin registers the missing station and replays its message (stored),
    and dismisses the forged one with a reason kept on the row; the sites page lists every site,
    silent longest first, each with its 90-day chart."""
    scenario, township = await _township(pool)
    new_site, forged_id = await _refused_messages(pool, scenario, township)
    async with _serve(database_url, nats_url) as base:
        supervisor = await _login(browser, base, "supervisor")
        await supervisor.goto(f"{base}/ui/quarantine")
        text = await supervisor.text_content("#quarantine") or ""
        assert "冒用站点" in text
        assert await supervisor.locator("#quarantine button").count() == 0, "township staff only read"

        admin = await _login(browser, base, "admin")
        await admin.goto(f"{base}/ui/quarantine")
        text = await admin.text_content("#quarantine") or ""
        assert f"发送的站点“{new_site}”尚未在中心登记" in text and "冒用站点" in text
        await _shot(admin, "dashboard-quarantine.png")

        await register_site(pool, new_site, "village", "石门村留守儿童之家")
        await admin.goto(f"{base}/ui/quarantine")
        row = admin.locator("#quarantine section", has_text="石门村留守儿童之家")
        await row.locator("button.replay").click()
        await admin.wait_for_url("**/ui/quarantine?done=stored")
        assert "记录已入库" in (await admin.text_content("#quarantine-done") or "")

        forged = admin.locator("#quarantine section", has_text="冒用站点")
        await forged.locator("input[name=note]").fill("测试时伪造的消息")
        await forged.locator("button.dismiss").click()
        await admin.wait_for_url("**/ui/quarantine?done=dismissed")
        async with pool.acquire() as conn:
            rows = {r["event_id"]: r for r in await conn.fetch(
                "SELECT event_id::text, status, resolution FROM quarantine ORDER BY id")}
        assert rows[forged_id]["status"] == "dismissed"
        assert "测试时伪造的消息" in rows[forged_id]["resolution"] and "admin" in rows[forged_id]["resolution"]
        assert sorted(r["status"] for r in rows.values()) == ["dismissed", "replayed"]

        await admin.goto(f"{base}/ui/sites")
        assert await admin.locator("#sites tbody tr").count() == len(scenario.sites) + 1
        assert await admin.locator("#sites tbody tr svg.spark").count() == len(scenario.sites) + 1
        firsts = await admin.locator("#sites tbody tr").evaluate_all("rs => rs.map(r => r.dataset.site)")
        assert len(firsts) == len(set(firsts))
        await _shot(admin, "dashboard-sites.png")


async def test_every_page_passes_axe_in_chinese_and_english(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """axe-core finds no serious or critical violation on any of these pages, in Chinese and in
    English; none scrolls sideways on a 1366x768 screen or a tablet; the year-end summary opens on
    the latest year with work in it."""
    scenario, township = await _township(pool)
    await _refused_messages(pool, scenario, township)
    axe = Axe()
    async with _serve(database_url, nats_url) as base:
        async with await _api(pool, base, "supervisor") as api:
            child_id = (await api.get("/children", params={"limit": 1})).json()["items"][0]["child_id"]
            sites = (await api.get("/sites")).json()["items"]
        day = max(s["newest_occurred_at"] for s in sites if s.get("newest_occurred_at"))[:10]
        newest = day[:4]
        pages = {
            "supervisor": ["/ui/", "/ui/children", "/ui/children?overdue=1&sort=site", f"/ui/child/{child_id}",
                           "/ui/sites", "/ui/quarantine", "/ui/summary", "/ui/conflicts", "/ui/duplicates",
                           "/ui/rules"],
            "auditor": ["/ui/reads", "/ui/chains", f"/ui/asof?day={day}&clock=occurred",
                        f"/ui/child/{child_id}?as_of={day}&clock=occurred"],
            "admin": ["/ui/quarantine"],
        }
        failures: list[str] = []
        for lang in ("zh", "en"):
            for user, paths in pages.items():
                page = await _login(browser, base, user, lang)
                for path in paths:
                    response = await page.goto(f"{base}{path}")
                    assert response is not None and response.status == 200, (path, response and response.status)
                    if path == "/ui/summary":
                        assert newest in (await page.text_content("h1") or ""), "the latest year with data"
                        assert await page.locator("#summary-draft .fig").count() > 30  # the drafted summary
                        if lang == "zh":
                            await _shot(page, "dashboard-summary.png")
                    results = await axe.run(page)
                    for v in results.response["violations"]:
                        if v["impact"] in ("serious", "critical"):
                            failures.append(f"{lang} {path}: {v['id']} ({v['impact']}): "
                                            f"{[n['target'] for n in v['nodes'][:3]]}")
                    # Usable on a 1366x768 screen and on a tablet: the page itself never scrolls
                    # sideways (wide tables scroll inside their own box).
                    for width, height in ((1366, 768), (768, 1024)):
                        await page.set_viewport_size({"width": width, "height": height})
                        wide = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                        if wide > 1:
                            failures.append(f"{lang} {path} at {width}x{height}: {wide}px of sideways scrolling")
                    await page.set_viewport_size(VIEW)
                await page.close()
        assert not failures, "\n".join(failures)
