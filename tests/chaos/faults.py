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

On a NATS cluster (``python -m tests.chaos --cluster``: three servers, streams kept 3 times),
also (``restart_nats`` then stops or kills all three at once):
* ``kill_nats_node``: kill -9 one server while the sites record and the center ingests (the
  leader of CARE_UP, of CARE_DOWN or of the cluster's meta group, or any one), start it again
  after a pause and wait until it says it is current (GET /healthz) before another server may
  be touched: a three-server cluster survives the loss of one at a time;
* ``kill_nats_node_catchup``: cut a site's line long enough for a backlog to build up, kill -9
  the leader of CARE_UP, restore the line a moment later and restart the server while the site
  is sending its backlog (how many events the site held when the server died is kept:
  `Injector.catchup_backlogs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import nats.errors

from events.wire import up_subject
from runtime import natsurl
from testbed.embedded import EmbeddedError, NatsCluster
from tests.chaos.town import Town

DAY = 86400
WEIGHTS = {
    "kill_agent": 4, "skew_clock": 2, "kill_center": 3, "kill_projections": 2, "restart_nats": 1,
    "restart_pg": 1, "cut_line": 4, "duplicate": 3,
}


CLUSTER_KINDS = ("kill_nats_node", "kill_nats_node_catchup")
# Which server kill_nats_node kills: the leader of a stream, of the meta group, or one at random.
NODE_TARGETS = ("leader:CARE_UP", "leader:CARE_DOWN", "leader:meta", "any")


class Fault(msgspec.Struct, frozen=True):
    at: float  # seconds after the fault phase began
    kind: str
    target: str | None = None
    pause: float = 0.0  # how long the part stays down / the line stays cut
    skew: int = 0  # skew_clock: the new skew in seconds
    hard: bool = False  # restart_*: kill -9 instead of a clean stop
    count: int = 0  # duplicate: how many events
    seed: int = 0  # duplicate: which events, in which order


def schedule(seed: int, seconds: float, sites: list[str], *, mean_gap: float = 2.5,
             cluster: bool = False) -> list[Fault]:
    """Faults for a fault phase of `seconds`, all drawn from `seed` (nothing else); with
    `cluster`, the cluster's faults are added from a draw of their own, so a seed's other faults
    are the same with or without them."""
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
    if cluster:
        out += _cluster_faults(seed, seconds, sites)
    return sorted(out, key=lambda f: f.at)


def _cluster_faults(seed: int, seconds: float, sites: list[str]) -> list[Fault]:
    rng = random.Random(f"chaos-cluster-schedule-{seed}")
    out = [Fault(rng.uniform(1.0, seconds * 0.3), "kill_nats_node", "leader:CARE_UP", pause=rng.uniform(0.2, 4.0))]
    t = rng.uniform(2.0, 6.0)
    while t < seconds * 0.9:
        out.append(Fault(t, "kill_nats_node", rng.choice(NODE_TARGETS), pause=rng.uniform(0.2, 5.0)))
        t += rng.expovariate(1.0 / 8.0)
    for _ in range(max(1, int(seconds // 30))):
        # pause: how long the line stays cut (the backlog); count: ms after the restore at which
        # the server dies (the site is then sending its backlog)
        out.append(Fault(rng.uniform(1.0, seconds * 0.7), "kill_nats_node_catchup", rng.choice(sites),
                         pause=rng.uniform(4.0, 10.0), count=rng.randint(100, 800)))
    return out


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
        self.catchup_backlogs: list[int] = []  # a site's unreceipted events when its catch-up lost a server
        self.node_kills: dict[str, int] = {}  # kill_nats_node by the role of the server killed
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
        # "nats": never while a cluster fault has one server down. Taken before "infra" (never
        # the other way), so a backup of the database waits for no server to catch up.
        async with self.town.lock("nats"), self.town.lock("infra"):
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

    def _cluster(self) -> NatsCluster:
        if not isinstance(self.town.nats, NatsCluster):
            raise RuntimeError("a cluster fault on a single NATS server")
        return self.town.nats

    async def _kill_nats_node(self, f: Fault) -> None:
        cluster = self._cluster()
        async with self.town.lock("nats"):
            i = await self._server_of(f.target or "any", f)
            role = f.target or "any"
            self.node_kills[role] = self.node_kills.get(role, 0) + 1
            await self._kill_restart_node(cluster, i, f.pause)

    async def _kill_nats_node_catchup(self, f: Fault) -> None:
        assert f.target is not None
        cluster = self._cluster()
        station = self.town.stations[f.target]
        async with self.town.lock(f"line {f.target}"):
            await station.proxy.cut()
            restored = False
            try:
                await asyncio.sleep(f.pause)  # the site records on; its backlog grows
                # On a loaded machine the feeder may not have reached this site meanwhile: stay cut
                # (a bounded time) until there is a backlog to catch up, or the fault tests nothing.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if await self._pending(f.target) > 0:
                        break
                    await asyncio.sleep(0.5)
                # The leader of CARE_UP dies while the line is still cut and the line comes back
                # `count` ms later, so the whole catch-up meets the election and the server's
                # restart. (Killed after the restore, the kill raced a batched catch-up of a few
                # hundred ms, and on a quiet machine met no backlog.)
                async with self.town.lock("nats"):
                    i = await self._server_of("leader:CARE_UP", f)
                    self.catchup_backlogs.append(await self._pending(f.target))
                    await asyncio.to_thread(cluster.kill, i)
                    await asyncio.sleep(f.count / 1000)
                    await station.proxy.restore()
                    restored = True
                    await asyncio.sleep(1.0)  # the site is sending its backlog
                    await asyncio.to_thread(cluster.start_node, i)
                    await asyncio.to_thread(cluster.wait_healthy, i, 120)
            finally:
                if not restored:
                    await station.proxy.restore()

    async def _kill_restart_node(self, cluster: NatsCluster, i: int, pause: float) -> None:
        await asyncio.to_thread(cluster.kill, i)
        await asyncio.sleep(pause)
        await asyncio.to_thread(cluster.start_node, i)
        # One server at a time: the next may be touched only when this one is current again.
        await asyncio.to_thread(cluster.wait_healthy, i, 120)

    async def _server_of(self, target: str, f: Fault) -> int:
        """The index of the server `target` names now (a leader moves), or a seeded one."""
        cluster = self._cluster()
        rng = random.Random(f"{f.at}-{f.kind}")
        running = cluster.running()
        if target.startswith("leader:"):
            what = target.split(":", 1)[1]
            with contextlib.suppress(Exception):
                if what == "meta":
                    name = await asyncio.to_thread(cluster.meta_leader)
                else:
                    nc = await self._nats()
                    info = await nc.jetstream(timeout=5).stream_info(what)
                    name = info.cluster.leader if info.cluster is not None else None
                if name and cluster.index_of(name) in running:
                    return cluster.index_of(name)
        return rng.choice(running)

    async def _pending(self, site: str) -> int:
        """What the site still holds unreceipted, by its agent's own account (-1: no answer)."""
        station = self.town.stations[site]
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(station.url + "/status", headers=station.headers)
                return int(r.json()["pending"])
        return -1

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
            headers = {"Nats-Msg-Id": f"chaos-{uuid.uuid4()}"}
            for attempt in range(60):  # a NATS server restarting, or a cluster electing a leader
                try:
                    await js.publish(up_subject(f.target), body, headers=headers)
                    break
                except (nats.errors.Error, TimeoutError):
                    if attempt == 59:
                        raise
                    await asyncio.sleep(0.5)
            self.duplicates_sent += 1

    async def _nats(self) -> Any:
        if self._nc is None or self._nc.is_closed:
            assert self.town.nats is not None
            self._nc = await nats.connect(natsurl.servers(self.town.center_nats_url), max_reconnect_attempts=-1,
                                          reconnect_time_wait=0.25, connect_timeout=2, allow_reconnect=True,
                                          error_cb=_quiet)
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


async def _quiet(err: Exception) -> None:
    """nats-py's default prints a traceback for every refused reconnect (a server is down on purpose)."""


def _bodies(path: Path) -> list[bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return [bytes(r[0]) for r in conn.execute("SELECT body FROM log")]
    finally:
        conn.close()
