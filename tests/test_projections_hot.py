"""The runner's decoded archives between batches (projections/hot.py), on real PostgreSQL: what it
holds is what the read models hold, it is used, and anything else that writes the read models
between two of its batches (another runner, a rebuild's swap, a failed batch) makes it read them
again: the read models still equal a rebuild's, row for row."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

import asyncpg
import pytest

from events import catalogue as c
from events.envelope import DecodedEvent
from projections import tables
from projections.archive import ChildArchive, decode_archive, family_of
from projections.rebuild import rebuild
from projections.runner import Runner, read_checkpoint
from projections.source import COLS, STRUCTURAL_SQL, Row, book_of, family_members, history_book, to_row
from store.postgres import EventStore, Position
from tests.factory import SiteWriter
from tests.test_projections_archive import KIDS, T0, random_world
from tests.test_projections_runner import deliver, dump, shadow_rebuild


async def history(conn: asyncpg.Connection, child_ids: Sequence[str], pseudo: Sequence[str], upto: Position,
                  structural: bool = False) -> list[Row]:
    """The reference read the projector's `history_book` is held to: the rows, through envelopes
    (`to_row`), of every event up to `upto` naming these children (with `structural`, of
    STRUCTURAL_READ only) and every member of their correction families and of the pseudo-keys'."""
    only = f" AND {STRUCTURAL_SQL}" if structural else ""
    rows = await conn.fetch(
        f"SELECT {COLS} FROM events WHERE children && $1::text[] AND (tx_id, position) <= ($2, $3){only}",
        list(child_ids), upto.tx, upto.pos) if child_ids else []
    out = {r["event_id"]: to_row(r) for r in rows}
    families = {family_of(x.care, x.event.event_id) for x in out.values() if x.care is not None}
    families |= {p[3:] for p in pseudo}
    if families:
        for r in await family_members(conn, families, upto, known=out.keys()):
            out.setdefault(r.event.event_id, r)
    return list(out.values())


def visits(w: SiteWriter, n: int, day: int) -> list[DecodedEvent]:
    """n home visits of the world's children (additive work: added to the archive each holds)."""
    return [w.write(c.HomeVisitMade(child_id=KIDS[i % len(KIDS)], visitor="石晓"),
                    T0 + dt.timedelta(days=day + i)) for i in range(n)]


async def stored_archives(pool: asyncpg.Pool) -> dict[str, ChildArchive]:
    """Every stored archive, decoded from its two parts (view and work)."""
    async with pool.acquire() as conn:
        return {r["child_id"]: decode_archive(r["view"], r["work"])
                for r in await conn.fetch("SELECT child_id, view, work FROM proj.archive")}


async def assert_equals_rebuild(pool: asyncpg.Pool) -> None:
    await shadow_rebuild(pool)
    assert await dump(pool, tables.SCHEMA) == await dump(pool, tables.SHADOW)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_held_archives_are_the_stored_ones(store: EventStore, pool: asyncpg.Pool, seed: int) -> None:
    """Events in random order, small batches: the runner takes archives from what it holds, and
    each held archive is the stored one, decoded."""
    runner = Runner(pool, batch_size=4)
    assert runner.cache is not None
    await deliver(store, random_world(seed, 60), random.Random(seed), runner)
    await store.append(visits(SiteWriter("r.t.v03"), 12, 300))
    await runner.catch_up()
    assert runner.cache.hits > 0, "later batches found the archives they add work to"
    stored = await stored_archives(pool)
    held = {k: runner.cache.get(k) for k in stored}
    assert {k for k, a in held.items() if a is not None}, "it holds archives"
    for k, a in held.items():
        if a is not None:
            assert a == stored[k]
    await assert_equals_rebuild(pool)


async def test_another_runner_between_batches(store: EventStore, pool: asyncpg.Pool) -> None:
    """Another projector (a second `projections run`, which takes the lock in turn) adds work to
    the archives this runner holds: its next batch reads them again instead of adding to its own
    stale copies (which would lose the other runner's visits)."""
    w = SiteWriter("r.t.v03")
    await store.append(random_world(7, 30))
    mine = Runner(pool, batch_size=6)
    await mine.catch_up()
    assert mine.cache is not None and len(mine.cache) > 0
    await store.append(visits(w, 6, 300))
    await Runner(pool, batch_size=100, cache_archives=0).catch_up()  # the other projector
    await store.append(visits(w, 6, 320))
    await mine.catch_up()
    assert mine.cache.dropped == 1
    await assert_equals_rebuild(pool)


async def test_rebuild_between_batches(store: EventStore, pool: asyncpg.Pool) -> None:
    """A rebuild swaps in read models of its own (a new checkpoint row) between two batches: the
    runner drops what it holds, even where the rebuild ended at the runner's own position."""
    w = SiteWriter("r.t.v03")
    await store.append(random_world(8, 30))
    runner = Runner(pool, batch_size=5)
    await runner.catch_up()
    async with pool.acquire() as conn:  # damage the live archives: only a re-read sees the rebuild's
        await conn.execute("UPDATE proj.archive SET events = events + 100")
    await rebuild(pool, page=11)
    await store.append(visits(w, 9, 300))
    await runner.catch_up()
    assert runner.cache is not None and runner.cache.dropped == 1
    await assert_equals_rebuild(pool)


async def test_a_failed_batch_keeps_nothing_it_wrote(store: EventStore, pool: asyncpg.Pool) -> None:
    """A batch whose transaction fails after its writes leaves the read models as they were; what
    it wrote into the cache is not kept, and the next batches give the rebuild's models."""
    w = SiteWriter("r.t.v03")
    await store.append(random_world(9, 30))
    fail = True

    async def before_commit() -> None:
        if fail:
            raise RuntimeError("the line dropped before COMMIT")

    runner = Runner(pool, batch_size=5, before_commit=before_commit)
    fail = False
    await runner.catch_up()
    await store.append(visits(w, 6, 300))
    fail = True
    with pytest.raises(RuntimeError):
        await runner.step()
    fail = False
    await store.append(visits(w, 6, 320))
    await runner.catch_up()
    assert runner.cache is not None and runner.cache.dropped == 0, "the checkpoint stayed the runner's own"
    await assert_equals_rebuild(pool)


def structural_events(w: SiteWriter, day: int) -> list[DecodedEvent]:
    """A status assessment and a guardian change for each child (structural: their archives'
    structural part is re-derived from the children's structural entries)."""
    out = []
    for i, kid in enumerate(KIDS):
        out.append(w.write(c.StatusAssessed(child_id=kid, study=c.StatusLevel.GOOD), T0 + dt.timedelta(days=day + i)))
        out.append(w.write(c.GuardianChanged(child_id=kid, guardian=c.Guardian(type=c.GuardianshipType.RELATIVES)),
                           T0 + dt.timedelta(days=day + i, hours=1)))
    return out


@pytest.mark.parametrize("seed", [4, 5, 6, 7])
async def test_held_structural_entries_are_the_childs_whole_structural_history(
        store: EventStore, pool: asyncpg.Pool, seed: int) -> None:
    """Structural events of children whose entries the runner holds re-derive from those entries
    and the batch's own, with corrections, merges and resolutions in between (which forget the
    children they re-derive in full): each child's held entries are exactly the structural
    history a read gives at the checkpoint, and the read models equal a rebuild's."""
    runner = Runner(pool, batch_size=4)
    assert runner.cache is not None
    rng = random.Random(seed)
    w = SiteWriter("r.t.v03")
    await deliver(store, random_world(seed, 50), rng, runner)
    for day in (300, 320, 340):
        await store.append(structural_events(w, day))
        await runner.catch_up()
        await deliver(store, random_world(seed + 100 + day, 12), rng, runner)
        await runner.catch_up()
    assert runner.cache.entry_hits > 0, "structural events found their children's entries held"
    async with pool.acquire() as conn:
        cp = await read_checkpoint(conn, tables.SCHEMA)
        held = 0
        for kid in KIDS:
            entries = runner.cache.entries(kid)
            if entries is None:
                continue
            held += 1
            book = book_of(await history(conn, [kid], (), cp.position, structural=True))
            expected = book.states[kid].entries if kid in book.states else {}
            assert entries == expected, kid
    assert held, "it holds some children's entries"
    await assert_equals_rebuild(pool)


@pytest.mark.parametrize("seed", [11, 12])
async def test_a_history_decoded_to_entries_is_the_rows_book(store: EventStore, pool: asyncpg.Pool, seed: int) -> None:
    """The projector reads children's histories straight to entries (`history_book`, the rebuild's
    decoding): the same states of the children and pseudo-keys asked as the rows' book, whole
    histories and structural ones, with the correction families, and no others."""
    events = random_world(seed, 80)
    await store.append(events)
    pseudo = [f"ev:{d.event.event_id}" for d in events if not d.event.children][:3]
    async with pool.acquire() as conn:
        cp = await latest(conn)
        for structural in (False, True):
            for kids in ([KIDS[0]], list(KIDS)):
                a = await history_book(conn, kids, pseudo, cp, structural=structural)
                b = book_of(await history(conn, kids, pseudo, cp, structural=structural))
                wanted = {*kids, *pseudo}
                assert set(a.states) <= wanted, "no partial states of the other children an event names"
                assert {k: s.entries for k, s in a.states.items()} == {
                    k: s.entries for k, s in b.states.items() if k in wanted}
                assert a.skipped == b.skipped


async def latest(conn: asyncpg.Connection) -> Position:
    row = await conn.fetchrow("SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1")
    assert row is not None
    return Position(row["tx_id"], row["position"])


async def assert_held_is_stored(pool: asyncpg.Pool, runner: Runner) -> int:
    """Every archive and every child's structural entries the runner holds are what the read
    models and the log say at its checkpoint; returns how many archives it holds."""
    assert runner.cache is not None
    stored = await stored_archives(pool)
    held = 0
    async with pool.acquire() as conn:
        cp = await read_checkpoint(conn, tables.SCHEMA)
        for kid in stored:
            a = runner.cache.get(kid)
            if a is not None:
                held += 1
                assert a == stored[kid], kid
            entries = runner.cache.entries(kid)
            if entries is not None:
                book = book_of(await history(conn, [kid], (), cp.position, structural=True))
                assert entries == (book.states[kid].entries if kid in book.states else {}), kid
    return held


async def test_a_warm_up_holds_what_the_read_models_hold(store: EventStore, pool: asyncpg.Pool) -> None:
    """A projector started over read models a rebuild made holds nothing; idle, it warms its
    cache chunk by chunk (the archives and structural entries of the children the latest events
    named, at its checkpoint), then its batches take them from the cache and the read models
    still equal a rebuild's. Another runner writing in between drops what it warmed, and the
    next warm-up reads it again."""
    events = random_world(21, 60)
    await store.append(events)
    await rebuild(pool, page=7)
    runner = Runner(pool, batch_size=5)
    assert runner.cache is not None and len(runner.cache) == 0
    chunks = 0
    while await runner.warm():
        chunks += 1
    assert chunks >= 1
    assert await assert_held_is_stored(pool, runner) == len([k for k in KIDS if runner.cache.holds(k)]) > 0
    assert await runner.warm() == 0, "warm once: nothing left to read"
    hits, entry_hits = runner.cache.hits, runner.cache.entry_hits
    w = SiteWriter("r.t.v03")
    await store.append(structural_events(w, 300) + visits(w, 8, 330))
    await runner.catch_up()
    assert runner.cache.dropped == 0, "the warm-up's checkpoint was the batches' own"
    assert runner.cache.hits > hits and runner.cache.entry_hits > entry_hits
    await assert_equals_rebuild(pool)

    await store.append(visits(w, 4, 360))
    await Runner(pool, batch_size=100, cache_archives=0).catch_up()  # another projector
    await store.append(visits(w, 2, 370))
    await runner.catch_up()  # its batch finds the checkpoint another's: drops what it held
    assert runner.cache.dropped == 1
    while await runner.warm():
        pass
    assert await assert_held_is_stored(pool, runner) > 0
    await store.append(structural_events(w, 380))
    await runner.catch_up()
    await assert_equals_rebuild(pool)
