"""Scope is granted, never taken: a station replays the attacks of a dishonest operator through
the center's real ingest path (wire bytes, triage, commit) on real PostgreSQL. Each refused event
is quarantined with its bytes and reason; no scope is gained; the victim keeps its child."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random

import asyncpg
import msgspec
import pytest

from events import catalogue as c
from events.envelope import DecodedEvent, encode_event
from events.samples import SampleSite, sample_registration
from events.types import Occasion
from events.wire import up_subject
from service.ingest import Inbound, Outcome, commit_in, triage
from service.sites import register_site

T = "gx-lp.xy"
A, B, SCHOOL, OFFICE = f"{T}.v01", f"{T}.v02", f"{T}.s01", f"{T}.office"
FAR, FAR_OFFICE = "gx-lp.zz.v01", "gx-lp.zz.office"
K, MINE = "c-" + "b" * 32, "c-" + "a" * 32  # K: village B's child; MINE: village A's child
LATER = dt.datetime(2026, 4, 1, 9, tzinfo=dt.UTC)


@pytest.fixture
async def town(pool: asyncpg.Pool) -> dict[str, SampleSite]:
    """Two villages, a school and the office of one township, a village and the office of another;
    B has registered K and A has registered MINE."""
    for s in (A, B, FAR):
        await register_site(pool, s, "village", s)
    await register_site(pool, SCHOOL, "school", SCHOOL)
    await register_site(pool, OFFICE, "township", OFFICE)
    await register_site(pool, FAR_OFFICE, "township", FAR_OFFICE)
    logs = {s: SampleSite(s) for s in (A, B, SCHOOL, OFFICE, FAR, FAR_OFFICE)}
    rng = random.Random(3)
    assert not (await send(pool, logs[B].write(sample_registration(rng, K, school_site=SCHOOL)))).quarantined
    assert not (await send(pool, logs[A].write(sample_registration(rng, MINE)))).quarantined
    return logs


async def send(pool: asyncpg.Pool, *events: DecodedEvent) -> Outcome:
    """The events as their sites' agents send them: bytes on care.up.<site>, one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        return await commit_in(conn, [triage(Inbound(subject=up_subject(d.event.site_id), data=encode_event(d.event)))
                                      for d in events])


async def holders(pool: asyncpg.Pool, child: str) -> dict[str, str]:
    rows = await pool.fetch("SELECT role, site_id FROM child_scope WHERE child_id = $1 AND until_tx IS NULL", child)
    return {r["role"]: r["site_id"] for r in rows}


async def quarantined(pool: asyncpg.Pool, d: DecodedEvent) -> str | None:
    """The reason the event is held in quarantine with its bytes, or None."""
    row = await pool.fetchrow("SELECT reason, raw FROM quarantine WHERE event_id = $1::uuid", d.event.event_id)
    if row is None:
        return None
    assert bytes(row["raw"]) == encode_event(d.event)  # nothing lost: the bytes are kept for a replay
    return str(row["reason"])


async def stored(pool: asyncpg.Pool, d: DecodedEvent) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM events WHERE event_id = $1::uuid", d.event.event_id))


async def assert_refused(pool: asyncpg.Pool, d: DecodedEvent, words: str) -> None:
    out = await send(pool, d)
    assert out.quarantined == 1 and not out.stored
    reason = await quarantined(pool, d)
    assert reason is not None and reason.startswith("not authorized") and words in reason, reason
    assert not await stored(pool, d)
    assert [r.reason for r in out.refusals[d.event.site_id]] == [reason]  # the sender is told
    # ... with the digest of the bytes refused, so the agent knows them for its own event's
    assert [r.digest for r in out.refusals[d.event.site_id]] == [hashlib.sha256(encode_event(d.event)).hexdigest()]


async def test_a_station_cannot_take_another_villages_child_by_transfer(pool: asyncpg.Pool,
                                                                        town: dict[str, SampleSite]) -> None:
    """A ChildTransferred of B's child to A, sent by A, is refused; B keeps the child."""
    attack = town[A].write(c.ChildTransferred(child_id=K, to_village_site=A))
    await assert_refused(pool, attack, "does not hold child")
    assert await holders(pool, K) == {"village": B, "school": SCHOOL}


async def test_a_station_cannot_merge_or_unmerge(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """ArchivesMerged and ArchivesUnmerged from a station are refused; no link is made."""
    await assert_refused(pool, town[A].write(c.ArchivesMerged(kept_child_id=MINE, merged_child_id=K)),
                         "only a township office")
    assert not await pool.fetchval("SELECT count(*) FROM child_links")
    await assert_refused(pool, town[A].write(c.ArchivesUnmerged(merge_event_id="0" * 8 + "-0000-7000-8000-" + "0" * 12,
                                                                kept_child_id=MINE, merged_child_id=K)),
                         "only a township office")


async def test_a_station_cannot_resolve_a_conflict(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """ConflictResolved is the township office's: from a station (even about its own child) it is refused."""
    chosen = town[B].written[0].event.event_id
    await assert_refused(pool, town[A].write(c.ConflictResolved(child_id=MINE, field="guardian",
                                                                chosen_event_id=chosen)), "only a township office")


async def test_corrections_of_another_sites_entry_are_the_township_offices(
        pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """A station corrects its own entries only; the township office may correct any of its sites'."""
    visit = town[B].write(c.HomeVisitMade(child_id=K, visitor="云朵", findings="一切正常"))
    target = visit.event.event_id
    assert (await send(pool, visit)).stored
    attack = town[A].write(c.EventCorrected(corrected_event_id=target, reason="捏造", child_ids_list=[K]))
    await assert_refused(pool, attack, "recorded by another site")
    own = town[B].write(c.EventCorrected(corrected_event_id=target, reason="录入错误", child_ids_list=[K]))
    assert (await send(pool, own)).stored
    office = town[OFFICE].write(c.EventCorrected(corrected_event_id=target, reason="核实", child_ids_list=[K]))
    assert (await send(pool, office)).stored
    far = town[FAR_OFFICE].write(c.EventCorrected(corrected_event_id=target, reason="?", child_ids_list=[K]))
    await assert_refused(pool, far, "recorded by another site")


async def test_a_correction_cannot_smuggle_a_transfer(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """A station's correction of its own entry whose replacement is work about a child it never held is refused."""
    own = town[A].write(c.HomeVisitMade(child_id=MINE, visitor="云朵"))
    assert (await send(pool, own)).stored
    attack = town[A].write(c.EventCorrected(corrected_event_id=own.event.event_id, reason="改",
                                            replacement=c.HomeVisitMade(child_id=K, visitor="云朵"),
                                            child_ids_list=[MINE]))
    await assert_refused(pool, attack, "the replacement")


async def test_registering_an_existing_child_is_refused(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """A's registration of B's child id is refused; B's own registration again cannot move the child."""
    rng = random.Random(5)
    await assert_refused(pool, town[A].write(sample_registration(rng, K)), "already registered by another site")
    await assert_refused(pool, town[B].write(sample_registration(rng, K, village_site=A, school_site=SCHOOL)),
                         "cannot move it")
    assert await holders(pool, K) == {"village": B, "school": SCHOOL}


async def test_registration_may_name_only_sites_of_the_senders_township(
        pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """A registration naming another township's village (or a school as a village) is refused."""
    rng = random.Random(6)
    await assert_refused(pool, town[A].write(sample_registration(rng, "c-" + "c" * 32, school_site=FAR)),
                         "is not an active school site")
    await assert_refused(pool, town[A].write(sample_registration(rng, "c-" + "d" * 32, village_site=FAR)),
                         "is not an active village site")


async def test_work_needs_the_child_in_the_senders_scope(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """A visit of B's child from A is refused; from B, the school and the office it is stored."""
    await assert_refused(pool, town[A].write(c.HomeVisitMade(child_id=K, visitor="云朵")), "not in this site's scope")
    for site in (B, SCHOOL, OFFICE):
        assert (await send(pool, town[site].write(c.HomeVisitMade(child_id=K, visitor="云朵")))).stored
    await assert_refused(pool, town[FAR_OFFICE].write(c.HomeVisitMade(child_id=K, visitor="云朵")),
                         "not in this site's scope")


async def test_a_multi_child_event_needs_every_child_in_scope(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """A village's condolence visit naming another village's child is refused whole; the office's is stored."""
    attack = town[A].write(c.CondolenceVisitMade(child_ids_list=[MINE, K], occasion=Occasion.SPRING_FESTIVAL))
    await assert_refused(pool, attack, K)
    office = town[OFFICE].write(c.CondolenceVisitMade(child_ids_list=[MINE, K], occasion=Occasion.SPRING_FESTIVAL))
    assert (await send(pool, office)).stored


async def test_the_holder_hands_over_within_its_township(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """B hands K over to A (交接); B's visit recorded offline before is still counted; a hand-over
    to another township's site is refused; the office moves K back; a far office cannot."""
    await assert_refused(pool, town[B].write(c.ChildTransferred(child_id=K, to_village_site=FAR)),
                         "of the child's township")
    assert (await send(pool, town[B].write(c.ChildTransferred(child_id=K, to_village_site=A)))).stored
    assert await holders(pool, K) == {"village": A, "school": SCHOOL}
    offline = town[B].write(c.HomeVisitMade(child_id=K, visitor="云朵"), occurred_at=LATER)
    assert (await send(pool, offline)).stored  # B held K: its work is kept and counted, and grants nothing
    assert await holders(pool, K) == {"village": A, "school": SCHOOL}
    await assert_refused(pool, town[B].write(c.ChildTransferred(child_id=K, to_village_site=B)), "does not hold")
    await assert_refused(pool, town[FAR_OFFICE].write(c.ChildTransferred(child_id=K, to_village_site=B)),
                         "does not hold")
    assert (await send(pool, town[OFFICE].write(c.ChildTransferred(child_id=K, to_village_site=B)))).stored
    assert await holders(pool, K) == {"village": B, "school": SCHOOL}


async def test_the_township_office_merges_its_children(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """The office of the children's township merges and unmerges them; another township's office cannot."""
    await assert_refused(pool, town[FAR_OFFICE].write(c.ArchivesMerged(kept_child_id=MINE, merged_child_id=K)),
                         "is not of township")
    merge = town[OFFICE].write(c.ArchivesMerged(kept_child_id=MINE, merged_child_id=K))
    assert (await send(pool, merge)).stored
    undo = town[OFFICE].write(c.ArchivesUnmerged(merge_event_id=merge.event.event_id, kept_child_id=MINE,
                                                 merged_child_id=K))
    assert (await send(pool, undo)).stored


async def test_a_resend_of_what_was_stored_is_a_duplicate_not_a_refusal(
        pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """B's registration resent after K moved away is the same event: a duplicate, never quarantined."""
    assert (await send(pool, town[B].write(c.ChildTransferred(child_id=K, to_village_site=A)))).stored
    out = await send(pool, town[B].written[0])
    assert out.duplicates == 1 and not out.quarantined


async def test_an_event_is_decided_on_the_batch_before_it(pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """In one batch, A's registration of a new child then a visit are both stored; B's visit of it is refused."""
    new = "c-" + "e" * 32
    reg = town[A].write(sample_registration(random.Random(8), new))
    visit = town[A].write(c.HomeVisitMade(child_id=new, visitor="云朵"))
    foreign = town[B].write(c.HomeVisitMade(child_id=new, visitor="云朵"))
    out = await send(pool, reg, visit, foreign)
    assert {d.event.event_id for d in out.stored} == {reg.event.event_id, visit.event.event_id}
    assert await quarantined(pool, foreign)


async def test_two_sites_registering_one_child_at_once_get_one_registration(
        pool: asyncpg.Pool, town: dict[str, SampleSite]) -> None:
    """Two transactions registering one new child id from two sites: the lock orders them, the second is refused."""
    new = "c-" + "f" * 32
    rng = random.Random(9)
    first, second = town[A].write(sample_registration(rng, new)), town[B].write(sample_registration(rng, new))
    async with pool.acquire() as c1, pool.acquire() as c2:
        t1 = c1.transaction()
        await t1.start()
        out1 = await commit_in(c1, [triage(Inbound(subject=up_subject(A), data=encode_event(first.event)))])

        async def second_site() -> Outcome:
            async with c2.transaction():
                return await commit_in(c2, [triage(Inbound(subject=up_subject(B), data=encode_event(second.event)))])

        task = asyncio.create_task(second_site())
        await asyncio.sleep(0.3)
        assert not task.done()  # waiting for the first transaction's decision about this child
        await t1.commit()
        out2 = await task
    assert out1.stored and not out2.stored and out2.quarantined == 1
    assert await holders(pool, new) == {"village": A}


def _looser_rule(township: str) -> c.FollowUpRuleSet:
    from events.rules import DEFAULT_RULES, Counts, PeriodKind

    old = DEFAULT_RULES[3]  # the class teacher's monthly talk
    return c.FollowUpRuleSet(township=township, effective_from=dt.date(2026, 3, 1), rule=msgspec.structs.replace(
        old, zh="班主任每学年谈心一次", counts=Counts(event_types=["TalkHeld"], period=PeriodKind.SCHOOL_YEAR)))


async def test_a_station_cannot_set_or_retire_its_townships_rules(pool: asyncpg.Pool,
                                                                  town: dict[str, SampleSite]) -> None:
    """A dishonest school loosens the talk rule it is held to, retires it, moves the holidays:
    each is quarantined with its reason, and the figures keep the township's rules."""
    from events.rules import SchoolCalendar, Term
    from projections import rule_queries

    await assert_refused(pool, town[SCHOOL].write(_looser_rule(T), LATER), "only a township office")
    await assert_refused(pool, town[SCHOOL].write(c.FollowUpRuleRetired(
        township=T, rule_id="teacher_talk", effective_from=dt.date(2026, 3, 1)), LATER), "only a township office")
    await assert_refused(pool, town[A].write(c.SchoolCalendarSet(township=T, calendar=SchoolCalendar(
        school_year=2025, terms=[Term(dt.date(2025, 9, 1), dt.date(2025, 9, 30))])), LATER), "only a township office")
    async with pool.acquire() as conn:
        book = await rule_queries.rule_book(conn, T)
    assert book.in_force(T, "teacher_talk", dt.date(2026, 6, 1)).rule.zh == "班主任每月与留守儿童谈心一次"  # type: ignore[union-attr]
    assert book.calendars == {}


async def test_a_township_office_sets_only_its_own_townships_rules(pool: asyncpg.Pool,
                                                                   town: dict[str, SampleSite]) -> None:
    """Another township's office is refused; the township's own office is not."""
    await assert_refused(pool, town[FAR_OFFICE].write(_looser_rule(T), LATER), f"township {T} is not this office's")
    mine = town[OFFICE].write(_looser_rule(T), LATER)
    out = await send(pool, mine)
    assert len(out.stored) == 1 and not out.quarantined
    assert await stored(pool, mine)
