"""The station's roster import (花名册, sync_agent/roster_import.py) and its "this week" list
(sync_agent/roster_pages.py), through a real `shouwang agent serve` in a real Chromium: the
template, all-or-nothing imports with every problem by row and column in Chinese, importing
twice, refused files, and the children due and overdue with links to their forms."""

from __future__ import annotations

import calendar
import datetime as dt
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from openpyxl import Workbook, load_workbook
from playwright.async_api import Browser, Page

from events.catalogue import ChildRegistered
from events.envelope import care_of, parse_drafts
from sync_agent.config import log_path
from sync_agent.locallog import LocalLog
from sync_agent.roster_import import COLUMNS
from testbed.embedded import free_port
from tests.browser import chromium, shouwang, stop, wait_for_port
from tests.station_kit import add_user, login

SITE = "demo.qingshi.v07"
USER = "director-07"
HEADERS = [c.header for c in COLUMNS]
# Made-up children, as a station's roster would list them (resident IDs pass GB 11643's check).
GOOD_ROWS: list[dict[str, object]] = [
    {"姓名": "石小朵", "性别": "女", "出生日期": "2016-05-17", "户籍村": "青石村", "学校": "青石小学", "年级": 3,
     "班级": "2班", "关爱原因": "父母均外出、贫困", "监护类型": "隔代监护（祖辈）", "监护人姓名": "石奶奶",
     "与儿童关系": "祖母", "监护人电话": "13800000001", "父亲务工地点": "广东东莞", "父亲电话": "13900000001",
     "母亲务工地点": "广东深圳"},
    {"姓名": "石小川", "性别": "男", "出生日期": dt.datetime(2015, 3, 2), "身份证号": "110105201503020016",
     "户籍村": "青石村", "学校": "青石小学", "年级": "4", "关爱原因": "父母一方外出", "监护类型": "单亲监护",
     "监护人姓名": "石妈妈", "与儿童关系": "母亲"},
    {"姓名": "林小雨", "性别": "女", "出生日期": "2014/9/1", "户籍村": "林家坳", "关爱原因": "父母均外出",
     "监护类型": "亲朋监护", "监护人姓名": "林叔叔", "与儿童关系": "叔叔", "母亲务工地点": "浙江义乌",
     "母亲电话": "13700000003"},
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A village station's data directory with one staff account (NATS never reachable)."""
    data = tmp_path / "station"
    init = subprocess.run(
        [sys.executable, "-m", "shouwang", "agent", "init", "--site", SITE, "--kind", "village", "--name",
         "青石村维权站", "--data", str(data), "--nats", f"nats://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    add_user(data, USER, role="director")
    return data


@pytest.fixture
def served(data: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), "--no-sync",
                    log=tmp_path / "serve.log")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def _registered(data: Path) -> list[str]:
    """The names of the children the station's own log registered, in order."""
    with LocalLog(log_path(data), SITE) as log:
        cares = [care_of(e.event) for e in log.read_site(SITE, 1, 100_000)]
    return [c.name for c in cares if isinstance(c, ChildRegistered)]


def _sheet(rows: list[dict[str, object]], headers: list[str] = HEADERS) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "儿童花名册"
    for col, header in enumerate(headers, start=1):
        ws.cell(row=1, column=col, value=header)
    for r, row in enumerate(rows, start=2):
        for col, header in enumerate(headers, start=1):
            if header in row:
                ws.cell(row=r, column=col, value=row[header])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


async def _page(browser: Browser, base: str) -> Page:
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, base, USER)
    return page


async def _upload(page: Page, base: str, tmp_path: Path, name: str, content: bytes) -> int:
    """Upload a file through the import page's form; the response's status."""
    path = tmp_path / name
    path.write_bytes(content)
    await page.goto(f"{base}/import")
    await page.set_input_files("#import-file", str(path))
    async with page.expect_response(lambda r: r.url.endswith("/import") and r.request.method == "POST") as info:
        await page.click("#import-form button[type=submit]")
    response = await info.value
    await page.wait_for_load_state()
    return response.status


async def test_template_downloads_and_reimports_empty(served: str, data: Path, browser: Browser,
                                                      tmp_path: Path) -> None:
    """The template downloads from the import page with the Chinese headers, and importing it as it
    is registers nobody and says the sheet lists no child."""
    page = await _page(browser, served)
    await page.goto(f"{served}/import")
    async with page.expect_download() as info:
        await page.click("#import-template")
    download = await info.value
    assert download.suggested_filename.endswith(".xlsx")
    saved = tmp_path / "template.xlsx"
    await download.save_as(saved)
    wb = load_workbook(saved)
    header = [c.value for c in wb.worksheets[0][1]]
    assert header[:4] == ["姓名", "性别", "出生日期", "身份证号"]
    assert {"户籍村", "学校", "年级", "班级", "关爱原因", "监护类型", "监护人姓名", "与儿童关系", "监护人电话",
            "父亲务工地点", "父亲电话", "母亲务工地点", "母亲电话"} <= set(header)
    assert await _upload(page, served, tmp_path, "empty.xlsx", saved.read_bytes()) == 200
    assert "没有填写任何儿童" in (await page.text_content("#import-result") or "")
    assert _registered(data) == []


async def test_good_sheet_registers_every_row(served: str, data: Path, browser: Browser, tmp_path: Path) -> None:
    """A sheet of three good rows registers all three children in the local log (the logged-in
    user as actor, parents from the father's and mother's columns) and lists them by name."""
    page = await _page(browser, served)
    assert await _upload(page, served, tmp_path, "roster.xlsx", _sheet(GOOD_ROWS)) == 200
    assert "已登记 3 个儿童" in (await page.text_content("#import-result") or "")
    assert await page.locator("#import-registered li").all_text_contents() == ["石小朵", "石小川", "林小雨"]
    assert _registered(data) == ["石小朵", "石小川", "林小雨"]
    with LocalLog(log_path(data), SITE) as log:
        events = [e.event for e in log.read_site(SITE, 1, 100)]
    assert {e.actor for e in events} == {USER}
    first = care_of(events[0])
    assert isinstance(first, ChildRegistered)
    assert [(p.relation, p.work_place) for p in first.parents] == [("父亲", "广东东莞"), ("母亲", "广东深圳")]
    assert first.guardian.type == "grandparents" and first.reasons == ["both_parents_away", "poverty"]
    await page.click("#import-registered li >> text=石小川")
    await page.wait_for_url(f"{served}/child/*")
    assert "石小川" in (await page.text_content("main") or "")


async def test_one_bad_row_refuses_the_whole_sheet(served: str, data: Path, browser: Browser,
                                                   tmp_path: Path) -> None:
    """A sheet with one bad row registers nobody, and the page lists each problem of that row by
    row number and column (letter and Chinese header), in Chinese."""
    bad: dict[str, object] = {**GOOD_ROWS[1], "出生日期": "2015-13-40", "父亲务工地点": "江苏苏州",
                              "父亲电话": "打电话", "监护类型": "爷爷带", "性别": ""}
    page = await _page(browser, served)
    status = await _upload(page, served, tmp_path, "roster.xlsx", _sheet([GOOD_ROWS[0], bad, GOOD_ROWS[2]]))
    assert status == 422
    verdict = await page.text_content("#import-refused .import-verdict") or ""
    assert "没有导入" in verdict and "都没有登记" in verdict
    problems = await page.locator("#import-problems tbody tr").evaluate_all(
        "rs => rs.map(r => [r.dataset.row, r.dataset.column, r.innerText])")
    assert {(row, col) for row, col, _ in problems} == {("3", "B"), ("3", "C"), ("3", "J"), ("3", "O")}
    text = {col: line for _, col, line in problems}
    assert "第 3 行" in text["C"] and "出生日期" in text["C"] and "日期格式不对" in text["C"]
    assert "性别" in text["B"] and "此项必填" in text["B"]
    assert "监护类型" in text["J"] and "请从列表中选择" in text["J"]
    assert "父亲电话" in text["O"] and "电话号码格式不对" in text["O"]
    assert _registered(data) == []


async def test_same_sheet_twice_registers_nobody_twice(served: str, data: Path, browser: Browser,
                                                       tmp_path: Path) -> None:
    """Importing the same sheet again registers nobody: the page says every child is already held
    and skipped; a third import with one new row adds only that child."""
    page = await _page(browser, served)
    sheet = _sheet(GOOD_ROWS)
    assert await _upload(page, served, tmp_path, "roster.xlsx", sheet) == 200
    assert await _upload(page, served, tmp_path, "roster.xlsx", sheet) == 200
    result = await page.text_content("#import-result") or ""
    assert "没有需要新登记的儿童" in result and "3 个儿童本站已有档案" in result and "没有重复登记" in result
    assert await page.get_attribute("#import-already", "data-n") == "3"
    new: dict[str, object] = {"姓名": "林小风", "性别": "男", "出生日期": "2013-01-20", "户籍村": "林家坳",
                              "关爱原因": "孤儿", "监护类型": "无人监护"}
    assert await _upload(page, served, tmp_path, "roster.xlsx", _sheet([*GOOD_ROWS, new])) == 200
    assert await page.locator("#import-registered li").all_text_contents() == ["林小风"]
    assert _registered(data) == ["石小朵", "石小川", "林小雨", "林小风"]


async def test_bad_files_are_refused_with_a_clear_message(served: str, data: Path, browser: Browser,
                                                          tmp_path: Path) -> None:
    """A file that is not an .xlsx, a sheet with other headers, one lacking a required column, and
    one over the size limit are each refused whole with a message in Chinese; nothing is written."""
    page = await _page(browser, served)
    assert await _upload(page, served, tmp_path, "roster.csv", "姓名,性别\n石小朵,女\n".encode()) == 400
    assert "不是 Excel 表格" in (await page.text_content("#import-error") or "")
    other = _sheet([{"名字": "石小朵"}], headers=["名字", "性别"])
    assert await _upload(page, served, tmp_path, "other.xlsx", other) == 400
    message = await page.text_content("#import-error") or ""
    assert "模板里没有的列：名字" in message
    lacking = _sheet([GOOD_ROWS[0]], headers=[h for h in HEADERS if h != "监护类型"])
    assert await _upload(page, served, tmp_path, "lacking.xlsx", lacking) == 400
    assert "缺少必填的列：监护类型" in (await page.text_content("#import-error") or "")
    big = b"PK\x03\x04" + bytes(3 * 1024 * 1024)
    assert await _upload(page, served, tmp_path, "big.xlsx", big) == 413
    assert "文件太大" in (await page.text_content("#import-error") or "")
    assert _registered(data) == []


def _record(data: Path, drafts: list[dict[str, object]]) -> None:
    with LocalLog(log_path(data), SITE) as log:
        log.record(parse_drafts(msgspec.json.encode(drafts)), default_actor=USER)


def _registration(child_id: str, name: str, when: dt.date) -> dict[str, object]:
    return {"type": "ChildRegistered", "child_id": child_id, "name": name, "sex": "female",
            "birth_date": "2016-05-17", "household_village": "青石村", "reasons": ["both_parents_away"],
            "guardian": {"type": "grandparents", "name": "石奶奶"}, "occurred_at": f"{when.isoformat()}T09:00:00+08:00"}


def _pairing(child_id: str, pairing_id: str, when: dt.date) -> dict[str, object]:
    return {"type": "PairingStarted", "child_id": child_id, "pairing_id": pairing_id, "partner_kind": "proxy_parent",
            "partner_name": "云晓", "occurred_at": f"{when.isoformat()}T10:00:00+08:00"}


async def test_this_week_lists_a_due_and_an_overdue_child_with_links(data: Path, tmp_path: Path,
                                                                    browser: Browser) -> None:
    """"This week" lists a child overdue for its visits (registered and paired with a proxy parent
    months ago, never visited) and one whose visit falls due within the week (registered and
    paired last month, viewed in the month's last days), each with a link that opens the
    home-visit form for that child; a child without a proxy parent owes no monthly visit."""
    today = dt.date.today()
    first = today.replace(day=1)
    last_month = (first - dt.timedelta(days=1)).replace(day=1)
    long_ago = (last_month - dt.timedelta(days=70)).replace(day=1)
    day = first.replace(day=calendar.monthrange(first.year, first.month)[1] - 2)  # three days before due
    due_id, late_id = "c-" + "d" * 32, "c-" + "a" * 32
    free_id = "c-" + "f" * 32
    _record(data, [_registration(due_id, "石小满", last_month), _registration(late_id, "林小溪", long_ago),
                   _registration(free_id, "林小禾", long_ago),
                   _pairing(due_id, "p-" + "d" * 32, last_month), _pairing(late_id, "p-" + "a" * 32, long_ago)])
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), "--no-sync",
                    log=tmp_path / "serve.log")
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        page = await _page(browser, base)
        await page.goto(f"{base}/this-week?day={day.isoformat()}")
        overdue = page.locator("#week-overdue tr[data-child='林小溪'][data-rule=proxy_visit]")
        due = page.locator("#week-due tr[data-child='石小满'][data-rule=proxy_visit]")
        assert await overdue.count() == 1 and await due.count() == 1
        assert await page.locator("tr[data-child='林小禾'][data-rule=proxy_visit]").count() == 0
        assert await page.locator("#week-overdue tr[data-child='石小满']").count() == 0
        assert "逾期" in (await overdue.text_content() or "")
        assert "还剩 2 天" in (await due.text_content() or "")
        for row, child_id, name in ((overdue, late_id, "林小溪"), (due, due_id, "石小满")):
            await row.locator("a.week-do").click()
            await page.wait_for_url(f"{base}/record/HomeVisitMade?child={child_id}")
            assert await page.locator("#event-form").count() == 1
            assert await page.locator("#f-child_id option:checked").text_content() == name
            await page.goto(f"{base}/this-week?day={day.isoformat()}")
        await page.locator("#week-overdue a >> text=林小溪").first.click()
        await page.wait_for_url(f"{base}/child/{late_id}")
        await page.goto(f"{base}/this-week")  # today, whatever day it is: the overdue child is listed
        assert await page.locator("#week-overdue tr[data-child='林小溪']").count() >= 1
    finally:
        stop(proc)
