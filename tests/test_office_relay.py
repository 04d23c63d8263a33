"""A restored center gets back from the township office what its backup lacks (service/relay.py)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import asyncpg
import msgspec
import pytest

from events.envelope import Event, decode_event, encode_event, event_hash
from events.types import SiteKind
from events.wire import RelayRequest, relay_request_encoder
from projections.queries import rollup_figures
from projections.runner import lag
from runtime.settings import SettingsError
from service.center import run_center
from service.relay import RelayResponder
from service.seals import RelaySettings, Sealer
from service.sites import register_site
from store.postgres import EventStore
from sync_agent.agent import Agent
from sync_agent.config import load_config, log_path
from sync_agent.locallog import LocalLog
from sync_agent.record import record_json
from testbed.embedded import EmbeddedNats
from tests import servers
from tests.agent_support import make_site
from tests.center_kit import own_nats
from tests.test_agent_fresh_receipt import pg, shouwang
from tests.township_work import MONTH, TownshipWork, as_json, figures

__all__ = ["own_nats"]
KEY = RelaySettings(relay_key="0123456789abcdef" * 4)
PARTS = ("ingest", "receipts", "fanout", "deadletters", "restore", "projections")


def record(data: Path, drafts: list[dict[str, object]]) -> None:
    config = load_config(data)
    with LocalLog(log_path(data), config.site_id) as log:
        record_json(log, config, as_json(drafts))


def own_log(data: Path) -> list[tuple[int, str, str]]:
    """(site_seq, event_id, hash) of every event in a site's own log."""
    config = load_config(data)
    with LocalLog(log_path(data), config.site_id) as log:
        return [(e.event.site_seq, e.event.event_id, e.hash) for e in log.read_site(config.site_id, 1, 100_000)]


async def sync_once(data: Path) -> str:
    code, out, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
    assert code == 0, err[-2000:]
    return out


async def office_holds(office: Agent, n: int, within: float = 120) -> None:
    """Until the office's inbox holds `n` events of the other sites (the fan-out's copies)."""
    deadline = asyncio.get_running_loop().time() + within
    while office.log.inbox_count() < n:
        assert asyncio.get_running_loop().time() < deadline, f"office holds {office.log.inbox_count()} of {n}"
        await asyncio.sleep(0.2)


async def caught_up(pool: asyncpg.Pool, within: float = 120) -> None:
    """Until the projections have applied every event of the store."""
    deadline = asyncio.get_running_loop().time() + within
    while (behind := (await lag(pool)).events_behind) != 0:
        assert asyncio.get_running_loop().time() < deadline, f"projections {behind} events behind"
        await asyncio.sleep(0.3)


async def restored_copy(template: servers.TestServers, dump: Path) -> str:
    url = template.url_for(f"shouwang_t_relay_{random.getrandbits(32):08x}")
    name = url.rpartition("/")[2]
    admin = await asyncpg.connect(template.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        template.databases.append(name)
    finally:
        await admin.close()
    await pg("pg_restore", "--no-owner", "-d", url, str(dump))
    return url


async def test_a_school_whose_disk_dies_after_the_center_is_restored_gets_every_event_back(
        tmp_path: Path, database_url: str, template: servers.TestServers, own_nats: EmbeddedNats) -> None:
    """The center is restored from an older pg_dump; the village station and the township office
    sync (the office relays the school's events the backup lacks); the school's disk dies before
    it syncs; `agent restore` gives it back every one of its events, with the same ids and hashes,
    and the township's figures equal what was recorded."""
    work = TownshipWork("gx-lp.rl", seed=18)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        for site, kind in ((work.office, "township"), (work.village, "village"), (work.school, "school")):
            await register_site(pool, site, kind, "测试" + kind)
    finally:
        await pool.close()
    village = make_site(tmp_path, work.village, own_nats.url)
    school = make_site(tmp_path, work.school, own_nats.url, SiteKind.SCHOOL)
    office_data = make_site(tmp_path, work.office, own_nats.url, SiteKind.TOWNSHIP)
    record(school, work.registrations(6) + work.school_work())
    record(village, work.village_work())
    dump = tmp_path / "center.dump"
    async with run_center(database_url, own_nats.url, parts=PARTS, relay=KEY):
        office = Agent(office_data)
        await office.start()
        try:
            await sync_once(school)
            await sync_once(village)
            await office_holds(office, 6 + 6 + 12)
            await pg("pg_dump", "-Fc", "-f", str(dump), "-d", database_url)  # the nightly backup
            record(school, work.school_work(2))
            record(village, work.village_work())
            await sync_once(school)
            await sync_once(village)
            await office_holds(office, 6 + 6 + 12 + 12 + 12)
        finally:
            await office.stop()
    school_before = own_log(school)
    assert len(school_before) == work.recorded[work.school] == 24
    restored = await restored_copy(template, dump)  # the center's disk died; last night's dump is back
    async with run_center(restored, own_nats.url, parts=PARTS, relay=KEY):
        await sync_once(village)
        out = await sync_once(office_data)
        assert "relayed 12 events" in out and "12 taken back" in out, out
        # The school's disk dies now, before it has synced: a new machine, the same site.
        lost = tmp_path / "school-new"
        make_site(lost, work.school, own_nats.url, SiteKind.SCHOOL)
        code, out, err = await shouwang("agent", "restore", "--data", str(lost / work.school), "--json")
        assert code == 0, err[-2000:]
        assert msgspec.json.decode(out)["restored"] == 24
        assert own_log(lost / work.school) == school_before
        pool = await asyncpg.create_pool(restored, min_size=1, max_size=2)
        try:
            store = EventStore(pool)
            for site in (work.village, work.school):
                progress = await store.progress(site)
                assert (progress.watermark, progress.holes) == (work.recorded[site], [])
                assert (await store.verify_chain(site)).ok
            async with pool.acquire() as conn:
                relayed = await conn.fetch("SELECT site_id, site_seq, relayed_by FROM relayed_events ORDER BY site_seq")
                held = await conn.fetchval("SELECT count(*) FROM quarantine")
            assert [(r["site_id"], r["site_seq"], r["relayed_by"]) for r in relayed] == \
                [(work.school, seq, work.office) for seq in range(13, 25)]
            assert held == 0
            await caught_up(pool)
            assert figures(await rollup_figures(pool, work.township, MONTH)) == work.truth()
        finally:
            await pool.close()


async def test_the_center_takes_back_only_its_own_seals_of_the_offices_township(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool) -> None:
    """A copy with another key's seal, a sealed copy changed afterwards, another township's event,
    the office's own event: each refused and quarantined, naming the office; a village station
    may not relay at all; a center without a key says so and takes nothing."""
    work = TownshipWork("gx-lp.rk", seed=19)
    for site, kind in ((work.office, "township"), (work.village, "village"), (work.school, "school")):
        await register_site(pool, site, kind, "测试" + kind)
    await register_site(pool, "gx-lp.zz.v01", "village", "外乡村")
    school = make_site(tmp_path, work.school, "nats://127.0.0.1:4222", SiteKind.SCHOOL)
    record(school, work.registrations(2))
    with LocalLog(log_path(school), work.school) as log:
        events = list(log.own_events())
    sealer = KEY.sealer()
    assert sealer is not None
    relay = RelayResponder(pool, None, sealer)  # type: ignore[arg-type]
    other_key = Sealer(b"another center's key, 32 bytes..")

    def offer(*pairs: tuple[Event, str]) -> bytes:
        return relay_request_encoder.encode(RelayRequest(events=[msgspec.Raw(encode_event(e)) for e, _ in pairs],
                                                         seals=[s for _, s in pairs]))

    first, second = events
    changed = msgspec.structs.replace(second, actor="someone-else")
    reply = await relay.answer(work.office, offer((first, other_key.seal(event_hash(first))),
                                                  (changed, sealer.seal(event_hash(second)))))
    assert (reply.error, reply.stored, [r.index for r in reply.refused]) == (None, 0, [0, 1])
    assert all("seal" in r.reason and r.seal for r in reply.refused) and reply.key_id == sealer.key_id
    foreign = msgspec.structs.replace(first, site_id="gx-lp.zz.v01")
    own = msgspec.structs.replace(first, site_id=work.office)
    reply = await relay.answer(work.office, offer((foreign, sealer.seal(event_hash(foreign))),
                                                  (own, sealer.seal(event_hash(own)))))
    assert reply.stored == 0 and all("other sites of its township" in r.reason and not r.seal for r in reply.refused)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT subject, site_id, reason FROM quarantine ORDER BY id")
    assert len(rows) == 4
    assert {(r["subject"], r["site_id"]) for r in rows} == {(f"care.relay.{work.office}", work.office)}
    assert all(r["reason"].startswith(f"relayed by {work.office}: ") for r in rows)
    reply = await relay.answer(work.village, offer((first, sealer.seal(event_hash(first)))))
    assert reply.error is not None and "township office" in reply.error
    reply = await relay.answer(work.office, offer((first, sealer.seal(event_hash(first))),
                                                  (second, sealer.seal(event_hash(second)))))
    assert (reply.error, reply.stored, reply.refused) == (None, 2, [])
    progress = await relay.answer(work.office, b"{}")
    assert [(p.site_id, p.watermark) for p in progress.progress] == [(work.school, 2), (work.village, 0)]
    keyless = await RelayResponder(pool, None, None).answer(work.office, b"{}")  # type: ignore[arg-type]
    assert keyless.no_key and keyless.error is None and keyless.progress == []


def test_a_relay_key_too_short_is_refused_naming_it() -> None:
    """SHOUWANG_RELAY_KEY shorter than 32 characters is refused naming the key; unset means no seals."""
    with pytest.raises(SettingsError, match="SHOUWANG_RELAY_KEY must be at least 32 characters"):
        RelaySettings.from_env({"SHOUWANG_RELAY_KEY": "short"})
    assert RelaySettings.from_env({}).sealer() is None


def test_a_copy_refused_for_its_seal_is_offered_again_only_to_another_key(tmp_path: Path) -> None:
    """The office never offers again a copy the center refused, except one refused for its seal
    alone: that one goes again once the center's key is another (the right key put back)."""
    work = TownshipWork("gx-lp.rs", seed=20)
    school = make_site(tmp_path, work.school, "nats://127.0.0.1:4222", SiteKind.SCHOOL)
    record(school, work.registrations(3))
    with LocalLog(log_path(school), work.school) as log:
        events = list(log.own_events())
    office = make_site(tmp_path, work.office, "nats://127.0.0.1:4222", SiteKind.TOWNSHIP)
    with LocalLog(log_path(office), work.office) as log:
        log.apply_inbound([(e, encode_event(e)) for e in events], seals={e.event_id: "v1.x" for e in events})

        def offered(key_id: str) -> list[str]:
            return [eid for eid, _, _ in log.relay_candidates(lambda site, seq: True, 0, 10**6, 100, key_id)[0]]

        assert offered("k1") == [e.event_id for e in events]
        log.note_relay_refused([(events[0].event_id, "not authorized")], [events[1].event_id], "k1")
        assert offered("k1") == [events[2].event_id]
        assert offered("k2") == [events[1].event_id, events[2].event_id]


async def test_a_sealed_copy_that_does_not_link_into_the_chain_the_center_holds_is_refused(
        tmp_path: Path, pool: asyncpg.Pool) -> None:
    """The store holds another event at the copy's site_seq - 1 (a station that started a new log
    instead of restoring): the copy's prev_hash does not link to it, so it is refused and kept in
    quarantine naming the office, seal or not."""
    work = TownshipWork("gx-lp.rc", seed=21)
    for site, kind in ((work.office, "township"), (work.school, "school")):
        await register_site(pool, site, kind, "测试" + kind)
    first, second = (make_site(tmp_path / name, work.school, "nats://127.0.0.1:4222", SiteKind.SCHOOL)
                     for name in ("old", "new"))
    record(first, work.registrations(2))
    record(second, work.registrations(1))
    with LocalLog(log_path(first), work.school) as log:
        old = list(log.own_events())
    with LocalLog(log_path(second), work.school) as log:
        (other,) = list(log.own_events())
    await EventStore(pool).append([decode_event(encode_event(other))])
    sealer = KEY.sealer()
    assert sealer is not None
    relay = RelayResponder(pool, None, sealer)  # type: ignore[arg-type]
    body = relay_request_encoder.encode(RelayRequest(events=[msgspec.Raw(encode_event(old[1]))],
                                                     seals=[sealer.seal(event_hash(old[1]))]))
    reply = await relay.answer(work.office, body)
    assert reply.stored == 0 and [r.index for r in reply.refused] == [0]
    assert "does not link to site_seq 1" in reply.refused[0].reason and not reply.refused[0].seal
    async with pool.acquire() as conn:
        reason = await conn.fetchval("SELECT reason FROM quarantine WHERE event_id = $1", old[1].event_id)
    assert reason.startswith(f"relayed by {work.office}: ")
    # The row names the office, but the school's numbers: it is not one of the office's own
    # refusals, and the answer to the office's receipt request does not list it as one.
    from service.receipts import ReceiptResponder

    answer = await ReceiptResponder(pool, None).answer(work.office)  # type: ignore[arg-type]
    assert answer.receipt is not None and answer.receipt.refused_all
    assert answer.receipt.refused == []


async def test_a_relayed_transfer_stores_the_work_that_waited_for_it(pool: asyncpg.Pool) -> None:
    """After a restore a school's visit comes back before the village's transfer that gave the
    school the child, and is refused ("not in this site's scope"); the office relays the transfer
    (the village's disk died). Storing the relayed transfer decides the visit again, in the same
    transaction; the reply and `relayed_events` count only the relayed copy."""
    from events import catalogue as c
    from events.samples import SampleSite, sample_registration
    from events.wire import up_subject
    from service.ingest import Inbound, commit_in, triage

    township = "gx-lp.rw"
    office, village, school, school2 = (f"{township}.{s}" for s in ("office", "v01", "s01", "s02"))
    for site, kind in ((office, "township"), (village, "village"), (school, "school"), (school2, "school")):
        await register_site(pool, site, kind, "测试" + kind)
    child = "c-" + "a" * 32
    logs = {s: SampleSite(s) for s in (village, school2)}
    registration = logs[village].write(sample_registration(random.Random(12), child, school_site=school))
    transfer = logs[village].write(c.ChildTransferred(child_id=child, to_school_site=school2, reason="转学"))
    visit = logs[school2].write(c.HomeVisitMade(child_id=child, visitor="测试老师"))
    for d in (registration, visit):
        async with pool.acquire() as conn, conn.transaction():
            await commit_in(conn, [triage(Inbound(subject=up_subject(d.event.site_id), data=encode_event(d.event)))])
    held = await pool.fetchrow("SELECT status, reason FROM quarantine WHERE event_id = $1::uuid", visit.event.event_id)
    assert held["status"] == "held" and "not in this site's scope" in held["reason"]

    sealer = KEY.sealer()
    assert sealer is not None
    relay = RelayResponder(pool, None, sealer)  # type: ignore[arg-type]
    body = relay_request_encoder.encode(RelayRequest(events=[msgspec.Raw(encode_event(transfer.event))],
                                                     seals=[sealer.seal(transfer.hash)]))
    reply = await relay.answer(office, body)
    assert (reply.error, reply.stored, reply.refused) == (None, 1, [])
    stored = {r["event_id"] for r in await pool.fetch("SELECT event_id::text AS event_id FROM events")}
    assert {transfer.event.event_id, visit.event.event_id} <= stored
    assert await pool.fetchval("SELECT status FROM quarantine WHERE event_id = $1::uuid",
                               visit.event.event_id) == "replayed"
    relayed = [r["event_id"] for r in await pool.fetch("SELECT event_id::text AS event_id FROM relayed_events")]
    assert relayed == [transfer.event.event_id]
