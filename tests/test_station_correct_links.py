"""Correction links on the child's page (sync_agent/child_pages.py): each of the station's own
entries, in its section and in the timeline, links to ``/correct/<event id>`` ("更正或撤销");
entries received from other sites, and the corrections themselves, do not; the printed archive
has no links. A real `shouwang agent serve` (offline), its own events posted with a token, other
sites' events kept in its log as the downloader keeps them, the pages in a real Chromium. Every
name here is made up."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from events import catalogue as c
from events.envelope import encode_event
from events.samples import SampleSite
from sync_agent.config import log_path
from sync_agent.locallog import LocalLog
from testbed.embedded import free_port
from tests.browser import chromium, shouwang, stop, wait_for_port
from tests.station_kit import add_user, issue_token, login

SITE = "demo.qingshi.v07"
SCHOOL = "demo.qingshi.s02"
CHILD = "c-" + "5" * 32
USER = "staff-wang"


@dataclass
class Station:
    data: Path
    url: str
    token: str

    def post(self, *drafts: dict[str, Any]) -> list[str]:
        r = httpx.post(self.url + "/events", content=json.dumps(list(drafts)), timeout=30,
                       headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        return [e["event_id"] for e in r.json()["events"]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    """A village station's agent serving its pages, with no connection to a center."""
    data = tmp_path / SITE
    init = subprocess.run(
        [sys.executable, "-m", "shouwang", "agent", "init", "--site", SITE, "--kind", "village", "--name",
         "青石村维权站", "--data", str(data), "--nats", f"nats://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    add_user(data, USER)
    token = issue_token(data, USER)
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), log=tmp_path / "serve.log")
    try:
        wait_for_port(port, proc)
        yield Station(data, f"http://127.0.0.1:{port}", token)
    finally:
        stop(proc)


def _at(day: int) -> str:
    return dt.datetime(2026, 3, day, 2, 0, tzinfo=dt.UTC).isoformat()


async def test_own_entries_link_to_their_correction_and_others_do_not(station: Station, browser: Browser) -> None:
    """The station's own registration, visit and call each carry "更正或撤销" to /correct/<id> in
    their section and in the timeline (the link opens the correction page); the school's talk
    and the station's own retraction carry none; the printed archive carries none."""
    registration = {"type": "ChildRegistered", "occurred_at": _at(1), "child_id": CHILD, "name": "石小禾",
                    "sex": "female", "birth_date": "2016-04-12", "household_village": "青石村", "village_site": SITE,
                    "school_site": SCHOOL, "school": "青石中心小学", "grade": 4, "reasons": ["both_parents_away"],
                    "guardian": {"type": "grandparents", "name": "石奶奶", "relation": "祖母"}}
    reg, visit, call = station.post(
        registration,
        {"type": "HomeVisitMade", "occurred_at": _at(2), "child_id": CHILD, "visitor": "石红", "findings": "一切都好"},
        {"type": "ParentCallMade", "occurred_at": _at(3), "child_id": CHILD, "parent": "母亲", "channel": "phone"})
    [retraction] = station.post({"type": "EventCorrected", "occurred_at": _at(4), "corrected_event_id": call,
                                 "reason": "记错了孩子", "child_ids": [CHILD]})
    school = SampleSite(SCHOOL, actor="teacher-lin")  # the school's talk, as the center fans it out
    talk = school.write(c.TalkHeld(child_id=CHILD, teacher="周老师", record_card="想念妈妈"),
                        dt.datetime(2026, 3, 5, 2, 0, tzinfo=dt.UTC)).event
    with LocalLog(log_path(station.data), SITE) as downloader:
        assert downloader.apply_inbound([(talk, encode_event(talk))]) == 1
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
    await login(page, station.url, USER)
    await page.goto(f"{station.url}/child/{CHILD}")
    for own in (reg, visit, call):
        for row in (f"li.line[data-event='{own}']", f"#timeline tr[data-event='{own}']"):
            links = page.locator(f"{row} a.correct-link")
            assert await links.count() == 1, (own, row)
            assert await links.get_attribute("href") == f"/correct/{own}"
            assert (await links.text_content() or "").startswith("更正或撤销")
    for other in (talk.event_id, retraction):
        assert await page.locator(f"li.line[data-event='{other}']").count() >= 1, other
        assert await page.locator(f"[data-event='{other}'] a.correct-link").count() == 0, other
    await page.click(f"li.line[data-event='{visit}'] a.correct-link")
    await page.wait_for_url(f"{station.url}/correct/{visit}")
    assert "石红" in (await page.text_content("main") or ""), "the correction page of that visit"
    response = await page.goto(f"{station.url}/child/{CHILD}/print")
    assert response is not None and response.status == 200
    assert await page.locator("li.line").count() >= 5
    assert await page.locator("a.correct-link").count() == 0, "no links on paper"
