"""A rebuild folded partition by partition (projections/partitioned.py) gives exactly the rows the
incremental runner gives, byte for byte: merges and corrections that join children of different
partitions, work about several children, events about no child, in one process and shared by two."""

from __future__ import annotations

import random
from pathlib import Path

import asyncpg
import pytest

from projections import partitioned, tables
from projections.rebuild import fill
from projections.runner import Runner
from store.postgres import EventStore
from tests.test_projections_archive import random_world
from tests.test_projections_daily import world
from tests.test_projections_runner import deliver, dump


async def _partitioned_rebuild(pool: asyncpg.Pool, partition_events: int, database_url: str | None = None,
                               workers: int = 1) -> None:
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {tables.SHADOW} CASCADE")
        await conn.execute("SELECT shouwang_projection_schema($1)", tables.SHADOW)
    await fill(pool, tables.SHADOW, page=13, partition_events=partition_events, database_url=database_url,
               workers=workers)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_a_partitioned_rebuild_equals_the_incremental_models(store: EventStore, pool: asyncpg.Pool, seed: int,
                                                                   database_url: str) -> None:
    events = random_world(seed, 80) if seed % 2 else world(seed, 300)
    runner = Runner(pool, batch_size=5)
    await deliver(store, events, random.Random(seed), runner)
    await runner.catch_up()
    live = await dump(pool, tables.SCHEMA)
    assert live["archive"] and live["fact"], "the world has archives and facts"
    for per_partition in (len(events) // 3, 7):  # a few partitions, then about one per seven events
        await _partitioned_rebuild(pool, per_partition)
        assert await dump(pool, tables.SHADOW) == live, per_partition
    await _partitioned_rebuild(pool, 7, database_url, workers=2)
    assert await dump(pool, tables.SHADOW) == live


async def test_each_row_goes_where_its_groups_are(store: EventStore, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """The plan sends a correction with its original and a merged child's events with the archive
    it joined; the spill writes every event at least once and the log is read once."""
    events = world(5, 300)
    await store.append(events)
    async with pool.acquire() as conn:
        upto, total = await partitioned.head(conn)
        plan = await partitioned.plan(conn, upto, 9)
        spilled = await partitioned.spill(conn, plan, tmp_path, page=11)
    assert total == len(events) == spilled.events
    assert plan.family and plan.edges, "the world corrects and merges"
    in_parts: dict[str, set[int]] = {}
    for part in range(plan.parts):
        upcast: list[str] = []
        for entries in partitioned.read(tmp_path, part, upcast):
            for eid, _ in entries:
                in_parts.setdefault(eid, set()).add(part)
    assert set(in_parts) == {d.event.event_id for d in events}
    assert spilled.written == sum(len(p) for p in in_parts.values()) < 2 * len(events)
    for correction, original in plan.family.items():
        if original in in_parts:
            assert in_parts[correction] == in_parts[original]
    for d in events:
        for kid in d.event.children:
            root = plan.root_of.get(kid, kid)
            assert partitioned.share_of(root, plan.parts) in in_parts[d.event.event_id]
