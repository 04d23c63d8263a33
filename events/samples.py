"""Made-up sample payloads of every event type, from a seeded random source.

For tests, benchmarks and the demo. Nothing here is a real person: names are drawn from
syllable lists, phone numbers from a reserved-looking range, and resident ID numbers are
built with a valid check digit for an invented region code.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import msgspec

from events import catalogue as c
from events import rules
from events.envelope import GENESIS_HASH, DecodedEvent, seal
from events.hlc import HybridClock
from events.ids import new_event_id, resident_id_check_char
from events.types import (
    ActivityKind,
    AidKind,
    AidSource,
    CallChannel,
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
    StatusLevel,
)

_SURNAMES = "石云禾柏岚穆夏竺舒檀"
_GIVEN = "晓小雨安宁若溪朵朵一凡子墨乐乐星辰"


def fake_name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.randint(1, 2)))


def fake_phone(rng: random.Random) -> str:
    return "170" + "".join(str(rng.randint(0, 9)) for _ in range(8))


def fake_resident_id(rng: random.Random, birth: dt.date) -> str:
    # Region code 999 9xx does not exist, so a generated number cannot be a real person's.
    body = f"9999{rng.randint(10, 99)}{birth:%Y%m%d}{rng.randint(0, 999):03d}"
    return body + resident_id_check_char(body)


def hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def child_id(rng: random.Random) -> str:
    return "c-" + hex_id(rng)


def sample_registration(rng: random.Random, cid: str | None = None, *, village_site: str | None = None,
                        school_site: str | None = None) -> c.ChildRegistered:
    birth = dt.date(rng.randint(2011, 2019), rng.randint(1, 12), rng.randint(1, 28))
    gtype = rng.choices(list(GuardianshipType), weights=[60, 15, 15, 5, 5])[0]
    return c.ChildRegistered(
        child_id=cid or child_id(rng),
        name=fake_name(rng),
        sex=rng.choice(list(Sex)),
        birth_date=birth,
        resident_id=fake_resident_id(rng, birth),
        household_village=rng.choice(["青石村", "柳湾村", "桃源村", "云岭村"]),
        village_site=village_site,
        school_site=school_site,
        school="中心小学",
        grade=max(1, min(9, 2026 - birth.year - 6)),
        class_name=f"{rng.randint(1, 4)}班",
        reasons=[rng.choices(list(Reason), weights=[50, 25, 8, 2, 8, 3, 4])[0]],
        guardian=c.Guardian(type=gtype, name=fake_name(rng), relation="祖母", phone=fake_phone(rng)),
        parents=[c.ParentContact(relation="父亲", work_place="广东东莞", phone=fake_phone(rng), calls_per_month=4)],
    )


def samples(rng: random.Random, cid: str | None = None) -> dict[str, c.CareEventBase]:
    """One valid payload of every type in the catalogue, about child `cid`."""
    cid = cid or child_id(rng)
    other = child_id(rng)
    eid = "01937a0c-3f2b-7c8d-9e0f-112233445566"
    makers: dict[str, Callable[[], c.CareEventBase]] = {
        "ChildRegistered": lambda: sample_registration(rng, cid),
        "ArchiveUpdated": lambda: c.ArchiveUpdated(child_id=cid, grade=4, class_name="2班"),
        "StatusAssessed": lambda: c.StatusAssessed(
            child_id=cid, study=StatusLevel.FAIR, psychology=StatusLevel.NEEDS_ATTENTION, individual_plan=True,
            note="想念父母"),
        "GuardianChanged": lambda: c.GuardianChanged(child_id=cid, guardian=c.Guardian(
            type=GuardianshipType.RELATIVES, name=fake_name(rng), relation="姑姑", phone=fake_phone(rng))),
        "ContactCardUpdated": lambda: c.ContactCardUpdated(child_id=cid, guardian_phone=fake_phone(rng)),
        "ChildTransferred": lambda: c.ChildTransferred(child_id=cid, to_school_site="gx-lp.xy.s02", school="第二小学",
                                                       grade=5, reason="随祖父母搬迁"),
        "ArchiveClosed": lambda: c.ArchiveClosed(child_id=cid, reason=ClosingReason.PARENTS_RETURNED),
        "ArchiveReopened": lambda: c.ArchiveReopened(child_id=cid, reason="父母再次外出务工"),
        "ArchivesMerged": lambda: c.ArchivesMerged(kept_child_id=cid, merged_child_id=other, note="同一身份证号"),
        "ArchivesUnmerged": lambda: c.ArchivesUnmerged(merge_event_id=eid, kept_child_id=cid, merged_child_id=other),
        "DuplicateDismissed": lambda: c.DuplicateDismissed(child_ids_list=[cid, other],
                                                           note="同名同生日而身份证号不同"),
        "EventCorrected": lambda: c.EventCorrected(
            corrected_event_id=eid, reason="日期填错", child_ids_list=[cid],
            replacement=c.HomeVisitMade(child_id=cid, visitor=fake_name(rng)),
            replacement_occurred_at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)),
        "ConflictResolved": lambda: c.ConflictResolved(child_id=cid, field="guardian", chosen_event_id=eid),
        "PairingStarted": lambda: c.PairingStarted(pairing_id="p-" + hex_id(rng), child_id=cid,
                                                   partner_kind=PartnerKind.PROXY_PARENT, partner_name=fake_name(rng)),
        "PairingEnded": lambda: c.PairingEnded(pairing_id="p-" + hex_id(rng), child_id=cid, reason="代理妈妈搬走"),
        "HomeVisitMade": lambda: c.HomeVisitMade(child_id=cid, visitor=fake_name(rng), findings="学习有进步"),
        "ParentCallMade": lambda: c.ParentCallMade(child_id=cid, parent="母亲", channel=CallChannel.VIDEO, minutes=12),
        "LetterWritten": lambda: c.LetterWritten(child_id=cid, summary="给妈妈的一封信"),
        "TalkHeld": lambda: c.TalkHeld(child_id=cid, teacher=fake_name(rng), record_card="谈心记录：情绪稳定"),
        "TutoringGiven": lambda: c.TutoringGiven(child_ids_list=[cid, other], tutor=fake_name(rng), subject="数学",
                                                 minutes=40),
        "CounsellingGiven": lambda: c.CounsellingGiven(child_id=cid, counsellor=fake_name(rng), minutes=30),
        "GuardianTrained": lambda: c.GuardianTrained(child_ids_list=[cid], topic="隔代教育", guardians_attended=12),
        "MeetingHeld": lambda: c.MeetingHeld(kind=MeetingKind.GUARDIANS, topic="安全座谈", child_ids_list=[cid],
                                             attendees=30),
        "AidGiven": lambda: c.AidGiven(child_id=cid, amount_fen=50_000, source=AidSource.CHARITY, kind=AidKind.MONEY),
        "CondolenceVisitMade": lambda: c.CondolenceVisitMade(
            child_ids_list=[cid, other], occasion=Occasion.SPRING_FESTIVAL, gifts="书包、文具", money_fen_each=20_000),
        "ActivityHeld": lambda: c.ActivityHeld(activity_id="a-" + hex_id(rng), kind=ActivityKind.CHILDRENS_HOME,
                                               title="周末读书会", child_ids_list=[cid], participants_total=25),
        "SafetyIncidentReported": lambda: c.SafetyIncidentReported(child_id=cid, kind=IncidentKind.INJURY,
                                                                   severity=Severity.MINOR),
        "RightsCaseOpened": lambda: c.RightsCaseOpened(case_id="rc-" + hex_id(rng), child_id=cid,
                                                       kind=CaseKind.GUARDIANSHIP),
        "RightsCaseClosed": lambda: c.RightsCaseClosed(case_id="rc-" + hex_id(rng), child_id=cid,
                                                       outcome=CaseOutcome.RESOLVED),
    }
    makers["FollowUpRuleSet"] = lambda: c.FollowUpRuleSet(
        township="gx-lp.xy", rule=msgspec.structs.replace(
            rules.DEFAULT_RULES[0], zh="代管家长每月家访两次",
            counts=rules.Counts(event_types=["HomeVisitMade"], at_least=2)),
        effective_from=dt.date(2026, 9, 1), note="秋季学期起加密家访")
    makers["FollowUpRuleRetired"] = lambda: c.FollowUpRuleRetired(
        township="gx-lp.xy", rule_id="year_end_handover", effective_from=dt.date(2026, 9, 1))
    makers["SchoolCalendarSet"] = lambda: c.SchoolCalendarSet(
        township="gx-lp.xy", calendar=rules.SchoolCalendar(school_year=2026, terms=[
            rules.Term(dt.date(2026, 9, 1), dt.date(2027, 1, 22)),
            rules.Term(dt.date(2027, 2, 22), dt.date(2027, 7, 9))]))
    missing = set(c.EVENT_TYPES) - set(makers)
    if missing:
        raise AssertionError(f"samples lack types {sorted(missing)}")
    return {name: make() for name, make in makers.items()}


class SampleSite:
    """An in-memory site log (gapless site_seq, HLC, hash chain) for tests, benchmarks and the
    simulated township. The real site agent keeps the same chain in SQLite."""

    def __init__(self, site_id: str, actor: str = "staff-01") -> None:
        self.site_id = site_id
        self.actor = actor
        self.seq = 0
        self.prev = GENESIS_HASH
        self.clock = HybridClock()
        self.written: list[DecodedEvent] = []

    def write(self, care: c.CareEventBase, occurred_at: dt.datetime | None = None,
              based_on: dict[str, str] | None = None) -> DecodedEvent:
        self.seq += 1
        d = seal(
            care, site_id=self.site_id, site_seq=self.seq, prev_hash=self.prev,
            recorded_at=self.clock.now(), occurred_at=occurred_at or dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC),
            actor=self.actor, event_id=new_event_id(), based_on=based_on,
        )
        self.prev = d.hash
        self.written.append(d)
        return d
