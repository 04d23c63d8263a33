"""Guarantee 4, readers never skip: concurrent writers that commit out of order, with random
delays and rollbacks, while a reader tails the global order."""

from __future__ import annotations

import asyncio
import datetime as dt
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


async def tail(pool: asyncpg.Pool, done: asyncio.Event, seen: list[str], positions: list[Position]) -> None:
    """Tail the global order in pages of 7, noting each event id and position, until `done` is
    set and a page read after it comes back empty."""
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

    reading = asyncio.create_task(tail(pool, done, seen, positions))
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


async def test_no_skip_across_partitions_a_month_boundary_two_regions_and_a_move(pool: asyncpg.Pool) -> None:
    """The partitioned log (migration 0024): eight writers of two regions commit out of order, with
    rollbacks, rows dated either side of a month boundary (China time) and of this month, so each
    transaction writes into one of six partitions; a third region has no partition, so its rows
    wait in the default partition until the maintenance step, run while the reader tails, moves
    them into partitions of their own. The tail is exactly the committed set, once each, in the
    order of a full re-read."""
    from tests.test_partitioned_store import BOUNDARY, leaf_of_each_event, store_at

    rng = random.Random(11)
    async with pool.acquire() as conn:
        for region in ("gx-lp", "yn-km"):
            await conn.execute("SELECT shouwang_event_region($1)", region)
            for month in (dt.date(2026, 1, 1), dt.date(2026, 2, 1)):
                await conn.execute("SELECT shouwang_event_month($1, $2)", region, month)
        await conn.execute("SELECT shouwang_event_partitions(0)")
    writers = [SiteWriter(f"{('gx-lp', 'yn-km', 'gz-zy')[i % 3]}.w{i}.v01") for i in range(9)]
    committed: list[str] = []
    seen: list[str] = []
    positions: list[Position] = []
    done = asyncio.Event()
    third_region_waiting = asyncio.Event()

    async def writer(w: SiteWriter, wrng: random.Random) -> None:
        for _ in range(20):
            n = wrng.randint(1, 6)
            seq_before, prev_before, count_before = w.seq, w.prev, len(w.written)
            batch = [w.write(HomeVisitMade(child_id="c-" + "e" * 32, visitor="石晓")) for _ in range(n)]
            when = wrng.choice([BOUNDARY - dt.timedelta(seconds=wrng.randint(1, 60)),
                                BOUNDARY + dt.timedelta(seconds=wrng.randint(0, 60)), None])
            try:
                async with pool.acquire() as conn, conn.transaction():
                    if when is None:
                        await append_in(conn, batch)  # committed now: this month's partition
                    else:
                        await store_at(conn, batch, when)
                    await asyncio.sleep(wrng.random() * 0.03)
                    if wrng.random() < 0.2:
                        raise Rollback
            except Rollback:
                w.seq, w.prev = seq_before, prev_before
                del w.written[count_before:]
                continue
            committed.extend(d.event.event_id for d in batch)
            if w.site_id.startswith("gz-zy."):
                third_region_waiting.set()
            await asyncio.sleep(wrng.random() * 0.01)

    async def maintenance() -> None:  # once the third region's rows are waiting in the default
        await third_region_waiting.wait()
        async with pool.acquire() as conn:
            await conn.execute("SELECT shouwang_event_partitions(0)")

    reading = asyncio.create_task(tail(pool, done, seen, positions))
    await asyncio.gather(*(writer(w, random.Random(rng.random())) for w in writers), maintenance())
    done.set()
    await reading
    assert len(seen) == len(set(seen)), "the reader saw an event twice"
    assert set(seen) == set(committed), (
        f"missed {len(set(committed) - set(seen))}, extra {len(set(seen) - set(committed))}"
    )
    assert positions == sorted(positions)
    async with pool.acquire() as conn:
        full = [s.event.event_id for s in await read_all_in(conn, ORIGIN, 100_000)]
        leaves = await leaf_of_each_event(conn)
    assert full == seen, "the global order changed between the tail and a re-read"
    used = set(leaves.values())
    assert {"events_gx_lp_202601", "events_gx_lp_202602", "events_yn_km_202601", "events_yn_km_202602"} <= used
    assert any(leaf.startswith("events_gz_zy_") for leaf in used), used  # moved out of the default
