"""After the center's store is restored from an older backup, sites resend in any order: a
school's work for a child can arrive before the village's registration that the restore lost,
or before the transfer that gave the school the child. Such an event is refused ("not
registered at the center", "does not hold child", "not in this site's scope") and kept in
quarantine; once an event that gives or moves that child's scope is stored, ingest decides it
again in the same transaction, so the figures do not wait for an operator's replay. A refusal
for any other reason stays held (found by the cluster chaos run: seeds 5 and 11 once ended with
a transfer refused for good, waiting for a registration; seed 11 later with a school's event
refused for good, waiting for the transfer that gave the school its child)."""

from __future__ import annotations

import hashlib
import random

import asyncpg
import msgspec

from events import catalogue as c
from events.envelope import DecodedEvent, decode_event, encode_event
from events.samples import SampleSite, sample_registration
from events.types import ClosingReason
from events.wire import up_subject
from service.ingest import Inbound, Outcome, commit_in, triage
from service.sites import register_site

T = "gx-lp.xw"
VILLAGE, OTHER, SCHOOL, SCHOOL2 = f"{T}.v01", f"{T}.v02", f"{T}.s01", f"{T}.s02"
CHILD, STRANGER = "c-" + "d" * 32, "c-" + "e" * 32


async def send(pool: asyncpg.Pool, *events: DecodedEvent) -> Outcome:
    async with pool.acquire() as conn, conn.transaction():
        return await commit_in(conn, [triage(Inbound(subject=up_subject(d.event.site_id), data=encode_event(d.event)))
                                      for d in events])


async def row_of(pool: asyncpg.Pool, d: DecodedEvent) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT status, reason, attempts, resolution FROM quarantine WHERE event_id = $1::uuid",
                              d.event.event_id)
    assert row is not None
    return row


async def stored(pool: asyncpg.Pool, d: DecodedEvent) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM events WHERE event_id = $1::uuid", d.event.event_id))


async def test_work_refused_before_its_childs_registration_is_stored_with_it(pool: asyncpg.Pool) -> None:
    for site in (VILLAGE, OTHER):
        await register_site(pool, site, "village", site)
    for site in (SCHOOL, SCHOOL2):
        await register_site(pool, site, "school", site)
    logs = {s: SampleSite(s) for s in (VILLAGE, OTHER, SCHOOL)}
    rng = random.Random(5)

    # The school hands the child on to another school (a scope change: decided against the
    # registration, which the restored store lacks for now).
    handover = logs[SCHOOL].write(c.ChildTransferred(child_id=CHILD, to_school_site=SCHOOL2, reason="升学"))
    out = await send(pool, handover)
    assert out.quarantined == 1 and not out.stored
    assert "is not registered at the center" in (await row_of(pool, handover))["reason"]
    # A station's work for a child another village will register, where it holds no part.
    stray = logs[OTHER].write(c.ChildTransferred(child_id=CHILD, to_village_site=OTHER))
    assert (await send(pool, stray)).quarantined == 1

    registration = logs[VILLAGE].write(sample_registration(rng, CHILD, school_site=SCHOOL))
    out = await send(pool, registration)
    assert [d.event.event_id for d in out.stored] == [registration.event.event_id, handover.event.event_id]
    assert SCHOOL in out.sites  # its receipt now covers the handover
    assert await stored(pool, handover)
    row = await row_of(pool, handover)
    assert (row["status"], row["attempts"], row["resolution"]) == (
        "replayed", 2, "stored once its sender's scope over the child was")
    # Decided afresh: the other village holds no part of the child, so its transfer stays held,
    # with the new reason; once after the registration, once more after the handover moved the
    # child's scope again.
    row = await row_of(pool, stray)
    assert row["status"] == "held" and row["attempts"] == 3
    assert "does not hold child" in row["reason"], row["reason"]
    assert not await stored(pool, stray)


async def test_work_refused_before_the_transfer_that_gave_its_child_is_stored_with_it(pool: asyncpg.Pool) -> None:
    """The restore lost a village's registration and the school's handover: the second school's
    close arrives first. The close waits for the registration, then (decided again,
    "does not hold child") for the handover, which itself waited for the registration: all three
    are stored by the batch that stores the registration, in an order the authority accepts."""
    await register_site(pool, VILLAGE, "village", VILLAGE)
    for site in (SCHOOL, SCHOOL2):
        await register_site(pool, site, "school", site)
    logs = {s: SampleSite(s) for s in (VILLAGE, SCHOOL, SCHOOL2)}
    registration = logs[VILLAGE].write(sample_registration(random.Random(7), CHILD, school_site=SCHOOL))
    handover = logs[SCHOOL].write(c.ChildTransferred(child_id=CHILD, to_school_site=SCHOOL2, reason="升学"))
    close = logs[SCHOOL2].write(c.ArchiveClosed(child_id=CHILD, reason=ClosingReason.AGED_OUT))

    assert (await send(pool, close)).quarantined == 1
    assert "is not registered at the center" in (await row_of(pool, close))["reason"]
    assert (await send(pool, handover)).quarantined == 1
    out = await send(pool, registration)
    # The close, decided once after the registration, waits now for the handover; the handover
    # was stored in the same round, so the close was decided again and stored after it.
    assert [d.event.event_id for d in out.stored] == [
        registration.event.event_id, handover.event.event_id, close.event.event_id]
    assert {SCHOOL, SCHOOL2} <= out.sites
    row = await row_of(pool, close)
    assert (row["status"], row["attempts"]) == ("replayed", 3), row

    # Work of a school about a child registered and held elsewhere: refused, "not in this site's
    # scope"; the township moves the child there, and the work is stored with the move.
    other = "c-" + "f" * 32
    await send(pool, logs[VILLAGE].write(sample_registration(random.Random(8), other, school_site=SCHOOL)))
    early = logs[SCHOOL2].write(c.HomeVisitMade(child_id=other, visitor="测试老师"))
    assert (await send(pool, early)).quarantined == 1
    assert "not in this site's scope" in (await row_of(pool, early))["reason"]
    assert not await stored(pool, early)
    move = logs[SCHOOL].write(c.ChildTransferred(child_id=other, to_school_site=SCHOOL2, reason="转学"))
    out = await send(pool, move)
    assert [d.event.event_id for d in out.stored] == [move.event.event_id, early.event.event_id]
    assert SCHOOL2 in out.sites  # its receipt now covers the visit
    assert (await row_of(pool, early))["status"] == "replayed"


async def test_a_registration_retries_only_its_own_childs_refusals(pool: asyncpg.Pool) -> None:
    await register_site(pool, VILLAGE, "village", VILLAGE)
    await register_site(pool, SCHOOL, "school", SCHOOL)
    logs = {s: SampleSite(s) for s in (VILLAGE, SCHOOL)}
    waiting = logs[SCHOOL].write(c.ChildTransferred(child_id=STRANGER, to_village_site=VILLAGE))
    assert (await send(pool, waiting)).quarantined == 1
    out = await send(pool, logs[VILLAGE].write(sample_registration(random.Random(6), CHILD, school_site=SCHOOL)))
    assert len(out.stored) == 1
    row = await row_of(pool, waiting)
    assert row["status"] == "held" and row["attempts"] == 1


async def test_the_retry_reads_only_the_rows_of_the_children_it_registered(pool: asyncpg.Pool) -> None:
    """A station that floods the quarantine must not make every later registration read the
    flood: the retry finds the held rows of its children through the index of the child each
    refusal waits for (migrations 0038, 0042), whose expression is the query's own."""
    from service.ingest import WAITING_ROWS

    await register_site(pool, VILLAGE, "village", VILLAGE)
    await register_site(pool, SCHOOL, "school", SCHOOL)
    school = SampleSite(SCHOOL)
    flood = [school.write(c.ChildTransferred(child_id="c-" + f"{i:032x}", to_village_site=VILLAGE))
             for i in range(300)]
    assert (await send(pool, *flood)).quarantined == 300
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE quarantine")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + WAITING_ROWS, [CHILD], []))
        assert "quarantine_waits_for" in plan, plan
        waiting = [r["id"] for r in await conn.fetch(WAITING_ROWS, ["c-" + f"{7:032x}", CHILD], [])]
    seventh = await pool.fetchval("SELECT id FROM quarantine WHERE event_id = $1::uuid", flood[7].event.event_id)
    assert waiting == [seventh]
    # Nor is the flood sent down a station's line in the answer to each receipt request: past
    # MAX_LISTED_REFUSALS none is listed, and the station keeps the refusals it has.
    from service.receipts import MAX_LISTED_REFUSALS, ReceiptResponder

    assert len(flood) > MAX_LISTED_REFUSALS
    reply = await ReceiptResponder(pool, None).answer(SCHOOL)  # type: ignore[arg-type]
    assert reply.receipt is not None
    assert (reply.receipt.refused, reply.receipt.refused_all) == ([], False)


async def test_a_receipt_request_is_answered_with_every_refusal_the_center_holds(pool: asyncpg.Pool) -> None:
    """The answer to `care.receipt.<site>` lists every refusal, held or dismissed, of the site's
    events the store has not taken (refused_all), so an agent can forget one that a restored
    center's quarantine lacks; a refusal whose event was stored since, a damaged copy of a stored
    event, and other sites' refusals are not listed."""
    from service import quarantine
    from service.receipts import ReceiptResponder

    await register_site(pool, VILLAGE, "village", VILLAGE)
    await register_site(pool, SCHOOL, "school", SCHOOL)
    school, village = SampleSite(SCHOOL), SampleSite(VILLAGE)
    registration = village.write(sample_registration(random.Random(9), CHILD, school_site=SCHOOL))
    waits = school.write(c.ChildTransferred(child_id=CHILD, to_village_site=VILLAGE))  # seq 1
    held = school.write(c.ChildTransferred(child_id=STRANGER, to_village_site=VILLAGE))  # seq 2
    dismissed = school.write(c.ArchiveClosed(child_id=STRANGER, reason=ClosingReason.OTHER))  # seq 3
    assert (await send(pool, waits, held, dismissed)).quarantined == 3
    assert (await send(pool, village.write(c.ChildTransferred(child_id=STRANGER, to_village_site=VILLAGE)))
            ).quarantined == 1
    row = await pool.fetchval("SELECT id FROM quarantine WHERE event_id = $1::uuid", dismissed.event.event_id)
    await quarantine.dismiss(pool, row, "admin", "test")
    await send(pool, registration)  # stores `waits` as well: the watermark moves to 1
    responder = ReceiptResponder(pool, None)  # type: ignore[arg-type]  # answer() reads the store only
    reply = await responder.answer(SCHOOL)
    assert reply.receipt is not None
    r = reply.receipt
    assert (r.watermark, r.max_seq, r.holes, r.refused_all) == (1, 1, [], True)
    assert [(x.site_seq, x.event_id) for x in r.refused] == [(2, held.event.event_id), (3, dismissed.event.event_id)]
    assert all(x.digest == hashlib.sha256(encode_event(d.event)).hexdigest()
               for x, d in zip(r.refused, (held, dismissed), strict=True))


async def test_a_replayed_transfer_stores_the_work_that_waited_for_it(pool: asyncpg.Pool) -> None:
    """Not only ingest: an admin's replay (as a relayed copy and a write of the API) that stores a
    transfer decides again the refusals waiting for it, in its transaction. The replayed row
    itself is not decided twice."""
    from service import quarantine
    from service.sites import disable_site

    await register_site(pool, VILLAGE, "village", VILLAGE)
    for site in (SCHOOL, SCHOOL2):
        await register_site(pool, site, "school", site)
    logs = {s: SampleSite(s) for s in (VILLAGE, SCHOOL, SCHOOL2)}
    assert len((await send(pool, logs[VILLAGE].write(
        sample_registration(random.Random(10), CHILD, school_site=SCHOOL)))).stored) == 1
    await disable_site(pool, SCHOOL2)
    handover = logs[SCHOOL].write(c.ChildTransferred(child_id=CHILD, to_school_site=SCHOOL2, reason="升学"))
    assert (await send(pool, handover)).quarantined == 1
    assert "is not an active school site" in (await row_of(pool, handover))["reason"]
    await pool.execute("UPDATE sites SET active = true, disabled_at = NULL WHERE site_id = $1", SCHOOL2)
    visit = logs[SCHOOL2].write(c.HomeVisitMade(child_id=CHILD, visitor="测试老师"))
    assert (await send(pool, visit)).quarantined == 1
    assert "not in this site's scope" in (await row_of(pool, visit))["reason"]

    row = await pool.fetchval("SELECT id FROM quarantine WHERE event_id = $1::uuid", handover.event.event_id)
    result = await quarantine.replay(pool, row)
    assert result.outcome == "stored", result
    assert await stored(pool, handover) and await stored(pool, visit)
    replayed = await row_of(pool, handover)
    assert (replayed["status"], replayed["attempts"], replayed["resolution"]) == ("replayed", 2, "stored")
    waited = await row_of(pool, visit)
    assert (waited["status"], waited["attempts"], waited["resolution"]) == (
        "replayed", 2, "stored once its sender's scope over the child was")
    # A row that itself waits for its child's scope, replayed once that scope came without a
    # retry (its row was locked by another transaction then): stored once, decided once.
    other = "c-" + "9" * 32
    late = logs[SCHOOL].write(c.ChildTransferred(child_id=other, to_school_site=SCHOOL2, reason="转学"))
    assert (await send(pool, late)).quarantined == 1
    registration = logs[VILLAGE].write(sample_registration(random.Random(11), other, school_site=SCHOOL))
    async with pool.acquire() as conn, conn.transaction():
        item = triage(Inbound(subject=up_subject(VILLAGE), data=encode_event(registration.event)))
        assert len((await commit_in(conn, [item], retry_waiting=False)).stored) == 1
    row = await pool.fetchval("SELECT id FROM quarantine WHERE event_id = $1::uuid", late.event.event_id)
    assert (await quarantine.replay(pool, row)).outcome == "stored"
    replayed = await row_of(pool, late)
    assert (replayed["status"], replayed["attempts"], replayed["resolution"]) == ("replayed", 2, "stored")


async def test_copies_of_a_transfer_in_one_batch_are_one_transfer_not_refusals(pool: asyncpg.Pool) -> None:
    """A station's resends (a hole resent, a rewind, a probe) can reach ingest in one batch. The
    copies of an accepted transfer are the transfer again: before, each was decided on the scope
    the first copy had moved ("this site does not hold child") and quarantined, although the
    transfer was stored (the cluster chaos run, seed 5: 3 rows for one stored event)."""
    await register_site(pool, VILLAGE, "village", VILLAGE)
    for site in (SCHOOL, SCHOOL2):
        await register_site(pool, site, "school", site)
    logs = {s: SampleSite(s) for s in (VILLAGE, SCHOOL)}
    registration = logs[VILLAGE].write(sample_registration(random.Random(13), CHILD, school_site=SCHOOL))
    handover = logs[SCHOOL].write(c.ChildTransferred(child_id=CHILD, to_school_site=SCHOOL2, reason="升学"))
    out = await send(pool, registration, handover, handover, handover)
    assert [d.event.event_id for d in out.stored] == [registration.event.event_id, handover.event.event_id]
    assert (out.quarantined, out.duplicates) == (0, 2)
    assert await pool.fetchval("SELECT count(*) FROM quarantine") == 0
    # A copy with other content under the same id is still decided, and refused by the store.
    payload = {**msgspec.json.decode(handover.event.payload), "reason": "别的"}
    changed = msgspec.structs.replace(handover.event, payload=msgspec.Raw(msgspec.json.encode(payload)))
    out = await send(pool, handover, decode_event(encode_event(changed)))
    assert out.quarantined == 1 and not out.stored


async def test_a_refusal_and_the_registration_it_waits_for_in_one_batch(pool: asyncpg.Pool) -> None:
    """A station resends an event the restored center had refused, with the registration it
    recorded since: both in one batch, the event first. It is refused, then decided again once
    the registration later in the batch is stored, and its sender is not told of a refusal (CI,
    tests/test_agent_fresh_receipt.py: the retry had run before the batch's own refusals were
    in the quarantine, so such an event stayed held)."""
    await register_site(pool, VILLAGE, "village", VILLAGE)
    village = SampleSite(VILLAGE)
    close = village.write(c.ArchiveClosed(child_id=CHILD, reason=ClosingReason.OTHER))
    registration = village.write(sample_registration(random.Random(14), CHILD))
    out = await send(pool, close, registration)
    assert [d.event.event_id for d in out.stored] == [registration.event.event_id, close.event.event_id]
    assert out.refusals == {} and out.quarantined == 1
    row = await row_of(pool, close)
    assert (row["status"], row["attempts"]) == ("replayed", 2)
