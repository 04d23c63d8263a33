"""What a station shows is what the center keeps: at a school and at a village station (real
`shouwang agent serve` with its sync loop, a real center with its projections, embedded NATS and
PostgreSQL), a valid form of every type the site shows is submitted in a real Chromium, the
agents sync, and the center's archive of every child (`projections.queries.get_archive`) equals
the station's own (`sync_agent.view.build_view` over its local log, as tests/chaos/checks.py
compares them); a retracted call and a replaced visit count at the center as the station shows
them. Every name here is made up."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from playwright.async_api import Browser, Page

from events.localtime import REPORTING_TZ
from projections import queries
from projections.archive import ChildArchive, month_key
from service.center import PARTS, run_center
from service.sites import register_site
from sync_agent import view
from sync_agent.config import log_path
from sync_agent.forms import forms_for
from sync_agent.locallog import LocalLog
from testbed.embedded import EmbeddedNats, free_port
from tests.browser import chromium, shouwang, stop, wait_for_port
from tests.station_kit import add_user, login
from tests.test_station_forms import PARENTS, Case, Station, World, fill, register, school_cases, submit, village_cases

SCHOOL = "demo.qingshi.s01"
VILLAGE = "demo.qingshi.v07"
USER = "teacher-lin"  # the user the form cases expect as the events' actor


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@contextlib.contextmanager
def serving(tmp_path: Path, site: str, kind: str, name: str, nats_url: str) -> Iterator[Station]:
    """`shouwang agent init` and `agent serve` (its sync loop connected to the center's NATS)."""
    data = tmp_path / site
    init = subprocess.run(
        [sys.executable, "-m", "shouwang", "agent", "init", "--site", site, "--kind", kind, "--name", name,
         "--data", str(data), "--nats", nats_url, "--actor", "station"], capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    add_user(data, USER, role="staff")
    port = free_port()
    proc = shouwang("agent", "serve", "--data", str(data), "--port", str(port), log=tmp_path / f"{site}.log")
    try:
        wait_for_port(port, proc)
        yield Station(f"http://127.0.0.1:{port}", data, site, 0)
    finally:
        stop(proc)


async def record(page: Page, st: Station, w: World, case: Case) -> None:
    """One valid submission of the form, as a person fills it in; the station's log holds it."""
    values = {k: (w.ids[v[1:]] if isinstance(v, str) and v.startswith("@") else v) for k, v in case.values.items()}
    before = len(st.log())
    await page.goto(f"{st.base}/record/{case.type}")
    await fill(page, case.type, values)
    await submit(page)
    await page.wait_for_selector("#saved")
    log = st.log()
    assert len(log) == before + 1 and log[-1]["type"] == case.type, case.type
    for key in case.generated:  # a pairing's or a case's id, for the form that closes it
        w.ids[key.removesuffix("_id")] = log[-1]["payload"][key]


async def retract_and_replace(page: Page, st: Station, child: str) -> tuple[str, str]:
    """A visit (2 March) and a call recorded, the call retracted and the visit replaced (5 March)."""
    ids = []
    for form_type, values in (("HomeVisitMade", {"child_id": child, "visitor": "林晓梅", "findings": "祖母身体尚可",
                                                 "occurred_at": "2026-03-02T09:30"}),
                              ("ParentCallMade", {"child_id": child, "parent": "母亲", "channel": "phone"})):
        await page.goto(f"{st.base}/record/{form_type}")
        await fill(page, form_type, values)
        await submit(page)
        await page.wait_for_selector("#saved")
        ids.append(st.log()[-1]["event_id"])
    visit, call = ids
    await page.goto(f"{st.base}/correct/{call}")
    await page.fill("#f-reason", "记错了孩子")
    await submit(page)
    await page.wait_for_selector("#saved")
    await page.goto(f"{st.base}/correct/{visit}/replace")
    await page.fill("#f-visitor", "王建国")
    await page.fill("#f-occurred_at", "2026-03-05T16:00")
    await page.fill("#f-correction_reason", "日期和家访人记错了")
    await submit(page)
    await page.wait_for_selector("#saved")
    assert [e["type"] for e in st.log()[-2:]] == ["EventCorrected", "EventCorrected"]
    return visit, call


def station_archives(st: Station) -> dict[str, ChildArchive]:
    """Every child of the station's local log, as the station builds its archive offline."""
    with LocalLog(log_path(st.data), st.site) as log:
        return {cid: view.build_view(cid, log.child_events(cid)) for cid in log.children()}


async def center_matches(pool: asyncpg.Pool, stations: list[Station]) -> list[str]:
    """Each child whose archive at the center differs from a station's (empty: all equal)."""
    out = []
    for st in stations:
        for cid, mine in station_archives(st).items():
            center = await queries.get_archive(pool, cid)
            if center != mine:
                da = msgspec.to_builtins(mine)
                db = msgspec.to_builtins(center) if center is not None else {}
                out.append(f"{st.site} {cid}: " + "; ".join(
                    f"{k}: station {da.get(k)!r} center {db.get(k)!r}" for k in sorted(set(da) | set(db))
                    if da.get(k) != db.get(k))[:2000])
    return out


async def test_every_form_at_a_school_and_a_village_syncs_to_the_same_archive(
    tmp_path: Path, database_url: str, browser: Browser
) -> None:
    """Every form a school and a village station show, submitted in Chromium, syncs through the
    running agents to a real center whose archive of every child equals the station's; the
    retracted call and the replaced visit count there as they do at the station."""
    nats = EmbeddedNats(tmp_path / "nats").start()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        await register_site(pool, SCHOOL, "school", "青石小学")
        await register_site(pool, VILLAGE, "village", "青石村维权站")
        await register_site(pool, "demo.qingshi.s02", "school", "青石镇中心小学")  # where the transfers go
        async with run_center(database_url, nats.url, parts=PARTS):
            with serving(tmp_path, SCHOOL, "school", "青石小学", nats.url) as school, \
                    serving(tmp_path, VILLAGE, "village", "青石村维权站", nats.url) as village:
                page = await browser.new_page(locale="zh-CN", viewport={"width": 1100, "height": 900})
                await login(page, school.base, USER)
                w = World()
                w.a = await register(page, school, "石小朵", parents=PARENTS)
                w.b = await register(page, school, "云若溪", parents=PARENTS[:1])
                # the transfer last: a school that has handed a child over may no longer close its archive
                cases = sorted(school_cases(w), key=lambda x: x.type == "ChildTransferred")
                assert {x.type for x in cases} | {"ChildRegistered"} == {
                    t for t, f in forms_for("school").items() if f.listed}
                for case in cases:
                    await record(page, school, w, case)
                visit, call = await retract_and_replace(page, school, w.a)

                await login(page, village.base, USER)
                v = World()
                v.a = await register(page, village, "林晓雨", parents=PARENTS[:1])
                v.b = await register(page, village, "林晓风", parents=PARENTS[1:])
                shown = {t for t, f in forms_for("village").items() if f.listed}
                cases = [x for x in school_cases(v) if x.type in shown] + village_cases(v)
                assert {x.type for x in cases} | {"ChildRegistered"} == shown, "a case for every form shown"
                for case in cases:
                    await record(page, village, v, case)

                stations = [school, village]
                differ: list[str] = ["not compared yet"]
                for _ in range(300):  # the agents upload, the center ingests and projects
                    differ = await center_matches(pool, stations)
                    if not differ:
                        break
                    await asyncio.sleep(0.2)
                assert not differ, "\n".join(differ)
                async with pool.acquire() as conn:
                    for st in stations:
                        with LocalLog(log_path(st.data), st.site) as log:
                            assert log.refusals() == [], "the center took every entry"
                        stored = await conn.fetchval("SELECT count(*) FROM events WHERE site_id = $1", st.site)
                        assert stored == len(st.log()), st.site
                mine = station_archives(school)[w.a]
                center = await queries.get_archive(pool, w.a)
                assert center == mine
                this_month = month_key(dt.datetime.now(REPORTING_TZ))

                def counts(a: Any, month: str) -> tuple[int, int]:
                    return next(((m.visits, m.calls) for m in a.months if m.month == month), (0, 0))

                assert counts(center, "2026-03") == counts(mine, "2026-03") == (1, 0), "the visit moved to 5 March"
                # this month: the form's visit and call; the retracted call is not counted
                assert counts(center, this_month) == counts(mine, this_month) == (1, 1)
                assert visit != call
    finally:
        await pool.close()
        nats.stop()
