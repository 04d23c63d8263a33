"""A station whose disk died: `agent restore` rebuilds its log from the center, and the next
event continues the same sequence and hash chain (without it, the new log's first events clash
with the ones the center holds and are refused)."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest

from events import catalogue as c
from events.envelope import Draft, decode_event
from events.samples import sample_registration
from events.types import SiteKind
from events.wire import RESTORE_PREFIX, inbox_prefix, restore_page_decoder
from service.center import run_center
from service.sites import register_site
from store.postgres import EventStore
from sync_agent.agent import Agent
from sync_agent.locallog import RESTORING, LocalLog, LocalLogError, RestoreMismatch
from sync_agent.restore import RestoreError, restore
from tests.agent_support import drafts, eventually, make_site
from tests.test_agent_sync import FAST


def _site(rng: random.Random) -> str:
    return f"gx-lp.xy.r{rng.getrandbits(32):08x}"


async def _synced_site(tmp: Path, site: str, nats_url: str, n: int, rng: random.Random) -> Path:
    data = make_site(tmp / "old-disk", site, nats_url)
    async with Agent(data, tuning=FAST) as agent:
        for i in range(0, n, 500):
            agent.log.record(drafts(min(500, n - i), rng), default_actor="station")
        agent.uploader.notify()
        assert await agent.wait_synced(120), f"{agent.pending()} events still pending"
    return data


async def test_restore_rebuilds_the_log_and_the_next_event_continues_the_chain(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, store: EventStore, nats_url: str) -> None:
    rng = random.Random(41)
    site = _site(rng)
    await register_site(pool, site, "village", "测试站")
    async with run_center(database_url, nats_url):
        old = await _synced_site(tmp_path, site, nats_url, 1500, rng)  # more than one restore page
        with LocalLog(old / "log.sqlite", site) as old_log:
            old_head = old_log.verify()

        new = make_site(tmp_path / "new-disk", site, nats_url)  # the new machine: `agent init`, same site
        pages: list[tuple[int, int]] = []
        report = await restore(new, on_page=lambda done, total: pages.append((done, total)))
        assert (report.events, report.head_seq, report.watermark) == (1500, 1500, 1500)
        assert len(pages) >= 2 and pages[-1] == (1500, 1500)
        with LocalLog(new / "log.sqlite", site) as log:
            head = log.verify()  # gapless, every hash and link checked
            assert (head.head_seq, head.head_hash) == (old_head.head_seq, old_head.head_hash)
            assert log.pending() == (0, None)  # nothing to send: the center has it all
            assert log.meta(RESTORING) is None
            recorded = log.record(drafts(3, rng), default_actor="station")
        assert [r.site_seq for r in recorded] == [1501, 1502, 1503]

        async with Agent(new, tuning=FAST) as agent:
            agent.uploader.notify()
            assert await agent.wait_synced(60)
            assert agent.log.refusals() == []
        progress = await store.progress(site)
        assert (progress.watermark, progress.max_seq, progress.holes) == (1503, 1503, [])
        assert await pool.fetchval("SELECT count(*) FROM quarantine WHERE site_id = $1", site) == 0


async def test_restore_refuses_a_log_that_already_holds_events(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, nats_url: str) -> None:
    rng = random.Random(42)
    site = _site(rng)
    await register_site(pool, site, "village", "测试站")
    data = make_site(tmp_path, site, nats_url)
    with LocalLog(data / "log.sqlite", site) as log:
        log.record(drafts(2, rng), default_actor="station")
    async with run_center(database_url, nats_url):
        with pytest.raises(RestoreError, match="already holds 2 events"):
            await restore(data)


async def test_an_interrupted_restore_resumes_and_recording_waits_for_it(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, nats_url: str) -> None:
    rng = random.Random(43)
    site = _site(rng)
    await register_site(pool, site, "village", "测试站")
    async with run_center(database_url, nats_url) as center:
        old = await _synced_site(tmp_path, site, nats_url, 40, rng)
        with LocalLog(old / "log.sqlite", site) as old_log:
            bodies = [o.body for o in old_log.read_range(1, 40, 100)]
        new = make_site(tmp_path / "new-disk", site, nats_url)
        with LocalLog(new / "log.sqlite", site) as log:  # the first restore got 15 events, then the line dropped
            log.set_meta(**{RESTORING: "1"})
            log.restore_own(bodies[:15])
            with pytest.raises(LocalLogError, match="being restored"):
                log.record(drafts(1, rng), default_actor="station")
            assert log.last_seq() == 15
        report = await restore(new)
        assert (report.events, report.head_seq) == (25, 40)
        assert center.restore is not None and center.restore.served >= 25
        with LocalLog(new / "log.sqlite", site) as log:
            assert log.verify().head_seq == 40
            assert [r.site_seq for r in log.record(drafts(1, rng), default_actor="station")] == [41]


async def test_restore_stops_below_a_gap_the_center_never_filled(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, store: EventStore, nats_url: str) -> None:
    """The old machine sent 1-3 and 5 and died before 4 arrived: 1-3 come back, and the restore
    says why it stops there instead of chaining across the gap."""
    rng = random.Random(47)
    site = _site(rng)
    await register_site(pool, site, "village", "测试站")
    donor = make_site(tmp_path / "old-disk", site, nats_url)
    with LocalLog(donor / "log.sqlite", site) as log:
        log.record(drafts(5, rng), default_actor="station")
        events = [decode_event(o.body, now=dt.datetime(2026, 3, 3, tzinfo=dt.UTC)) for o in log.read_range(1, 5)]
    await store.append([events[0], events[1], events[2], events[4]])
    async with run_center(database_url, nats_url):
        new = make_site(tmp_path / "new-disk", site, nats_url)
        with pytest.raises(RestoreError, match=r"never received 4-4.*Restored up to site_seq 3"):
            await restore(new)
    with LocalLog(new / "log.sqlite", site) as log:
        assert log.verify().head_seq == 3
        assert log.meta(RESTORING) == "1"


async def test_restore_own_refuses_events_that_do_not_continue_the_log(tmp_path: Path, nats_url: str) -> None:
    rng = random.Random(44)
    site = _site(rng)
    donor = make_site(tmp_path / "donor", site, nats_url)
    with LocalLog(donor / "log.sqlite", site) as log:
        log.record(drafts(3, rng), default_actor="station")
        bodies = [o.body for o in log.read_range(1, 3)]
    target = make_site(tmp_path / "target", site, nats_url)
    with LocalLog(target / "log.sqlite", site) as log:
        with pytest.raises(RestoreMismatch, match="site_seq 1: the center sent site_seq 2"):
            log.restore_own(bodies[1:])
        tampered = msgspec.json.decode(bodies[1])
        tampered["prev_hash"] = "0" * 64
        with pytest.raises(RestoreMismatch, match="prev_hash"):
            log.restore_own([bodies[0], msgspec.json.encode(tampered)])
        with pytest.raises(RestoreMismatch, match="cannot be read"):
            log.restore_own([b"{not json"])
        assert log.last_seq() == 0  # nothing of a refused page was written
    other = make_site(tmp_path / "other", "gx-lp.xy.other", nats_url)
    with LocalLog(other / "log.sqlite", "gx-lp.xy.other") as log, \
            pytest.raises(RestoreMismatch, match="event of site"):
        log.restore_own(bodies[:1])


async def test_the_center_answers_bad_and_unknown_requests_with_an_error(
        database_url: str, pool: asyncpg.Pool, nats_url: str) -> None:
    rng = random.Random(45)
    site = _site(rng)
    await register_site(pool, site, "village", "测试站")
    async with run_center(database_url, nats_url):
        cases = {
            (site, b"not json"): "bad restore request",
            (site, b'{"from_seq": 0}'): "bad restore request",
            (site, b'{"from_seq": 1, "extra": 1}'): "bad restore request",
            (_site(rng), b'{"from_seq": 1}'): "is not registered",
            ("Not.A.Site", b'{"from_seq": 1}'): "is not valid",
        }
        # Each asks as that site's agent does: replies below the site's own inbox (the center
        # answers nothing else).
        for (who, body), expected in cases.items():
            nc = await nats.connect(nats_url, inbox_prefix=inbox_prefix(who))
            try:
                page = restore_page_decoder.decode((await nc.request(RESTORE_PREFIX + who, body, timeout=10)).data)
            finally:
                await nc.close()
            assert page.error is not None and expected in page.error, (who, body, page.error)
        nc = await nats.connect(nats_url, inbox_prefix=inbox_prefix(site))
        try:
            empty = restore_page_decoder.decode(
                (await nc.request(RESTORE_PREFIX + site, b'{"from_seq": 1}', timeout=10)).data)
            assert (empty.error, empty.events, empty.max_seq, empty.next_seq) == (None, [], 0, None)
        finally:
            await nc.close()


def test_cli_restore_says_what_to_do_when_no_center_answers(tmp_path: Path, nats_url: str) -> None:
    """No center process subscribed: a clear error naming the cause, the CLI's error exit, no traceback."""
    site = _site(random.Random(46))
    data = make_site(tmp_path, site, nats_url)
    proc = subprocess.run([sys.executable, "-m", "shouwang", "agent", "restore", "--data", str(data),
                           "--timeout", "3", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no center answers restore requests" in proc.stderr and "records nothing until" in proc.stderr
    assert "Traceback" not in proc.stderr
    with LocalLog(data / "log.sqlite", site) as log:
        assert log.meta(RESTORING) == "1"  # recording waits until a restore finishes


async def test_restore_brings_back_what_other_sites_recorded_about_its_children(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool, nats_url: str) -> None:
    """A village registers a child; the child's school records visits; the village's disk dies.
    After the restore the new machine's log holds the school's events in its inbox again, so its
    offline pages show the child as before (its care.down consumer will not deliver them twice)."""
    rng = random.Random(48)
    village, school = _site(rng), _site(rng).replace(".r", ".s")
    for s, kind in ((village, "village"), (school, "school")):
        await register_site(pool, s, kind, "测试站")
    reg = sample_registration(rng, village_site=village, school_site=school)
    when = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
    async with run_center(database_url, nats_url):
        old = make_site(tmp_path / "old-disk", village, nats_url)
        school_data = make_site(tmp_path / "school", school, nats_url, SiteKind.SCHOOL)
        async with Agent(old, tuning=FAST) as village_agent:
            village_agent.log.record([Draft(care=reg, occurred_at=when)], default_actor="station")
            village_agent.uploader.notify()
            assert await village_agent.wait_synced(60)
            async with Agent(school_data, tuning=FAST) as agent:
                agent.log.record([Draft(care=c.HomeVisitMade(child_id=reg.child_id, visitor="石晓"),
                                        occurred_at=when) for _ in range(3)], default_actor="teacher")
                agent.uploader.notify()
                assert await agent.wait_synced(60)
            await eventually(lambda: village_agent.log.inbox_count() == 3, 30,
                             "the school's visits at the village before the crash")

        new = make_site(tmp_path / "new-disk", village, nats_url)
        report = await restore(new)
        assert (report.events, report.received) == (1, 3)
        with LocalLog(new / "log.sqlite", village) as log:
            kinds = sorted(e.type for e in log.child_events(reg.child_id))
            assert kinds == ["ChildRegistered", "HomeVisitMade", "HomeVisitMade", "HomeVisitMade"]
            assert log.meta(RESTORING) is None
