"""The agent's commands with the center out of reach: bounded exits, one line per change of state,
one-line errors; and the command's help, exit codes, environment and logs."""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shouwang.cli import build_parser
from sync_agent.config import log_path
from sync_agent.locallog import LocalLog
from testbed.embedded import EmbeddedNats, free_port
from tests.agent_support import drafts, make_site

SHOUWANG = [sys.executable, "-m", "shouwang"]
SITE = "gx-lp.xy.v71"


def run(*args: str, env: dict[str, str] | None = None, within: float = 120) -> tuple[int, str, str, float]:
    started = time.monotonic()
    done = subprocess.run([*SHOUWANG, *args], capture_output=True, text=True, timeout=within, check=False,
                          env={**os.environ, "SHOUWANG_LOG_LEVEL": "info", **(env or {})})
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def site_with_events(tmp_path: Path, nats_url: str, n: int = 3) -> Path:
    data = make_site(tmp_path, SITE, nats_url)
    with LocalLog(log_path(data), SITE) as log:
        log.record(drafts(n, random.Random(7)), default_actor="station")
    return data


def lines(stderr: str, event: str) -> list[str]:
    return [line for line in stderr.splitlines() if f'"event": "{event}"' in line]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never says anything (a line that hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"nats://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_sync_once_with_nats_down_exits_1_in_bounded_time_logging_the_outage_once(tmp_path: Path) -> None:
    """Nothing listens at the NATS URL: `sync --once --timeout 6` exits 1 within a few seconds of
    the timeout, says it is not synced, logs "center unreachable" once (not two warnings a
    second) and prints no traceback."""
    data = site_with_events(tmp_path, f"nats://127.0.0.1:{free_port()}")
    code, _, err, took = run("agent", "sync", "--data", str(data), "--once", "--timeout", "6")
    assert code == 1, err[-2000:]
    assert took < 6 + 15, took
    assert "not synced after 6 s" in err and "3 events still not receipted" in err
    assert len(lines(err, "center unreachable")) == 1, err
    assert sum('"level": "warning"' in line for line in err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_sync_once_against_a_server_that_never_answers_always_exits(tmp_path: Path, silent_server: str) -> None:
    """A NATS URL whose peer accepts and then says nothing: every run exits 1 by the timeout plus a
    few seconds (it hung in 2 of 4 runs)."""
    data = site_with_events(tmp_path, silent_server)
    for _ in range(4):
        code, _, err, took = run("agent", "sync", "--data", str(data), "--once", "--timeout", "3")
        assert code == 1, err[-2000:]
        assert took < 3 + 15, took
        assert "Traceback" not in err


def test_sync_once_exits_when_nats_dies_under_it(tmp_path: Path) -> None:
    """NATS up at the start and killed while `sync --once` waits for receipts (no center runs):
    exit 1 in bounded time, the lost connection logged once."""
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        data = site_with_events(tmp_path, server.url)
        started = time.monotonic()
        proc = subprocess.Popen([*SHOUWANG, "agent", "sync", "--data", str(data), "--once", "--timeout", "8"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "SHOUWANG_LOG_LEVEL": "info"})
        # Killed once the agent says it is connected (a fixed delay raced the agent's start-up on a
        # loaded machine: NATS was gone before it connected), and a moment on, while it waits.
        seen: list[str] = []

        def read_and_kill() -> None:
            assert proc.stderr is not None
            killed = False
            for line in proc.stderr:
                seen.append(line)
                if not killed and '"event": "connected"' in line:
                    time.sleep(0.5)
                    server.kill()
                    killed = True

        reader = threading.Thread(target=read_and_kill, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=8 + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(timeout=10)
            assert proc.stderr is not None
            proc.stderr.close()
        err = "".join(seen)
        assert proc.returncode == 1, err[-2000:]
        assert time.monotonic() - started < 8 + 15
        assert len(lines(err, "connected")) == 1, err
        assert len(lines(err, "center unreachable")) == 1, err
        assert "Traceback" not in err
    finally:
        server.stop()


def test_restore_against_an_unknown_host_is_one_line(tmp_path: Path) -> None:
    """`agent restore` with a NATS host that does not resolve: one line naming it, exit 1, no
    traceback (nats-py printed one per attempt)."""
    data = make_site(tmp_path, SITE, "nats://nowhere.invalid:4222")
    code, out, err, _ = run("agent", "restore", "--data", str(data), "--timeout", "5",
                            env={"SHOUWANG_LOG_LEVEL": "warning"})
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("shouwang: cannot reach the center's NATS at nats://nowhere.invalid")
    assert "Traceback" not in err and out == ""


def test_data_defaults_from_shouwang_data(tmp_path: Path) -> None:
    """Without --data, `agent status` uses SHOUWANG_DATA; without either it is a user error (2)."""
    data = site_with_events(tmp_path, "nats://127.0.0.1:4222")
    code, out, err, _ = run("agent", "status", "--json", env={"SHOUWANG_DATA": str(data)})
    assert code == 0, err
    assert json.loads(out)["site_id"] == SITE
    env = {k: v for k, v in os.environ.items() if k != "SHOUWANG_DATA"}
    done = subprocess.run([*SHOUWANG, "agent", "status"], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode == 2 and "--data" in done.stderr


def test_every_option_has_help_and_the_exit_codes_are_documented() -> None:
    """Every option and argument of every command has help text; `shouwang --help` lists the exit codes."""
    parser = build_parser()
    missing: list[str] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {action.option_strings or action.dest}")

    walk(parser, "shouwang")
    assert missing == []
    text = parser.format_help()
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in text


def test_library_logs_go_through_structlog_without_tracebacks() -> None:
    """A library's log record with an exception (as nats-py logs a failed connect) is one JSON
    line with the exception's type and message, no traceback."""
    code = ("from runtime import log; import logging\n"
            "log.configure('info', True)\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
            "    logging.getLogger('nats.aio.client').error('nats: encountered error', exc_info=True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.strip().splitlines()
    record = json.loads(line)
    assert (record["event"], record["level"], record["logger"]) == ("nats: encountered error", "error",
                                                                     "nats.aio.client")
    assert record["exception"] == "ZeroDivisionError: division by zero"
    assert "Traceback" not in done.stderr


def test_agent_serve_logs_requests_without_query_cookies_or_tokens(tmp_path: Path) -> None:
    """`agent serve` writes an access line per request through structlog: method, path without
    its query string, status; never the cookie, the Bearer token or the query's text."""
    data = make_site(tmp_path, SITE, "nats://127.0.0.1:4222")
    port = free_port()
    proc = subprocess.Popen([*SHOUWANG, "agent", "serve", "--data", str(data), "--no-sync", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SHOUWANG_LOG_LEVEL": "info"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/status?name=%E5%BC%A0%E4%B8%89secret",
                    headers={"Authorization": "Bearer tok-SECRET-123", "Cookie": "session=COOKIE-SECRET"})
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError:
                break  # answered (refused: the token is not one of the station's)
            except OSError:
                assert time.monotonic() < deadline, "agent serve did not start"
                time.sleep(0.2)
                continue
            break
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    access = [json.loads(line) for line in lines(err, "http request")]
    assert access, err[-2000:]
    assert access[-1]["path"] == "/status" and access[-1]["method"] == "GET"
    assert isinstance(access[-1]["status"], int)
    for secret in ("secret", "SECRET", "%E5%BC%A0", "张三", "name="):
        assert secret not in err
    assert "Traceback" not in err
