"""The site's local SQLite log: durable sealing, two writers, refusals, a locked or full disk, a damaged chain."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from events.envelope import GENESIS_HASH, parse_drafts
from events.samples import SampleSite, sample_registration
from events.validation import ValidationFailed
from sync_agent.accounts import Accounts
from sync_agent.agent import Agent
from sync_agent.config import load_config, log_path
from sync_agent.locallog import LocalLog, LogCorrupted, LogFull, LogLocked
from sync_agent.serve import create_app
from tests.agent_support import drafts, make_site

# The installed command (with `python -m shouwang` its CliError would be a second class).
SHOUWANG = str(Path(sys.executable).parent / "shouwang")
SITE = "gx-lp.xy.v07"
CHILD = "c-0123456789abcdef0123456789abcdef"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_site(tmp_path, SITE, "nats://127.0.0.1:1")


def visit(visitor: str = "石晓") -> bytes:
    return json.dumps({"type": "HomeVisitMade", "child_id": CHILD, "visitor": visitor,
                       "occurred_at": "2026-03-01T10:00:00Z"}).encode()


def shouwang(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SHOUWANG, "agent", *args], input=stdin, capture_output=True,
                          timeout=120, env={**os.environ, "SHOUWANG_LOG_LEVEL": "warning"})


def rows(data: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(log_path(data)) as conn:
        return [(int(r[0]), str(r[1])) for r in conn.execute("SELECT site_seq, hash FROM log ORDER BY site_seq")]


def test_the_log_is_wal_with_full_fsync_and_chains_from_genesis(data: Path) -> None:
    """The log runs in WAL mode with synchronous=FULL and its first event links to the genesis hash."""
    with LocalLog(log_path(data), SITE) as log:
        assert log._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        [first] = log.record(parse_drafts(visit()), default_actor="station")
        [event] = list(log.own_events())
    assert (first.site_seq, event.prev_hash, event.actor) == (1, GENESIS_HASH, "station")


def test_two_processes_recording_at_once_keep_the_sequence_and_chain(data: Path) -> None:
    """Two processes recording into one log at the same time leave a gapless sequence and an unbroken chain."""
    script = (
        "import sys, time\n"
        "from events.envelope import parse_drafts\n"
        "from sync_agent.locallog import LocalLog\n"
        f"log = LocalLog(sys.argv[1], {SITE!r})\n"
        "time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # both start together\n"
        "for i in range(int(sys.argv[2])):\n"
        f"    log.record(parse_drafts({visit().decode()!r}.encode()), default_actor=sys.argv[3])\n"
        "    time.sleep(0.002)  # a breath between records, or SQLite's busy wait may starve the other\n"
    )
    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(log_path(data)), "300", f"writer-{i}", start])
             for i in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    with LocalLog(log_path(data), SITE) as log:
        report = log.verify()
        actors = [e.actor for e in log.own_events()]
    assert (report.events, report.head_seq) == (600, 600)
    assert sorted(set(actors)) == ["writer-0", "writer-1"]
    assert actors != sorted(actors), "the two writers' records should interleave"


def test_a_refused_batch_lists_every_problem_and_writes_nothing(data: Path) -> None:
    """A batch with bad drafts is refused with each problem named by field, and none of its drafts is written."""
    batch = json.dumps([json.loads(visit()), {"type": "HomeVisitMade", "child_id": "bad", "occurred_at": "x"},
                        {"type": "NoSuchEvent"}]).encode()
    with LocalLog(log_path(data), SITE) as log:
        with pytest.raises(ValidationFailed) as err:
            log.record(parse_drafts(batch), default_actor="station")
        assert log.last_seq() == 0
    fields = {p.field for p in err.value.problems}
    assert {"[1].child_id", "[1].occurred_at", "[1].visitor", "[2].type"} <= fields
    # The same through the command line: exit 1, the problems on stderr, nothing recorded.
    out = shouwang("record", "--data", str(data), stdin=batch)
    assert out.returncode == 1
    assert b"[1].child_id" in out.stderr and b"nothing recorded" in out.stderr
    assert rows(data) == []


def test_an_invalid_actor_is_refused_by_field(data: Path) -> None:
    """A sealed event is checked as the center will check it, so a bad actor is refused before it is written."""
    with LocalLog(log_path(data), SITE) as log, pytest.raises(ValidationFailed) as err:
        log.record(parse_drafts(visit()), default_actor="no spaces allowed")
    assert [p.field for p in err.value.problems] == ["actor"]


def test_a_locked_log_gives_a_clear_error_and_no_half_written_event(data: Path) -> None:
    """While another program holds the write lock, recording fails clearly and writes nothing; afterwards the
    sequence continues without a gap."""
    with LocalLog(log_path(data), SITE, busy_timeout=0.2) as log:
        log.record(parse_drafts(visit()), default_actor="station")
        other = sqlite3.connect(log_path(data), isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(LogLocked, match="locked by another program"):
            log.record(parse_drafts(visit()), default_actor="station")
        other.execute("ROLLBACK")
        other.close()
        [again] = log.record(parse_drafts(visit()), default_actor="station")
        assert again.site_seq == 2
        assert log.verify().events == 2


def test_a_full_disk_gives_a_clear_error_and_no_half_written_event(data: Path) -> None:
    """When the disk is full mid-batch, recording fails clearly, nothing of the batch stays, and the sequence
    continues without a gap once there is room."""
    rng = random.Random(7)
    with LocalLog(log_path(data), SITE) as log:
        log.record(drafts(10, rng), default_actor="station")
        pages = log._conn.execute("PRAGMA page_count").fetchone()[0]
        log._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own "disk full"
        with pytest.raises(LogFull, match="full; nothing was recorded"):
            log.record(drafts(2000, rng), default_actor="station")
        assert log.last_seq() == 10
        log._conn.execute("PRAGMA max_page_count = 1073741823")
        done = log.record(drafts(5, rng), default_actor="station")
        assert [r.site_seq for r in done] == [11, 12, 13, 14, 15]
        assert log.verify().events == 15


def _tamper(data: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(log_path(data)) as conn:
        conn.execute(sql, args)


@pytest.mark.parametrize("damage", ["edit", "edit-and-rehash", "delete"])
async def test_a_damaged_log_is_refused_at_start_up(data: Path, damage: str) -> None:
    """An edited, re-hashed or shortened local log is detected by the hash chain at start-up and refused, not
    re-chained: the agent does not start and the command says which event is broken."""
    rng = random.Random(8)
    with LocalLog(log_path(data), SITE) as log:
        log.record(drafts(20, rng), default_actor="station")
    with sqlite3.connect(log_path(data)) as conn:
        body = conn.execute("SELECT body FROM log WHERE site_seq = 7").fetchone()[0]
    doc = json.loads(body)
    doc["actor"] = "someone-else"
    edited = json.dumps(doc).encode()
    if damage == "edit":
        _tamper(data, "UPDATE log SET body = ? WHERE site_seq = 7", edited)
    elif damage == "edit-and-rehash":
        from events.envelope import Event, event_hash
        _tamper(data, "UPDATE log SET body = ?, hash = ? WHERE site_seq = 7", edited,
                event_hash(msgspec.json.decode(edited, type=Event)))
    else:
        _tamper(data, "DELETE FROM log WHERE site_seq = 7")
    broken_at = 8 if damage == "edit-and-rehash" else 7
    with LocalLog(log_path(data), SITE) as log, pytest.raises(LogCorrupted) as err:
        log.verify()
    assert err.value.site_seq == broken_at
    agent = Agent(data)
    with pytest.raises(LogCorrupted):
        await agent.start()
    await agent.stop()
    out = await asyncio.to_thread(shouwang, "sync", "--once", "--data", str(data))
    assert out.returncode == 2
    assert f"site_seq {broken_at}".encode() in out.stderr and b"refused rather than re-chained" in out.stderr
    assert len(rows(data)) == (19 if damage == "delete" else 20)  # nothing was repaired or re-chained


def test_an_update_is_based_on_what_the_site_knows(data: Path) -> None:
    """Recording an archive update fills based_on with the event that last set each field in the local view."""
    rng = random.Random(9)
    school = SampleSite("gx-lp.xy.s01")
    reg = school.write(sample_registration(rng, CHILD))
    with LocalLog(log_path(data), SITE) as log:
        log.apply_inbound([(reg.event, msgspec.json.encode(reg.event))])
        upd = {"type": "ArchiveUpdated", "child_id": CHILD, "grade": 6, "occurred_at": "2026-03-03T10:00:00Z"}
        call = {"type": "ParentCallMade", "child_id": CHILD, "parent": "母亲", "occurred_at": "2026-03-03T10:00:00Z"}
        again = {**upd, "grade": 7}
        first, _, second = log.record(parse_drafts(json.dumps([upd, call, again]).encode()), default_actor="station")
        events = {e.event_id: e for e in log.child_events(CHILD)}
    assert events[first.event_id].based_on == {"grade": reg.event.event_id}
    assert events[second.event_id].based_on == {"grade": first.event_id}  # within one batch too
    assert events[first.event_id].recorded_at > reg.event.recorded_at  # the HLC observed the school's clock


async def test_local_http_records_refuses_and_shows_offline(data: Path) -> None:
    """The local HTTP endpoint records drafts durably, refuses bad ones by field with nothing written, and shows
    the child's archive with no center reachable."""
    with Accounts(data) as accounts:  # the endpoint answers only a logged-in caller (tests/security)
        accounts.add_user("staff-01", "staff", "made-up-password-01")
        _, token = accounts.issue_token("staff-01")
    app = create_app(data, sync=False)
    reg = msgspec.json.encode({**msgspec.to_builtins(sample_registration(random.Random(10), CHILD)),
                               "occurred_at": "2026-03-01T08:00:00Z"})
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with AsyncTestClient(app, base_url="http://127.0.0.1:8470") as client:
        client.headers.update(auth)
        ok = await client.post("/events", content=b"[" + reg + b"," + visit() + b"]")
        assert ok.status_code == 201, ok.text
        assert [e["site_seq"] for e in ok.json()["events"]] == [1, 2]
        bad = await client.post("/events", content=b'{"type": "HomeVisitMade", "child_id": "x"}')
        assert bad.status_code == 422
        assert {p["field"] for p in bad.json()["problems"]} >= {"child_id", "occurred_at", "visitor"}
        shown = await client.get(f"/children/{CHILD}")
        assert shown.status_code == 200
        assert shown.json()["registered"] is True and len(shown.json()["timeline"]) == 2
        status = (await client.get("/status")).json()
        assert (status["recorded"], status["pending"]) == (2, 2)
    assert load_config(data).site_id == SITE


def test_cli_init_record_status_show(tmp_path: Path) -> None:
    """`agent init`, `record`, `status --json` and `show` work together offline."""
    d = tmp_path / "site"
    assert shouwang("init", "--data", str(d), "--site", SITE, "--kind", "village", "--name", "青石村",
                    "--nats", "nats://127.0.0.1:1").returncode == 0
    rec = shouwang("record", "--data", str(d), stdin=visit())
    assert rec.returncode == 0 and len(rec.stdout.split()) == 1
    st = json.loads(shouwang("status", "--data", str(d), "--json").stdout)
    assert (st["recorded"], st["pending"], st["center_watermark"], st["last_contact"]) == (1, 1, 0, None)
    shown = shouwang("show", "--data", str(d), CHILD)
    assert shown.returncode == 0 and b"HomeVisitMade" in shown.stdout
    other = shouwang("init", "--data", str(d), "--site", "gx-lp.xy.v99", "--kind", "village", "--name", "x",
                     "--nats", "nats://127.0.0.1:1")
    assert other.returncode == 2 and b"already belongs to site" in other.stderr
