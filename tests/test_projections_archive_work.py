"""An archive stored in two parts (migration 0041, `archive.encode_parts`): the work a visit, a
call or an activity adds is written to `work` alone and the view is left as stored; aid rewrites
the view too; a row written before the split (its view holding everything, no work) still reads
as the whole archive, and work added to it is not lost. On real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import asyncpg

from events import catalogue as c
from events.types import AidSource
from projections import tables
from projections.archive import ChildArchive, decode_archive, encode_archive, encode_parts
from projections.runner import Runner
from store.postgres import EventStore
from tests.factory import SiteWriter
from tests.test_projections_archive import KIDS, T0, random_world
from tests.test_projections_hot import assert_equals_rebuild, visits
from tests.test_projections_runner import shadow_rebuild


async def stored(pool: asyncpg.Pool, schema: str = tables.SCHEMA) -> dict[str, tuple[bytes, bytes | None]]:
    async with pool.acquire() as conn:
        return {r["child_id"]: (bytes(r["view"]), None if r["work"] is None else bytes(r["work"]))
                for r in await conn.fetch(f"SELECT child_id, view, work FROM {schema}.archive")}


async def toast_values(pool: asyncpg.Pool) -> set[int]:
    """The ids of the values stored out of line for proj.archive (its views of over ~2 KB)."""
    async with pool.acquire() as conn:
        toast = await conn.fetchval(
            "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'proj.archive'::regclass")
        return {r["chunk_id"] for r in await conn.fetch(f"SELECT DISTINCT chunk_id FROM {toast}")}


def decoded(rows: dict[str, tuple[bytes, bytes | None]]) -> dict[str, ChildArchive]:
    return {k: decode_archive(view, work) for k, (view, work) in rows.items()}


def test_the_two_parts_are_the_archive() -> None:
    a = ChildArchive(child_id=KIDS[0], registered=True, open=True, name="林小禾", events=7,
                     last_visit=dt.date(2026, 3, 1), incidents=2, sites=["r.t.v03"])
    view, work = encode_parts(a)
    assert decode_archive(view, work) == a
    assert decode_archive(view).last_visit is None  # the view holds the work's parts at their defaults
    assert decode_archive(encode_archive(a)) == a  # a row written before the split: its view alone


async def test_work_rewrites_the_work_and_aid_the_view(store: EventStore, pool: asyncpg.Pool) -> None:
    w = SiteWriter("r.t.v03")
    # 40 aid lines a child: views of several KB, stored out of line
    aid = [w.write(c.AidGiven(child_id=k, amount_fen=20_000, source=AidSource.TOWNSHIP),
                   T0 + dt.timedelta(days=200 + i)) for i in range(40) for k in KIDS]
    await store.append(random_world(7, 30) + aid)
    runner = Runner(pool)
    await runner.catch_up()
    before = await stored(pool)
    out_of_line = await toast_values(pool)
    assert out_of_line, "some view is stored out of line"
    await store.append(visits(w, 6, 300))
    await runner.catch_up()
    after = await stored(pool)
    assert await toast_values(pool) == out_of_line, "no view was written again"
    changed = [k for k in after if after[k][1] != before[k][1]]
    assert changed, "the visits changed some archive's work"
    for k in changed:
        assert after[k][0] == before[k][0], f"{k}: a visit left its view as stored"
    await assert_equals_rebuild(pool)

    root = decode_archive(*after[KIDS[0]]).merged_into or KIDS[0]
    await store.append([w.write(c.AidGiven(child_id=KIDS[0], amount_fen=20_000, source=AidSource.TOWNSHIP),
                                T0 + dt.timedelta(days=320))])
    await runner.catch_up()
    again = await stored(pool)
    assert again[root][0] != after[root][0], "aid is in the view"
    assert await toast_values(pool) != out_of_line
    assert len(decode_archive(*again[root]).aid) == len(decode_archive(*after[root]).aid) + 1
    await assert_equals_rebuild(pool)


async def test_a_row_stored_whole_before_the_split_keeps_its_work(store: EventStore, pool: asyncpg.Pool) -> None:
    """A row as an older version wrote it (the whole archive in the view, no work): read as is,
    and a visit added to it by a runner that does not hold it is added to the whole archive."""
    await store.append(random_world(7, 30))
    await Runner(pool).catch_up()
    async with pool.acquire() as conn:
        for k, a in decoded(await stored(pool)).items():
            await conn.execute("UPDATE proj.archive SET view = $2, work = NULL WHERE child_id = $1", k,
                               encode_archive(a))
    old = decoded(await stored(pool))
    await shadow_rebuild(pool)
    assert old == decoded(await stored(pool, tables.SHADOW))

    await store.append(visits(SiteWriter("r.t.v03"), 6, 300))
    await Runner(pool, cache_archives=0).catch_up()
    await shadow_rebuild(pool)
    assert decoded(await stored(pool)) == decoded(await stored(pool, tables.SHADOW))
