"""The projector's full garbage collections at quiet moments (projections/collector.py): CPython's
automatic full collection is off while the collector is entered and back as it was after; a full
collection runs when the runner is idle and one is due, or between batches once too long has
passed; and a runner given the collector runs one when it has nothing to apply."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import asyncpg
import pytest

from projections.collector import QuietCollector
from projections.runner import Runner, read_checkpoint
from store.postgres import EventStore
from tests.test_projections_archive import random_world


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """Garbage only a collection frees: two objects that refer to each other, nothing else to them."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Only the collections the test asks for run (else a young collection could free the cycle)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_automatic_full_collections_are_off_inside_and_as_they_were_after() -> None:
    before = gc.get_threshold()
    with QuietCollector():
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2]  # the young generations are collected as before
        assert full >= 2**31 - 1
    assert gc.get_threshold() == before


def test_settings_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ValueError, match="every=0"):
        QuietCollector(every=0)
    with pytest.raises(ValueError, match=r"every=60\.0, at_most=10\.0"):
        QuietCollector(every=60.0, at_most=10.0)


@pytest.mark.usefixtures("no_automatic_collection")
def test_a_full_collection_runs_only_when_due() -> None:
    clock = Clock()
    with QuietCollector(every=60.0, at_most=900.0, clock=clock) as collector:
        garbage = cycle()
        clock.now += 59.0
        assert not collector.maybe_collect(idle=True)  # idle, but the last one was under a minute ago
        assert garbage() is not None
        clock.now += 1.0
        assert not collector.maybe_collect(idle=False)  # a minute, but busy: it waits for a quiet moment
        assert garbage() is not None
        assert collector.maybe_collect(idle=True)
        assert garbage() is None
        assert (collector.passes, collector.freed >= 2) == (1, True)

        garbage = cycle()
        clock.now += 899.0
        assert not collector.maybe_collect(idle=False)
        assert garbage() is not None
        clock.now += 1.0
        assert collector.maybe_collect(idle=False)  # busy for the longest it may wait: between batches
        assert garbage() is None
        assert collector.passes == 2
        assert not collector.maybe_collect(idle=True)  # just ran


async def test_a_runner_collects_when_it_has_nothing_to_apply(store: EventStore, pool: asyncpg.Pool) -> None:
    clock = Clock()
    with QuietCollector(every=60.0, clock=clock) as collector:
        runner = Runner(pool, poll_seconds=0.05, cache_archives=100, collector=collector)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await store.append(random_world(7, 10))
            async with pool.acquire() as conn:
                stored = await conn.fetchval("SELECT count(*) FROM events")
                for _ in range(1000):  # caught up and idle, but not a minute yet: no full collection
                    cp = await read_checkpoint(conn, "proj")
                    if cp.applied + cp.skipped == stored:
                        break
                    await asyncio.sleep(0.01)
            assert cp.applied + cp.skipped == stored
            await asyncio.sleep(0.2)
            assert collector.passes == 0
            clock.now += 60.0
            for _ in range(200):
                if collector.passes:
                    break
                await asyncio.sleep(0.01)
            assert collector.passes == 1
        finally:
            stop.set()
            await task
