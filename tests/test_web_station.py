"""Station pages in a real Chromium: recording with no connection, and refusing bad input beside
the field, in Chinese."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, Page

from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats, free_port
from tests.browser import SCREENSHOTS, chromium, shouwang, stop, wait_for_port
from tests.station_kit import add_user, login

SITE = "demo.qingshi.v07"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def station(tmp_path: Path) -> tuple[str, int, Path]:
    """A village station whose NATS server is down: (base URL, NATS port, data dir)."""
    data = tmp_path / "station"
    nats_port = free_port()
    init = subprocess.run(
        [*shouwang_cmd(), "agent", "init", "--site", SITE, "--kind", "village", "--name", "青石村维权站",
         "--data", str(data), "--nats", f"nats://127.0.0.1:{nats_port}", "--actor", "director-07"],
        capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    add_user(data, "director-07", role="director")  # the pages need a log-in (tests/security/test_station_door.py)
    return str(data), nats_port, data


def shouwang_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "shouwang"]


@pytest.fixture
def served(station: tuple[str, int, Path], tmp_path: Path) -> AsyncIterator[str]:
    data, _, _ = station
    port = free_port()
    proc = shouwang("agent", "serve", "--data", data, "--port", str(port), log=tmp_path / "serve.log")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


async def _register_child(page: Page, base: str, name: str) -> str:
    await page.goto(f"{base}/record/ChildRegistered")
    await page.fill("#f-name", name)
    await page.select_option("#f-sex", "female")
    await page.fill("#f-birth_date", "2016-05-17")
    await page.fill("#f-household_village", "青石村")
    await page.check("input[name=reasons][value=both_parents_away]")
    await page.select_option("[id='f-guardian.type']", "grandparents")
    await page.fill("[id='f-guardian.name']", "石奶奶")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/child/*")
    return page.url.rsplit("/", 1)[1]


async def test_home_visit_recorded_offline_then_reaches_the_center(
    served: str, station: tuple[str, int, Path], browser: Browser, database_url: str, tmp_path: Path
) -> None:
    """With NATS down, a station registers a child and records a home visit through the forms;
    both show in the archive at once, and reach the center's store when the line comes back."""
    _, nats_port, _ = station
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, served, "director-07")
    child_id = await _register_child(page, served, "石小朵")
    assert await page.text_content("#child-name") == "石小朵"
    await page.goto(f"{served}/record/HomeVisitMade?child={child_id}")
    await page.fill("#f-visitor", "村儿童主任")
    await page.fill("#f-findings", "祖母身体尚可，孩子学习认真")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#saved")
    await page.goto(f"{served}/child/{child_id}")
    timeline = await page.text_content("#timeline")
    assert timeline is not None and "家访" in timeline and "建档登记" in timeline
    banner = await page.get_attribute("#sync-banner [data-pending]", "data-pending")
    assert banner == "2", "both events wait for the line"

    nats = EmbeddedNats(tmp_path / "nats", port=nats_port).start()
    try:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            await register_site(pool, SITE, "village", "青石村维权站")
            async with run_center(database_url, nats.url):
                store = EventStore(pool)
                for _ in range(600):
                    if len(await store.read_child(child_id)) == 2:
                        break
                    await asyncio.sleep(0.1)
                stored = await store.read_child(child_id)
                assert [s.event.type for s in stored] == ["ChildRegistered", "HomeVisitMade"]
                for _ in range(300):  # the receipt clears the banner
                    await page.goto(f"{served}/child/{child_id}")
                    if await page.get_attribute("#sync-banner [data-pending]", "data-pending") == "0":
                        break
                    await asyncio.sleep(0.1)
                assert await page.get_attribute("#sync-banner [data-pending]", "data-pending") == "0"
        finally:
            await pool.close()
    finally:
        nats.stop()


async def test_bad_resident_id_is_refused_beside_the_field(served: str, browser: Browser) -> None:
    """A resident ID with a wrong check digit is flagged while typing and refused on submit,
    with the message beside the field, in Chinese; nothing is recorded."""
    page = await browser.new_page(locale="zh-CN", viewport={"width": 420, "height": 900})  # a phone
    await login(page, served, "director-07")
    await page.goto(f"{served}/record/ChildRegistered")
    await page.fill("#f-name", "云若溪")
    await page.select_option("#f-sex", "male")
    await page.fill("#f-birth_date", "2016-05-17")
    await page.fill("#f-household_village", "柳湾村")
    await page.check("input[name=reasons][value=poverty]")
    await page.select_option("[id='f-guardian.type']", "relatives")
    wrong = "99991220160517001" + "0"  # the check digit for these 17 digits is not 0
    await page.type("#f-resident_id", wrong)
    live = await page.text_content("#err-resident_id")
    assert live is not None and "校验位" in live
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "station-form.png"), full_page=True)
    await page.click("button[type=submit]")
    await page.wait_for_selector(".error-summary")
    refused = await page.text_content("#err-resident_id")
    assert refused is not None and "校验位" in refused and "应为" in refused
    assert await page.input_value("#f-name") == "云若溪", "what the person typed is kept"
    await page.goto(served + "/")
    assert await page.get_attribute("#sync-banner [data-pending]", "data-pending") == "0"
