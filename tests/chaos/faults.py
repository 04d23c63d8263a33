"""The fault schedule: drawn up front from the seed, so a failing seed shows (and replays) the
same faults in the same order at the same offsets; and the code that injects each kind.

Kinds:
* ``kill_agent``: kill -9 a site's agent, restart it after a pause;
* ``skew_clock``: kill -9 a site's agent and restart it with its clock days ahead or behind
  (SHOUWANG_CLOCK_SKEW_SECONDS), or set right again;
* ``kill_center`` / ``kill_projections``: kill -9 `center run` / `projections run`, restart;
* ``restart_nats`` / ``restart_pg``: stop the server (gracefully, or kill -9) and start it again;
* ``cut_line``: cut the TCP line between a site's agent and NATS, restore it after a while;
* ``duplicate``: republish a site's already recorded events raw on care.up.<site> with new
  Nats-Msg-Ids (so JetStream's dedup window does not drop them), shuffled: copies and
  out-of-order arrivals for the ingest;
* ``backup`` then ``restore``: pg_dump the center, and later (center and projections held down)
  drop its database and restore the dump, so it forgets what it committed in between and the
  sites must send it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats

from events.wire import up_subject
from testbed.embedded import EmbeddedError
from tests.chaos.town import Town

DAY = 86400
WEIGHTS = {
    "kill_agent": 4, "skew_clock": 2, "kill_center": 3, "kill_projections": 2, "restart_nats": 1,
    "restart_pg": 1, "cut_line": 4, "duplicate": 3,
}


class Fault(msgspec.Struct, frozen=True):
    at: float  # seconds after the fault phase began
    kind: str
    target: str | None = None
    pause: float = 0.0  # how long the part stays down / the line stays cut
    skew: int = 0  # skew_clock: the new skew in seconds
    hard: bool = False  # restart_*: kill -9 instead of a clean stop
    count: int = 0  # duplicate: how many events
    seed: int = 0  # duplicate: which events, in which order


def schedule(seed: int, seconds: float, sites: list[str], *, mean_gap: float = 2.5) -> list[Fault]:
    """Faults for a fault phase of `seconds`, all drawn from `seed` (nothing else)."""
    rng = random.Random(f"chaos-schedule-{seed}")
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    out: list[Fault] = []
    # Every kind at least once at a random moment (so even a short run covers them all), then
    # more at random, as a Poisson process with the weights above.
    draws = [(rng.uniform(1.0, seconds * 0.9), k) for k in kinds]
    t = rng.uniform(1.0, 3.0)
    while t < seconds:
        draws.append((t, rng.choices(kinds, weights)[0]))
        t += rng.expovariate(1.0 / mean_gap)
    for t, kind in draws:
        site = rng.choice(sites)
        if kind == "kill_agent":
            out.append(Fault(t, kind, site, pause=rng.uniform(0.1, 3.0)))
        elif kind == "skew_clock":
            days = rng.choice([-9, -4, -2, -1, 0, 1, 2, 5, 10])
            out.append(Fault(t, kind, site, pause=rng.uniform(0.1, 1.0), skew=days * DAY + rng.randint(-3600, 3600)))
        elif kind in ("kill_center", "kill_projections"):
            out.append(Fault(t, kind, kind.split("_", 1)[1], pause=rng.uniform(0.1, 4.0)))
        elif kind in ("restart_nats", "restart_pg"):
            out.append(Fault(t, kind, None, pause=rng.uniform(0.1, 2.0), hard=rng.random() < 0.5))
        elif kind == "cut_line":
            out.append(Fault(t, kind, site, pause=rng.uniform(0.5, min(20.0, seconds / 4))))
        elif kind == "duplicate":
            out.append(Fault(t, kind, site, count=rng.randint(5, 60), seed=rng.getrandbits(32)))
    # A center restored from a backup: one pair per ~6 minutes (at least one), the backup taken
    # well before the restore so that the center forgets a good stretch of work.
    pairs = max(1, int(seconds // 360))
    span = seconds / pairs
    for i in range(pairs):
        lo = i * span
        backup_at = lo + rng.uniform(0.1, 0.3) * span
        restore_at = lo + rng.uniform(0.6, 0.85) * span
        out.append(Fault(backup_at, "backup", None))
        out.append(Fault(restore_at, "restore", None, pause=rng.uniform(0.5, 3.0)))
    return sorted(out, key=lambda f: f.at)


class Injector:
    """Runs a schedule against a Town; counts what it did by kind."""

    def __init__(self, town: Town, work: Path, progress: Any) -> None:
        self.town = town
        self.work = work
        self.progress = progress
        self.done: dict[str, int] = {}
        self.duplicates_sent = 0
        self.backup_path: Path | None = None
        self.errors: list[str] = []
        self._nc: Any = None

    async def run(self, faults: list[Fault], started: float) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            for i, f in enumerate(faults):
                delay = started + f.at - asyncio.get_running_loop().time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._one(i, f), name=f"fault-{i}-{f.kind}"))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()

    async def _one(self, i: int, f: Fault) -> None:
        try:
            await getattr(self, f"_{f.kind}")(f)
        except Exception as err:  # a fault that could not be injected is reported, not hidden
            self.errors.append(f"fault {i} {f.kind} {f.target or ''}: {type(err).__name__}: {err}")
            self.progress(f"fault {i} {f.kind} failed to inject: {err!r}")
            return
        self.done[f.kind] = self.done.get(f.kind, 0) + 1

    async def _kill_and_restart(self, name: str, pause: float) -> None:
        async with self.town.lock(name):
            await self.town.kill9(name)
            await asyncio.sleep(pause)
            await self.town.restart(name)

    async def _kill_agent(self, f: Fault) -> None:
        await self._kill_and_restart(f"agent {f.target}", f.pause)

    async def _skew_clock(self, f: Fault) -> None:
        assert f.target is not None
        async with self.town.lock(f"agent {f.target}"):
            await self.town.kill9(f"agent {f.target}")
            self.town.skew[f.target] = f.skew
            await asyncio.sleep(f.pause)
            await self.town.restart(f"agent {f.target}")

    async def _kill_center(self, f: Fault) -> None:
        await self._kill_and_restart("center", f.pause)

    async def _kill_projections(self, f: Fault) -> None:
        await self._kill_and_restart("projections", f.pause)

    async def _restart_nats(self, f: Fault) -> None:
        nats_server = self.town.nats
        assert nats_server is not None
        async with self.town.lock("infra"):
            await asyncio.to_thread(nats_server.kill if f.hard else nats_server.stop)
            await asyncio.sleep(f.pause)
            await asyncio.to_thread(nats_server.start)

    async def _restart_pg(self, f: Fault) -> None:
        pg = self.town.pg
        assert pg is not None
        async with self.town.lock("infra"):
            if f.hard:
                await asyncio.to_thread(pg.kill)
            else:
                await asyncio.to_thread(pg.stop)
            await asyncio.sleep(f.pause)
            for attempt in range(20):  # a killed postmaster's backends may take a moment to go
                try:
                    await asyncio.to_thread(pg.start)
                    break
                except EmbeddedError:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.5)

    async def _cut_line(self, f: Fault) -> None:
        assert f.target is not None
        proxy = self.town.stations[f.target].proxy
        async with self.town.lock(f"line {f.target}"):  # overlapping cuts of one line take turns
            await proxy.cut()
            try:
                await asyncio.sleep(f.pause)
            finally:
                await proxy.restore()

    async def _duplicate(self, f: Fault) -> None:
        assert f.target is not None
        station = self.town.stations[f.target]
        rows = await asyncio.to_thread(_bodies, station.data / "log.sqlite")
        if not rows:
            return
        rng = random.Random(f.seed)
        chosen = [rng.choice(rows) for _ in range(f.count)]
        rng.shuffle(chosen)
        nc = await self._nats()
        js = nc.jetstream(timeout=5)
        for body in chosen:
            await js.publish(up_subject(f.target), body, headers={"Nats-Msg-Id": f"chaos-{uuid.uuid4()}"})
            self.duplicates_sent += 1

    async def _nats(self) -> Any:
        if self._nc is None or self._nc.is_closed:
            assert self.town.nats is not None
            self._nc = await nats.connect(self.town.center_nats_url, max_reconnect_attempts=-1,
                                          reconnect_time_wait=0.25, connect_timeout=2, allow_reconnect=True)
        return self._nc

    async def _backup(self, f: Fault) -> None:
        path = self.work / f"backup-{int(f.at * 1000)}.dump"
        async with self.town.lock("infra"):
            await self.town.backup(path)
        self.backup_path = path

    async def _restore(self, f: Fault) -> None:
        if self.backup_path is None:
            raise RuntimeError("no backup was taken before the restore")
        town = self.town
        async with town.lock("infra"), town.lock("center"), town.lock("projections"):
            town.held.update(("center", "projections"))
            try:
                await town.kill9("center")
                await town.kill9("projections")
                await town.restore(self.backup_path)
                await asyncio.sleep(f.pause)
            finally:
                town.held.difference_update(("center", "projections"))
                await town.restart("center")
                await town.restart("projections")


def _bodies(path: Path) -> list[bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return [bytes(r[0]) for r in conn.execute("SELECT body FROM log")]
    finally:
        conn.close()
