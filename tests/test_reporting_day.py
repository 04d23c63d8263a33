"""Days are counted on China Standard Time (UTC+8): work done in the early morning of the 1st
belongs to that month, though it is still the previous day in UTC; and read models built by an
older fold (days in UTC) are rebuilt by the runner on its own."""

from __future__ import annotations

import datetime as dt

import asyncpg

from events import catalogue as c
from events.localtime import day_start, local_day, local_today
from events.types import GuardianshipType, Reason, Sex
from events.validation import semantic_problems
from projections import queries, tables
from projections.runner import FOLD_VERSION, Runner, read_fold_version, write_fold_version
from store.postgres import EventStore
from tests.factory import SiteWriter

SITE = "gx.xy.v01"
CHILD = "c-" + "d" * 32
EARLY_1_MARCH = dt.datetime(2026, 2, 28, 23, 30, tzinfo=dt.UTC)  # 07:30 on 1 March in the village


def test_local_day_and_day_start() -> None:
    assert local_day(EARLY_1_MARCH) == dt.date(2026, 3, 1)
    assert local_day(dt.datetime(2026, 3, 1, 15, 59, tzinfo=dt.UTC)) == dt.date(2026, 3, 1)
    assert local_day(dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.UTC)) == dt.date(2026, 3, 2)
    assert day_start(dt.date(2026, 3, 1)) == dt.datetime(2026, 2, 28, 16, 0, tzinfo=dt.UTC)
    assert local_today(EARLY_1_MARCH) == dt.date(2026, 3, 1)


def test_a_child_born_this_morning_is_not_born_in_the_future() -> None:
    reg = c.ChildRegistered(child_id=CHILD, name="石小禾", sex=Sex.FEMALE, birth_date=dt.date(2026, 3, 1),
                            household_village="青石村", reasons=[Reason.BOTH_PARENTS_AWAY],
                            guardian=c.Guardian(type=GuardianshipType.GRANDPARENTS), village_site=SITE)
    assert semantic_problems(reg, occurred_at=None, now=EARLY_1_MARCH) == []
    late = semantic_problems(reg, occurred_at=None, now=dt.datetime(2026, 2, 28, 15, 0, tzinfo=dt.UTC))
    assert [p.field for p in late] == ["birth_date"]


async def _world(pool: asyncpg.Pool) -> None:
    site = SiteWriter(SITE)
    reg = c.ChildRegistered(child_id=CHILD, name="石小禾", sex=Sex.FEMALE, birth_date=dt.date(2018, 5, 1),
                            household_village="青石村", reasons=[Reason.BOTH_PARENTS_AWAY],
                            guardian=c.Guardian(type=GuardianshipType.GRANDPARENTS), village_site=SITE)
    await EventStore(pool).append([
        site.write(reg, dt.datetime(2026, 1, 10, 2, 0, tzinfo=dt.UTC)),
        site.write(c.HomeVisitMade(child_id=CHILD, visitor="石晓"), EARLY_1_MARCH),
    ])


async def test_early_morning_work_counts_in_its_local_month(pool: asyncpg.Pool) -> None:
    await _world(pool)
    await Runner(pool).catch_up()
    archive = await queries.get_archive(pool, CHILD)
    assert archive is not None
    assert archive.last_visit == dt.date(2026, 3, 1)
    assert {m.month: m.visits for m in archive.months} == {"2026-03": 1}
    facts = await queries.facts_in(pool, "gx.xy", dt.date(2026, 3, 1), dt.date(2026, 4, 1))
    assert [f.kind for f in facts if f.children == [CHILD]] == ["visit"]
    assert await queries.facts_in(pool, "gx.xy", dt.date(2026, 2, 1), dt.date(2026, 3, 1)) == []
    today = dt.date(2026, 4, 15)
    assert (await queries.rollup(pool, "gx.xy", "2026-03", today)).home_visits == 1
    assert (await queries.rollup(pool, "gx.xy", "2026-02", today)).home_visits == 0
    # The default rules count the visit in March too (the proxy parent's rule: its `done`).
    assert (await queries.rollup(pool, "gx.xy", "2026-03", today)).rules["proxy_visit"].done == 1
    assert (await queries.rollup(pool, "gx.xy", "2026-02", today)).rules["proxy_visit"].done == 0


async def test_models_of_an_older_fold_are_rebuilt_by_the_runner(pool: asyncpg.Pool) -> None:
    await _world(pool)
    runner = Runner(pool)
    assert await runner.ensure_version() is False  # nothing applied yet: written as this version
    await runner.catch_up()
    async with pool.acquire() as conn:
        assert await read_fold_version(conn, tables.SCHEMA) == FOLD_VERSION
        await write_fold_version(conn, tables.SCHEMA, 1)  # as an older release left them
        await conn.execute(f"UPDATE {tables.SCHEMA}.followup SET visits = 0")  # and its different figures
    assert await runner.ensure_version() is True
    async with pool.acquire() as conn:
        assert await read_fold_version(conn, tables.SCHEMA) == FOLD_VERSION
    archive = await queries.get_archive(pool, CHILD)
    assert archive is not None and {m.month: m.visits for m in archive.months} == {"2026-03": 1}
    assert await runner.ensure_version() is False
