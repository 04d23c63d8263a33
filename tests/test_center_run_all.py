"""`shouwang center run` is the whole center: every part, the projector and the HTTP API with the
dashboard, in one command an operator (or systemd, or compose) starts and stops."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from events.samples import SampleSite, sample_registration
from service.api import auth
from service.sites import register_site
from testbed.embedded import EmbeddedNats, free_port
from tests.center_kit import publish, wait_for

SITE = "gx-lp.xy.v01"


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A NATS server of this test's own (the center's streams and consumers start empty)."""
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def _children_of(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_center_run_serves_ingests_projects_and_stops(tmp_path: Path, database_url: str, pool: asyncpg.Pool,
                                                           own_nats: EmbeddedNats) -> None:
    """`center run` with no options answers /ready over HTTP, ingests a station's event, projects it so
    the API shows the child, and on SIGTERM stops with its child processes and exits 0."""
    await register_site(pool, SITE, "village", "青石村")
    await auth.add_user(pool, "li.v01", "station", "a long password", site_id=SITE)
    token = (await auth.issue_token(pool, "li.v01", hours=1)).token
    port = free_port()
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url, "SHOUWANG_NATS_URL": own_nats.url,
           "SHOUWANG_API_PORT": str(port), "SHOUWANG_LOG_LEVEL": "info", "SHOUWANG_LOG_JSON": "true"}
    log = tmp_path / "center.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shouwang", "center", "run"],  # noqa: ASYNC220
                                env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    children: set[int] = set()
    try:
        async def ready() -> bool:
            status, body = await asyncio.to_thread(_get, f"{base}/ready")
            return status == 200 and json.loads(body)["ready"] is True

        await wait_for(ready, within=60, what=f"/ready on {base} ({log})")
        children = _children_of(proc.pid)
        assert len(children) == 2, children  # the projector and the HTTP API

        registration = sample_registration(random.Random(3), village_site=SITE)
        nc = await nats.connect(own_nats.url)
        try:
            await publish(nc.jetstream(), SampleSite(SITE).write(registration))
        finally:
            await nc.close()

        async def shown() -> bool:
            status, body = await asyncio.to_thread(_get, f"{base}/children/{registration.child_id}", token)
            return status == 200 and registration.child_id in body.decode()

        await wait_for(shown, within=30, what="the child in the API (ingested and projected)")
        assert await pool.fetchval("SELECT count(*) FROM events") == 1

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in children:  # never leave one running, whatever failed above
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert not [pid for pid in children if _alive(pid)], "a child of center run outlived it"
    assert text.count('"center part stopped"') == 2 and '"center stopped"' in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


async def test_center_run_parts_split_and_a_dead_child_stops_the_center(tmp_path: Path, database_url: str) -> None:
    """`--parts api` runs only the HTTP API (no NATS needed for the process itself); when that child is
    killed, `center run` stops and exits 1 naming the part, so its unit restarts it."""
    port = free_port()
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url, "SHOUWANG_API_CONNECT_NATS": "false",
           "SHOUWANG_LOG_LEVEL": "info", "SHOUWANG_LOG_JSON": "true"}
    log = tmp_path / "center.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shouwang", "center", "run", "--parts", "api",  # noqa: ASYNC220
                                 "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    children: set[int] = set()
    try:
        async def up() -> bool:
            status, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health")
            return status == 200

        await wait_for(up, within=60, what=f"/health on port {port} ({log})")
        children = _children_of(proc.pid)
        assert len(children) == 1, children
        os.kill(next(iter(children)), signal.SIGKILL)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "center part api" in text and "exited with -9" in text, text[-3000:]
