"""The central event store: idempotent appends, per-site contiguity, reads, the hash chain."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid

import asyncpg
import msgspec
import pytest

from events import decode_event, encode_event
from events.catalogue import HomeVisitMade, TalkHeld
from events.samples import sample_registration, samples
from store import migrate
from store import postgres as store_module
from store.postgres import ORIGIN, EventStore, Position, advance, append_in, holes_of, read_one_where, read_where
from tests.factory import SiteWriter

SITE_A = "gx-lp.xy.v01"
SITE_B = "gx-lp.xy.s01"


def visits(writer: SiteWriter, n: int, child: str = "c-" + "a" * 32):
    return [writer.write(HomeVisitMade(child_id=child, visitor="石晓", findings=f"第{i}次")) for i in range(n)]


async def test_append_then_read_back_identical(store: EventStore) -> None:
    """What is appended reads back with the same content and hash, in append order."""
    w = SiteWriter(SITE_A)
    batch = [w.write(care) for care in samples(random.Random(1)).values()]
    result = await store.append(batch)
    assert result.stored == [d.event.event_id for d in batch]
    assert not result.duplicates and not result.refused
    read = await store.read_all(ORIGIN, 1000)
    assert [s.event.event_id for s in read] == result.stored
    for s, d in zip(read, batch, strict=True):
        assert s.hash == d.hash
        assert s.event.occurred_at == d.event.occurred_at
        assert msgspec.json.decode(s.event.payload) == msgspec.json.decode(d.event.payload)
        assert s.understood


async def test_resend_whole_batch_is_duplicate(store: EventStore) -> None:
    w = SiteWriter(SITE_A)
    batch = visits(w, 20)
    first = await store.append(batch)
    again = await store.append(batch)
    assert len(first.stored) == 20
    assert again.stored == [] and again.duplicates == [d.event.event_id for d in batch]
    assert await store.count() == 20
    prog = await store.progress(SITE_A)
    assert prog.watermark == 20 and prog.duplicates_seen == 20 and prog.events_stored == 20


async def test_resend_half_batch(store: EventStore) -> None:
    """Half of a batch resent together with new events: old ones duplicate, new ones stored."""
    w = SiteWriter(SITE_A)
    batch = visits(w, 10)
    await store.append(batch[:5])
    result = await store.append(batch)
    assert result.duplicates == [d.event.event_id for d in batch[:5]]
    assert result.stored == [d.event.event_id for d in batch[5:]]
    assert await store.count() == 10


async def test_same_id_different_content_is_refused_not_overwritten(store: EventStore) -> None:
    w = SiteWriter(SITE_A)
    batch = visits(w, 3)
    await store.append(batch)
    original = batch[1]
    doc = msgspec.json.decode(encode_event(original.event))
    doc["payload"]["findings"] = "篡改"
    forged = decode_event(msgspec.json.encode(doc))
    result = await store.append([batch[0], forged, batch[2]])
    assert result.duplicates == [batch[0].event.event_id, batch[2].event.event_id]
    assert [r.event_id for r in result.refused] == [original.event.event_id]
    assert "different content" in result.refused[0].reason
    stored = await store.get(original.event.event_id)
    assert stored is not None and stored.hash == original.hash
    assert b"\xe7\xaf\xa1" not in bytes(stored.event.payload)  # "篡" is not there


async def test_taken_site_seq_is_refused(store: EventStore) -> None:
    """A different event claiming a site_seq already used is refused and named."""
    w1, w2 = SiteWriter(SITE_A), SiteWriter(SITE_A)
    [a] = visits(w1, 1)
    [b] = visits(w2, 1)
    await store.append([a])
    result = await store.append([b])
    assert result.stored == [] and result.refused[0].event_id == b.event.event_id
    assert "already used by event" in result.refused[0].reason


async def test_duplicate_inside_one_batch(store: EventStore) -> None:
    w = SiteWriter(SITE_A)
    [a, b] = visits(w, 2)
    result = await store.append([a, b, a])
    assert result.stored == [a.event.event_id, b.event.event_id]
    assert result.duplicates == [a.event.event_id]
    assert await store.count() == 2


async def test_watermark_and_holes(store: EventStore) -> None:
    """Out-of-order arrival: the watermark stops at the first hole; holes are listed as ranges."""
    w = SiteWriter(SITE_A)
    batch = visits(w, 10)
    await store.append([batch[i] for i in (0, 1, 4, 5, 8)])
    prog = await store.progress(SITE_A)
    assert (prog.watermark, prog.max_seq, prog.holes) == (2, 9, [(3, 4), (7, 8)])
    await store.append([batch[i] for i in (2, 3, 6)])
    prog = await store.progress(SITE_A)
    assert (prog.watermark, prog.holes) == (7, [(8, 8)])
    await store.append([batch[7], batch[9]])
    prog = await store.progress(SITE_A)
    assert (prog.watermark, prog.max_seq, prog.holes) == (10, 10, [])


def test_advance_merges_ranges() -> None:
    assert advance(0, [], [3, 1, 2, 7]) == (3, [7, 7])
    assert advance(3, [7, 7], [5, 6]) == (3, [5, 7])
    assert advance(3, [5, 7], [4]) == (7, [])
    assert holes_of(2, [5, 6, 9, 9]) == [(3, 4), (7, 8)]
    assert advance(5, [], [1, 2]) == (5, [])  # below the watermark: already counted


async def test_reads_by_child_site_and_committed_time(store: EventStore) -> None:
    wa, wb = SiteWriter(SITE_A), SiteWriter(SITE_B)
    c1, c2 = "c-" + "1" * 32, "c-" + "2" * 32
    await store.append([wa.write(sample_registration(random.Random(1), c1)),
                        wa.write(HomeVisitMade(child_id=c2, visitor="石晓"))])
    await store.append([wb.write(TalkHeld(child_id=c1, teacher="云安", record_card="好"))])
    by_child = await store.read_child(c1)
    assert [s.event.type for s in by_child] == ["ChildRegistered", "TalkHeld"]
    assert [s.event.site_seq for s in await store.read_site(SITE_A, 2)] == [2]
    now = dt.datetime.now(dt.UTC)
    recent = await store.read_committed(now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=5))
    assert len(recent) == 3
    assert await store.read_committed(now + dt.timedelta(hours=1), now + dt.timedelta(hours=2)) == []
    assert await store.read_child(c1, occurred_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)) == []


async def test_verify_chain_detects_tampering(store: EventStore, pool: asyncpg.Pool) -> None:
    """An auditor's chain check passes on an honest log and names the event altered in the DB."""
    w = SiteWriter(SITE_A)
    await store.append(visits(w, 5))
    report = await store.verify_chain(SITE_A)
    assert report.ok and report.verified == 5
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE events SET payload = jsonb_set(payload, '{findings}', '"改过"')
               WHERE site_id = $1 AND site_seq = 3""", SITE_A)
    report = await store.verify_chain(SITE_A)
    assert not report.ok
    assert any("site_seq 3" in p for p in report.problems)


async def test_verify_chain_detects_removed_event(store: EventStore, pool: asyncpg.Pool) -> None:
    w = SiteWriter(SITE_A)
    await store.append(visits(w, 4))
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM events WHERE site_id = $1 AND site_seq = 2", SITE_A)
    report = await store.verify_chain(SITE_A)
    assert not report.ok and any("missing" in p for p in report.problems)


async def test_unknown_type_is_stored_and_counted(store: EventStore) -> None:
    w = SiteWriter(SITE_A)
    [d] = visits(w, 1)
    doc = msgspec.json.decode(encode_event(d.event))
    doc["type"] = "FutureThing"
    doc["payload"] = {"type": "FutureThing", "x": 1}
    unknown = decode_event(msgspec.json.encode(doc))
    result = await store.append([unknown])
    assert result.stored == [d.event.event_id]
    [s] = await store.read_all()
    assert not s.understood and s.event.type == "FutureThing"


async def test_two_appenders_racing_store_each_event_once(store: EventStore) -> None:
    """Two ingesters appending overlapping batches concurrently: each event stored exactly once."""
    w = SiteWriter(SITE_A)
    batch = visits(w, 200)
    rng = random.Random(4)
    chunks = [batch[i:i + 25] for i in range(0, 200, 25)]
    tasks = []
    for _ in range(2):
        order = chunks[:]
        rng.shuffle(order)
        tasks.append(asyncio.gather(*(store.append(c) for c in order)))
    results = [r for group in await asyncio.gather(*tasks) for r in group]
    stored = [eid for r in results for eid in r.stored]
    assert sorted(stored) == sorted(d.event.event_id for d in batch)
    assert sum(len(r.duplicates) for r in results) == 200
    assert not any(r.refused for r in results)
    prog = await store.progress(SITE_A)
    assert prog.watermark == 200 and prog.holes == []


async def test_head_and_position_parse(store: EventStore) -> None:
    assert await store.head() == ORIGIN
    w = SiteWriter(SITE_A)
    await store.append(visits(w, 3))
    head = await store.head()
    assert head > ORIGIN
    assert Position.parse(str(head)) == head
    with pytest.raises(ValueError, match="position"):
        Position.parse("nonsense")


async def test_migrations_from_empty_and_rerun(template) -> None:
    """Migrating an empty database creates the schema; running again (twice at once) is a no-op."""
    url = await template.fresh_database(migrated=False)
    conns = [await asyncpg.connect(url) for _ in range(3)]
    try:
        assert await migrate.current_version(conns[0]) == 0
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns[:2]))
        applied = sorted(v for r in results for v in r)
        assert applied == [m.version for m in migrate.available()]
        assert await migrate.migrate(conns[2]) == []
        assert await migrate.current_version(conns[2]) == migrate.available()[-1].version
        assert await conns[2].fetchval("SELECT to_regclass('events') IS NOT NULL")
    finally:
        for c in conns:
            await c.close()


def test_migration_files_are_well_named() -> None:
    versions = [m.version for m in migrate.available()]
    assert versions == sorted(set(versions)) and versions[0] == 1


async def test_large_resend_takes_the_copy_fallback(store: EventStore) -> None:
    """A batch big enough for COPY that contains stored ids: the stored ones are duplicates,
    the new ones are stored, and nothing is stored twice."""
    w = SiteWriter(SITE_A)
    batch = visits(w, 300)
    await store.append(batch[:150])
    result = await store.append(batch)
    assert result.duplicates == [d.event.event_id for d in batch[:150]]
    assert result.stored == [d.event.event_id for d in batch[150:]]
    assert await store.count() == 300
    assert (await store.progress(SITE_A)).watermark == 300


async def test_racing_claims_on_one_site_seq_store_one(store: EventStore) -> None:
    """Two different events claiming the same (site, site_seq) at the same time: exactly one is
    stored, the other refused, however the two appends interleave."""
    for _ in range(5):
        w1, w2 = SiteWriter("gx-lp.race.v01"), SiteWriter("gx-lp.race.v01")
        w1.seq = w2.seq = (await store.progress("gx-lp.race.v01")).watermark
        a = visits(w1, 80)
        b = visits(w2, 80)
        ra, rb = await asyncio.gather(store.append(a), store.append(b))
        assert len(ra.stored) + len(rb.stored) == 80
        assert len(ra.refused) + len(rb.refused) == 80
        assert all("already used by event" in r.reason for r in ra.refused + rb.refused)
    prog = await store.progress("gx-lp.race.v01")
    assert prog.watermark == 400 and prog.events_stored == 400


# --- the server-side append (migration 0005) and the COPY path must agree ---------------------


def _forged(d, findings: str = "篡改"):
    doc = msgspec.json.decode(encode_event(d.event))
    doc["payload"]["findings"] = findings
    return decode_event(msgspec.json.encode(doc))


@pytest.mark.parametrize("path", ["call", "copy"])
async def test_both_append_paths_tell_each_events_fate_alike(
    path: str, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out-of-order arrival over two sites, a resend, a forged resend and a claim on a taken
    site_seq: the one-call path (shouwang_append) and the COPY path give the same results,
    progress and stored log."""
    monkeypatch.setattr(store_module, "CALL_THRESHOLD", 10**6 if path == "call" else 0)
    wa, wb, rival = SiteWriter(SITE_A), SiteWriter(SITE_B), SiteWriter(SITE_A)
    a, b = visits(wa, 8), visits(wb, 4)
    [r] = visits(rival, 1)  # another event claiming SITE_A's site_seq 1
    first = await store.append([a[0], b[1], a[4], a[5], b[0]])
    assert first.stored == [a[0].event.event_id, b[1].event.event_id, a[4].event.event_id,
                            a[5].event.event_id, b[0].event.event_id]
    assert first.sites == sorted([SITE_A, SITE_B])
    second = await store.append([a[1], _forged(a[4]), a[0], r, b[3], a[7]])
    assert second.stored == [a[1].event.event_id, b[3].event.event_id, a[7].event.event_id]
    assert second.duplicates == [a[0].event.event_id]
    assert [x.event_id for x in second.refused] == [a[4].event.event_id, r.event.event_id]
    assert "different content" in second.refused[0].reason
    assert f"already used by event {a[0].event.event_id}" in second.refused[1].reason
    pa, pb = await store.progress(SITE_A), await store.progress(SITE_B)
    assert (pa.watermark, pa.max_seq, pa.holes, pa.events_stored, pa.duplicates_seen) == (2, 8, [(3, 4), (7, 7)], 5, 1)
    assert (pb.watermark, pb.max_seq, pb.holes, pb.events_stored) == (2, 4, [(3, 3)], 3)
    assert pa.last_committed_at is not None and pa.newest_occurred_at == max(
        d.event.occurred_at for d in (a[0], a[1], a[4], a[5], a[7]))
    third = await store.append([a[2], a[3], a[6], b[2]])
    assert len(third.stored) == 4
    pa, pb = await store.progress(SITE_A), await store.progress(SITE_B)
    assert (pa.watermark, pa.holes, pb.watermark, pb.holes) == (8, [], 4, [])
    log = await store.read_all(ORIGIN, 100)
    assert [s.event.event_id for s in log] == first.stored + second.stored + third.stored
    stored = await store.get(a[4].event.event_id)
    assert stored is not None and stored.hash == a[4].hash
    assert (await store.verify_chain(SITE_A)).ok and (await store.verify_chain(SITE_B)).ok


async def test_one_call_path_resend_keeps_counts(store: EventStore) -> None:
    """A whole resend through the one-call path: all duplicates, nothing stored twice, the
    duplicates counted on the site, and the report in the caller's order."""
    w = SiteWriter(SITE_A)
    batch = visits(w, 30)
    await store.append(batch)
    again = await store.append(batch[::-1])
    assert again.stored == [] and again.refused == []
    assert again.duplicates == [d.event.event_id for d in batch[::-1]]
    prog = await store.progress(SITE_A)
    assert (prog.watermark, prog.events_stored, prog.duplicates_seen) == (30, 30, 30)
    assert await store.count() == 30


async def test_fifty_single_event_appenders_on_one_site(store: EventStore) -> None:
    """Fifty concurrent single-event appends on one site, each event sent twice and each
    sequence number also claimed by a rival event: every event is stored once, every rival
    refused, and the watermark ends at the top with no holes."""
    w, rival = SiteWriter("gx-lp.conc.v01"), SiteWriter("gx-lp.conc.v01")
    events, rivals = visits(w, 50), visits(rival, 50)
    jobs = [[d] for d in events] * 2 + [[d] for d in rivals]
    random.Random(7).shuffle(jobs)
    results = await asyncio.gather(*(store.append(j) for j in jobs))
    stored = [eid for r in results for eid in r.stored]
    refused = [x.event_id for r in results for x in r.refused]
    duplicates = [eid for r in results for eid in r.duplicates]
    # each sequence number went to whichever of the event and its rival came first
    assert len(stored) == 50 and len(set(stored)) == 50
    winners = {eid for eid in stored}
    for d, rv in zip(events, rivals, strict=True):
        assert (d.event.event_id in winners) != (rv.event.event_id in winners)
    assert len(refused) + len(duplicates) == 100
    prog = await store.progress("gx-lp.conc.v01")
    assert (prog.watermark, prog.holes, prog.events_stored) == (50, [], 50)
    assert await store.count() == 50


async def test_fifty_sites_appending_concurrently(store: EventStore) -> None:
    """Fifty sites, each appending its own events one at a time, concurrently: all stored, in
    each site's order in the global log, and each watermark at its top."""
    writers = [SiteWriter(f"gx-lp.c{i:02d}.v01") for i in range(50)]
    logs = [visits(w, 6) for w in writers]

    async def run(log: list) -> None:
        for d in log:
            assert (await store.append([d])).stored == [d.event.event_id]

    await asyncio.gather(*(run(log) for log in logs))
    read = await store.read_all(ORIGIN, 1000)
    assert len(read) == 300
    for w in writers:
        assert [s.event.site_seq for s in read if s.event.site_id == w.site_id] == list(range(1, 7))
        assert (await store.progress(w.site_id)).watermark == 6


async def test_appends_wake_listeners_after_commit(store: EventStore, pool: asyncpg.Pool) -> None:
    """The store's NOTIFY reaches listeners from each path: EventStore.append (sent after its
    commit), and append_in inside a caller's transaction (sent at the commit, not before)."""
    got: asyncio.Queue[str] = asyncio.Queue()

    def heard(*args: object) -> None:
        got.put_nowait(str(args[2]))

    listener = await pool.acquire()
    await listener.add_listener("shouwang_events", heard)
    try:
        w = SiteWriter(SITE_A)
        await store.append(visits(w, 1))  # one-call path
        await asyncio.wait_for(got.get(), 5)
        await store.append(visits(w, 250))  # COPY path
        await asyncio.wait_for(got.get(), 5)
        async with pool.acquire() as conn:
            tr = conn.transaction()
            await tr.start()
            await append_in(conn, visits(w, 2))
            await asyncio.sleep(0.2)
            assert got.empty()  # not before the commit
            await tr.commit()
        await asyncio.wait_for(got.get(), 5)
    finally:
        await listener.remove_listener("shouwang_events", heard)
        await pool.release(listener)


async def test_one_call_path_leaves_the_callers_transaction_as_it_was(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a caller's transaction, a batch large enough to be planned for its size leaves
    plan_cache_mode as it found it, and the notification stays on (the ingester's case)."""
    monkeypatch.setattr(store_module, "CALL_THRESHOLD", 10**6)
    w = SiteWriter(SITE_A)
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval("SELECT current_setting('plan_cache_mode')")
        result = await append_in(conn, visits(w, 1001))
        assert len(result.stored) == 1001
        assert await conn.fetchval("SELECT current_setting('plan_cache_mode')") == before
        assert await conn.fetchval("SELECT current_setting('shouwang.notify_after_commit', true)") in (None, "")


async def test_read_where_pages_a_condition_in_the_global_order(store: EventStore, pool: asyncpg.Pool) -> None:
    """read_where numbers the caller's values from $1, reads only what a reader may see, in the
    global order after a position and at most `limit`; read_one_where finds one event or None."""
    wa, wb = SiteWriter(SITE_A), SiteWriter(SITE_B)
    a = visits(wa, 5)
    await store.append(a[:2] + visits(wb, 2) + a[2:])
    async with pool.acquire() as conn:
        first = await read_where(conn, "site_id = $1 AND type = $2", SITE_A, "HomeVisitMade", limit=3)
        assert [s.event.event_id for s in first] == [d.event.event_id for d in a[:3]]
        rest = await read_where(conn, "site_id = $1 AND type = $2", SITE_A, "HomeVisitMade", after=first[-1].position)
        assert [s.event.event_id for s in rest] == [d.event.event_id for d in a[3:]]
        assert await read_where(conn, "site_id = $1", "gx-lp.none.v01") == []
        found = await read_one_where(conn, "event_id = $1 AND site_id = $2", uuid.UUID(a[1].event.event_id), SITE_A)
        assert found is not None and found.hash == a[1].hash
        assert await read_one_where(conn, "event_id = $1 AND site_id = $2", uuid.UUID(a[1].event.event_id),
                                    SITE_B) is None
