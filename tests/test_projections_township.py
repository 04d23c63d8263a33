"""A small made-up township with every rule and figure computed by hand beside it.

Sites: villages v01 and v02, school s01, the township office. Children (all invented):
  K1  reg 01-10 at v01, village v01 + school s01, grade 2, both parents away, grandparents, paired proxy parent 01-20
  K2  reg 01-15 at v01, village v01 + school s01, grade 5, one parent away, grandparents, paired teacher 02-01;
      guardian changed concurrently by v01 (relatives) and s01 (none) on 03-25: open conflict, s01 wins
  K3  reg 02-20 at v02, village v02, grade 7, poverty + single parent, relatives, paired loving mother 03-10
  K4  reg 01-05 at v02, village v02 + school s01, grade 3, both parents away, one parent; closed 03-15
  K5  reg 03-10 at s01, the same child as K1 (same resident ID); merged into K1 at the end
Work (2026): visits K1 02-03 03-04, K2 02-10, K3 02-28 corrected to 03-01, K4 02-02; calls K1 02-05 03-05,
K2 03-06 (phone, the default channel); talks K1 02-20 03-20, K2 02-21 03-21 (retracted), K4 02-22,
K5 03-25; letter K1 03-01;
aid K1 200 yuan government 02-14 (office), K3 500 yuan charity 03-12 (v02); condolence (office, 02-10)
K1 K2 K4 100 yuan each; activities s01 03-08 children's home K1 K2 (25 people), v01 03-15 safety lecture
(40 people, no child listed); guardian training v01 02-25 K1 K2 (12 guardians); meeting s01 03-03 (30);
tutoring s01 03-12 K1 K2; counselling s01 K2 03-13; incident K2 03-18 minor (s01); rights case K3 opened
03-02, closed 03-28 (v02).
"""

from __future__ import annotations

import datetime as dt
import itertools

import asyncpg
import pytest

from events import catalogue as c
from events.envelope import DecodedEvent
from events.hlc import HybridClock
from events.types import (
    ActivityKind,
    AidSource,
    CaseKind,
    CaseOutcome,
    ClosingReason,
    GuardianshipType,
    IncidentKind,
    MeetingKind,
    Occasion,
    PartnerKind,
    Reason,
    Severity,
    Sex,
)
from projections import archive, queries, rule_queries
from projections.conflicts import conflicts
from projections.duplicates import duplicates
from projections.rollups import RuleFigure, Share
from projections.runner import Runner
from store.postgres import EventStore
from tests.factory import SiteWriter

V1, V2, S1, OFFICE, TOWNSHIP = "gx.xy.v01", "gx.xy.v02", "gx.xy.s01", "gx.xy.office", "gx.xy"
K1, K2, K3, K4, K5 = (f"c-{i:032x}" for i in (0xA1, 0xA2, 0xA3, 0xA4, 0xA5))


def at(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 10, 0, tzinfo=dt.UTC)


class Township:
    """The fixture: four sites whose clocks tick in the order events are written here."""

    def __init__(self) -> None:
        ticks = itertools.count(1_780_000_000_000)
        self.sites = {s: SiteWriter(s) for s in (V1, V2, S1, OFFICE)}
        for w in self.sites.values():
            w.clock = HybridClock(wall_ms=lambda: next(ticks))
        self.events: list[DecodedEvent] = []

    def write(self, site: str, care: c.CareEventBase, when: dt.datetime, based_on: dict[str, str] | None = None
              ) -> DecodedEvent:
        d = self.sites[site].write(care, when, based_on)
        self.events.append(d)
        return d


def registration(cid: str, name: str, grade: int, reasons: list[Reason], guardian: GuardianshipType,
                 village: str | None, school: str | None, resident_id: str | None = None) -> c.ChildRegistered:
    return c.ChildRegistered(
        child_id=cid, name=name, sex=Sex.FEMALE, birth_date=dt.date(2026 - grade - 6, 5, 1), household_village="青石村",
        reasons=reasons, guardian=c.Guardian(type=guardian), resident_id=resident_id, village_site=village,
        school_site=school, school="中心小学" if school else None, grade=grade)


def township() -> tuple[Township, dict[str, DecodedEvent]]:
    t = Township()
    e: dict[str, DecodedEvent] = {}
    rid = "999912201801010011"  # check digit computed below
    from events.ids import resident_id_check_char

    rid = rid[:17] + resident_id_check_char(rid[:17])
    e["reg1"] = t.write(V1, registration(K1, "石小雨", 2, [Reason.BOTH_PARENTS_AWAY], GuardianshipType.GRANDPARENTS,
                                         V1, S1, rid), at(1, 10))
    e["reg2"] = t.write(V1, registration(K2, "云安", 5, [Reason.ONE_PARENT_AWAY], GuardianshipType.GRANDPARENTS,
                                         V1, S1), at(1, 15))
    e["reg3"] = t.write(V2, registration(K3, "柏宁", 7, [Reason.POVERTY, Reason.SINGLE_PARENT],
                                         GuardianshipType.RELATIVES, V2, None), at(2, 20))
    e["reg4"] = t.write(V2, registration(K4, "舒星辰", 3, [Reason.BOTH_PARENTS_AWAY], GuardianshipType.ONE_PARENT,
                                         V2, S1), at(1, 5))
    e["reg5"] = t.write(S1, registration(K5, "石小雨", 2, [Reason.BOTH_PARENTS_AWAY], GuardianshipType.GRANDPARENTS,
                                         V1, S1, rid), at(3, 10))
    t.write(V2, c.ArchiveClosed(child_id=K4, reason=ClosingReason.PARENTS_RETURNED), at(3, 15))
    for pid, kid, kind, site, when in (("p-" + "1" * 32, K1, PartnerKind.PROXY_PARENT, V1, at(1, 20)),
                                       ("p-" + "2" * 32, K2, PartnerKind.TEACHER, S1, at(2, 1)),
                                       ("p-" + "3" * 32, K3, PartnerKind.LOVING_MOTHER, V2, at(3, 10))):
        t.write(site, c.PairingStarted(pairing_id=pid, child_id=kid, partner_kind=kind, partner_name="夏朵朵"), when)
    for kid, site, when in ((K1, V1, at(2, 3)), (K1, V1, at(3, 4)), (K2, V1, at(2, 10)), (K4, V2, at(2, 2))):
        t.write(site, c.HomeVisitMade(child_id=kid, visitor="穆一凡"), when)
    e["visit3"] = t.write(V2, c.HomeVisitMade(child_id=K3, visitor="穆一凡"), at(2, 28))
    t.write(V2, c.EventCorrected(corrected_event_id=e["visit3"].event.event_id, reason="日期填错", child_ids_list=[K3],
                                 replacement=c.HomeVisitMade(child_id=K3, visitor="穆一凡"),
                                 replacement_occurred_at=at(3, 1)), at(3, 2))
    for kid, when in ((K1, at(2, 5)), (K1, at(3, 5)), (K2, at(3, 6))):
        t.write(S1, c.ParentCallMade(child_id=kid, parent="母亲"), when)
    for kid, when in ((K1, at(2, 20)), (K1, at(3, 20)), (K2, at(2, 21)), (K4, at(2, 22)), (K5, at(3, 25))):
        t.write(S1, c.TalkHeld(child_id=kid, teacher="檀子墨", record_card="谈心记录"), when)
    e["talk2"] = t.write(S1, c.TalkHeld(child_id=K2, teacher="檀子墨", record_card="谈心记录"), at(3, 21))
    t.write(S1, c.EventCorrected(corrected_event_id=e["talk2"].event.event_id, reason="没有谈", child_ids_list=[K2]),
            at(3, 22))
    t.write(S1, c.LetterWritten(child_id=K1), at(3, 1))
    t.write(OFFICE, c.AidGiven(child_id=K1, amount_fen=20_000, source=AidSource.GOVERNMENT), at(2, 14))
    t.write(V2, c.AidGiven(child_id=K3, amount_fen=50_000, source=AidSource.CHARITY), at(3, 12))
    t.write(OFFICE, c.CondolenceVisitMade(child_ids_list=[K1, K2, K4], occasion=Occasion.SPRING_FESTIVAL,
                                          money_fen_each=10_000), at(2, 10))
    t.write(S1, c.ActivityHeld(activity_id="a-" + "1" * 32, kind=ActivityKind.CHILDRENS_HOME, title="读书会",
                               child_ids_list=[K1, K2], participants_total=25), at(3, 8))
    t.write(V1, c.ActivityHeld(activity_id="a-" + "2" * 32, kind=ActivityKind.SAFETY_LECTURE, title="防溺水",
                               participants_total=40), at(3, 15))
    t.write(V1, c.GuardianTrained(child_ids_list=[K1, K2], topic="隔代教育", guardians_attended=12), at(2, 25))
    t.write(S1, c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="安全", attendees=30), at(3, 3))
    t.write(S1, c.TutoringGiven(child_ids_list=[K1, K2], tutor="檀子墨", subject="数学", minutes=40), at(3, 12))
    t.write(S1, c.CounsellingGiven(child_id=K2, counsellor="竺乐乐"), at(3, 13))
    t.write(S1, c.SafetyIncidentReported(child_id=K2, kind=IncidentKind.INJURY, severity=Severity.MINOR), at(3, 18))
    t.write(V2, c.RightsCaseOpened(case_id="rc-" + "1" * 32, child_id=K3, kind=CaseKind.GUARDIANSHIP), at(3, 2))
    t.write(V2, c.RightsCaseClosed(case_id="rc-" + "1" * 32, child_id=K3, outcome=CaseOutcome.RESOLVED), at(3, 28))
    base = {"guardian": e["reg2"].event.event_id}
    e["g_v1"] = t.write(V1, c.GuardianChanged(child_id=K2, guardian=c.Guardian(type=GuardianshipType.RELATIVES)),
                        at(3, 25), base)
    e["g_s1"] = t.write(S1, c.GuardianChanged(child_id=K2, guardian=c.Guardian(type=GuardianshipType.NONE)),
                        at(3, 25), base)
    return t, e


def merge(t: Township) -> DecodedEvent:
    return t.write(OFFICE, c.ArchivesMerged(kept_child_id=K1, merged_child_id=K5, note="同一身份证号"), at(3, 30))


@pytest.fixture
async def projected(store: EventStore, pool: asyncpg.Pool) -> tuple[Township, dict[str, DecodedEvent]]:
    t, e = township()
    await store.append(t.events)
    merge_event = merge(t)
    await Runner(pool).catch_up()
    assert await duplicates(pool, TOWNSHIP) == [queries_pair(K1, K5)]
    await store.append([merge_event])
    await Runner(pool).catch_up()
    return t, e


def queries_pair(a: str, b: str) -> object:
    from projections.duplicates import DuplicatePair

    return DuplicatePair(child_a=a, child_b=b, reason="resident_id")


def figs(r: object) -> dict[str, tuple[int, int, int, float, int]]:
    """A rollup's rules' figures (projections.rollups.RuleFigure) as (done, due, met, pct_met, overdue)."""
    return {k: (f.done, f.due, f.met, f.pct_met, f.overdue) for k, f in r.rules.items()}  # type: ignore[attr-defined]


# The default rules' site obligations: no site of this township is registered (no kind known), so
# none applies and none is due; their `done` is the work that counts, recorded in scope.
NO_SITE_DUE = {"guardian_meeting": (1, 0, 0, 0.0, 0), "safety_lecture": (1, 0, 0, 0.0, 0),
               "poor_children_visit": (0, 0, 0, 0.0, 0), "childrens_home": (1, 0, 0, 0.0, 0),
               "year_end_handover": (0, 0, 0, 0.0, 0)}


def third(n: int) -> Share:
    return Share(n, round(100 * n / 3, 1))


async def test_march_township_figures(projected: object, pool: asyncpg.Pool) -> None:
    """Every figure of the township for March 2026, against the hand count in the docstring."""
    r = await queries.rollup(pool, TOWNSHIP, "2026-03", today=dt.date(2026, 12, 31))
    assert r.as_of == dt.date(2026, 3, 31)
    assert (r.children_archived, r.children_registered, r.children_closed) == (3, 0, 1)  # K4 closed 03-15
    assert r.by_site == {S1: 2, V1: 2, V2: 1}
    assert r.by_guardianship == {"grandparents": third(1), "none": third(1), "relatives": third(1)}
    assert r.by_grade_band == {"1-3": third(1), "4-6": third(1), "7-9": third(1)}
    assert r.by_reason == {"both_parents_away": third(1), "one_parent_away": third(1), "poverty": third(1),
                           "single_parent": third(1)}
    assert r.individual_plan == Share(0, 0.0)
    assert r.children_paired == Share(3, 100.0)
    assert r.paired_by == {"loving_mother": 1, "proxy_parent": 1, "teacher": 1}
    assert (r.proxy_parents_matched, r.proxy_parents_new, r.pairings_started, r.pairings_ended) == (2, 1, 1, 0)
    # Contact work in March: visits K1 03-04, K3 03-01 (corrected from 02-28); calls K1, K2; the
    # letter; talks K1 03-20 and merged K5 03-25 (K2's 03-21 was retracted).
    assert (r.home_visits, r.parent_calls, r.letters, r.talks) == (2, 2, 1, 2)
    # The default rules. The proxy parent's three: only K1 has one (since 01-20): March due once,
    # met by the visit of 03-04 and the call of 03-05; no semester ended. The teacher's talk: pupils
    # held by school s01 on 03-01 are K1, K2, K4 (K3 is at no school); only K1 had a talk.
    # Nobody is overdue on 03-31: K2's talk of 02-21 counts for January (February is a holiday
    # month), so March is the next school month, due by 03-31.
    assert figs(r) == {"proxy_visit": (2, 1, 1, 100.0, 0), "proxy_call": (2, 1, 1, 100.0, 0),
                       "proxy_letter": (1, 0, 0, 0.0, 0), "teacher_talk": (2, 3, 1, 33.3, 0), **NO_SITE_DUE}
    assert r.rules["teacher_talk"] == RuleFigure(done=2, due=3, met=1, pct_met=33.3, overdue=0,
                                                 zh="班主任每月与留守儿童谈心一次",
                                                 en="class teacher: a talk a school month", target="child")
    assert r.overdue_children == 0
    assert (r.aid_children, r.aid_events, r.aid_amount_fen, r.aid_by_source) == (1, 1, 50_000, {"charity": 50_000})
    assert (r.condolence_visits, r.condolence_children, r.condolence_amount_fen) == (0, 0, 0)
    assert (r.activities, r.activity_participants, r.activity_children) == (2, 65, 2)
    assert r.activities_by_kind == {"childrens_home": 1, "safety_lecture": 1}
    assert (r.tutoring_sessions, r.counselling_sessions, r.guardian_trainings, r.guardians_trained) == (1, 1, 0, 0)
    assert (r.meetings, r.meeting_attendees) == (1, 30)
    assert (r.safety_incidents, r.incidents_by_severity) == (1, {"minor": 1})
    assert (r.rights_cases_opened, r.rights_cases_closed, r.rights_cases_open) == (1, 1, 0)
    assert [f.site_id for f in r.freshness] == sorted([OFFICE, S1, V1, V2])
    newest = {f.site_id: f.newest_occurred_at for f in r.freshness}
    assert newest[OFFICE] == at(3, 30) and newest[V2] == at(3, 28)
    assert all(f.last_committed_at is not None for f in r.freshness)


async def test_spring_semester_figures_part_way(projected: object, pool: asyncpg.Pool) -> None:
    """The spring semester seen on 04-15: only February and March are due; overdue as of that day."""
    r = await queries.rollup(pool, TOWNSHIP, "2026-S1", today=dt.date(2026, 4, 15))
    assert r.as_of == dt.date(2026, 4, 15)
    assert (r.children_archived, r.children_registered, r.children_closed) == (3, 1, 1)
    assert (r.home_visits, r.parent_calls, r.letters, r.talks) == (5, 3, 1, 5)
    # Proxy parent (K1 only): February and March due and met (visits 02-03 03-04, calls 02-05 03-05).
    # Teacher's talk: March is the only school month ended by 04-15 (February is a holiday month):
    # due for K1, K2, K4, met by K1; K2 is overdue since its talk of 02-21 (January's) was due again
    # by 03-31. Done: talks K1 02-20 03-20, K2 02-21, K4 02-22, K5 03-25.
    assert figs(r) == {"proxy_visit": (5, 2, 2, 100.0, 0), "proxy_call": (3, 2, 2, 100.0, 0),
                       "proxy_letter": (1, 0, 0, 0.0, 0), "teacher_talk": (5, 3, 1, 33.3, 1), **NO_SITE_DUE}
    assert r.overdue_children == 1
    assert (r.aid_children, r.aid_events, r.aid_amount_fen) == (2, 2, 70_000)
    assert r.aid_by_source == {"charity": 50_000, "government": 20_000}
    assert (r.condolence_visits, r.condolence_children, r.condolence_amount_fen) == (1, 3, 30_000)
    assert (r.guardian_trainings, r.guardians_trained) == (1, 12)
    assert (r.pairings_started, r.proxy_parents_new, r.proxy_parents_matched) == (2, 1, 2)


async def test_site_scope_counts_its_children_and_its_own_work(projected: object, pool: asyncpg.Pool) -> None:
    """For village v01 in March: its children K1 and K2, and only the work v01 recorded."""
    r = await queries.rollup(pool, V1, "2026-03", today=dt.date(2026, 12, 31))
    assert (r.children_archived, r.by_site) == (2, {V1: 2})
    # K1's proxy parent's March visit (v01's own, 03-04); v01 is no school: the talk rule holds none.
    assert (r.home_visits, r.parent_calls, r.talks) == (1, 0, 0)
    assert figs(r)["proxy_visit"] == (1, 1, 1, 100.0, 0) and figs(r)["teacher_talk"] == (0, 0, 0, 0.0, 0)
    assert (r.activities, r.activity_participants, r.activity_children) == (1, 40, 0)
    assert (r.aid_events, r.tutoring_sessions) == (0, 0)
    assert [f.site_id for f in r.freshness] == [V1]


async def overdue(pool: asyncpg.Pool, scope: str, day: dt.date) -> set[tuple[str, str, int, dt.date]]:
    """(child, rule, days overdue, due on) of every child rule's overdue children in `scope` on `day`."""
    found = await rule_queries.rule_figures_live(pool, scope, f"{day.year:04d}-{day.month:02d}", day)
    return {(o.subject, f.rule_id, o.days_overdue, o.due_on) for f in found if f.target == "child" for o in f.overdue}


async def test_overdue_list_per_site_with_days(projected: object, pool: asyncpg.Pool) -> None:
    """On 04-15, under the default rules: K2 owes the class teacher's talk, 15 days (due 03-31); K1
    is up to date with its proxy parent; K3 has neither a proxy parent nor a school."""
    assert await overdue(pool, TOWNSHIP, dt.date(2026, 4, 15)) == {(K2, "teacher_talk", 15, dt.date(2026, 3, 31))}
    assert await overdue(pool, V2, dt.date(2026, 4, 15)) == set()
    # K4 is closed, so never overdue; in the next spring K1's letter of 2026-03-01 (spring semester)
    # was due again by the end of the autumn one (2027-01-31): 2 days overdue on 2027-02-02.
    later = await overdue(pool, S1, dt.date(2027, 2, 2))
    assert (K1, "proxy_letter", 2, dt.date(2027, 1, 31)) in later
    assert K4 not in {child for child, *_ in later}


async def test_archive_conflict_merge_and_timeline(projected: tuple[Township, dict[str, DecodedEvent]],
                                                   pool: asyncpg.Pool, store: EventStore) -> None:
    """K2's concurrent guardian changes are one open conflict until resolved; K5 is merged into K1;
    the timeline shows the retracted talk beside its correction."""
    t, e = projected
    [open_conflict] = await conflicts(pool, TOWNSHIP)
    assert open_conflict.child_id == K2 and open_conflict.field == "guardian"
    assert open_conflict.winner == e["g_s1"].event.event_id
    assert await duplicates(pool, TOWNSHIP) == []
    k1 = await queries.get_archive(pool, K1)
    k5 = await queries.get_archive(pool, K5)
    assert k1 is not None and k5 is not None
    assert (k1.merged_from, k5.merged_into, k1.registered_on, k1.last_talk) == ([K5], K1, dt.date(2026, 1, 10),
                                                                                dt.date(2026, 3, 25))
    items = {i.event_id: i for i in await queries.timeline(pool, K2)}
    talk = items[e["talk2"].event.event_id]
    assert talk.retracted and items[talk.corrected_by or ""].corrects == talk.event_id

    t.sites[V1].clock.observe(e["g_s1"].event.recorded_at)
    await store.append([t.write(V1, c.ConflictResolved(child_id=K2, field="guardian",
                                                      chosen_event_id=e["g_v1"].event.event_id), at(4, 1))])
    await Runner(pool).catch_up()
    assert await conflicts(pool, TOWNSHIP) == []
    [settled] = await conflicts(pool, TOWNSHIP, open_only=False)
    assert settled.resolved_by is not None
    k2 = await queries.get_archive(pool, K2)
    assert k2 is not None and k2.guardian == c.Guardian(type=GuardianshipType.RELATIVES)


async def test_as_of_occurred_and_committed(projected: tuple[Township, dict[str, DecodedEvent]],
                                            pool: asyncpg.Pool, store: EventStore) -> None:
    """As of an occurred time the archive and the rollup say what had happened by then; as of a
    committed time, what the center had received by then."""
    from projections import asof

    t, _ = projected
    k2 = await asof.archive_asof(pool, K2, occurred_at=at(2, 28))
    assert k2 is not None and k2.last_visit == dt.date(2026, 2, 10) and k2.conflicts == []
    assert k2.guardian == c.Guardian(type=GuardianshipType.GRANDPARENTS)
    live = await queries.rollup(pool, TOWNSHIP, "2026-03", today=dt.date(2026, 3, 31))
    then = await asof.rollup_asof(pool, TOWNSHIP, "2026-03", occurred_at=dt.datetime(2026, 3, 31, 23, 59,
                                                                                      tzinfo=dt.UTC))
    assert then.rules == live.rules and then.children_archived == live.children_archived
    assert then.aid_amount_fen == live.aid_amount_fen and then.activities == live.activities

    async with pool.acquire() as conn:
        cut = await conn.fetchval("SELECT max(committed_at) FROM events")
    late = t.write(V1, c.HomeVisitMade(child_id=K2, visitor="穆一凡"), at(3, 29))
    await store.append([late])
    await Runner(pool).catch_up()
    now_k2 = await queries.get_archive(pool, K2)
    before = await asof.archive_asof(pool, K2, committed_at=cut)
    assert now_k2 is not None and now_k2.last_visit == dt.date(2026, 3, 29)
    assert before is not None and before.last_visit == dt.date(2026, 2, 10)
    expected = archive.build([(d.event, d.care) for d in t.events if d is not late])[K2]
    assert before == expected
    items = await asof.timeline_asof(pool, K2, committed_at=cut)
    assert late.event.event_id not in {i.event_id for i in items}
