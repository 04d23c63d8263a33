"""The station does all of its work: a form for every event type its kind of site records
(sync_agent/record_pages.py, sync_agent/forms.py), filled in a real Chromium against a real
`shouwang agent serve`, checked in the station's own log; refusals beside the field in Chinese
with the draft kept; corrections of the station's own entries; axe-core on every page; and one
corrected entry counted as corrected at a real center."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page

from events import catalogue as c
from events import traits
from events.envelope import care_of
from events.types import SiteKind
from projections import archive
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from sync_agent.forms import FORMS, forms_for
from testbed.embedded import EmbeddedNats, free_port
from tests.browser import chromium, shouwang, stop, wait_for_port
from tests.station_kit import add_user, login

SCHOOL = "demo.qingshi.s01"
VILLAGE = "demo.qingshi.v07"
USER = "teacher-lin"  # made up
CJK = re.compile(r"[\u4e00-\u9fff]")
RECORDABLE = {traits.Authority.WORK, traits.Authority.REGISTER, traits.Authority.HOLDER, traits.Authority.CORRECTION}


@dataclass
class Station:
    base: str
    data: Path
    site: str
    nats_port: int

    def log(self) -> list[dict[str, Any]]:
        """Every event of the station's own log, oldest first (envelope with its payload decoded)."""
        with sqlite3.connect(f"file:{self.data / 'log.sqlite'}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT body FROM log ORDER BY site_seq").fetchall()
        return [msgspec.json.decode(r[0]) for r in rows]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


def _station(tmp_path: Path, site: str, kind: str, name: str) -> Iterator[Station]:
    data = tmp_path / site
    nats_port = free_port()  # nobody listens: the station works offline
    init = subprocess.run(
        [sys.executable, "-m", "shouwang", "agent", "init", "--site", site, "--kind", kind, "--name", name,
         "--data", str(data), "--nats", f"nats://127.0.0.1:{nats_port}", "--actor", "station"],
        capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    add_user(data, USER, role="staff")
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), log=tmp_path / f"{site}.log")
    try:
        wait_for_port(port, proc)
        yield Station(f"http://127.0.0.1:{port}", data, site, nats_port)
    finally:
        stop(proc)


@pytest.fixture
def school(tmp_path: Path) -> Iterator[Station]:
    """A school's agent, serving its pages with no connection to a center."""
    yield from _station(tmp_path, SCHOOL, "school", "青石小学")


@pytest.fixture
def village(tmp_path: Path) -> Iterator[Station]:
    """A village rights station's agent, offline."""
    yield from _station(tmp_path, VILLAGE, "village", "青石村维权站")


# --- filling a form through the page ------------------------------------------------------------


def _field(form_type: str, name: str) -> Any:
    base = name.split(".")[0] if name.startswith("parents.") else name
    return next(f for f in FORMS[form_type].fields if f.name == base)


async def fill(page: Page, form_type: str, values: dict[str, Any]) -> None:
    """Type `values` into the open form as a person would: text typed, options chosen, boxes ticked."""
    for name, value in values.items():
        f = _field(form_type, name)
        target = f"[id='f-{name}']"
        if name.startswith("parents."):
            await page.fill(target, str(value))
        elif f.kind in ("select", "tristate", "child", "closed_child", "pairing", "case"):
            await page.select_option(target, str(value))
        elif f.kind in ("multi", "children"):
            for v in value:
                await page.check(f"input[name='{name}'][value='{v}']")
        elif f.kind == "bool":
            await (page.check(target) if value else page.uncheck(target))
        else:
            await page.fill(target, str(value))


async def submit(page: Page) -> None:
    async with page.expect_navigation():
        await page.click("#event-form button.primary")


@dataclass
class Case:
    """One form: what the person types, and the payload the log must then hold."""

    type: str
    values: dict[str, Any]
    payload: dict[str, Any]
    generated: tuple[str, ...] = ()  # ids the station makes (a pairing's, a case's, an activity's)
    drop: str = ""  # the required field left empty for the refused try
    kept: str = ""  # a field whose typed text must survive the refusal
    setup: Callable[[Page], Any] | None = None


@dataclass
class World:
    a: str = ""
    b: str = ""
    ids: dict[str, str] = field(default_factory=dict)


def school_cases(w: World) -> list[Case]:
    a, b = w.a, w.b
    return [
        Case("ArchiveUpdated", {"child_id": a, "class_name": "3班", "note": "新学期分班"},
             {"child_id": a, "class_name": "3班", "note": "新学期分班"}, drop="child_id", kept="class_name"),
        Case("StatusAssessed", {"child_id": a, "study": "needs_attention", "psychology": "fair",
                                "individual_plan": "true", "note": "数学跟不上，想念母亲"},
             {"child_id": a, "study": "needs_attention", "psychology": "fair", "individual_plan": True,
              "note": "数学跟不上，想念母亲"}, drop="child_id", kept="note"),
        Case("GuardianChanged", {"child_id": a, "guardian.type": "one_parent", "guardian.name": "石春燕",
                                 "guardian.relation": "母亲", "guardian.phone": "13900003333",
                                 "reason": "母亲返乡照顾"},
             {"child_id": a, "guardian": {"type": "one_parent", "name": "石春燕", "relation": "母亲",
                                          "phone": "13900003333"}, "reason": "母亲返乡照顾"},
             drop="guardian.type", kept="guardian.name"),
        Case("ContactCardUpdated", {"child_id": a, "guardian_phone": "13900003333", "parents.0.relation": "父亲",
                                    "parents.0.work_place": "江苏苏州", "parents.0.phone": "13900004444",
                                    "parents.0.calls_per_month": "2"},
             {"child_id": a, "guardian_phone": "13900003333",
              "parents": [{"relation": "父亲", "work_place": "江苏苏州", "phone": "13900004444",
                           "calls_per_month": 2}]},
             drop="child_id", kept="parents.0.work_place"),
        Case("PairingStarted", {"child_id": a, "partner_kind": "proxy_parent", "partner_name": "林晓梅",
                                "partner_phone": "13700005555"},
             {"child_id": a, "partner_kind": "proxy_parent", "partner_name": "林晓梅", "partner_phone": "13700005555"},
             generated=("pairing_id",), drop="partner_name", kept="partner_phone"),
        Case("PairingEnded", {"pairing_id": "@pairing", "reason": "林老师调往县城"},
             {"pairing_id": "@pairing", "child_id": a, "reason": "林老师调往县城"}, drop="pairing_id", kept="reason"),
        Case("HomeVisitMade", {"child_id": a, "visitor": "林晓梅", "guardian_met": False, "findings": "祖母外出赶集"},
             {"child_id": a, "visitor": "林晓梅", "guardian_met": False, "findings": "祖母外出赶集"},
             drop="visitor", kept="findings"),
        Case("ParentCallMade", {"child_id": a, "parent": "母亲", "channel": "video", "minutes": "15",
                                "summary": "问了期中考试"},
             {"child_id": a, "parent": "母亲", "channel": "video", "minutes": 15, "summary": "问了期中考试"},
             drop="parent", kept="summary"),
        Case("LetterWritten", {"child_id": a, "direction": "from_parents", "summary": "父亲寄来一封信和照片"},
             {"child_id": a, "direction": "from_parents", "summary": "父亲寄来一封信和照片"},
             drop="direction", kept="summary"),
        Case("TalkHeld", {"child_id": a, "teacher": "王老师", "record_card": "最近睡得好，愿意和同学玩"},
             {"child_id": a, "teacher": "王老师", "record_card": "最近睡得好，愿意和同学玩"},
             drop="record_card", kept="teacher"),
        Case("TutoringGiven", {"child_ids": [a, b], "tutor": "王老师", "subject": "数学", "minutes": "45"},
             {"child_ids": [a, b], "tutor": "王老师", "subject": "数学", "minutes": 45},
             drop="child_ids", kept="tutor"),
        Case("CounsellingGiven", {"child_id": a, "counsellor": "赵老师", "minutes": "30", "summary": "谈了想家"},
             {"child_id": a, "counsellor": "赵老师", "minutes": 30, "summary": "谈了想家"},
             drop="counsellor", kept="summary"),
        Case("GuardianTrained", {"child_ids": [a, b], "topic": "隔代教育", "guardians_attended": "2"},
             {"child_ids": [a, b], "topic": "隔代教育", "guardians_attended": 2}, drop="topic",
             kept="guardians_attended"),
        Case("MeetingHeld", {"kind": "mixed", "topic": "学期座谈", "child_ids": [a], "attendees": "12"},
             {"kind": "mixed", "topic": "学期座谈", "child_ids": [a], "attendees": 12}, drop="kind", kept="topic"),
        Case("AidGiven", {"child_id": a, "amount_fen": "120.50", "source": "charity", "kind": "goods",
                          "note": "冬衣一套"},
             {"child_id": a, "amount_fen": 12050, "source": "charity", "kind": "goods", "note": "冬衣一套"},
             drop="source", kept="note"),
        Case("CondolenceVisitMade", {"child_ids": [a, b], "occasion": "spring_festival", "gifts": "书包",
                                     "money_fen_each": "200", "source": "township"},
             {"child_ids": [a, b], "occasion": "spring_festival", "gifts": "书包", "money_fen_each": 20000,
              "source": "township"}, drop="occasion", kept="gifts"),
        Case("ActivityHeld", {"kind": "childrens_home", "title": "留守儿童之家周末开放", "child_ids": [a, b],
                              "participants_total": "30"},
             {"kind": "childrens_home", "title": "留守儿童之家周末开放", "child_ids": [a, b], "participants_total": 30},
             generated=("activity_id",), drop="title", kept="participants_total"),
        Case("SafetyIncidentReported", {"child_id": a, "kind": "injury", "severity": "minor",
                                        "description": "课间摔伤膝盖，已送卫生院"},
             {"child_id": a, "kind": "injury", "severity": "minor", "description": "课间摔伤膝盖，已送卫生院"},
             drop="severity", kept="description"),
        Case("ChildTransferred", {"child_id": b, "to_school_site": "demo.qingshi.s02", "school": "青石镇中心小学",
                                  "grade": "4", "reason": "随祖父母搬到镇上"},
             {"child_id": b, "to_school_site": "demo.qingshi.s02", "school": "青石镇中心小学", "grade": 4,
              "reason": "随祖父母搬到镇上"}, drop="child_id", kept="reason"),
        Case("ArchiveClosed", {"child_id": b, "reason": "parents_returned", "note": "父母回乡务农"},
             {"child_id": b, "reason": "parents_returned", "note": "父母回乡务农"}, drop="reason", kept="note"),
        Case("ArchiveReopened", {"child_id": b, "reason": "父母再次外出务工"},
             {"child_id": b, "reason": "父母再次外出务工"}, drop="reason", kept="child_id"),
    ]


def village_cases(w: World) -> list[Case]:
    a = w.a
    return [
        Case("RightsCaseOpened", {"child_id": a, "kind": "guardianship", "summary": "祖母年迈，无力照看"},
             {"child_id": a, "kind": "guardianship", "summary": "祖母年迈，无力照看"}, generated=("case_id",),
             drop="kind", kept="summary"),
        Case("RightsCaseClosed", {"case_id": "@case", "outcome": "resolved", "summary": "姑姑接手监护"},
             {"case_id": "@case", "child_id": a, "outcome": "resolved", "summary": "姑姑接手监护"},
             drop="outcome", kept="summary"),
    ]


async def register(page: Page, st: Station, name: str, *, parents: list[dict[str, str]], js: bool = True) -> str:
    """Register a child through the form, adding a row per parent (with the page's script, or by
    posting the form back without it)."""
    await page.goto(f"{st.base}/record/ChildRegistered")
    await fill(page, "ChildRegistered", {"name": name, "sex": "female", "birth_date": "2016-05-17",
                                         "grade": "3", "class_name": "2班", "reasons": ["both_parents_away"],
                                         "guardian.type": "grandparents", "guardian.name": "石奶奶",
                                         "guardian.relation": "祖母", "guardian.phone": "13800001111"})
    if await page.input_value("[id='f-household_village']") == "":
        await page.fill("[id='f-household_village']", "青石村")
    for i, p in enumerate(parents):
        if i > 0:
            if js:
                await page.click("button[data-add-row=parents]")
            else:
                async with page.expect_navigation():
                    await page.click("button[data-add-row=parents]")
        for k, v in p.items():
            await page.fill(f"[id='f-parents.{i}.{k}']", v)
    async with page.expect_navigation():
        await page.click("#event-form button.primary")
    await page.wait_for_url(f"{st.base}/child/*")
    return page.url.rsplit("/", 1)[1]


PARENTS = [{"relation": "父亲", "work_place": "广东东莞", "phone": "13900002222", "calls_per_month": "4"},
           {"relation": "母亲", "work_place": "浙江义乌", "phone": "13900003333"}]


def _expected_parents(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The rows as stored: a parent's contact is a nested record, its fields left empty kept as null."""
    return [{"relation": r["relation"], "work_place": r["work_place"], "phone": r.get("phone"),
             "calls_per_month": int(r["calls_per_month"]) if "calls_per_month" in r else None} for r in rows]


async def run_case(page: Page, st: Station, w: World, case: Case) -> None:
    """The refused try (nothing written, the error beside the field in Chinese, the draft kept),
    then the valid one (the payload is what was typed; the entry shows on the child's page)."""
    values = {k: (w.ids[v[1:]] if isinstance(v, str) and v.startswith("@") else v) for k, v in case.values.items()}
    expected = {k: (w.ids[v[1:]] if isinstance(v, str) and v.startswith("@") else v) for k, v in case.payload.items()}
    before = len(st.log())
    await page.goto(f"{st.base}/record/{case.type}")
    await fill(page, case.type, {k: v for k, v in values.items() if k != case.drop})
    await submit(page)
    await page.wait_for_selector(".error-summary")
    err = await page.text_content(f"[id='err-{case.drop}']") or ""
    assert CJK.search(err), (case.type, case.drop, err)
    kept = values[case.kept]
    kept_el = f"[id='f-{case.kept}']"
    if _field(case.type, case.kept).kind in ("child", "closed_child"):
        assert await page.input_value(kept_el) == kept, (case.type, "the draft is kept")
    else:
        assert await page.input_value(kept_el) == str(kept), (case.type, "the draft is kept")
    assert len(st.log()) == before, (case.type, "nothing written")
    # the valid submission, from a fresh form
    await page.goto(f"{st.base}/record/{case.type}")
    await fill(page, case.type, values)
    await submit(page)
    await page.wait_for_selector("#saved")
    log = st.log()
    assert len(log) == before + 1, case.type
    event = log[-1]
    assert event["type"] == case.type and event["actor"] == USER and event["site_id"] == st.site
    payload = dict(event["payload"])
    for key in case.generated:  # made by the station, fresh for each new entry
        w.ids[key.removesuffix("_id")] = expected[key] = payload[key]
        assert re.fullmatch(r"[a-z]{1,3}-[0-9a-f]{32}", payload[key])
    if "child_ids" in payload:  # ticked in the list's order (by name): the same children
        payload["child_ids"] = sorted(payload["child_ids"])
        expected["child_ids"] = sorted(expected["child_ids"])
    cls = c.EVENT_TYPES[case.type]  # as the catalogue reads it: a value equal to its default is not written
    assert msgspec.convert(payload, cls) == msgspec.convert({"type": case.type, **expected}, cls), case.type
    label = traits.BY_NAME[case.type].zh
    child = expected.get("child_id") or expected["child_ids"][0]
    await page.goto(f"{st.base}/child/{child}")
    assert label in (await page.text_content("main") or ""), (case.type, "on the child's page")


# --- the tests -----------------------------------------------------------------------------------


def test_every_recordable_type_has_a_form_for_the_sites_that_record_it() -> None:
    """Every type a site may send (authority work, register, holder, correction) has a form and a
    `station_form` trait; the township's decisions have none; each kind of site shows exactly the
    forms its trait names; every required payload field is asked for by the form (or made by the
    station)."""
    union = typing.get_args(c.CareEvent)
    for cls in union:
        t = traits.TRAITS[cls]
        name = cls.__name__
        if t.authority in RECORDABLE:
            assert t.station_form, f"{name} is recordable at a station but no kind of site shows a form"
            assert name in FORMS, f"{name} has no station form"
        else:
            assert not t.station_form and name not in FORMS, name
    for kind in SiteKind:
        assert set(forms_for(kind)) == {n for n, t in traits.BY_NAME.items() if kind in t.station_form}
    for name, form in FORMS.items():
        cls = c.EVENT_TYPES[name]
        asked = {f.name.split(".")[0] for f in form.fields} | ({form.ref[0]} if form.ref else set())
        if name == "ChildRegistered" or any(f.kind in ("pairing", "case") for f in form.fields):
            asked.add("child_id")  # a new child's id, or the child of the pairing or case chosen
        if name == "EventCorrected":
            asked.add("corrected_event_id")  # the entry the correction was opened from
        for f in msgspec.structs.fields(cls):
            if f.required:
                assert f.encode_name in asked or f.name in asked, (name, f.name)


async def test_every_school_form_records_what_was_typed(school: Station, browser: Browser) -> None:
    """At a school every form it shows records exactly what was typed (two children registered with
    two parents each, one with and one without JavaScript), shows on the child's page, and a
    refused try writes nothing and keeps the draft with the error beside the field in Chinese."""
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, school.base, USER)
    await page.goto(f"{school.base}/record/ChildRegistered")
    assert await page.input_value("#f-school") == "青石小学", "the school fills itself in"
    w = World()
    w.a = await register(page, school, "石小朵", parents=PARENTS)
    reg = school.log()[-1]["payload"]
    assert reg == {"type": "ChildRegistered", "child_id": w.a, "name": "石小朵", "sex": "female",
                   "birth_date": "2016-05-17", "household_village": "青石村", "school": "青石小学", "grade": 3,
                   "class_name": "2班", "reasons": ["both_parents_away"],
                   "guardian": {"type": "grandparents", "name": "石奶奶", "relation": "祖母", "phone": "13800001111"},
                   "parents": _expected_parents(PARENTS)}
    nojs = await (await browser.new_context(locale="zh-CN", java_script_enabled=False)).new_page()
    await login(nojs, school.base, USER)
    w.b = await register(nojs, school, "云若溪", parents=[*PARENTS, {"relation": "姑姑", "work_place": "福建厦门"}],
                         js=False)
    assert school.log()[-1]["payload"]["parents"] == _expected_parents(
        [*PARENTS, {"relation": "姑姑", "work_place": "福建厦门"}])
    await page.goto(f"{school.base}/record")
    shown = set(await page.eval_on_selector_all("#form-list a", "els => els.map(e => e.dataset.type)"))
    assert shown == {n for n, f in forms_for("school").items() if f.listed}
    cases = school_cases(w)
    assert {x.type for x in cases} | {"ChildRegistered"} == shown, "a case for every form the school shows"
    for case in cases:
        await run_case(page, school, w, case)
    # the children's picker finds a child by name (JavaScript), and works as a checkbox list without it
    await page.goto(f"{school.base}/record/CondolenceVisitMade")
    await page.fill("input.picker-search", "若溪")
    assert await page.is_hidden(f"label.pick:has(input[value='{w.a}'])")
    assert await page.is_visible(f"label.pick:has(input[value='{w.b}'])")
    await nojs.goto(f"{school.base}/record/CondolenceVisitMade")
    assert await nojs.is_hidden("input.picker-search")
    assert await nojs.is_visible(f"input[name=child_ids][value='{w.a}']")


async def test_every_village_form_records_what_was_typed(village: Station, browser: Browser) -> None:
    """A village station starts a registration from its own village and records the rights cases
    it takes (opened, then closed by choosing the case by child and kind); the school's own work
    (letters, tutoring) has no form there."""
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, village.base, USER)
    await page.goto(f"{village.base}/record/ChildRegistered")
    assert await page.input_value("#f-household_village") == "青石村", "the village fills itself in"
    w = World()
    w.a = await register(page, village, "石小朵", parents=PARENTS[:1])
    for case in village_cases(w):
        await run_case(page, village, w, case)
    response = await page.goto(f"{village.base}/record/TutoringGiven")
    assert response is not None and response.status == 404


async def test_retract_and_replace_an_own_entry(school: Station, browser: Browser) -> None:
    """"This was wrong" and "it should have said" are recorded as EventCorrected by the station,
    with the reason and (for a replacement) the same form's payload; the entry stays, struck
    through with the reason; a correction with no reason is refused beside the field; another
    site's entry cannot be corrected here."""
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, school.base, USER)
    w = World()
    w.a = await register(page, school, "石小朵", parents=PARENTS[:1])
    visit, call = await _visit_and_call(page, school, w.a)
    # retract the call
    await page.goto(f"{school.base}/record")
    await page.click(f"tr[data-event='{call}'] a.correct-link")
    await page.wait_for_url(f"{school.base}/correct/{call}")
    before = len(school.log())
    await submit(page)  # no reason
    assert CJK.search(await page.text_content("#err-reason") or "")
    assert len(school.log()) == before
    await page.fill("#f-reason", "记错了孩子，这次通话是另一个学生")
    await submit(page)
    await page.wait_for_selector("#saved")
    retraction = school.log()[-1]
    assert retraction["type"] == "EventCorrected" and retraction["actor"] == USER
    assert retraction["payload"] == {"type": "EventCorrected", "corrected_event_id": call,
                                     "reason": "记错了孩子，这次通话是另一个学生", "child_ids": [w.a]}
    # replace the visit: the same form, pre-filled
    await page.goto(f"{school.base}/correct/{visit}")
    await page.click("#replace-link")
    await page.wait_for_url(f"{school.base}/correct/{visit}/replace")
    assert await page.input_value("#f-visitor") == "林晓梅", "pre-filled with what the entry said"
    assert await page.input_value("#f-occurred_at") == "2026-03-02T09:30"
    await page.fill("#f-visitor", "")
    await page.fill("#f-correction_reason", "家访人写错了")
    await submit(page)
    assert CJK.search(await page.text_content("#err-visitor") or ""), "refused beside the field"
    assert await page.input_value("#f-correction_reason") == "家访人写错了", "the draft is kept"
    assert len(school.log()) == before + 1
    await page.fill("#f-visitor", "王建国")
    await page.fill("#f-occurred_at", "2026-03-03T10:00")
    await submit(page)
    await page.wait_for_selector("#saved")
    replaced = school.log()[-1]
    assert replaced["type"] == "EventCorrected" and replaced["actor"] == USER
    assert replaced["payload"] == {
        "type": "EventCorrected", "corrected_event_id": visit, "reason": "家访人写错了", "child_ids": [w.a],
        "replacement": {"type": "HomeVisitMade", "child_id": w.a, "visitor": "王建国", "findings": "祖母身体尚可"},
        "replacement_occurred_at": "2026-03-03T10:00:00+08:00"}
    # the station's list: struck through with the reason, never erased
    await page.goto(f"{school.base}/record")
    for event_id, reason in ((call, "记错了孩子"), (visit, "家访人写错了")):
        row = page.locator(f"tr[data-event='{event_id}']")
        assert "struck" in (await row.get_attribute("class") or "")
        assert reason in (await row.text_content() or "")
    # the child's page still lists both entries, and the corrections
    await page.goto(f"{school.base}/child/{w.a}")
    main = await page.text_content("main") or ""
    assert "家访" in main and "与父母通话" in main and "更正" in main
    # only own entries: an unknown (or another site's) event is not offered
    response = await page.goto(f"{school.base}/correct/01937a0c-3f2b-7c8d-9e0f-112233445566")
    assert response is not None and response.status == 404


async def _visit_and_call(page: Page, st: Station, child: str) -> tuple[str, str]:
    ids = []
    for form_type, values in (("HomeVisitMade", {"child_id": child, "visitor": "林晓梅", "findings": "祖母身体尚可",
                                                 "occurred_at": "2026-03-02T09:30"}),
                              ("ParentCallMade", {"child_id": child, "parent": "母亲", "channel": "phone"})):
        await page.goto(f"{st.base}/record/{form_type}")
        await fill(page, form_type, values)
        await submit(page)
        await page.wait_for_selector("#saved")
        ids.append(st.log()[-1]["event_id"])
    return ids[0], ids[1]


async def test_record_pages_pass_axe_in_chinese_and_english(school: Station, browser: Browser) -> None:
    """axe-core finds no serious or critical violation on the form list, every form the school
    shows, a refused form, and the correction pages, in Chinese and in English."""
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, school.base, USER)
    a = await register(page, school, "石小朵", parents=PARENTS[:1])
    visit, _ = await _visit_and_call(page, school, a)
    axe = Axe()
    failures: list[str] = []
    paths = ["/record", *[f"/record/{t}" for t, f in forms_for("school").items() if f.listed],
             f"/correct/{visit}", f"/correct/{visit}/replace"]
    for lang in ("zh", "en"):
        await page.goto(f"{school.base}/record?lang={lang}")
        assert await page.get_attribute("html", "lang") == ("zh-CN" if lang == "zh" else "en")
        for path in [*paths, "refused"]:
            if path == "refused":
                await page.goto(f"{school.base}/record/HomeVisitMade")
                await submit(page)
                await page.wait_for_selector(".error-summary")
            else:
                response = await page.goto(f"{school.base}{path}")
                assert response is not None and response.status == 200, path
            results = await axe.run(page)
            for v in results.response["violations"]:
                if v["impact"] in ("serious", "critical"):
                    targets = [n["target"] for n in v["nodes"][:3]]
                    failures.append(f"{lang} {path}: {v['id']} ({v['impact']}): {targets}")
    assert not failures, "\n".join(failures)


async def test_a_replaced_entry_counts_as_replaced_at_the_center(
    school: Station, browser: Browser, database_url: str, tmp_path: Path
) -> None:
    """A visit recorded offline and then corrected (another day) reaches the center with its
    correction; the center's archive counts the visit on the corrected day, once."""
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, school.base, USER)
    a = await register(page, school, "石小朵", parents=PARENTS[:1])
    visit, _ = await _visit_and_call(page, school, a)
    await page.goto(f"{school.base}/correct/{visit}/replace")
    await page.fill("#f-occurred_at", "2026-03-05T16:00")
    await page.fill("#f-correction_reason", "日期记错了")
    await submit(page)
    await page.wait_for_selector("#saved")
    nats = EmbeddedNats(tmp_path / "nats", port=school.nats_port).start()
    try:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            await register_site(pool, SCHOOL, "school", "青石小学")
            async with run_center(database_url, nats.url):
                store = EventStore(pool)
                for _ in range(600):
                    if len(await store.read_child(a)) == 4:
                        break
                    await asyncio.sleep(0.1)
                stored = await store.read_child(a)
                assert sorted(s.event.type for s in stored) == sorted(
                    ["ChildRegistered", "HomeVisitMade", "ParentCallMade", "EventCorrected"])
                pairs = [(s.event, care_of(s.event)) for s in stored]
                view = archive.build(pairs)[a]
                assert str(view.last_visit) == "2026-03-05", "the visit counts on the corrected day"
                assert [m.visits for m in view.months if m.month == "2026-03"] == [1], "and once"
        finally:
            await pool.close()
    finally:
        nats.stop()
