"""Every station page of `shouwang agent serve` (the children list, a child, the overdue list, every
record form, the roster import with its refusals, "this week") passes axe-core with no serious or
critical violation, at phone size and on a desktop, in Chinese and in English, in a real Chromium."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from axe_playwright_python.async_playwright import Axe
from openpyxl import load_workbook
from playwright.async_api import Browser, Page

from events.envelope import parse_drafts
from sync_agent.config import log_path
from sync_agent.forms import forms_for
from sync_agent.locallog import LocalLog
from sync_agent.roster_import import template_bytes
from testbed.embedded import free_port
from tests.browser import chromium, shouwang, stop, wait_for_port
from tests.station_kit import add_user, login

SITE = "demo.qingshi.v07"
USER = "director-07"
CHILD = "c-" + "b" * 32
VIEWPORTS = {"phone": {"width": 375, "height": 667}, "desktop": {"width": 1280, "height": 800}}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A village station holding a child with a visit, another overdue for months, and a user."""
    data = tmp_path / "station"
    init = subprocess.run(
        [sys.executable, "-m", "shouwang", "agent", "init", "--site", SITE, "--kind", "village", "--name",
         "青石村维权站", "--data", str(data), "--nats", f"nats://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    add_user(data, USER, role="director")
    long_ago = (dt.date.today().replace(day=1) - dt.timedelta(days=100)).isoformat()
    drafts = [
        {"type": "ChildRegistered", "child_id": CHILD, "name": "石小朵", "sex": "female", "birth_date": "2016-05-17",
         "resident_id": "110105201605170023", "household_village": "青石村", "school": "青石小学", "grade": 3,
         "reasons": ["both_parents_away"], "guardian": {"type": "grandparents", "name": "石奶奶", "relation": "祖母",
                                                        "phone": "13800000001"},
         "parents": [{"relation": "父亲", "work_place": "广东东莞", "phone": "13900000001"}],
         "occurred_at": f"{long_ago}T09:00:00+08:00"},
        {"type": "HomeVisitMade", "child_id": CHILD, "visitor": "村儿童主任", "findings": "祖母身体尚可",
         "occurred_at": f"{long_ago}T15:00:00+08:00"},
        {"type": "ChildRegistered", "child_id": "c-" + "c" * 32, "name": "林小溪", "sex": "male",
         "birth_date": "2014-09-01", "household_village": "林家坳", "reasons": ["orphan"],
         "guardian": {"type": "relatives", "name": "林叔叔"}, "occurred_at": f"{long_ago}T10:00:00+08:00"},
    ]
    with LocalLog(log_path(data), SITE) as log:
        log.record(parse_drafts(msgspec.json.encode(drafts)), default_actor=USER)
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), "--no-sync",
                    log=tmp_path / "serve.log")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def _bad_sheet() -> bytes:
    """The template with one row missing most of what the registration form requires."""
    wb = load_workbook(io.BytesIO(template_bytes()))
    ws = wb.worksheets[0]
    ws.cell(row=2, column=1, value="石小满")
    ws.cell(row=2, column=3, value="2016-02-30")
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


async def _violations(axe: Axe, page: Page, label: str) -> list[str]:
    results = await axe.run(page)
    return [f"{label}: {v['id']} ({v['impact']}): {[n['target'] for n in v['nodes'][:3]]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


async def test_every_station_page_passes_axe(served: str, browser: Browser, tmp_path: Path) -> None:
    """axe-core finds no serious or critical violation on any station page, phone and desktop,
    Chinese and English, the import's refusal list included."""
    axe = Axe()
    paths = ["/", f"/child/{CHILD}", "/overdue", "/this-week", "/import",
             *(f"/record/{t}" for t, f in forms_for("village").items() if f.listed),  # the forms a village shows
             f"/record/HomeVisitMade?child={CHILD}"]
    sheet = tmp_path / "bad.xlsx"
    sheet.write_bytes(_bad_sheet())
    failures: list[str] = []
    for lang, locale in (("zh", "zh-CN"), ("en", "en-US")):
        for size, viewport in VIEWPORTS.items():
            page = await browser.new_page(locale=locale, viewport=viewport)  # type: ignore[arg-type]
            await login(page, served, USER)
            await page.goto(f"{served}/?lang={lang}")
            for path in paths:
                response = await page.goto(f"{served}{path}")
                if response is None or response.status != 200:
                    failures.append(f"{lang} {size} {path}: HTTP {response and response.status}")
                    continue
                failures += await _violations(axe, page, f"{lang} {size} {path}")
            await page.goto(f"{served}/import")
            await page.set_input_files("#import-file", str(sheet))
            await page.click("#import-form button[type=submit]")
            await page.wait_for_selector("#import-problems")
            failures += await _violations(axe, page, f"{lang} {size} POST /import (refused)")
            await page.close()
    assert not failures, "\n".join(failures)
