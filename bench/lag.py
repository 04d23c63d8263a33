"""Projection lag under load, in the projections process as `center run` runs it.

`center run` starts the projector as a child process of its own (`python -m shouwang projections
run`, service/cli_center.py, the database URL in SHOUWANG_DATABASE_URL); this suite starts the
same command the same way over a store of N made-up events (the projections suite's county,
`bench.projections.load_world`, projected by a rebuild first), then appends new events at a
steady rate from this process, in batches of a twentieth of a second, for each rate of a sweep.
For each batch: the time from its commit to the projector's checkpoint covering it (a watcher
reads the checkpoint every 5 ms). p50 and p99 per rate, beside the append commit p50/p99 of the
same batches (what ingest itself waits for), and the sustained rate where p99 passes 1 s: the
first rate of the sweep whose p99 is above 1 s, or "above the highest rate tried".

Between two rates the projector catches up (every batch of a rate is counted, however late).

    python -m bench --only lag                                 # 1M stored, 500 to 4,000 events/s
    SHOUWANG_BENCH_LAG_EVENTS=200000 python -m bench --only lag
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time

import asyncpg

from bench.projections import World, _p, load_world
from bench.report import Figure, figure
from bench.servers import fresh_database
from projections.rebuild import rebuild
from projections.runner import read_checkpoint
from runtime.db import create_pool
from service.cli_center import PROJECTIONS_ARGV
from store.postgres import EventStore, Position

EVENTS_ENV = "SHOUWANG_BENCH_LAG_EVENTS"  # an in-between size, e.g. 200000 (default 1M, 20k quick)
RATES = (500, 1000, 2000, 3000, 4000)
QUICK_RATES = (500, 2000)
SECONDS, QUICK_SECONDS = 15.0, 4.0
SLO = 1.0  # seconds: the target for the lag's p99
DRAIN_LIMIT = 900.0  # seconds a rate's backlog may take to drain before the run gives up on it
GIVE_UP = 10.0  # seconds: after a rate whose p99 is above this, the higher rates are not tried


class Projector:
    """`python -m shouwang projections run` in a process of its own, as `center run` starts it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str) -> Projector:
        env = {**os.environ, "SHOUWANG_DATABASE_URL": url}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shouwang", *PROJECTIONS_ARGV, env=env,
                                                    stdin=asyncio.subprocess.DEVNULL)
        return cls(proc)

    def check(self) -> None:
        if self.proc.returncode is not None:
            raise RuntimeError(f"the projections process exited with {self.proc.returncode}")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _newest(conn: asyncpg.Connection) -> Position:
    row = await conn.fetchrow("SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1")
    assert row is not None
    return Position(row["tx_id"], row["position"])


async def caught_up(pool: asyncpg.Pool, projector: Projector, limit: float) -> None:
    """Until the projector's checkpoint covers the newest stored event."""
    deadline = time.monotonic() + limit
    async with pool.acquire() as conn:
        newest = await _newest(conn)
        while (await read_checkpoint(conn, "proj")).position < newest:
            projector.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the projections process did not catch up within {limit:.0f} s")
            await asyncio.sleep(0.05)


async def sweep_rate(pool: asyncpg.Pool, world: World, projector: Projector, rate: int,
                     seconds: float) -> tuple[list[float], list[float]]:
    """Append `rate` events/s for `seconds`; (each batch's lag, each batch's append commit time)."""
    store = EventStore(pool)
    batch = max(10, rate // 20)
    pending: list[tuple[Position, float]] = []
    lags: list[float] = []
    appends: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        async with pool.acquire() as conn:
            while pending or not done.is_set():
                cp = (await read_checkpoint(conn, "proj")).position
                now = time.perf_counter()
                while pending and pending[0][0] <= cp:
                    lags.append(now - pending.pop(0)[1])
                projector.check()
                await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch(), name="bench-lag-watcher")
    work = world.work(10**9)
    t0 = time.perf_counter()
    i = 0
    try:
        while time.perf_counter() - t0 < seconds:
            events = [next(work) for _ in range(batch)]
            a = time.perf_counter()
            await store.append(events)
            b = time.perf_counter()
            appends.append(b - a)
            async with pool.acquire() as conn:
                row = await conn.fetchrow("SELECT tx_id, position FROM events WHERE event_id = $1::uuid",
                                          events[-1].event.event_id)
            assert row is not None
            pending.append((Position(row["tx_id"], row["position"]), b))
            i += 1
            delay = t0 + i * batch / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        done.set()
        await asyncio.wait_for(asyncio.shield(watcher), DRAIN_LIMIT)
    finally:
        done.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return lags, appends


def passes(p99s: dict[int, float]) -> int | None:
    """The first rate of the sweep whose lag p99 is above SLO, or None."""
    return next((rate for rate, p99 in sorted(p99s.items()) if p99 > SLO), None)


async def run(admin_url: str, quick: bool) -> list[Figure]:
    n = int(os.environ.get(EVENTS_ENV) or (20_000 if quick else 1_000_000))
    rates, seconds = (QUICK_RATES, QUICK_SECONDS) if quick else (RATES, SECONDS)
    figures: list[Figure] = []
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=4)
        projector: Projector | None = None
        try:
            world, stored = await load_world(pool, n)
            async with pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE events")
            await rebuild(pool, page=5000, database_url=url)
            projector = await Projector.start(url)
            p99s: dict[int, float] = {}
            tried: list[int] = []
            for rate in rates:
                if p99s and max(p99s.values()) > GIVE_UP:
                    break  # far behind already: a higher rate says nothing more, and drains for minutes
                tried.append(rate)
                await caught_up(pool, projector, DRAIN_LIMIT)
                lags, appends = await sweep_rate(pool, world, projector, rate, seconds)
                p99s[rate] = _p(lags, 99)
                note = (f"`shouwang projections run` in its own process as `center run` starts it; "
                        f"{rate} events/s in batches of {max(10, rate // 20)} for {seconds:.0f} s, "
                        f"over {stored:,} stored events")
                figures.append(figure(f"projection lag p99 at {rate:,} events/s ({stored:,} stored)",
                                      p99s[rate] * 1000, "ms", "append commit p99 of the same batches",
                                      _p(appends, 99) * 1000, note=note))
                figures.append(figure(f"projection lag p50 at {rate:,} events/s ({stored:,} stored)",
                                      _p(lags, 50) * 1000, "ms", "append commit p50 of the same batches",
                                      _p(appends, 50) * 1000, note=note))
            first = passes(p99s)
            top = max(tried)
            skipped = [r for r in rates if r not in tried]
            if first is None:
                figures.append(figure(f"sustained rate where projection lag p99 passes 1 s: above the highest "
                                      f"rate tried ({stored:,} stored)", top, "events/s", "highest rate tried",
                                      top, note="no rate of the sweep had a p99 above 1 s"))
            else:
                figures.append(figure(f"sustained rate where projection lag p99 passes 1 s ({stored:,} stored)",
                                      first, "events/s", "highest rate tried", top,
                                      note=f"the first rate of the sweep ({', '.join(map(str, rates))}) whose "
                                           f"p99 is above 1 s"
                                      + (f"; {', '.join(map(str, skipped))} not tried (a lower rate's p99 was "
                                         f"above {GIVE_UP:.0f} s)" if skipped else "")))
        finally:
            if projector is not None:
                await projector.stop()
            await pool.close()
    return figures
