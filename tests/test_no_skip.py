"""Guarantee 4, readers never skip: concurrent writers that commit out of order, with random
delays and rollbacks, while a reader tails the global order."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from events.catalogue import HomeVisitMade
from store.postgres import ORIGIN, EventStore, Position, append_in, read_all_in
from tests.factory import SiteWriter


class Rollback(Exception):
    pass


async def _writer(pool: asyncpg.Pool, writer: SiteWriter, rng: random.Random, rounds: int,
                  committed: list[str]) -> None:
    for _ in range(rounds):
        n = rng.randint(1, 8)
        seq_before, prev_before, count_before = writer.seq, writer.prev, len(writer.written)
        batch = [writer.write(HomeVisitMade(child_id="c-" + "e" * 32, visitor="石晓")) for _ in range(n)]
        try:
            async with pool.acquire() as conn, conn.transaction():
                await append_in(conn, batch)
                # Hold the transaction open after taking positions: later transactions take
                # higher positions and may commit first. This is what makes naive readers skip.
                await asyncio.sleep(rng.random() * 0.03)
                if rng.random() < 0.2:
                    raise Rollback
        except Rollback:
            writer.seq, writer.prev = seq_before, prev_before
            del writer.written[count_before:]
            continue
        committed.extend(d.event.event_id for d in batch)
        await asyncio.sleep(rng.random() * 0.01)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_tailing_reader_sees_every_commit_once_in_stable_order(
    seed: int, store: EventStore, pool: asyncpg.Pool
) -> None:
    """Eight writers commit out of order; the tailing reader's sequence is exactly the committed
    set, with no duplicates, and equals a full re-read from the start."""
    rng = random.Random(seed)
    writers = [SiteWriter(f"gx-lp.w{i}.v01") for i in range(8)]
    committed: list[str] = []
    seen: list[str] = []
    positions: list[Position] = []
    done = asyncio.Event()

    async def reader() -> None:
        after = ORIGIN
        async with pool.acquire() as conn:
            while True:
                finished = done.is_set()
                batch = await read_all_in(conn, after, 7)
                for s in batch:
                    seen.append(s.event.event_id)
                    positions.append(s.position)
                if batch:
                    after = batch[-1].position
                elif finished:
                    return
                else:
                    await asyncio.sleep(0.002)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(_writer(pool, w, random.Random(rng.random()), 25, committed) for w in writers))
    done.set()
    await reading
    assert len(seen) == len(set(seen)), "the reader saw an event twice"
    assert set(seen) == set(committed), (
        f"missed {len(set(committed) - set(seen))}, extra {len(set(seen) - set(committed))}"
    )
    assert positions == sorted(positions)
    full = [s.event.event_id for s in await store.read_all(ORIGIN, 100_000)]
    assert full == seen, "the global order changed between the tail and a re-read"


async def test_naive_position_reader_would_skip(pool: asyncpg.Pool) -> None:
    """The trap the horizon avoids: a transaction that took a lower position and commits late is
    invisible to 'position > last seen' and would be skipped, but the horizon reader waits."""
    early, late = SiteWriter("gx-lp.n1.v01"), SiteWriter("gx-lp.n2.v01")
    slow_conn = await pool.acquire()
    tx = slow_conn.transaction()
    await tx.start()
    await append_in(slow_conn, [early.write(HomeVisitMade(child_id="c-" + "e" * 32, visitor="甲"))])
    async with pool.acquire() as conn, conn.transaction():
        await append_in(conn, [late.write(HomeVisitMade(child_id="c-" + "e" * 32, visitor="乙"))])
    async with pool.acquire() as conn:
        naive = await conn.fetch("SELECT position FROM events ORDER BY position")
        horizon = await read_all_in(conn, ORIGIN, 10)
    assert len(naive) == 1  # the naive reader would now move its checkpoint past the slow one
    assert horizon == []  # the horizon reader waits for the open transaction instead
    await tx.commit()
    await pool.release(slow_conn)
    async with pool.acquire() as conn:
        after = await read_all_in(conn, ORIGIN, 10)
    assert [s.event.site_id for s in after] == ["gx-lp.n1.v01", "gx-lp.n2.v01"]
