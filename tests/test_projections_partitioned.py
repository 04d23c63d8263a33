"""A rebuild folded partition by partition (projections/partitioned.py) gives exactly the rows the
incremental runner gives, byte for byte: merges and corrections that join children of different
partitions, work about several children, events about no child, children whose events span the
whole log, transfers, in one process and shared by two; and the spill writes every row where the
plan says, in the log's order, however many processes spill its ranges; and leaves nothing behind."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
import tempfile
from pathlib import Path

import asyncpg
import pytest

from events import catalogue as c
from events.envelope import DecodedEvent
from events.samples import sample_registration, samples
from events.types import ActivityKind, MeetingKind
from projections import partitioned, tables
from projections.archive import ArchiveBook, entry_of
from projections.rebuild import RebuildError, fill
from projections.runner import Runner
from store.postgres import EventStore
from tests.factory import SiteWriter
from tests.test_projections_archive import random_world
from tests.test_projections_daily import T0, world
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


def spanning_world(seed: int, region: str = "r") -> list[DecodedEvent]:
    """Twelve children whose events span the whole log (work early and late), transferred between
    villages, merged across partitions (a chain and an unmerge), named together by meetings and
    activities, events about no child, and corrections that move work to children elsewhere."""
    rng = random.Random(seed)
    kids = [f"c-{seed:04x}{i:028x}" for i in range(12)]
    names = [f"{region}.{s}" for s in ("t1.v01", "t1.v02", "t2.v01", "t2.s01")]
    sites = {s: SiteWriter(s) for s in names}
    out = [sites[names[i % 3]].write(sample_registration(rng, k, village_site=names[i % 3]), T0)
           for i, k in enumerate(kids)]

    def w(site: str, care: c.CareEventBase) -> DecodedEvent:
        d = sites[site].write(care, T0 + dt.timedelta(days=rng.randrange(60), minutes=rng.randrange(1440)))
        out.append(d)
        return d

    def work(kid: str) -> DecodedEvent:
        return w(rng.choice(names), samples(rng, kid)[rng.choice(("HomeVisitMade", "ParentCallMade", "TalkHeld"))])

    early = [work(k) for k in kids]
    w(names[0], c.ChildTransferred(child_id=kids[0], to_village_site=names[2]))
    w(names[1], c.ChildTransferred(child_id=kids[1], to_village_site=names[0]))
    first = w(names[0], c.ArchivesMerged(kept_child_id=kids[2], merged_child_id=kids[3]))
    w(names[0], c.ArchivesMerged(kept_child_id=kids[3], merged_child_id=kids[4]))  # into the kept one's root
    undone = w(names[2], c.ArchivesMerged(kept_child_id=kids[5], merged_child_id=kids[6]))
    for _ in range(30):
        work(rng.choice(kids))
    together = w(names[3], c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="安全座谈",
                                           child_ids_list=[kids[0], kids[3], kids[7], kids[9]], attendees=12))
    w(names[3], c.ActivityHeld(activity_id=f"a-{seed:032x}", kind=ActivityKind.CHILDRENS_HOME, title="读书会",
                                 child_ids_list=kids[6:12], participants_total=6))
    alone = w(names[1], c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="家长会", attendees=20))  # about no child
    w(names[2], c.ArchivesUnmerged(merge_event_id=undone.event.event_id, kept_child_id=kids[5],
                                     merged_child_id=kids[6]))
    # corrections: work moved to a child elsewhere, a meeting's children changed, a meeting about no child retracted
    moved = early[8]
    w(moved.event.site_id, c.EventCorrected(
        corrected_event_id=moved.event.event_id, reason="填错", child_ids_list=list(moved.event.children),
        replacement=samples(rng, kids[10])["HomeVisitMade"]))
    w(together.event.site_id, c.EventCorrected(
        corrected_event_id=together.event.event_id, reason="名单有误", child_ids_list=list(together.event.children),
        replacement=c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="安全座谈",
                                  child_ids_list=[kids[1], kids[11]], attendees=12)))
    w(alone.event.site_id, c.EventCorrected(corrected_event_id=alone.event.event_id, reason="重复"))
    w(first.event.site_id, c.ArchivesMerged(kept_child_id=kids[8], merged_child_id=kids[2]))  # the chain grows late
    for k in kids:  # every child's history reaches the end of the log too
        work(k)
    return out


@pytest.mark.parametrize("seed", [1, 2])
async def test_children_across_partitions_rebuild_as_the_runner_does(store: EventStore, pool: asyncpg.Pool,
                                                                     seed: int, database_url: str) -> None:
    """Merges, a chain of merges and an unmerge between partitions, transfers, events naming
    children of several partitions, corrections moving work to another partition: equal to the
    runner's rows and to a fold at once, in one process and in two."""
    events = spanning_world(seed)
    runner = Runner(pool, batch_size=4)
    await deliver(store, events, random.Random(seed), runner)
    await runner.catch_up()
    live = await dump(pool, tables.SCHEMA)
    await _partitioned_rebuild(pool, 10**9)  # folded at once
    assert await dump(pool, tables.SHADOW) == live
    async with pool.acquire() as conn:
        upto, _ = await partitioned.head(conn)
        plan = await partitioned.plan(conn, upto, 6)
    spans = [d for d in events if len(plan.partitions(d.event.event_id, d.event.children)) > 1]
    assert spans, "some events go to several of 6 partitions"
    assert any(_own_part(plan, e.kept) != _own_part(plan, e.merged) for e in plan.edges), \
        "a merge joins children of different partitions"
    for per_partition in (len(events) // 6, 5, 1):
        await _partitioned_rebuild(pool, per_partition)
        assert await dump(pool, tables.SHADOW) == live, per_partition
    await _partitioned_rebuild(pool, 5, database_url, workers=2)
    assert await dump(pool, tables.SHADOW) == live


def _own_part(plan: partitioned.Plan, key: str) -> int:
    """The partition a key would be in were it merged into nothing."""
    return bisect.bisect_right(plan.bounds, partitioned.hash32(key))


async def _routed(conn: asyncpg.Connection, plan: partitioned.Plan, spillers: int = 1, page: int = 11
                  ) -> dict[str, list[int]]:
    """event id -> the partitions the spill wrote it to, the log cut into `spillers` ranges
    spilled one after the other; each partition's rows are read back in the log's order."""
    order = {r["event_id"]: i for i, r in enumerate(await conn.fetch(
        "SELECT event_id::text AS event_id FROM events ORDER BY tx_id, position"))}
    _, total = await partitioned.head(conn)
    ranges = await partitioned.split(conn, plan.upto, total, spillers)
    assert len(ranges) == spillers and ranges[0][0] == partitioned.ORIGIN and ranges[-1][1] == plan.upto
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges)), "the ranges follow each other"
    seen: dict[str, list[int]] = {}
    writer: dict[str, int] = {}  # event id -> the partition that writes its fact (its row there unmarked)
    with tempfile.TemporaryDirectory() as tmp:
        for spiller, (after, upto) in enumerate(ranges):
            await partitioned.spill(conn, plan, after, upto, Path(tmp), spiller, page)
        for part in range(plan.parts):
            chunks = list(partitioned.read_partition(Path(tmp), part, spillers))
            ids = [r[3] for chunk in chunks for r in chunk.rows]
            assert [order[i] for i in ids] == sorted(order[i] for i in ids), "a partition's rows in the log's order"
            others = {i for chunk in chunks for i in chunk.others}
            checked = {i for chunk in chunks for i in chunk.checked}
            for i in ids:
                seen.setdefault(i, []).append(part)
                if i not in others:
                    assert i not in writer, "one partition writes an event's fact"
                    writer[i] = part
                fam = plan.family.get(i, i)
                assert (i in checked) == (fam in plan.family_keys), "a row routed by its family is checked"
    assert writer.keys() == seen.keys()
    if spillers == 1:  # the partition that writes the fact: the lowest root's, as rebuild._write_share decides
        for eid, part in writer.items():
            fam = plan.family.get(eid, eid)
            if fam in plan.family_keys:
                assert part == plan.owner(plan.family_keys[fam])
    return seen


@pytest.mark.parametrize("parts", [9, 4])
async def test_each_row_goes_where_its_groups_are(store: EventStore, pool: asyncpg.Pool, parts: int) -> None:
    """The spill writes every row exactly where the plan says (`Plan.partitions`: a correction
    with its original, a merged child's events with the archive it joined, an event about
    children of several partitions to each), once per partition; spilled in three ranges, the
    same."""
    events = world(5, 300) + spanning_world(3, region="q")
    await store.append(events)
    async with pool.acquire() as conn:
        upto, total = await partitioned.head(conn)
        plan = await partitioned.plan(conn, upto, parts)
        routed = await _routed(conn, plan)
        thirds = await _routed(conn, plan, spillers=3)
    assert total == len(events)
    assert plan.family and plan.edges, "the world corrects and merges"
    assert set(routed) == {d.event.event_id for d in events}
    for d in events:
        expected = plan.partitions(d.event.event_id, d.event.children)
        assert sorted(routed[d.event.event_id]) == sorted(expected), d.event.type
        for kid in d.event.children:
            assert plan.part_of(kid) in expected
            assert plan.part_of(kid) == plan.part_of(plan.root_of.get(kid, kid))
    for correction, original in plan.family.items():
        if original in routed:
            assert routed[correction] == routed[original]
    assert any(len(p) > 1 for p in routed.values())
    assert thirds == routed


def test_partitions_of_keys() -> None:
    """Every partition gets keys, with equal widths and with uneven bounds (`bounds_for_rows`);
    the spill's router agrees with `Plan.partitions` for events about no child, one or several."""
    keys = [f"c-{i:032x}" for i in range(3000)]
    mix = {0: (10, 900), 1: (800, 80_000), 5: (100, 30_000), 21: (30, 30_000)}  # children: (events, bytes)
    uneven = partitioned.bounds_for_rows(mix, 200, shares=2)
    assert len(uneven) + 1 > 4 and (len(uneven) + 1) % 2 == 0
    rng = random.Random(5)
    for bounds in [partitioned.equal_bounds(n) for n in (1, 2, 7, 250)] + [uneven]:
        plan = partitioned.Plan(upto=partitioned.ORIGIN, bounds=bounds, edges=[], root_of={}, family={},
                                family_keys={})
        assert all(0 <= plan.part_of(k) < plan.parts for k in keys)
        if bounds is not uneven and plan.parts < 50:
            assert {plan.part_of(k) for k in keys} == set(range(plan.parts)), "every partition has keys"
        route = plan.router()
        for i in range(500):
            kids = rng.sample(keys, rng.choice([0, 1, 1, 2, 5, 21]))
            eid = f"0b5c1f4e-7d0e-4a57-9a0e-{i:012x}"
            parts = route(eid, " ".join(kids))
            assert set(parts) == plan.partitions(eid, kids) and len(parts) == len(set(parts))
            if kids:
                assert parts[0] == plan.owner(kids), "the partition that writes the fact comes first"
    # a correction of a correction goes where its own family goes, as Plan.partitions says
    fam = {"c1": "o", "c2": "c1"}
    fam_keys = {"o": tuple(keys[:3]), "c1": tuple(keys[3:30])}
    plan = partitioned.Plan(upto=partitioned.ORIGIN, bounds=partitioned.equal_bounds(7), edges=[], root_of={},
                            family=fam, family_keys=fam_keys)
    route = plan.router()
    for eid in ("o", "c1", "c2"):
        assert set(route(eid, "")) == plan.partitions(eid, []), eid


def test_bounds_for_rows_give_partitions_of_so_many_rows_whatever_the_log() -> None:
    """Partitions counted in rows of the log's mean size: the widest width whose expected rows
    are within the budget, the rest shared by the last `shares` partitions; more partitions than
    events alone ask for where events name several children, never a partition over the budget,
    and the largest partition's expected bytes the same at any size of the log."""
    largest: list[float] = []
    for events in (1_000_000, 3_000_000, 10_000_000):  # the bench world's mix: 5, 11 and 21 children in 5.5%
        by_children = {k: (events * share // 1000, events * share // 1000 * size)
                       for k, share, size in ((1, 945, 152), (5, 33, 285), (11, 11, 520), (21, 11, 970))}
        for shares in (1, 2, 3):
            bounds = partitioned.bounds_for_rows(by_children, 250_000, shares)
            parts = len(bounds) + 1
            assert parts % shares == 0 and parts > partitioned.partitions_for(events, 250_000)
            widths = [(b - a) / (1 << 32) for a, b in itertools.pairwise([0, *bounds, 1 << 32])]
            rows = [partitioned.rows_in(by_children, w) for w in widths]
            assert max(rows) <= 250_000 * 1.0001
            assert max(rows) >= 249_000, "the widest partitions take the whole budget"
            assert sum(rows[i] for i in range(0, parts, shares)) == pytest.approx(
                sum(rows[i] for i in range(shares - 1, parts, shares)), rel=0.01), "each share as many rows"
            if shares == 2:
                largest.append(max(sum((partitioned.ROW_OVERHEAD * n + b) * (1 - (1 - w) ** k)
                                       for k, (n, b) in by_children.items()) for w in widths))
    assert max(largest) == pytest.approx(min(largest), rel=0.001), largest
    assert partitioned.bounds_for_rows({1: (100, 15_000)}, 250) == []


def crowd_world(seed: int, children: int = 200, n: int = 600) -> list[DecodedEvent]:
    """`children` registered children and n events, a fifth of them naming 5, 11 or 21 of them
    (tutoring, condolence visits, activities, as the bench's world does), some corrected."""
    rng = random.Random(seed)
    kids = [f"c-{seed:04x}{i:028x}" for i in range(children)]
    site = SiteWriter("r.t1.v01")
    out = [site.write(sample_registration(rng, k, village_site=site.site_id), T0) for k in kids]
    for _ in range(n):
        when = T0 + dt.timedelta(days=rng.randrange(60), minutes=rng.randrange(1440))
        r = rng.random()
        if r < 0.2:
            named = sorted(rng.sample(kids, rng.choice((5, 11, 21))))
            care: c.CareEventBase = c.ActivityHeld(activity_id=f"a-{rng.getrandbits(128):032x}",
                                                   kind=ActivityKind.CHILDRENS_HOME, title="读书会",
                                                   child_ids_list=named, participants_total=len(named))
        elif r < 0.23 and len(out) > children:
            target = rng.choice(out[children:])
            care = c.EventCorrected(corrected_event_id=target.event.event_id, reason="填错",
                                    child_ids_list=list(target.event.children))
        else:
            care = samples(rng, rng.choice(kids))[rng.choice(("HomeVisitMade", "ParentCallMade", "TalkHeld"))]
        out.append(site.write(care, when))
    return out


async def test_partitions_are_sized_by_the_rows_they_receive(store: EventStore, pool: asyncpg.Pool,
                                                             database_url: str) -> None:
    """An event naming several children is folded in every partition its children reach: the
    partitions are counted from the rows they will receive (`routed_rows`, which matches the
    rows PostgreSQL routes), not from the events, so more of them than the events alone ask for;
    and the rebuild with them equals the fold at once and the runner's rows. (This world found
    the runner writing a contact's follow-up month in UTC, not in China time.)"""
    events = crowd_world(3)
    await store.append(events)
    await Runner(pool, batch_size=50).catch_up()
    await _partitioned_rebuild(pool, 10**9)  # folded at once
    at_once = await dump(pool, tables.SHADOW)
    assert await dump(pool, tables.SCHEMA) == at_once
    async with pool.acquire() as conn:
        upto, total = await partitioned.head(conn)
        tally = await partitioned.tally(conn, upto)
        assert tally.skipped == 0 and sum(n for n, _ in tally.by_children.values()) == total == len(events)
        assert {5, 11, 21} <= tally.by_children.keys()
        for parts in (3, 8):
            plan = await partitioned.plan(conn, upto, parts)
            routed = sum(len(p) for p in (await _routed(conn, plan, page=97)).values())
            expected = parts * partitioned.rows_in(tally.by_children, 1 / parts, sized=False)
            assert abs(routed - expected) < 0.05 * routed, (parts, routed, expected)
    per = total // 4
    bounds = partitioned.bounds_for_rows(tally.by_children, per, shares=2)
    assert len(bounds) + 1 > partitioned.partitions_for(total, per)
    await _partitioned_rebuild(pool, per)
    assert await dump(pool, tables.SHADOW) == at_once
    await _partitioned_rebuild(pool, per, database_url, workers=2)
    assert await dump(pool, tables.SHADOW) == at_once


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_partitions_book_holds_only_its_own_states(store: EventStore, pool: asyncpg.Pool, seed: int) -> None:
    """A partition's book (`ArchiveBook(keep=plan.keeper(p))`, fed the rows routed to p, in any
    order) holds states for the keys whose group is p's only, and each of them with exactly
    the entries a book of the whole log holds for it: merges across partitions, corrections
    moving work, events about several children or none."""
    events = spanning_world(seed) + crowd_world(seed, children=40, n=200)
    await store.append(events)
    async with pool.acquire() as conn:
        upto, _ = await partitioned.head(conn)
        plan = await partitioned.plan(conn, upto, 5)
    entries = [entry_of(d.event, d.care) for d in events]
    whole = ArchiveBook()
    for e in entries:
        whole.fold(e)
    rng = random.Random(seed)
    held: dict[str, int] = {}
    for part in range(plan.parts):
        book = ArchiveBook(keep=plan.keeper(part))
        mine = [e for e, d in zip(entries, events, strict=True)
                if part in plan.partitions(d.event.event_id, d.event.children)]
        rng.shuffle(mine)  # order-free: corrections before what they correct, merges first
        for e in mine:
            book.fold(e)
        for key, st in book.states.items():
            assert plan.part_of(key) == part, key
            assert st.entries.keys() == whole.states[key].entries.keys(), key
            held[key] = part
    assert held.keys() == whole.states.keys(), "every key is held by one partition"


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_partitions_fold_from_its_files_holds_what_the_whole_log_gives(store: EventStore, pool: asyncpg.Pool,
                                                                            seed: int) -> None:
    """The fold from the spill's files (`fold_partition`: a row routed by its correction family
    through `ArchiveBook.fold`, which checks its keys, any other through `fold_own`, which does
    not): each partition's book holds states for its own keys only, each with exactly the
    entries of a book of the whole log built event by event (`add_entry`, no fast path), and
    the facts of other partitions are named as such; spilled in one range and in three."""
    events = spanning_world(seed) + crowd_world(seed, children=40, n=200)
    events.append(SiteWriter("r.t9.v01").write(c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="家长会",
                                                              child_ids_list=[events[0].event.children[0]] * 2,
                                                              attendees=2), T0))  # a child named twice
    await store.append(events)
    whole = ArchiveBook()
    async with pool.acquire() as conn:
        stored = {r["id"] for r in await conn.fetch("SELECT event_id::text AS id FROM events")}
        for d in events:
            if d.event.event_id in stored:  # the two worlds share a site: the store keeps the first of a place
                whole.add_entry(entry_of(d.event, d.care))
        upto, total = await partitioned.head(conn)
        assert total == len(stored)
        plan = await partitioned.plan(conn, upto, 5)
        for spillers in (1, 3):
            held: dict[str, int] = {}
            others: set[str] = set()
            with tempfile.TemporaryDirectory() as tmp:
                for spiller, (after, last) in enumerate(await partitioned.split(conn, upto, total, spillers)):
                    await partitioned.spill(conn, plan, after, last, Path(tmp), spiller, 17)
                for part in range(plan.parts):
                    book = ArchiveBook(keep=plan.keeper(part))
                    folded = partitioned.fold_partition(book, Path(tmp), part, spillers)
                    others |= folded.others
                    for key, st in book.states.items():
                        assert plan.part_of(key) == part, key
                        assert st.entries.keys() == whole.states[key].entries.keys(), key
                        held[key] = part
            assert held.keys() == whole.states.keys(), "every key is held by one partition"
            assert others, "some facts are written by another partition"


def test_the_folds_fast_paths_equal_add_entry() -> None:
    """`fold` and `fold_own` (their ways round `add_entry` for work about one child or a list of
    children) give the states `add_entry` gives, in any order: corrections before or after what
    they correct, a child named twice in a list, work about no child."""
    events = spanning_world(4) + crowd_world(4, children=30, n=150)
    site = SiteWriter("r.t1.v01")
    events.append(site.write(c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="家长会",
                                           child_ids_list=[events[0].event.children[0]] * 2, attendees=2), T0))
    entries = [entry_of(d.event, d.care) for d in events]
    rng = random.Random(4)
    for _ in range(3):
        rng.shuffle(entries)
        reference, folded, own = ArchiveBook(), ArchiveBook(), ArchiveBook()
        for e in entries:
            reference.add_entry(e)
            folded.fold(e)
            own.fold_own(e)
        for book in (folded, own):
            assert list(book.states) == list(reference.states)
            assert {k: list(s.entries) for k, s in book.states.items()} == \
                {k: list(s.entries) for k, s in reference.states.items()}


def _left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_the_spill_leaves_no_files(store: EventStore, pool: asyncpg.Pool, database_url: str,
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The spill's temporary directory is removed after a rebuild, and after one whose forked
    workers fail (here: their database does not exist); the failure says so."""
    await store.append(world(2, 120))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    await _partitioned_rebuild(pool, 20, database_url, workers=2)
    assert _left(tmp_path) == []
    with pytest.raises(RebuildError, match="failed"):
        await _partitioned_rebuild(pool, 20, database_url.rpartition("/")[0] + "/shouwang_no_such_db", workers=2)
    assert _left(tmp_path) == []
