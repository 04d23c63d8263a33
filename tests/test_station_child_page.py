"""The child's page at the station and its paper archive (sync_agent/child_pages.py): a real
`shouwang agent serve`, events recorded through `POST /events` with a token, the pages in a real
Chromium; every kind of work shows with its details, the print views print on A4, the roster
opens in openpyxl with masked IDs for a staff account, every read is in the read log, and axe-core
finds nothing serious on a phone in Chinese and English. Every name here is made up."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from openpyxl import load_workbook
from playwright.async_api import Browser, Page

from events.ids import mask_resident_id, resident_id_check_char
from sync_agent.child_pages import detail_fields
from sync_agent.readlog import reads_path
from testbed.embedded import free_port
from tests.browser import SCREENSHOTS, chromium, shouwang, stop, wait_for_port
from tests.station_kit import add_user, issue_token, login
from web import i18n

SITE = "demo.qingshi.v07"
SCHOOL = "demo.qingshi.s02"
CHILD = "c-" + "7" * 32
OTHER = "c-" + "8" * 32
STAFF = "staff-wang"  # role staff: resident IDs masked
DIRECTOR = "director-shi"  # role director: the whole resident ID


def _rid(birth: str, serial: str) -> str:
    body = f"999912{birth.replace('-', '')}{serial}"  # region 9999xx: nobody's real number
    return body + resident_id_check_char(body)


RID = _rid("2015-04-12", "123")
RID_OTHER = _rid("2017-09-30", "456")
FINDINGS = "奶奶腿脚不便，孩子作业按时完成，家里缺一盏台灯"
RECORD_CARD = "谈心记录卡：近期想念妈妈，情绪有些低落；约定每周写一篇日记给妈妈"
INCIDENT = "课间在操场摔伤膝盖，校医已包扎，已告知奶奶"


def _at(day: int, hour: int = 9) -> str:
    return dt.datetime(2026, 3, day, hour, 0, tzinfo=dt.UTC).isoformat()


@dataclass
class Station:
    data: Path
    url: str
    token: str
    ids: dict[str, str]

    def post(self, *drafts: dict[str, Any]) -> list[str]:
        r = httpx.post(self.url + "/events", content=json.dumps(list(drafts)), timeout=30,
                       headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        return [e["event_id"] for e in r.json()["events"]]

    def reads(self) -> list[tuple[str, str, str, str, str]]:
        with sqlite3.connect(reads_path(self.data)) as db:
            return db.execute("SELECT username, role, child_id, route, outcome FROM reads ORDER BY id").fetchall()


def _registration(cid: str, name: str, rid: str, birth: str, guardian: str) -> dict[str, Any]:
    return {"type": "ChildRegistered", "occurred_at": _at(1, 1), "child_id": cid, "name": name, "sex": "female",
            "birth_date": birth, "resident_id": rid, "household_village": "青石村", "village_site": SITE,
            "school_site": SCHOOL, "school": "青石中心小学", "grade": 4, "class_name": "2班",
            "reasons": ["both_parents_away"], "individual_plan": False,
            "guardian": {"type": "grandparents", "name": guardian, "relation": "祖母", "phone": "17012345678"},
            "parents": [{"relation": "父亲", "work_place": "广东东莞", "phone": "17087654321", "calls_per_month": 4}]}


def _record_everything(st: Station) -> None:
    """One event of every kind the page shows, about CHILD (and a second child for the roster)."""
    c = {"child_id": CHILD}
    ids = st.post(
        _registration(CHILD, "石小禾", RID, "2015-04-12", "石奶奶"),
        _registration(OTHER, "林小雨", RID_OTHER, "2017-09-30", "林外婆"),
        {"type": "ArchiveUpdated", "occurred_at": _at(2), **c, "class_name": "3班", "note": "分班调整"},
        {"type": "StatusAssessed", "occurred_at": _at(2, 10), **c, "study": "fair", "life": "good",
         "psychology": "needs_attention", "safety": "good", "health": "good", "individual_plan": True,
         "note": "想念外出务工的父母"},
        {"type": "GuardianChanged", "occurred_at": _at(3), **c, "reason": "奶奶住院",
         "guardian": {"type": "relatives", "name": "石二姑", "relation": "姑姑", "phone": "17011112222"}},
        {"type": "ContactCardUpdated", "occurred_at": _at(3, 10), **c, "parents": [
            {"relation": "父亲", "work_place": "广东东莞", "phone": "17087654321", "calls_per_month": 4},
            {"relation": "母亲", "work_place": "浙江义乌", "phone": "17033334444", "calls_per_month": 6}]},
        {"type": "PairingStarted", "occurred_at": _at(4), **c, "pairing_id": "p-" + "1" * 32,
         "partner_kind": "loving_mother", "partner_name": "林爱华", "partner_phone": "17055556666"},
        {"type": "PairingStarted", "occurred_at": _at(4, 10), **c, "pairing_id": "p-" + "2" * 32,
         "partner_kind": "teacher", "partner_name": "周明老师"},
        {"type": "PairingEnded", "occurred_at": _at(20), **c, "pairing_id": "p-" + "2" * 32, "reason": "周老师调走"},
        {"type": "HomeVisitMade", "occurred_at": _at(5), **c, "visitor": "村儿童主任石红", "findings": FINDINGS},
        {"type": "ParentCallMade", "occurred_at": _at(6), **c, "parent": "母亲", "channel": "video", "minutes": 12,
         "summary": "妈妈叮嘱按时吃饭"},
        {"type": "LetterWritten", "occurred_at": _at(7), **c, "direction": "from_parents",
         "summary": "妈妈来信鼓励孩子好好学习"},
        {"type": "TalkHeld", "occurred_at": _at(8), **c, "teacher": "周明老师", "record_card": RECORD_CARD},
        {"type": "TutoringGiven", "occurred_at": _at(9), "child_ids": [CHILD, OTHER], "tutor": "王芳",
         "subject": "数学", "minutes": 45},
        {"type": "CounsellingGiven", "occurred_at": _at(9, 11), **c, "counsellor": "心理老师陈静", "minutes": 30,
         "summary": "沙盘游戏，情绪好转"},
        {"type": "GuardianTrained", "occurred_at": _at(10), "child_ids": [CHILD], "topic": "隔代教育怎样陪伴写作业",
         "guardians_attended": 14},
        {"type": "MeetingHeld", "occurred_at": _at(10, 11), "kind": "mixed", "topic": "春季安全座谈会",
         "child_ids": [CHILD], "attendees": 30},
        {"type": "AidGiven", "occurred_at": _at(11), **c, "amount_fen": 50_000, "source": "charity", "kind": "money",
         "note": "春蕾助学"},
        {"type": "CondolenceVisitMade", "occurred_at": _at(12), "child_ids": [CHILD, OTHER],
         "occasion": "childrens_day", "gifts": "书包、台灯", "money_fen_each": 20_000, "source": "township"},
        {"type": "ActivityHeld", "occurred_at": _at(13), "activity_id": "a-" + "3" * 32, "kind": "childrens_home",
         "title": "留守儿童之家周末读书会", "child_ids": [CHILD], "participants_total": 25},
        {"type": "SafetyIncidentReported", "occurred_at": _at(14), **c, "kind": "injury", "severity": "minor",
         "description": INCIDENT},
        {"type": "RightsCaseOpened", "occurred_at": _at(15), **c, "case_id": "rc-" + "4" * 32,
         "kind": "guardianship", "summary": "监护人长期外出，委托监护未落实"},
        {"type": "RightsCaseClosed", "occurred_at": _at(18), **c, "case_id": "rc-" + "4" * 32, "outcome": "resolved",
         "summary": "已落实姑姑委托监护"},
        {"type": "RightsCaseOpened", "occurred_at": _at(19), **c, "case_id": "rc-" + "5" * 32, "kind": "education",
         "summary": "申请学费减免"},
        {"type": "ChildTransferred", "occurred_at": _at(21), **c, "to_school_site": "demo.qingshi.s03",
         "school": "青石第二小学", "grade": 4, "reason": "随姑姑搬家"},
        {"type": "LetterWritten", "occurred_at": _at(22), **c, "summary": "这封信登记错了"},
    )
    st.ids.update(call=ids[10], wrong_letter=ids[-1], visit=ids[9])
    st.post(
        {"type": "EventCorrected", "occurred_at": _at(23), "corrected_event_id": st.ids["call"],
         "reason": "通话时长填错", "child_ids": [CHILD],
         "replacement": {"type": "ParentCallMade", **c, "parent": "母亲", "channel": "video", "minutes": 25,
                         "summary": "妈妈叮嘱按时吃饭"},
         "replacement_occurred_at": _at(6)},
        {"type": "EventCorrected", "occurred_at": _at(23, 10), "corrected_event_id": st.ids["wrong_letter"],
         "reason": "重复登记", "child_ids": [CHILD]},
    )


def _cli(*args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "shouwang", "agent", *args], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    """A village station (no center needed: it works offline) with a staff and a director account,
    a token, and every kind of work recorded about one child."""
    tmp = tmp_path_factory.mktemp("child-page")
    data = tmp / "station"
    _cli("init", "--site", SITE, "--kind", "village", "--name", "青石村维权站", "--data", str(data),
         "--nats", f"nats://127.0.0.1:{free_port()}")
    add_user(data, STAFF)
    add_user(data, DIRECTOR, role="director")
    token = issue_token(data, DIRECTOR)
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), log=tmp / "serve.log")
    try:
        wait_for_port(port, proc)
        st = Station(data, f"http://127.0.0.1:{port}", token, {})
        _record_everything(st)
        yield st
    finally:
        stop(proc)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def _page(browser: Browser, st: Station, user: str, *, lang: str = "zh", phone: bool = False) -> Page:
    viewport = {"width": 375, "height": 667} if phone else {"width": 1200, "height": 900}
    page = await browser.new_page(locale="zh-CN" if lang == "zh" else "en-US", viewport=viewport)  # type: ignore[arg-type]
    await login(page, st.url, user)
    if lang == "en":
        await page.goto(f"{st.url}/?lang=en")
    return page


async def _text(page: Page, selector: str) -> str:
    return " ".join(await page.locator(selector).all_inner_texts())


def test_every_detail_field_has_a_label_in_both_languages() -> None:
    """Every payload field a detail line can show has a Chinese and an English label (no raw field names)."""
    missing = sorted({f"cp.f.{f}" for fields in detail_fields().values() for f in fields} - set(i18n._T))
    assert not missing, missing
    assert all(i18n._T[k][0] and i18n._T[k][1] for k in i18n._T if k.startswith("cp."))


async def test_the_child_page_shows_every_kind_of_work_with_its_details(station: Station, browser: Browser) -> None:
    """Each kind of event recorded appears in its section with its details: findings, record card,
    letter direction, pairings with partner and end, rights case states, the incident; corrections
    stay struck through with their reason; sites by name; the resident ID masked for staff."""
    page = await _page(browser, station, STAFF)
    response = await page.goto(f"{station.url}/child/{CHILD}")
    assert response is not None and response.status == 200
    assert await page.text_content("#child-name") == "石小禾"
    assert await page.text_content("#resident-id") is not None
    shown_id = (await page.text_content("#resident-id") or "").split()[0]
    assert shown_id == mask_resident_id(RID) and RID not in await page.content()

    status = await _text(page, "#sec-status")
    assert "一般" in status and "需关注" in status and "想念外出务工的父母" in status
    assert (await page.text_content("#individual-plan")) == "是"
    guardian = await _text(page, "#sec-guardian")
    assert "石二姑" in guardian and "姑姑" in guardian and "17011112222" in guardian
    assert "浙江义乌" in guardian and "17033334444" in guardian and "奶奶住院" in guardian
    pairings = await _text(page, "#pairings")
    assert "爱心妈妈" in pairings and "林爱华" in pairings and "2026-03-04" in pairings
    assert "周明老师" in pairings and "周老师调走" in pairings and "进行中" in pairings
    contacts = await _text(page, "#sec-contacts")
    assert FINDINGS in contacts and "村儿童主任石红" in contacts
    assert RECORD_CARD in contacts and "父母来信" in contacts and "妈妈来信鼓励孩子好好学习" in contacts
    assert "视频" in contacts and "25 分钟" in contacts  # the corrected call, as it counts now
    support = await _text(page, "#sec-support")
    assert "数学" in support and "心理老师陈静" in support and "隔代教育怎样陪伴写作业" in support
    assert "师生家长座谈" in support and "春季安全座谈会" in support
    aid = await _text(page, "#sec-aid")
    assert "500.00 元" in aid and "慈善组织" in aid and "六一儿童节" in aid and "书包、台灯" in aid
    assert "200.00 元" in aid
    assert "留守儿童之家周末读书会" in await _text(page, "#sec-activities")
    incidents = await _text(page, "#sec-incidents")
    assert INCIDENT in incidents and "意外伤害" in incidents and "轻微" in incidents
    cases = await _text(page, "#cases")
    assert "监护问题" in cases and "已结案：已解决" in cases and "已落实姑姑委托监护" in cases
    assert "受教育权" in cases and "办理中" in cases
    moves = await _text(page, "#sec-moves")
    assert "青石第二小学" in moves and "随姑姑搬家" in moves
    assert "青石村维权站" in await _text(page, "#child-sites") or "青石第二小学" in await _text(page, "#child-sites")

    corrected = page.locator(f"#sec-contacts li[data-event='{station.ids['call']}']")
    assert "struck" in (await corrected.get_attribute("class") or "")
    assert "通话时长填错" in await corrected.inner_text() and await corrected.locator("del").count() > 0
    retracted = page.locator(f"#sec-contacts li[data-event='{station.ids['wrong_letter']}']")
    assert "已撤销（重复登记）" in await retracted.inner_text()
    corrections = await _text(page, "#sec-corrections")
    assert "通话时长填错" in corrections and "重复登记" in corrections

    timeline = await _text(page, "#timeline")
    assert "家访" in timeline and "维权结案" in timeline and "青石村维权站" in timeline
    assert SITE not in timeline and "director-shi" in timeline
    assert await page.locator(f"#timeline tr.struck[data-event='{station.ids['wrong_letter']}'] del").count() > 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "station-child.png"), full_page=True)
    await page.close()


async def test_the_director_sees_the_whole_resident_id(station: Station, browser: Browser) -> None:
    """A director account sees the whole resident ID on the page and on the printed archive and card."""
    page = await _page(browser, station, DIRECTOR)
    for path in (f"/child/{CHILD}", f"/child/{CHILD}/print", f"/child/{CHILD}/card"):
        await page.goto(station.url + path)
        assert (await page.text_content("#resident-id") or "").strip().startswith(RID), path
    await page.close()


async def test_print_views_render_every_section_on_a4(station: Station, browser: Browser) -> None:
    """The printed archive carries every section and the timeline, the contact card the family and
    pairings; under print media the toolbar and navigation are gone and Chromium prints A4 PDFs."""
    page = await _page(browser, station, STAFF)
    await page.goto(f"{station.url}/child/{CHILD}")
    await page.click("#print-archive")
    await page.wait_for_url(f"{station.url}/child/{CHILD}/print")
    for key in ("status", "guardian", "pairings", "contacts", "support", "aid", "activities", "incidents",
                "rights_cases", "moves", "identity", "corrections"):
        assert await page.locator(f"#sec-{key}").count() == 1, key
    sheet = await _text(page, "#print-archive-sheet")
    assert FINDINGS in sheet and RECORD_CARD in sheet and INCIDENT in sheet and "已结案：已解决" in sheet
    assert mask_resident_id(RID) in sheet and RID not in sheet
    assert await page.locator("#timeline tbody tr").count() >= 25
    await page.emulate_media(media="print")
    assert await page.locator(".print-toolbar").evaluate("e => getComputedStyle(e).display") == "none"
    assert await page.locator("header.top").count() == 0
    pdf = await page.pdf(prefer_css_page_size=True, print_background=True)
    assert pdf.startswith(b"%PDF") and _a4(pdf) == "portrait"
    await page.emulate_media(media="screen")
    await page.screenshot(path=str(SCREENSHOTS / "station-print-archive.png"), full_page=True)

    await page.goto(f"{station.url}/child/{CHILD}/card")
    card = await _text(page, "#print-card-sheet")
    for want in ("石小禾", "石二姑", "17011112222", "浙江义乌", "17033334444", "林爱华", "17055556666", "青石第二小学"):
        assert want in card, want
    await page.emulate_media(media="print")
    assert await page.locator(".print-toolbar").evaluate("e => getComputedStyle(e).display") == "none"
    pdf = await page.pdf(prefer_css_page_size=True)
    assert pdf.startswith(b"%PDF") and _a4(pdf) == "portrait"

    await page.emulate_media(media="screen")
    await page.goto(f"{station.url}/print/roster")
    roster = await _text(page, "#roster")
    assert "石小禾" in roster and "林小雨" in roster and mask_resident_id(RID_OTHER) in roster
    await page.emulate_media(media="print")
    pdf = await page.pdf(prefer_css_page_size=True)
    assert pdf.startswith(b"%PDF") and _a4(pdf) == "landscape"
    await page.close()


def _a4(pdf: bytes) -> str:
    """'portrait' or 'landscape' if every page of the PDF is A4 (595 x 842 points), else what it is."""
    boxes = {tuple(round(float(x)) for x in m.groups()) for m in re.finditer(
        rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)}
    if boxes == {(595, 842)} or boxes == {(596, 842)} or boxes == {(596, 843)}:
        return "portrait"
    if boxes and all(w > h and abs(w - 842) <= 1 and abs(h - 595) <= 1 for w, h in boxes):
        return "landscape"
    return repr(boxes)


async def test_roster_xlsx_lists_the_children_with_masked_ids_for_staff(station: Station) -> None:
    """The roster as XLSX opens in openpyxl with Chinese headers, one row per child of the station,
    resident IDs masked for a staff account and whole for the director."""
    async with httpx.AsyncClient(base_url=station.url, timeout=30) as client:
        await _login_http(client, STAFF)
        r = await client.get("/print/roster.xlsx")
        assert r.status_code == 200 and r.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    ws = load_workbook(io.BytesIO(r.content)).active
    assert ws is not None
    rows = [list(row) for row in ws.iter_rows(values_only=True)]
    header = rows[0]
    assert header[:5] == ["序号", "姓名", "性别", "出生日期", "身份证号（已遮蔽）"] and "监护类型" in header
    by_name = {row[1]: row for row in rows[1:]}
    assert set(by_name) == {"石小禾", "林小雨"}
    assert by_name["石小禾"][4] == mask_resident_id(RID) and by_name["林小雨"][4] == mask_resident_id(RID_OTHER)
    assert RID.encode() not in r.content
    assert by_name["林小雨"][2] == "女" and by_name["林小雨"][9] == "隔代监护（祖辈）"
    async with httpx.AsyncClient(base_url=station.url, timeout=30) as client:
        director = await client.get("/print/roster.xlsx", headers={"Authorization": f"Bearer {station.token}"})
    ws2 = load_workbook(io.BytesIO(director.content)).active
    assert ws2 is not None
    full = {row[1]: row[4] for row in ws2.iter_rows(min_row=2, values_only=True)}
    assert full == {"石小禾": RID, "林小雨": RID_OTHER}


async def _login_http(client: httpx.AsyncClient, user: str) -> None:
    from tests.station_kit import PASSWORD

    form = (await client.get("/login")).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    r = await client.post("/login", data={"username": user, "password": PASSWORD, "csrf_token": token.group(1),
                                          "next": "/"}, headers={"Origin": station_origin(client)})
    assert r.status_code == 303, r.text


def station_origin(client: httpx.AsyncClient) -> str:
    return str(client.base_url).rstrip("/")


async def test_every_view_and_export_is_a_logged_read(station: Station) -> None:
    """The child page, the printed archive and the contact card each write one read before showing;
    the roster (print and XLSX) writes one read per child listed; an unknown child is logged not found."""
    before = len(station.reads())
    async with httpx.AsyncClient(base_url=station.url, timeout=30) as client:
        await _login_http(client, STAFF)
        for path in (f"/child/{CHILD}", f"/child/{CHILD}/print", f"/child/{CHILD}/card", "/print/roster",
                     "/print/roster.xlsx"):
            assert (await client.get(path)).status_code == 200, path
        missing = "c-" + "9" * 32
        assert (await client.get(f"/child/{missing}/print")).status_code == 404
    got = station.reads()[before:]
    assert got[:3] == [(STAFF, "staff", CHILD, "GET /child/{id}", "served"),
                       (STAFF, "staff", CHILD, "GET /child/{id}/print", "served"),
                       (STAFF, "staff", CHILD, "GET /child/{id}/card", "served")]
    assert sorted(got[3:5]) == sorted([(STAFF, "staff", cid, "GET /print/roster", "served") for cid in (CHILD, OTHER)])
    assert sorted(got[5:7]) == sorted([(STAFF, "staff", cid, "GET /print/roster.xlsx", "served")
                                       for cid in (CHILD, OTHER)])
    assert got[7:] == [(STAFF, "staff", missing, "GET /child/{id}/print", "not_found")]


async def test_pages_pass_axe_on_a_phone_in_chinese_and_english(station: Station, browser: Browser) -> None:
    """On a 375x667 phone the child page, the printed archive, the contact card and the roster print
    view fit the width (no sideways page scroll) and axe-core finds no serious or critical violation,
    in Chinese and in English."""
    axe = Axe()
    failures: list[str] = []
    for lang in ("zh", "en"):
        page = await _page(browser, station, STAFF, lang=lang, phone=True)
        for path in (f"/child/{CHILD}", f"/child/{CHILD}/print", f"/child/{CHILD}/card", "/print/roster"):
            response = await page.goto(station.url + path)
            assert response is not None and response.status == 200, path
            html_lang = await page.get_attribute("html", "lang")
            assert html_lang == ("zh-CN" if lang == "zh" else "en"), (path, html_lang)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375 + 1, f"{lang} {path}: the page is {width}px wide"
            results = await axe.run(page)
            for v in results.response["violations"]:
                if v["impact"] in ("serious", "critical"):
                    failures.append(f"{lang} {path}: {v['id']} ({v['impact']}): "
                                    f"{[n['target'] for n in v['nodes'][:3]]}")
            if lang == "en":
                body = await page.inner_text("main")
                assert not re.search(r"[\u4e00-\u9fff]{2,}", _strip_data(body)), f"untranslated text on {path}"
        if lang == "zh":
            await page.goto(f"{station.url}/child/{CHILD}")
            await page.screenshot(path=str(SCREENSHOTS / "station-child-phone.png"), full_page=False)
        await page.close()
    assert not failures, "\n".join(failures)


# Words that come from the records themselves (names, places, free text), not from the page.
_DATA = (
    "石小禾", "林小雨", "石奶奶", "林外婆", "石二姑", "姑姑", "祖母", "父亲", "母亲", "广东东莞", "浙江义乌", "林爱华",
    "周明老师", "周老师调走", "村儿童主任石红", "青石村", "青石中心小学", "青石第二小学", "青石村维权站", "王芳",
    "心理老师陈静", "数学", "隔代教育怎样陪伴写作业", "春季安全座谈会", "春蕾助学", "书包、台灯",
    "留守儿童之家周末读书会", "分班调整", "奶奶住院", "随姑姑搬家", "通话时长填错", "重复登记",
    "3班", "2班", FINDINGS, RECORD_CARD, INCIDENT, "想念外出务工的父母", "妈妈叮嘱按时吃饭",
    "妈妈来信鼓励孩子好好学习", "沙盘游戏，情绪好转", "监护人长期外出，委托监护未落实", "已落实姑姑委托监护",
    "申请学费减免", "这封信登记错了",
)


def _strip_data(text: str) -> str:
    for word in sorted(_DATA, key=len, reverse=True):
        text = text.replace(word, "")
    return text
