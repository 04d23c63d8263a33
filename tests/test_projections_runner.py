"""The runner and the rebuild on real PostgreSQL: incremental equals rebuild byte for byte,
equals the pure build, the site's own archive, nothing applied twice, live follow and swap."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import asyncpg
import pytest

from events import catalogue as c
from events.envelope import DecodedEvent
from events.samples import sample_registration
from events.types import AidSource, PartnerKind
from projections import archive, queries, tables
from projections.rebuild import fill, rebuild
from projections.runner import Runner, lag
from store.postgres import EventStore
from tests.test_projections_archive import KIDS, T0, random_world


async def dump(pool: asyncpg.Pool, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table, sorted: what "byte for byte" compares."""
    out = {}
    async with pool.acquire() as conn:
        for t in tables.TABLES:
            rows = await conn.fetch(f"SELECT * FROM {schema}.{t}")
            out[t] = sorted(tuple(r.values()) for r in rows)
    return out


async def shadow_rebuild(pool: asyncpg.Pool, database_url: str | None = None) -> None:
    """A rebuild from zero into the shadow schema (in two processes when given the URL)."""
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {tables.SHADOW} CASCADE")
        await conn.execute("SELECT shouwang_projection_schema($1)", tables.SHADOW)
    await fill(pool, tables.SHADOW, page=17, database_url=database_url, workers=2, parallel_from=0)


async def deliver(store: EventStore, events: list[DecodedEvent], rng: random.Random, runner: Runner) -> None:
    """Append in random order, in random batches with resends, stepping the runner in between."""
    pending = list(events)
    rng.shuffle(pending)
    while pending:
        k = rng.randint(1, 6)
        batch, pending = pending[:k], pending[k:]
        resend = rng.sample(events, k=min(2, len(events)))
        await store.append(batch + [d for d in resend if d not in batch])
        if rng.random() < 0.5:
            await runner.step()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_incremental_equals_rebuild_and_the_pure_build(store: EventStore, pool: asyncpg.Pool,
                                                             seed: int, database_url: str) -> None:
    """Events arriving in random order with resends, projected in small batches, give exactly the
    rows a rebuild from zero gives (in one process, and shared between two), and the archives
    the pure reducer gives."""
    events = random_world(seed, 60)
    runner = Runner(pool, batch_size=5)
    await deliver(store, events, random.Random(seed), runner)
    await runner.catch_up()
    await shadow_rebuild(pool)
    live = await dump(pool, tables.SCHEMA)
    assert live == await dump(pool, tables.SHADOW)
    assert live["archive"], "the world has archives"
    await shadow_rebuild(pool, database_url)
    assert live == await dump(pool, tables.SHADOW)
    pure = archive.build([(d.event, d.care) for d in events])
    for cid, expected in pure.items():
        got = await queries.get_archive(pool, cid)
        assert got == expected


async def test_site_archive_equals_center_archive(store: EventStore, pool: asyncpg.Pool) -> None:
    """A site that holds only the events about its child (its own and those sent down to it)
    builds, with the same code, the archive the center shows for that child."""
    events = [d for d in random_world(7, 80) if not isinstance(d.care, c.ArchivesMerged | c.ArchivesUnmerged)]
    await store.append(events)
    await Runner(pool).catch_up()
    # The site's log and inbox: every event about its child, and the rest of those events'
    # correction families (an original whose correction moved it to this child), in its own order.
    families = {archive.family_of(d.care, d.event.event_id) for d in events
                if d.care is not None and KIDS[0] in d.care.child_ids()}
    site_book = archive.ArchiveBook()
    for d in reversed(events):
        if d.care is not None and archive.family_of(d.care, d.event.event_id) in families:
            site_book.add(d.event, d.care)
    center = await queries.get_archive(pool, KIDS[0])
    assert center is not None and center.events > 1
    assert site_book.archives()[KIDS[0]] == center


async def test_unknown_events_are_skipped_and_counted(store: EventStore, pool: asyncpg.Pool) -> None:
    """An event the center does not understand moves the checkpoint, is counted, changes nothing."""
    from tests.factory import SiteWriter

    w = SiteWriter("r.t.v01")
    reg = w.write(c.HomeVisitMade(child_id=KIDS[0], visitor="石晓"))
    future = w.write(c.HomeVisitMade(child_id=KIDS[0], visitor="石晓"))
    import msgspec

    from events.envelope import DecodedEvent as DE
    from events.envelope import event_hash

    odd = msgspec.structs.replace(future.event, type="FutureKindOfVisit")
    await store.append([reg, DE(odd, None, event_hash(odd), False)])
    await Runner(pool).catch_up()
    status = await lag(pool)
    assert (status.applied, status.skipped, status.events_behind) == (1, 1, 0)
    got = await queries.get_archive(pool, KIDS[0])
    assert got is not None and got.events == 1


async def test_runner_follows_live_commits(store: EventStore, pool: asyncpg.Pool) -> None:
    """Started on an empty store, the runner picks up events appended afterwards without being told."""
    from tests.factory import SiteWriter

    stop = asyncio.Event()
    task = asyncio.create_task(Runner(pool, poll_seconds=5.0).run(stop), name="projection-runner")
    try:
        w = SiteWriter("r.t.v01")
        await store.append([w.write(c.HomeVisitMade(child_id=KIDS[1], visitor="石晓"))])
        for _ in range(1500):  # generous: a busy CI machine
            if (await lag(pool)).applied == 1:
                break
            await asyncio.sleep(0.02)
        assert (await lag(pool)).applied == 1
    finally:
        stop.set()
        await task


async def test_rebuild_swaps_in_a_fresh_copy(store: EventStore, pool: asyncpg.Pool) -> None:
    """`rebuild` replaces the live read models with ones equal to the incremental result."""
    events = random_world(11, 40)
    await store.append(events)
    await Runner(pool, batch_size=3).catch_up()
    before = await dump(pool, tables.SCHEMA)
    async with pool.acquire() as conn:  # damage the live copy: the rebuild must not care
        await conn.execute("DELETE FROM proj.fact")
    report = await rebuild(pool, page=13)
    assert report.events == len(events)
    assert await dump(pool, tables.SCHEMA) == before
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'proj_%'") == 0


_CRASHING_RUNNER = """
import asyncio, pathlib, sys, time
from projections.runner import Runner
from runtime.db import create_pool

async def main(url, flag):
    pool = await create_pool(url, max_size=2)

    async def hang():  # the read models and the checkpoint are written, COMMIT has not been sent
        pathlib.Path(flag).write_text("written")
        time.sleep(600)

    await Runner(pool, batch_size=1000, before_commit=hang).step()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_killed_between_write_and_commit_applies_nothing_twice(
        store: EventStore, pool: asyncpg.Pool, database_url: str, tmp_path: Any) -> None:
    """kill -9 of a runner after its read-model writes and before COMMIT leaves no trace; the next
    runner applies every event exactly once and ends where a rebuild ends."""
    import sys

    events = random_world(5, 40)
    await store.append(events)
    flag = tmp_path / "written"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CRASHING_RUNNER, database_url, str(flag))
    try:
        for _ in range(1500):
            if flag.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        assert flag.exists(), "the runner reached the point between write and commit"
        proc.kill()  # SIGKILL: no rollback by the client, no goodbye to the server
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    status = await lag(pool)
    assert (status.applied, status.events_behind) == (0, len(events))
    assert (await dump(pool, tables.SCHEMA))["archive"] == []
    await Runner(pool, batch_size=7).catch_up()
    status = await lag(pool)
    assert (status.applied, status.skipped, status.events_behind) == (len(events), 0, 0)
    await shadow_rebuild(pool)
    assert await dump(pool, tables.SCHEMA) == await dump(pool, tables.SHADOW)


async def test_cli_rebuild_status_and_audit_asof(store: EventStore, database_url: str) -> None:
    """`shouwang projections rebuild|status` and `shouwang audit asof` work end to end and say
    what the read models and the log say."""
    import json
    import os
    import sys

    events = random_world(3, 20)
    await store.append(events)
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url, "SHOUWANG_LOG_LEVEL": "warning"}

    async def shouwang(*argv: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shouwang", *argv, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    assert f"{len(events)} events" in await shouwang("projections", "rebuild")
    status = json.loads(await shouwang("projections", "status", "--json"))
    assert (status["applied"], status["events_behind"]) == (len(events), 0)
    doc = json.loads(await shouwang("audit", "asof", "--child", KIDS[0], "--committed", "2999-01-01T00:00:00Z"))
    assert doc["archive"]["child_id"] == KIDS[0]
    assert {i["event_id"] for i in doc["timeline"]} <= {d.event.event_id for d in events}
    rollup = json.loads(await shouwang("audit", "asof", "--rollup", "r.t", "--period", "2026",
                                       "--occurred", "2026-12-31T23:59:59+08:00"))
    assert rollup["scope"] == "r.t" and rollup["period"] == "2026"


async def test_rebuild_writes_the_runners_facts_of_plain_work(store: EventStore, pool: asyncpg.Pool,
                                                              database_url: str) -> None:
    """A rebuild leaves the facts of plain work nothing corrects (visits, calls, letters, talks,
    pairing ends) to PostgreSQL and derives the rest: together they are the runner's facts, row
    for row, with work retracted, work replaced (by work of another child), and work 'corrected'
    by an event the center does not understand (which changes nothing)."""
    import msgspec

    from events.envelope import DecodedEvent as DE
    from events.envelope import event_hash
    from tests.factory import SiteWriter

    v, s = SiteWriter("r.t.v01"), SiteWriter("r.t2.s01")
    day = T0 + dt.timedelta(days=40)
    events = [v.write(sample_registration(random.Random(kid), kid, village_site=v.site_id), T0) for kid in KIDS]
    plain = [v.write(c.HomeVisitMade(child_id=KIDS[0], visitor="石晓"), day),
             s.write(c.ParentCallMade(child_id=KIDS[1], parent="母亲"), day),
             s.write(c.LetterWritten(child_id=KIDS[2], summary="给妈妈的一封信"), day),
             s.write(c.TalkHeld(child_id=KIDS[0], teacher="云安", record_card="谈心"), day),
             v.write(c.PairingStarted(pairing_id=f"p-{1:032x}", child_id=KIDS[1], partner_kind=PartnerKind.PROXY_PARENT,
                                      partner_name="夏朵朵"), day),
             v.write(c.PairingEnded(pairing_id=f"p-{1:032x}", child_id=KIDS[1]), day + dt.timedelta(days=3)),
             v.write(c.AidGiven(child_id=KIDS[2], amount_fen=20_000, source=AidSource.CHARITY), day)]
    retracted = v.write(c.HomeVisitMade(child_id=KIDS[1], visitor="石晓"), day)
    replaced = s.write(c.TalkHeld(child_id=KIDS[2], teacher="云安", record_card="谈心"), day)
    events += [*plain, retracted, replaced,
               v.write(c.EventCorrected(corrected_event_id=retracted.event.event_id, reason="重复",
                                        child_ids_list=[KIDS[1]]), day),
               s.write(c.EventCorrected(corrected_event_id=replaced.event.event_id, reason="记错人",
                                        child_ids_list=[KIDS[2]], replacement=c.TalkHeld(
                                            child_id=KIDS[0], teacher="云安", record_card="谈心"),
                                        replacement_occurred_at=day + dt.timedelta(days=1)), day)]
    future = v.write(c.EventCorrected(corrected_event_id=plain[0].event.event_id, reason="?",
                                      child_ids_list=[KIDS[0]]), day)
    odd = msgspec.structs.replace(future.event, schema_version=99)
    await store.append(events)
    await store.append([DE(odd, None, event_hash(odd), False)])
    await Runner(pool, batch_size=4).catch_up()
    live = await dump(pool, tables.SCHEMA)
    counted = {r[0] for r in live["fact"]}
    assert {d.event.event_id for d in plain} <= counted  # the visit too: its 'correction' is not understood
    assert retracted.event.event_id not in counted and replaced.event.event_id in counted
    await shadow_rebuild(pool)
    assert live == await dump(pool, tables.SHADOW)
    await shadow_rebuild(pool, database_url)
    assert live == await dump(pool, tables.SHADOW)


async def test_a_runner_behind_grows_its_batches_and_gives_the_same_models(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """Catching up, each full batch doubles the next up to max_batch (its cost follows the
    archives it touches, not its events); the models equal a rebuild's all the same."""
    events = random_world(3, 60)
    await store.append(events)

    limits: list[int] = []

    class Counting(Runner):
        async def step(self, limit: int | None = None) -> int:
            n = await super().step(limit)
            limits.append(limit or self.batch_size)
            return n

    runner = Counting(pool, batch_size=4, max_batch=32)
    assert await runner.catch_up() == len(events)
    assert limits[:4] == [4, 8, 16, 32] and set(limits[4:]) <= {32}
    await shadow_rebuild(pool)
    assert await dump(pool, tables.SCHEMA) == await dump(pool, tables.SHADOW)


async def test_work_early_on_the_first_of_a_month_in_china_counts_in_that_month(store: EventStore,
                                                                                pool: asyncpg.Pool) -> None:
    """A visit at 04:21 on 1 April in China is 20:21 on 31 March in UTC: the archive counts it in
    April (the reporting day, UTC+8), and the runner must write April's follow-up row for it as a
    rebuild does, not only March's (found by a 200-child world: three children short of their
    April row until another event of theirs fell in April)."""
    from tests.factory import SiteWriter

    v = SiteWriter("r.t.v01")
    late_utc = dt.datetime(2026, 3, 31, 20, 21, tzinfo=dt.UTC)
    await store.append([v.write(sample_registration(random.Random(kid), kid, village_site=v.site_id), T0)
                        for kid in KIDS[:2]])
    runner = Runner(pool, batch_size=50)
    await runner.catch_up()
    await store.append([v.write(c.HomeVisitMade(child_id=KIDS[0], visitor="石晓"), late_utc),
                        v.write(c.ParentCallMade(child_id=KIDS[1], parent="母亲"), late_utc + dt.timedelta(hours=3))])
    await runner.catch_up()
    live = await dump(pool, tables.SCHEMA)
    months = {(r[0], r[1]) for r in live["followup"]}
    assert {(KIDS[0], "2026-04"), (KIDS[1], "2026-04")} <= months, months
    await shadow_rebuild(pool)
    assert await dump(pool, tables.SHADOW) == live


async def test_a_correction_among_many_facts_of_a_child_rewrites_its_family_as_a_rebuild_does(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """A correction re-derives its child's archive but writes only the facts of the correction
    families its batch touches: one event replaced (by work of another child, another day), one
    retracted, one corrected before its original arrives, a correction of a correction, with new
    work of the same child in the same batches; after each batch the read models equal a
    rebuild's, row for row, and the child's other facts are the ones first written."""
    from tests.factory import SiteWriter

    v, s = SiteWriter("r.t.v01"), SiteWriter("r.t.s01")
    kid, other, third = KIDS[0], KIDS[1], KIDS[2]
    events = [v.write(sample_registration(random.Random(k), k, village_site=v.site_id), T0)
              for k in (kid, other, third)]
    work: list[DecodedEvent] = []
    for i in range(40):
        day = T0 + dt.timedelta(days=10 + i, hours=i % 7)
        work.append([v.write(c.HomeVisitMade(child_id=kid, visitor="石晓"), day),
                     v.write(c.AidGiven(child_id=kid, amount_fen=100 * (i + 1), source=AidSource.CHARITY), day),
                     s.write(c.TalkHeld(child_id=kid, teacher="云安", record_card="谈心"), day),
                     s.write(c.ParentCallMade(child_id=kid, parent="母亲"), day)][i % 4])
    await store.append([*events, *work])
    runner = Runner(pool, batch_size=1000)
    await runner.catch_up()

    async def facts() -> dict[str, tuple[Any, ...]]:
        async with pool.acquire() as conn:
            return {r["event_id"]: tuple(r.values()) for r in await conn.fetch(
                f"SELECT {', '.join(tables.FACT_COLS)} FROM {tables.SCHEMA}.fact")}

    async def equals_a_rebuild() -> dict[str, list[tuple[Any, ...]]]:
        live = await dump(pool, tables.SCHEMA)
        await shadow_rebuild(pool)
        assert live == await dump(pool, tables.SHADOW)
        return live

    first = await facts()
    assert len(first) == 40
    replaced, retracted = work[4], work[9]  # a visit, an aid
    later = T0 + dt.timedelta(days=80)
    orphan = v.write(c.HomeVisitMade(child_id=kid, visitor="石晓"), later)  # its correction arrives first
    fix = s.write(c.EventCorrected(corrected_event_id=replaced.event.event_id, reason="记错人", child_ids_list=[kid],
                                   replacement=c.TalkHeld(child_id=other, teacher="云安", record_card="谈心"),
                                   replacement_occurred_at=later + dt.timedelta(days=1)), later)
    batch2 = [fix,
              v.write(c.EventCorrected(corrected_event_id=retracted.event.event_id, reason="重复",
                                       child_ids_list=[kid]), later),
              v.write(c.EventCorrected(corrected_event_id=orphan.event.event_id, reason="日期填错",
                                       child_ids_list=[kid], replacement=c.HomeVisitMade(child_id=kid, visitor="石晓"),
                                       replacement_occurred_at=later + dt.timedelta(days=2)), later),
              v.write(c.HomeVisitMade(child_id=kid, visitor="石晓"), later),
              s.write(c.TalkHeld(child_id=third, teacher="云安", record_card="谈心"), later)]
    await store.append(batch2)
    assert await runner.step() == len(batch2)
    live = await equals_a_rebuild()
    second = await facts()
    assert retracted.event.event_id not in second and orphan.event.event_id not in second
    assert second[replaced.event.event_id][5] == [other]  # counted for the other child now
    untouched = set(first) - {replaced.event.event_id, retracted.event.event_id}
    assert {k: second[k] for k in untouched} == {k: first[k] for k in untouched}
    assert any(r[0] == kid for r in live["archive"])

    batch3 = [orphan,  # the original whose correction came first: counted as corrected
              v.write(c.EventCorrected(corrected_event_id=fix.event.event_id, reason="?", child_ids_list=[kid]),
                      later + dt.timedelta(days=3)),  # a correction of a correction changes nothing
              v.write(c.AidGiven(child_id=kid, amount_fen=500, source=AidSource.CHARITY), later)]
    await store.append(batch3)
    assert await runner.step() == len(batch3)
    await equals_a_rebuild()
    third_facts = await facts()
    assert third_facts[orphan.event.event_id][4] == later + dt.timedelta(days=2)
    assert third_facts[replaced.event.event_id] == second[replaced.event.event_id]
    assert len(third_facts) == len(second) + 2
