"""The partitioned log (migration 0024, store/partitions.py): `events` by region and by month in
China time, the migration of a stored log, the partitions' maintenance, their privileges and the
plan of the ordered read."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence

import asyncpg
import pytest

from events import DecodedEvent
from events.catalogue import HomeVisitMade
from runtime.db import create_pool
from store import migrate, partitions
from store.postgres import EVENT_COLUMNS, ORIGIN, READ_ALL, EventStore, event_record
from store.roles import service_privileges
from tests.factory import SiteWriter
from tests.security.test_roles import Roles, roles
from tests.servers import TestServers as Servers

__all__ = ["roles"]

CST = dt.timezone(dt.timedelta(hours=8), "CST")
# A month boundary in China time: 2026-02-01 00:00 +08 is 2026-01-31 16:00 UTC.
BOUNDARY = dt.datetime(2026, 2, 1, tzinfo=CST)
INDEXES = 10  # every index of events (0001, 0003, 0011, 0015, 0016, 0031), on every partition
EVERYTHING = """SELECT position, tx_id, committed_at, region, site_id, site_seq, event_id, type, schema_version,
                       understood, actor, occurred_at, recorded_at, prev_hash, hash, children, based_on, payload
                  FROM events ORDER BY tx_id, position"""


def visits(writer: SiteWriter, n: int) -> list[DecodedEvent]:
    return [writer.write(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓")) for _ in range(n)]


def month_of(at: dt.datetime) -> str:
    return at.astimezone(CST).strftime("%Y%m")


def expected_partition(region: str, at: dt.datetime) -> str:
    return f"events_{region.replace('-', '_')}_{month_of(at)}"


async def store_at(conn: asyncpg.Connection, batch: Sequence[DecodedEvent], at: dt.datetime) -> None:
    """Write a batch as a center would have committed it at `at` (the store's own appends take
    now()): ids into event_index, rows into events with that committed_at; tx_id and position
    come from their defaults, so the global order is the store's own."""
    await conn.copy_records_to_table("event_index", records=[(d.event.event_id, bytes.fromhex(d.hash)) for d in batch],
                                     columns=("event_id", "hash"))
    await conn.copy_records_to_table("events", records=[(at, *event_record(d)) for d in batch],
                                     columns=("committed_at", *EVENT_COLUMNS))


async def leaf_of_each_event(conn: asyncpg.Connection) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in await conn.fetch("SELECT event_id, tableoid::regclass::text FROM events")}


async def test_migration_moves_a_stored_log_of_two_regions_across_a_month_boundary(template: Servers) -> None:
    """A store at version 23 holding two regions' events on both sides of a month boundary (one
    region registered, one not): migration 0024 keeps every column of every row (tx_id and
    position included), puts each row in its region's partition of its China-time month, indexes
    every partition, and the store reads, verifies and appends as before."""
    url = await template.fresh_database(migrated=False)
    conn = await asyncpg.connect(url)
    pool = await create_pool(url, min_size=1, max_size=4)
    try:
        await migrate.migrate(conn, upto=23)
        await conn.execute("INSERT INTO sites (site_id, kind, name, nats_password) "
                           "VALUES ('gx-lp.t1.v01', 'village', '石桥村', 'pw')")
        store = EventStore(pool)
        writers = [SiteWriter("gx-lp.t1.v01"), SiteWriter("yn-km.t2.s01")]
        for _ in range(4):
            for w in writers:
                result = await store.append(visits(w, 10))
                assert len(result.stored) == 10
        # An older center committed these over a month boundary: spread the rows over the hour
        # either side of it, in the global order (superuser, before the migration).
        await conn.execute(
            """WITH o AS (SELECT tx_id, position, row_number() OVER (ORDER BY tx_id, position) AS i FROM events)
               UPDATE events e SET committed_at = $1::timestamptz + (o.i - 41) * interval '90 seconds'
                 FROM o WHERE e.tx_id = o.tx_id AND e.position = o.position""", BOUNDARY)
        before = await conn.fetch(EVERYTHING)
        assert len(before) == 80

        assert await migrate.migrate(conn, upto=24) == [24]
        await migrate.migrate(conn)  # and any later ones

        assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'events'::regclass") == "p"
        assert await conn.fetchval("SELECT to_regclass('events_unpartitioned')") is None
        after = await conn.fetch(EVERYTHING)
        assert [tuple(r) for r in after] == [tuple(r) for r in before]
        leaves = await leaf_of_each_event(conn)
        for r in after:
            assert leaves[str(r["event_id"])] == expected_partition(r["region"], r["committed_at"])
        assert {leaves[str(r["event_id"])] for r in after} == {
            "events_gx_lp_202601", "events_gx_lp_202602", "events_yn_km_202601", "events_yn_km_202602"}
        for leaf in await partitions.partitions(conn):
            assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = $1", leaf.name) == INDEXES
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass AND tgname = 'events_notify'") == 1

        # The store as before: the global order, the chains, a child's events, an append.
        read = await store.read_all(ORIGIN, 1000)
        assert [s.event.event_id for s in read] == [str(r["event_id"]) for r in before]
        for w in writers:
            assert (await store.verify_chain(w.site_id)).ok
        assert len(await store.read_child("c-" + "a" * 32)) == 80
        result = await store.append(visits(writers[1], 3))
        assert len(result.stored) == 3
        assert len(await store.read_all(read[-1].position, 10)) == 3
    finally:
        await pool.close()
        await conn.close()


async def test_maintenance_moves_rows_out_of_the_defaults_keeping_their_place(pool: asyncpg.Pool) -> None:
    """Rows of a region with no partition yet, and of a month with none, wait in the default
    partitions; the maintenance step makes their partitions and moves them, every value kept.
    A second run creates nothing."""
    store = EventStore(pool)
    a, b = SiteWriter("gx-lp.t1.v01"), SiteWriter("yn-km.t2.s01")
    async with pool.acquire() as conn:
        assert await store.append(visits(a, 5))
        async with conn.transaction():
            await store_at(conn, visits(b, 4), BOUNDARY - dt.timedelta(seconds=1))
        async with conn.transaction():
            await store_at(conn, visits(b, 4), BOUNDARY)
        before = await conn.fetch(EVERYTHING)
        assert set((await leaf_of_each_event(conn)).values()) == {"events_default"}

        created = await partitions.ensure(conn, ahead=1)
        # two regions, each this month and the next, and January and February 2026 of yn-km
        now_months = {month_of(dt.datetime.now(CST)), month_of(dt.datetime.now(CST) + dt.timedelta(days=31))}
        assert created == 2 + 2 * len(now_months) + len({"202601", "202602"} - now_months)
        assert await partitions.ensure(conn, ahead=1) == 0

        after = await conn.fetch(EVERYTHING)
        assert [tuple(r) for r in after] == [tuple(r) for r in before]
        leaves = await leaf_of_each_event(conn)
        for r in after:
            assert leaves[str(r["event_id"])] == expected_partition(r["region"], r["committed_at"])
        listed = {p.name: p for p in await partitions.partitions(conn)}
        assert listed["events_default"].rows == 0
        assert listed["events_yn_km_202601"].rows == 4 and listed["events_yn_km_202601"].month == "2026-01"
        assert listed["events_yn_km_202602"].region == "yn-km"
        assert sum(p.rows for p in listed.values()) == 13
        assert all(p.bytes > 0 for p in listed.values())
    with pytest.raises(ValueError, match="months ahead must be 0 to 120, got -1"):
        async with pool.acquire() as conn:
            await partitions.ensure(conn, ahead=-1)


async def test_concurrent_maintenance_and_appends_never_fail(pool: asyncpg.Pool) -> None:
    """Six runs of the maintenance at once, while four sites of four new regions append: no
    error, each partition made once, every event stored once and in its partition."""
    store = EventStore(pool)
    writers = [SiteWriter(f"r{i}-x.t1.v01") for i in range(4)]
    for w in writers:
        await store.append(visits(w, 3))  # into the default: no partition for these regions yet

    async def appender(w: SiteWriter) -> None:
        for _ in range(10):
            result = await store.append(visits(w, 2))
            assert len(result.stored) == 2

    async def maintain() -> int:
        async with pool.acquire() as conn:
            return await partitions.ensure(conn, ahead=1)

    results = await asyncio.gather(*(maintain() for _ in range(6)), *(appender(w) for w in writers))
    created = sum(r for r in results if isinstance(r, int))
    async with pool.acquire() as conn:
        assert await partitions.ensure(conn, ahead=1) == 0
        listed = await partitions.partitions(conn)
    # per region: its partition, its default, this month and the next
    region_leaves = [p for p in listed if p.region is not None]
    assert created == len(writers) * 3 == len({p.region for p in region_leaves}) * 3
    assert sum(p.rows for p in listed) == await store.count() == len(writers) * 23
    assert {p.name for p in listed if p.rows} <= {p.name for p in region_leaves if p.month} | {"events_default"}


async def test_ordered_read_merges_the_partitions_index_scans(pool: asyncpg.Pool) -> None:
    """The ordered read over many partitions is a Merge Append of events_global_order scans, one
    per partition, with no sort of the rows."""
    writers = [SiteWriter(f"{region}.t{t}.v01") for region in ("gx-lp", "yn-km") for t in range(3)]
    async with pool.acquire() as conn:
        for month in range(1, 7):
            at = dt.datetime(2026, month, 15, tzinfo=CST)
            for w in writers:
                async with conn.transaction():
                    await store_at(conn, visits(w, 50), at)
        await partitions.ensure(conn)
        await conn.execute("ANALYZE events")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + READ_ALL, 0, 0, 1000))
    assert "Merge Append" in plan, plan
    assert "Sort  (" not in plan and "Sort (" not in plan, plan
    assert plan.count("events_global_order") + plan.count("_tx_id_position_idx") >= 12, plan


async def test_service_role_appends_and_maintains_but_holds_nothing_on_a_partition(roles: Roles) -> None:
    """The service role appends (into the default partition of a new region), runs the
    maintenance, and holds SELECT and INSERT on `events` but nothing on any partition: it cannot
    change or delete a row through one."""
    pool = await create_pool(roles.service_url, min_size=1, max_size=2)
    try:
        store = EventStore(pool)
        assert len((await store.append(visits(SiteWriter("gx-lp.t1.v01"), 3))).stored) == 3
        async with pool.acquire() as conn:
            assert await partitions.ensure(conn) > 0
            listed = await partitions.partitions(conn)
            assert sum(p.rows for p in listed) == 3
            assert await service_privileges(conn, roles.service, "events") == {"SELECT", "INSERT"}
            for p in listed:
                assert await service_privileges(conn, roles.service, p.name) == set(), p.name
            holding = next(p.name for p in listed if p.rows)
            for statement in (f"DELETE FROM {holding}", f"UPDATE {holding} SET actor = 'x'", f"SELECT * FROM {holding}",
                              f"DROP TABLE {holding}", f"ALTER TABLE events DETACH PARTITION {holding}"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        assert len(await store.read_all(ORIGIN, 10)) == 3
    finally:
        await pool.close()


async def test_db_partitions_command(capsys: pytest.CaptureFixture[str], database_url: str, store: EventStore) -> None:
    """`shouwang db partitions` lists every partition with its rows and size, `--ensure` creates
    the missing ones first (moving the waiting rows), `--json` says the same as data, and a bad
    --ahead is refused naming the value."""
    from tests.test_center_cli import shouwang

    await store.append(visits(SiteWriter("gx-lp.t1.v01"), 4))
    code, out, _ = await shouwang(capsys, database_url, "db", "partitions")
    assert code == 0
    assert "1 partitions, 4 events" in out and "events_default" in out
    code, out, _ = await shouwang(capsys, database_url, "db", "partitions", "--ensure", "--ahead", "0", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["created"] == 2  # the region and this month
    this_month = dt.datetime.now(CST).strftime("%Y-%m")
    holding = [p for p in doc["partitions"] if p["rows"]]
    assert holding == [{"name": f"events_gx_lp_{this_month.replace('-', '')}", "region": "gx-lp",
                        "month": this_month, "rows": 4, "bytes": holding[0]["bytes"]}]
    assert holding[0]["bytes"] > 0
    with pytest.raises(SystemExit) as refused:
        await shouwang(capsys, database_url, "db", "partitions", "--ensure", "--ahead", "200")
    assert refused.value.code == 2
    assert "--ahead must be 0 to 120 months, got 200" in capsys.readouterr().err


async def test_partitions_are_found_by_what_they_hold_not_by_name(pool: asyncpg.Pool) -> None:
    """Regions whose plain partition names would collide with another partition's (the region
    'default' with the top-level default, 'gx-202601' with January 2026 of 'gx', 'gx-default'
    with the default of 'gx'): every region and month gets a partition of its own, each row
    lands in its region's and month's, and a second run finds them all."""
    store = EventStore(pool)
    regions = ["gx", "default", "gx-202601", "gx-default"]
    async with pool.acquire() as conn:
        for region in regions:
            w = SiteWriter(f"{region}.t1.v01")
            assert len((await store.append(visits(w, 2))).stored) == 2
            async with conn.transaction():
                await store_at(conn, visits(w, 2), BOUNDARY - dt.timedelta(days=1))  # January 2026
        created = await partitions.ensure(conn, ahead=0)
        now_january = month_of(dt.datetime.now(CST)) == "202601"
        assert created == len(regions) * (2 if now_january else 3)
        assert await partitions.ensure(conn, ahead=0) == 0
        listed = await partitions.partitions(conn)
        assert len({p.name for p in listed}) == len(listed)
        by_leaf = {p.name: p for p in listed}
        rows = await conn.fetch("SELECT region, committed_at, tableoid::regclass::text AS leaf FROM events")
        assert len(rows) == 4 * len(regions)
        for r in rows:
            leaf = by_leaf[r["leaf"]]
            assert (leaf.region, leaf.month) == (r["region"], r["committed_at"].astimezone(CST).strftime("%Y-%m"))


async def test_the_first_site_of_a_region_gets_its_partitions_when_registered(pool: asyncpg.Pool) -> None:
    """Registering a site of a region with no partition yet makes the region's partitions at once:
    its first events land in their month's partition, none in the default. A second site of the
    region finds them and creates nothing."""
    from service.sites import register_site

    store = EventStore(pool)
    async with pool.acquire() as conn:
        assert not await partitions.has_region(conn, "hn-zz")
        await register_site(pool, "hn-zz.t1.v01", "village", "石桥村")
        assert await partitions.has_region(conn, "hn-zz")
        assert not await partitions.has_region(conn, "hn-z")  # a prefix is another region
        before = {p.name for p in await partitions.partitions(conn)}
        await register_site(pool, "hn-zz.t1.v02", "village", "柳塘村")
        assert {p.name for p in await partitions.partitions(conn)} == before
        assert len((await store.append(visits(SiteWriter("hn-zz.t1.v01"), 3))).stored) == 3
        now = dt.datetime.now(CST)
        assert set((await leaf_of_each_event(conn)).values()) == {expected_partition("hn-zz", now)}
