"""The structural re-derive's read goes through the partial index of structural events (migration
0031), and that index holds exactly the types the runner reads (the traits' structural types and
corrections): a structural type added to the traits without a migration fails here."""

from __future__ import annotations

import json
import re

import asyncpg

from projections.source import STRUCTURAL_READ, STRUCTURAL_SQL, history_book
from store.postgres import EventStore, Position
from tests.test_projections_archive import KIDS, random_world


async def test_the_index_holds_the_types_the_runner_reads(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        indexdef = await conn.fetchval("SELECT pg_get_indexdef('events_structural'::regclass)")
    assert "USING gin (children)" in indexdef
    listed = set(re.findall(r"'([A-Za-z]+)'::text", indexdef))
    assert listed == set(STRUCTURAL_READ)


async def _index_roots(conn: asyncpg.Connection, plan: object) -> set[str]:
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "Index Name" in node:
                names.add(node["Index Name"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(plan)
    return {str(await conn.fetchval("SELECT pg_partition_root($1::regclass)::text", n)) for n in names}


async def test_the_structural_read_can_use_only_that_index(store: EventStore, pool: asyncpg.Pool) -> None:
    """With the index on every child's events and the global order's out of the way (dropped in a
    transaction rolled back) and sequential scans off, the read's plan scans events_structural: the planner proves
    the query's literal type list implies the index's predicate. The read returns the same rows
    as through the other indexes, and fewer than a child's whole history."""
    await store.append(random_world(3, 60))
    upto = Position(2**62, 0)
    async with pool.acquire() as conn:
        expected = await _read(conn, upto, structural=True)
        assert expected
        tr = conn.transaction()
        await tr.start()
        try:
            await conn.execute("DROP INDEX events_children, events_global_order")
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = json.loads(await conn.fetchval(
                f"""EXPLAIN (FORMAT JSON) SELECT event_id FROM events
                     WHERE children && $1::text[] AND (tx_id, position) <= ($2, $3) AND {STRUCTURAL_SQL}""",
                KIDS, upto.tx, upto.pos))
            assert await _index_roots(conn, plan) == {"events_structural"}
            read = await _read(conn, upto, structural=True)
        finally:
            await tr.rollback()
        assert read == expected
        everything = await _read(conn, upto)
        assert {eid for eid, typ in everything.items() if typ in STRUCTURAL_READ} <= expected.keys()
        assert len(everything) > len(read), "the world has work the structural read leaves out"


async def _read(conn: asyncpg.Connection, upto: Position, structural: bool = False) -> dict[str, str]:
    """The projector's read of the children's histories (`history_book`): event id -> type."""
    book = await history_book(conn, KIDS, (), upto, structural=structural)
    return {e.event_id: e.type for st in book.states.values() for e in st.entries.values()}
