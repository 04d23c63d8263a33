"""`shouwang center ...`: the operator's commands for sites, quarantine and running the center."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from events.catalogue import HomeVisitMade
from service.quarantine import list_rows
from service.streams import ensure_streams
from shouwang.cli import main
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats, free_port
from tests.center_kit import SiteInbox, client, own_nats, publish, wait_for
from tests.factory import SiteWriter

__all__ = ["client", "own_nats"]

LATE = "gx-lp.xy.s07"


async def shouwang(capsys: pytest.CaptureFixture[str], database_url: str, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in a thread (it runs its own event loop), with the test's database."""
    code = await asyncio.to_thread(main, [*argv, "--database-url", database_url])
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_site_commands(capsys: pytest.CaptureFixture[str], database_url: str, tmp_path: Path) -> None:
    """site add prints the credentials and writes the users file, list shows the site, disable removes it from the
    users file, and a bad site id or kind is refused naming the value."""
    users = tmp_path / "users.conf"
    creds = tmp_path / "site.creds.json"
    code, out, _ = await shouwang(capsys, database_url, "center", "site", "add", LATE, "--kind", "school",
                                  "--name", "中心小学", "--users-file", str(users), "--creds-out", str(creds))
    assert code == 0 and "password:" in out and "_INBOX.gx-lp.xy.s07" in out
    password = next(line.split()[-1] for line in out.splitlines() if "password:" in line)
    assert json.loads(creds.read_text()) == {"site_id": LATE, "user": LATE, "password": password,
                                             "inbox_prefix": "_INBOX." + LATE, "durable": "site_gx-lp_xy_s07"}
    assert creds.stat().st_mode & 0o077 == 0
    assert f'user: "{LATE}", password: "{password}"' in users.read_text()
    code, out, _ = await shouwang(capsys, database_url, "center", "site", "list", "--json")
    [site] = json.loads(out)
    assert (site["site_id"], site["kind"], site["active"]) == (LATE, "school", True)
    code, out, _ = await shouwang(capsys, database_url, "center", "site", "disable", LATE, "--users-file", str(users))
    assert code == 0 and LATE not in users.read_text()
    code, _, err = await shouwang(capsys, database_url, "center", "site", "add", "Bad.Site", "--kind", "school",
                                  "--name", "x")
    assert code == 2 and "'Bad.Site'" in err
    code, _, err = await shouwang(capsys, database_url, "center", "site", "add", LATE, "--kind", "village",
                                  "--name", "x")
    assert code == 2 and "already registered as a school" in err


async def test_quarantine_commands(capsys: pytest.CaptureFixture[str], database_url: str, pool: asyncpg.Pool,
                                   own_nats: EmbeddedNats, client: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    """quarantine list shows a late site's held events, show prints the raw event, and after site add a replay stores
    them and sends the site a receipt."""
    from service.center import run_center

    writer = SiteWriter(LATE)
    events = [writer.write(HomeVisitMade(child_id="c-" + "4" * 32, visitor="石晓")) for _ in range(2)]
    async with run_center(database_url, own_nats.url, parts=("ingest",)):
        await publish(client.jetstream(), events)
        await wait_for(lambda: _held(pool, 2), what="two held rows")
    code, out, _ = await shouwang(capsys, database_url, "center", "quarantine", "list")
    assert code == 0 and out.count("not registered") == 2
    first = (await list_rows(pool))[0].id
    code, out, _ = await shouwang(capsys, database_url, "center", "quarantine", "show", str(first))
    shown = json.loads(out)
    assert json.loads(shown["raw"])["event_id"] == events[0].event.event_id
    code, out, _ = await shouwang(capsys, database_url, "center", "quarantine", "replay", str(first),
                                  "--nats-url", "")
    assert code == 1 and "refused: site gx-lp.xy.s07 is not registered" in out  # still: not registered yet
    await shouwang(capsys, database_url, "center", "site", "add", LATE, "--kind", "school", "--name", "中心小学")
    await ensure_streams(client.jetstream())
    monkeypatch.setenv("SHOUWANG_NATS_URL", own_nats.url)
    code, out, _ = await shouwang(capsys, database_url, "center", "quarantine", "replay", "--site", LATE)
    assert code == 0 and out.count("stored") == 2
    assert (await EventStore(pool).progress(LATE)).watermark == 2
    receipt = await SiteInbox(client.jetstream(), LATE).wait_receipt(lambda r: r.watermark == 2)
    assert receipt.holes == []
    code, out, _ = await shouwang(capsys, database_url, "center", "quarantine", "replay", str(first))
    assert code == 2


async def _held(pool: asyncpg.Pool, n: int) -> bool:
    return len(await list_rows(pool)) == n


async def test_center_run_stops_cleanly_on_sigterm(tmp_path: Path, database_url: str, own_nats: EmbeddedNats,
                                                   client: NATS) -> None:
    """`shouwang center run` serves until SIGTERM, then stops its tasks and exits 0."""
    code, text = await _sigterm_once_logged(tmp_path, database_url, own_nats.url, ["--ingesters", "2"],
                                            "center started")
    assert code == 0, text[-2000:]
    assert '"center stopped"' in text and "Traceback" not in text


async def _logged(log: Path, what: str) -> bool:
    return what in log.read_text()  # noqa: ASYNC240 - a small local file


async def _sigterm_once_logged(tmp_path: Path, database_url: str, nats_url: str, args: list[str],
                               ready: str) -> tuple[int, str]:
    """Start `shouwang center run ARGS`, send SIGTERM once `ready` is in its log: (exit code, log)."""
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url, "SHOUWANG_NATS_URL": nats_url,
           "SHOUWANG_LOG_LEVEL": "info", "SHOUWANG_LOG_JSON": "true"}
    log = tmp_path / "center.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shouwang", "center", "run", *args],  # noqa: ASYNC220
                                env=env, stdout=out, stderr=out)
    try:
        await wait_for(lambda: _logged(log, ready), within=30, what=f"{ready} in the center's log")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return code, log.read_text()


async def test_center_run_waiting_for_nats_stops_on_sigterm(tmp_path: Path, database_url: str) -> None:
    """NATS is down at start: the center keeps trying (warnings in the log) and, told to stop
    meanwhile, exits at once instead of when NATS comes back."""
    code, text = await _sigterm_once_logged(tmp_path, database_url, f"nats://127.0.0.1:{free_port()}", [],
                                            '"nats error"')
    assert code == 0, text[-2000:]
    assert "stopped while starting" in text and "Traceback" not in text


def test_commands_name_an_unreachable_database_in_one_line() -> None:
    """PostgreSQL down or a wrong URL: one line naming what to check, exit 1, no traceback."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/shouwang"
    for argv in (["center", "run"], ["projections", "status"], ["center", "site", "list"]):
        proc = subprocess.run([sys.executable, "-m", "shouwang", *argv],
                              env={**os.environ, "SHOUWANG_DATABASE_URL": url}, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1, (argv, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr, argv
        assert "SHOUWANG_DATABASE_URL" in proc.stderr and "ConnectionRefusedError" in proc.stderr, argv
