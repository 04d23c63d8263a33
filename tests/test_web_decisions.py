"""The township's decisions in a real Chromium on a real center: a supervisor settles a conflict
by reading what each side says, records "not the same child" for a proposed pair (gone for good,
also after a rebuild), merges another pair keeping the archive of their choice and undoes it;
every page passes axe-core (no serious or critical violation) in Chinese and in English."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page

from events import catalogue as c
from events.samples import SampleSite, fake_resident_id, sample_registration
from events.types import GuardianshipType
from projections.duplicates import duplicates
from projections.rebuild import rebuild
from tests.api_world import OFFICE, PASSWORD, S1, T0, TOWNSHIP, V1, V2, World, build_world, project
from tests.browser import SCREENSHOTS, chromium
from tests.test_web_dashboard import _serve

SITE_NAMES = {V1: "青石村维权站", V2: "柳湾村维权站", S1: "中心小学", OFFICE: "镇妇联"}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


def _fields(s: c.CareEventBase) -> dict[str, Any]:
    return {f: getattr(s, f) for f in s.__struct_fields__}


async def _world(pool: asyncpg.Pool) -> tuple[World, dict[str, str]]:
    """The API kit's township, its sites under their registry names, people who record under
    their own names, one conflict and two proposed duplicate pairs."""
    w = await build_world(pool)
    async with pool.acquire() as conn:
        for site, name in SITE_NAMES.items():
            await conn.execute("UPDATE sites SET name = $2 WHERE site_id = $1", site, name)
    w.writer(V1).actor = "shi-director"
    w.writers[S1] = SampleSite(S1, actor="bai-teacher")
    w.writer(V2).actor = "yun-director"
    assert w.registration_v1 is not None
    base = {"guardian": w.registration_v1.event.event_id}
    # Two sites change the guardian without knowing of each other: a conflict.
    await w.record(V1, c.GuardianChanged(child_id=w.child_v1, guardian=c.Guardian(
        type=GuardianshipType.GRANDPARENTS, name="石秀英", relation="外婆", phone="13800001111")),
        T0 + dt.timedelta(days=5), based_on=base)
    await w.record(S1, c.GuardianChanged(child_id=w.child_v1, guardian=c.Guardian(
        type=GuardianshipType.RELATIVES, name="石兰", relation="姑姑", phone="13900002222")),
        T0 + dt.timedelta(days=6), based_on=base)
    rng = random.Random(31)
    # Two children with one name, birth date and village, and different resident IDs: proposed, not one child.
    twin = sample_registration(rng, village_site=V1)
    twin = c.ChildRegistered(**{**_fields(twin), "name": "夏安宁", "household_village": "青石村"})
    other = c.ChildRegistered(**{**_fields(sample_registration(rng, village_site=V2)), "name": "夏安宁",
                                 "birth_date": twin.birth_date, "household_village": "青石村",
                                 "resident_id": fake_resident_id(rng, twin.birth_date)})
    await w.record(V1, twin, T0 + dt.timedelta(days=1))
    await w.record(V2, other, T0 + dt.timedelta(days=2))
    # One child registered at the village station and again at the school: same resident ID.
    first = c.ChildRegistered(**{**_fields(sample_registration(rng, village_site=V2)), "name": "舒子墨"})
    again = c.ChildRegistered(**{**_fields(sample_registration(rng, school_site=S1)), "name": "舒子墨",
                                 "birth_date": first.birth_date, "resident_id": first.resident_id,
                                 "household_village": first.household_village})
    await w.record(V2, first, T0 + dt.timedelta(days=1))
    await w.record(S1, again, T0 + dt.timedelta(days=3))
    await w.record(S1, c.TalkHeld(child_id=again.child_id, teacher="柏老师", record_card="谈心记录：想念父母"),
                   T0 + dt.timedelta(days=8))
    await project(pool)
    return w, {"twin": twin.child_id, "twin_other": other.child_id, "first": first.child_id,
               "again": again.child_id}


async def _login(page: Page, base: str, user: str) -> None:
    await page.goto(f"{base}/ui/login")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
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


async def _texts(page: Page, selector: str) -> list[str]:
    return [" ".join((t or "").split()) for t in await page.locator(selector).all_text_contents()]


async def test_a_supervisor_resolves_a_conflict_by_reading_both_values(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """The conflicts page names the child, the field in Chinese, what each side says, who recorded
    it where, and what it replaced; keeping the aunt's side with a note closes the conflict, which
    is then listed as resolved by the supervisor."""
    w, _ = await _world(pool)
    async with pool.acquire() as conn:
        name = await conn.fetchval("SELECT name FROM proj.archive WHERE child_id = $1", w.child_v1)
    async with _serve(database_url, nats_url) as base:
        page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
        await _login(page, base, "township")
        await page.goto(f"{base}/ui/conflicts")
        sides = page.locator("#conflicts tbody.conflict tr.side")
        assert await sides.count() == 2
        table = " ".join((await page.text_content("#conflicts") or "").split())
        assert name in table and "监护人" in table and "guardian" not in table and w.child_v1 not in table
        assert "青石村维权站" in table and "中心小学" in table
        values = await _texts(page, "#conflicts td.value")
        aunt = next(i for i, v in enumerate(values) if "姑姑 石兰" in v)
        grandma = next(i for i, v in enumerate(values) if "外婆 石秀英" in v)
        assert "13900002222" in values[aunt] and "亲朋监护" in values[aunt]
        assert "13800001111" in values[grandma] and "隔代监护" in values[grandma]
        row = " ".join((await sides.nth(aunt).text_content() or "").split())
        assert "bai-teacher" in row and "中心小学" in row and "北京时间" in row
        assert "外婆 石外婆" in row, "what the side knew: the registration's guardian it replaced"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-conflicts.png"), full_page=True)
        await _axe_clean(page, f"{base}/ui/conflicts")

        await sides.nth(aunt).locator("input[name=note]").fill("电话核实：外婆住院，姑姑照看")
        await sides.nth(aunt).locator("button").click()
        await page.wait_for_url(f"{base}/ui/conflicts?done=1")
        await project(pool)
        await page.goto(f"{base}/ui/conflicts")
        assert await page.locator("#conflicts tbody form").count() == 0, "the conflict left the list"
        resolved = " ".join((await page.text_content("#resolved tbody") or "").split())
        assert "姑姑 石兰" in resolved and "外婆 石秀英" in resolved and "township" in resolved
        assert "电话核实：外婆住院，姑姑照看" in resolved and "镇妇联" in resolved
        async with pool.acquire() as conn:
            kept = await conn.fetchval("SELECT payload->>'note' FROM events WHERE type = 'ConflictResolved'")
        assert kept == "电话核实：外婆住院，姑姑照看"
        await _axe_clean(page, f"{base}/ui/conflicts")
        await page.goto(f"{base}/ui/conflicts?lang=en")
        english = await page.text_content("main") or ""
        assert "Guardian" in english and "Resolved conflicts" in english


async def test_not_the_same_child_then_merge_and_undo(
    pool: asyncpg.Pool, database_url: str, nats_url: str, browser: Browser
) -> None:
    """Two archives side by side: one pair recorded as not the same child leaves the list for
    good (also after a rebuild of the projections); the other is merged keeping the school's
    archive, listed with both names, and the merge undone brings the pair back."""
    w, kids = await _world(pool)
    async with _serve(database_url, nats_url) as base:
        page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
        await _login(page, base, "township")
        await page.goto(f"{base}/ui/duplicates")
        pairs = page.locator("#duplicates tbody.pair")
        assert await pairs.count() == 2
        texts = [" ".join((await pairs.nth(i).text_content() or "").split()) for i in range(2)]
        twins = next(i for i, t in enumerate(texts) if "夏安宁" in t)
        same_id = next(i for i, t in enumerate(texts) if "舒子墨" in t)
        assert "姓名、出生日期、户籍村相同" in texts[twins] and "身份证号相同" in texts[same_id]
        assert "柳湾村维权站" in texts[same_id] and "中心小学" in texts[same_id]
        assert "resident_id" not in texts[same_id] and kids["first"] not in texts[same_id]
        assert "***" in texts[same_id], "resident IDs are masked"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-duplicates.png"), full_page=True)
        await _axe_clean(page, f"{base}/ui/duplicates")

        twin_pair = page.locator("#duplicates tbody.pair", has_text="夏安宁")
        await twin_pair.locator(".dismiss input").fill("身份证号不同，是两个孩子")
        await twin_pair.locator(".dismiss button").click()
        await page.wait_for_url(f"{base}/ui/duplicates?done=dismissed")
        await project(pool)
        await page.goto(f"{base}/ui/duplicates")
        assert await page.locator("#duplicates tbody.pair", has_text="夏安宁").count() == 0
        async with pool.acquire() as conn:
            dismissed = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'DuplicateDismissed'")
        assert dismissed == 1
        await rebuild(pool)
        await page.goto(f"{base}/ui/duplicates")
        assert await page.locator("#duplicates tbody.pair", has_text="夏安宁").count() == 0, "gone after a rebuild"
        proposed = {(p.child_a, p.child_b) for p in await duplicates(pool, TOWNSHIP)}
        assert tuple(sorted((kids["twin"], kids["twin_other"]))) not in proposed
        assert tuple(sorted((kids["first"], kids["again"]))) in proposed

        pair = page.locator("#duplicates tbody.pair", has_text="舒子墨")
        school = pair.locator(f"input[type=radio][value='{kids['again']}']")
        await school.check()
        await pair.locator("form.merge-form input[name=note]").fill("同一身份证号，学校档案更全")
        await pair.locator("form.merge-form button").click()
        await page.wait_for_url(f"{base}/ui/duplicates?done=1")
        await project(pool)
        await page.goto(f"{base}/ui/duplicates")
        assert await page.locator("#duplicates tbody.pair").count() == 0
        merged = page.locator("#merges tbody tr.merged")
        assert await merged.count() == 1
        row = " ".join((await merged.text_content() or "").split())
        assert row.count("舒子墨") == 2 and "township" in row and "镇妇联" in row and "北京时间" in row
        async with pool.acquire() as conn:
            payload = await conn.fetchrow("SELECT payload->>'kept_child_id' AS kept, payload->>'merged_child_id' AS "
                                          "merged FROM events WHERE type = 'ArchivesMerged'")
        assert (payload["kept"], payload["merged"]) == (kids["again"], kids["first"])
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-merges.png"), full_page=True)
        await _axe_clean(page, f"{base}/ui/duplicates")

        await merged.locator("input[name=note]").fill("合并错了")
        await merged.locator("button").click()
        await page.wait_for_url(f"{base}/ui/duplicates?done=undone#merges")
        await project(pool)
        await page.goto(f"{base}/ui/duplicates")
        assert await page.locator("#merges tbody tr.merged").count() == 0
        undone = " ".join((await page.text_content("#merges tbody tr.undone") or "").split())
        assert "已撤销" in undone and "合并错了" in undone
        assert await page.locator("#duplicates tbody.pair", has_text="舒子墨").count() == 1, "the pair is back"
        assert w.child_v1  # the world's other children stay as they were

        auditor = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
        await _login(auditor, base, "auditor")
        for path in ("/ui/duplicates", "/ui/conflicts"):
            await auditor.goto(f"{base}{path}")
            assert await auditor.locator("main form").count() == 0, "the auditor reads and decides nothing"
            await _axe_clean(auditor, f"{base}{path}")
