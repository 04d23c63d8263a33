"""The township under test: testbed.demo's parts (embedded servers, `center run`, `projections
run`, one `agent serve` per site behind a TcpProxy line, the HTTP API in-process) with the
handles the fault harness needs: kill -9 and restart of every process, a supervisor that
restarts what died on its own (as systemd would), site clocks set wrong, a backup of the
center taken and restored, and a feeder that records the scenario through each station's
local HTTP endpoint (and now and then through `shouwang agent record`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from runtime.db import connect
from sync_agent.clock import SKEW_KEY
from testbed.demo import Demo, DemoError, Proc, Station, spawn
from testbed.embedded import pg_bin
from testbed.simulation import Planned


class ChaosError(RuntimeError):
    """The harness itself could not do what it needed (not a finding about the system)."""


class Town(Demo):
    """A Demo whose processes the harness may kill, restart and hold down."""

    def __init__(self, data: Path, *, children: int, villages: int, schools: int, days: int, seed: int,
                 progress: Callable[[str], None], nats_nodes: int = 1) -> None:
        super().__init__(data, children=children, villages=villages, schools=schools, days=days, seed=seed,
                         progress=progress, nats_nodes=nats_nodes)
        self.skew: dict[str, int] = {}  # site -> clock skew in seconds of its running agent
        self.held: set[str] = set()  # process names the harness keeps down on purpose
        self.locks: dict[str, asyncio.Lock] = {}
        self.unexpected_exits: dict[str, int] = {}
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self.recorded_by_cli = 0

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    # --- processes ----------------------------------------------------------------------

    def center_proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    async def start_center_proc(self, name: str) -> None:
        args = {"center": ["center", "run"], "projections": ["projections", "run"]}[name]
        new = await spawn(name, args, self.data / "logs" / f"{name}.log", self._env())
        self.procs = [p for p in self.procs if p.name != name] + [new]

    async def start_agent(self, site: str) -> None:
        station = self.stations[site]
        env = {**self._env(), SKEW_KEY: str(self.skew.get(site, 0))}
        station.proc = await spawn(f"agent {site}", ["agent", "serve", "--data", str(station.data), "--port",
                                                     str(station.port)],
                                   self.data / "logs" / f"agent-{site}.log", env)

    def proc_of(self, name: str) -> Proc | None:
        if name.startswith("agent "):
            return self.stations[name[6:]].proc
        return self.center_proc(name)

    def all_names(self) -> list[str]:
        return ["center", "projections", *(f"agent {s}" for s in self.stations)]

    async def kill9(self, name: str) -> None:
        proc = self.proc_of(name)
        if proc is not None and proc.proc.returncode is None:
            proc.proc.kill()
            await proc.proc.wait()

    async def restart(self, name: str) -> None:
        if name.startswith("agent "):
            await self.start_agent(name[6:])
        else:
            await self.start_center_proc(name)
        self.restarts += 1

    def alive(self, name: str) -> bool:
        proc = self.proc_of(name)
        return proc is not None and proc.proc.returncode is None

    def start_supervisor(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="chaos-supervisor")

    async def stop_supervisor(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    async def _supervise(self) -> None:
        """Restart any process that exited without the harness asking (Restart=always)."""
        while True:
            await asyncio.sleep(0.5)
            for name in self.all_names():
                if name in self.held or self.alive(name):
                    continue
                lock = self.lock(name)
                if lock.locked():
                    continue  # a fault is handling it
                async with lock:
                    if name in self.held or self.alive(name):
                        continue
                    proc = self.proc_of(name)
                    code = proc.proc.returncode if proc is not None else None
                    self.unexpected_exits[name] = self.unexpected_exits.get(name, 0) + 1
                    self.progress(f"supervisor: {name} exited by itself (code {code}); restarting")
                    await asyncio.sleep(0.5)
                    await self.restart(name)

    async def wait_agent(self, site: str, within: float = 60) -> None:
        station = self.stations[site]
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(station.url + "/status", headers=station.headers)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise ChaosError(f"agent {site} did not answer within {within}s")

    # --- the center's backup --------------------------------------------------------------

    async def backup(self, path: Path) -> None:
        """pg_dump of the center's database (a consistent snapshot while everything runs)."""
        out = await asyncio.to_thread(subprocess.run, [str(pg_bin() / "pg_dump"), "-Fc", "-f", str(path),
                                                       "-d", self.db_url], capture_output=True, text=True,
                                      timeout=300, check=False)
        if out.returncode != 0:
            raise ChaosError(f"pg_dump failed: {out.stderr[-800:]}")

    async def restore(self, path: Path) -> None:
        """Replace the center's database by the backup (the caller holds the center down)."""
        assert self.pg is not None
        conn = await connect(self.pg.url)
        try:
            await conn.execute('DROP DATABASE IF EXISTS "shouwang" WITH (FORCE)')
            await conn.execute('CREATE DATABASE "shouwang"')
        finally:
            await conn.close()
        out = await asyncio.to_thread(subprocess.run, [str(pg_bin() / "pg_restore"), "--no-owner", "-d",
                                                       self.db_url, str(path)], capture_output=True, text=True,
                                      timeout=600, check=False)
        if out.returncode != 0:
            raise ChaosError(f"pg_restore failed: {out.stderr[-800:]}")

    # --- recording ------------------------------------------------------------------------

    async def record(self, client: httpx.AsyncClient, site: str, plans: list[Planned], *, via_cli: bool) -> None:
        """Record a site's plans exactly once, waiting out a dead or restarting agent.

        The station's lock keeps the harness from killing the agent while a request is in
        flight; if the agent died by itself mid-request, its local log tells whether the batch
        was recorded before the request is sent again."""
        station = self.stations[site]
        good = [p.draft for p in plans if not p.refused]
        async with self.lock(f"agent {site}"):
            if good:
                await self._record_good(client, station, good, via_cli=via_cli)
            for p in plans:
                if p.refused:
                    r = await self._post_body(client, station, msgspec.json.encode(p.draft))
                    if r.status_code != 422:
                        raise ChaosError(f"{site} accepted a record it must refuse: {r.status_code}")
                    station.refused += 1

    async def _record_good(self, client: httpx.AsyncClient, station: Station, good: list[dict[str, Any]], *,
                           via_cli: bool) -> None:
        site = station.spec.site_id
        before = local_last_seq(station.data)
        body = msgspec.json.encode(good)
        for _ in range(200):
            if via_cli:
                ok = await self._record_cli(station, body)
            else:
                try:
                    r = await self._post_body(client, station, body)
                    if r.status_code != 201:
                        raise ChaosError(f"{site} refused good records: {r.status_code} {r.text[:300]}")
                    ok = True
                except (httpx.TransportError, ChaosError) as err:
                    if isinstance(err, ChaosError) and "refused good" in str(err):
                        raise
                    ok = False
            after = local_last_seq(station.data)
            if ok or after == before + len(good):
                station.recorded += len(good)
                return
            if after != before:
                raise ChaosError(f"{site}: a failed request left {after - before} of {len(good)} events recorded")
            await asyncio.sleep(0.3)
        raise ChaosError(f"{site}: could not record a batch in 200 attempts")

    async def _post_body(self, client: httpx.AsyncClient, station: Station, body: bytes) -> httpx.Response:
        last: Exception | None = None
        for _ in range(300):
            try:
                return await client.post(station.url + "/events", content=body, headers=station.headers)
            except httpx.ConnectError as err:  # the agent is restarting
                last = err
                await asyncio.sleep(0.2)
        raise ChaosError(f"agent {station.spec.site_id} unreachable: {last!r}")

    async def _record_cli(self, station: Station, body: bytes) -> bool:
        site = station.spec.site_id
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            f.write(body)
        try:
            env = {**os.environ, **self._env(), SKEW_KEY: str(self.skew.get(site, 0))}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shouwang", "agent", "record", "--data", str(station.data), f.name, "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            out, err = await proc.communicate()
        finally:
            os.unlink(f.name)
        if proc.returncode == 0:
            self.recorded_by_cli += len(msgspec.json.decode(out))
            return True
        if b"refused" in err:
            raise ChaosError(f"{site}: `agent record` refused good records: {err.decode()[-300:]}")
        return False


def local_last_seq(data: Path) -> int:
    """The highest site_seq in a site's local log (read-only, beside the running agent)."""
    conn = sqlite3.connect(f"file:{data / 'log.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT coalesce(max(site_seq), 0) FROM log").fetchone()[0])
    finally:
        conn.close()


def local_events(data: Path) -> list[tuple[int, str, str, bytes]]:
    """(site_seq, event_id, hash, body) of every event a site recorded, in order."""
    conn = sqlite3.connect(f"file:{data / 'log.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return [(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]))
                for r in conn.execute("SELECT site_seq, event_id, hash, body FROM log ORDER BY site_seq")]
    finally:
        conn.close()


async def open_pool(url: str) -> asyncpg.Pool:
    last: Exception | None = None
    for _ in range(100):
        try:
            return await asyncpg.create_pool(url, min_size=1, max_size=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            last = err
            await asyncio.sleep(0.3)
    raise DemoError(f"cannot connect to the center's database: {last!r}")
