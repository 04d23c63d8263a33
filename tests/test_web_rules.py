"""The township's rules page in a real Chromium on a real center: each rule in Chinese with whom
it applies to and its figures; a township supervisor changes a rule from a day on (an event of
the office) and the figures follow; a station sees its own figures and no form; axe-core clean
in Chinese and in English."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
from playwright.async_api import Browser

from events import catalogue as c
from events.types import PartnerKind
from tests.api_world import T0, V1, build_world, project
from tests.browser import chromium
from tests.test_web_dashboard import _serve
from tests.test_web_decisions import _axe_clean, _login


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def test_a_supervisor_changes_a_rule_on_the_dashboard(pool: asyncpg.Pool, database_url: str, nats_url: str,
                                                            browser: Browser) -> None:
    """Paired with a proxy parent on 2 March and visited 5 March and 3 April: for 2026 judged on
    31 May, April and May due, April met (50%); the supervisor asks two visits a month from
    1 April: none met; the station's page shows the same figures for its site, with no form."""
    w = await build_world(pool)
    await w.record(V1, c.PairingStarted(pairing_id="p-" + "c" * 32, child_id=w.child_v1,
                                        partner_kind=PartnerKind.PROXY_PARENT, partner_name="云晓"), T0)
    await w.record(V1, c.HomeVisitMade(child_id=w.child_v1, visitor="云晓"), T0 + dt.timedelta(days=32))
    await project(pool)
    async with _serve(database_url, nats_url) as base:
        page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
        await _login(page, base, "township")
        url = f"{base}/ui/rules?period=2026&as_of=2026-05-31"
        await page.goto(url)
        visit = page.locator("#rules section.rule[data-rule=proxy_visit]")
        assert "代管家长每月家访一次" in (await visit.locator("h2").text_content() or "")
        # whom it applies to in the catalogue's word for the partner (events/labels.py), the rule's name its own
        assert await visit.locator(".rule-applies").text_content() == "有代理家长结对的建档儿童"
        assert await visit.locator(".rule-every").text_content() == "每月至少 1 次"
        assert [await visit.locator(f"td.{k}").text_content() for k in ("due", "met", "pct")] == ["2", "1", "50.0%"]
        assert await page.locator("#rules section.rule[data-rule=guardian_meeting]").count() == 1
        await _axe_clean(page, url)
        await page.goto(url)
        await visit.locator("details.rule-change summary").click()
        form = visit.locator("form.change-form")
        await form.locator("input[name=at_least]").fill("2")
        await form.locator("input[name=effective_from]").fill("2026-04-01")
        await form.locator("input[name=zh]").fill("代管家长每月家访两次")
        await form.locator("input[name=en]").fill("proxy parent: two home visits a month")
        await form.locator("input[name=note]").fill("加密家访")
        await form.locator("button").click()
        await page.wait_for_url(f"{base}/ui/rules?done=*")
        assert "2026-04-01" in (await page.text_content("#rules-done") or "")
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT site_id, actor, payload FROM events WHERE type = 'FollowUpRuleSet'")
        assert row is not None and row["actor"] == "township"
        await page.goto(url)
        assert [await visit.locator(f"td.{k}").text_content() for k in ("due", "met")] == ["2", "0"]
        assert await visit.locator(".rule-every").text_content() == "每月至少 2 次"
        # who is overdue, by name (the archive's), never by id
        name = await pool.fetchval("SELECT name FROM proj.archive WHERE child_id = $1", w.child_v1)
        late = visit.locator("ul.rule-overdue li a")
        assert name and [await late.text_content()] == [name]
        assert w.child_v1 not in (await visit.locator("ul.rule-overdue").text_content() or "")
        heading = await visit.locator("h2").text_content() or ""
        assert "代管家长每月家访两次" in heading and "自 2026-04-01 起施行" in heading

        # the school calendar: the national pattern until the supervisor sets the township's own
        assert "全国通行安排" in (await page.text_content("#calendar") or "")
        await page.locator("#calendar details.calendar-change summary").click()
        cal = page.locator("form.calendar-form")
        await cal.locator("input[name=school_year]").fill("2025")
        for name, day in (("autumn_first", "2025-09-01"), ("autumn_last", "2026-01-16"),
                          ("spring_first", "2026-02-02"), ("spring_last", "2026-07-03")):
            await cal.locator(f"input[name={name}]").fill(day)
        await cal.locator("button").click()
        await page.wait_for_url(f"{base}/ui/rules?done=*")
        assert "2025 学年校历已设定" in (await page.text_content("#rules-done") or "")
        async with pool.acquire() as conn:
            kept = await conn.fetchval("SELECT payload->'calendar' FROM events WHERE type = 'SchoolCalendarSet'")
        assert b'"2026-02-02"' in kept

        station = await browser.new_page(locale="zh-CN")
        await _login(station, base, "station1")
        await station.goto(url)
        mine = station.locator("#rules section.rule[data-rule=proxy_visit]")
        assert [await mine.locator(f"td.{k}").text_content() for k in ("due", "met")] == ["2", "0"]
        assert await station.locator("form.change-form").count() == 0
        await station.goto(f"{url}&lang=en")
        english = await station.text_content("main") or ""
        assert "proxy parent: two home visits a month" in english and "at least 2 a month" in english
