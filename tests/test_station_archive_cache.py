"""The station's one cache of archives (sync_agent/view.py `StationArchives`): after any mix of
events recorded here, received from the center (on another connection, as the agent's
downloader does, widened copies included) and corrected, it gives exactly what a fresh rebuild
of every child from the local log gives, and it rebuilds only the children whose events
changed. Property-style: random logs from several seeds. Every name here is made up."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events import catalogue as c
from events.envelope import Event, encode_event, parse_drafts
from events.samples import SampleSite, sample_registration
from events.types import CallChannel, StatusLevel
from sync_agent.locallog import LocalLog
from sync_agent.view import StationArchives, build_view

SITE = "demo.qingshi.v07"
SCHOOL = "demo.qingshi.s01"
OTHER_VILLAGE = "demo.qingshi.v03"
START = dt.datetime(2026, 1, 5, 1, 0, tzinfo=dt.UTC)


def fresh(log: LocalLog) -> dict[str, Any]:
    """Every child's archive rebuilt from zero, as the pages built them before the cache."""
    return {cid: build_view(cid, log.child_events(cid)) for cid in log.children()}


class World:
    """A village station's log (the pages' connection) and the downloader's connection beside it."""

    def __init__(self, tmp: Path, rng: random.Random) -> None:
        self.rng = rng
        self.log = LocalLog(tmp / "log.sqlite", SITE)
        self.inbound = LocalLog(tmp / "log.sqlite", SITE)
        self.school = SampleSite(SCHOOL, actor="teacher-lin")
        self.village = SampleSite(OTHER_VILLAGE, actor="staff-he")
        self.children: list[str] = []
        self.own: list[tuple[str, str, str]] = []  # (event id, type, child) of own work, correctable
        self.day = 0

    def when(self) -> dt.datetime:
        self.day += 1
        return START + dt.timedelta(days=self.day, hours=self.rng.randint(0, 8))

    def record(self, draft: dict[str, Any]) -> str:
        done = self.log.record(parse_drafts(msgspec.json.encode(draft)), default_actor="staff-shi")
        return done[0].event_id

    def receive(self, events: list[Event], redacted: dict[str, str] | None = None) -> None:
        self.inbound.apply_inbound([(e, encode_event(e)) for e in events], redacted)

    def step(self) -> str:
        """One random thing that happens at a station; returns what it was."""
        rng = self.rng
        roll = rng.random()
        if not self.children or roll < 0.15:  # a child registered here or at the school
            reg = sample_registration(rng, village_site=SITE, school_site=SCHOOL)
            if rng.random() < 0.5:
                draft = {"occurred_at": self.when().isoformat(), **msgspec.to_builtins(reg)}
                self.record(draft)
            else:
                self.receive([self.school.write(reg, self.when()).event])
            self.children.append(reg.child_id)
            return "register"
        child = rng.choice(self.children)
        if roll < 0.4:  # own work
            draft = rng.choice([
                {"type": "HomeVisitMade", "child_id": child, "visitor": "石红", "findings": "情况良好"},
                {"type": "ParentCallMade", "child_id": child, "parent": "母亲", "channel": "video", "minutes": 9},
                {"type": "StatusAssessed", "child_id": child, "study": rng.choice(["good", "fair"])},
                {"type": "GuardianTrained", "child_ids": sorted({child, rng.choice(self.children)}),
                 "topic": "隔代教育", "guardians_attended": 3},
            ])
            event_id = self.record({**draft, "occurred_at": self.when().isoformat()})
            if "child_id" in draft:
                self.own.append((event_id, draft["type"], child))
            return "record"
        if roll < 0.55 and self.own:  # an own entry corrected: retracted or replaced
            event_id, kind, target = rng.choice(self.own)
            draft: dict[str, Any] = {"type": "EventCorrected", "occurred_at": self.when().isoformat(),
                                     "corrected_event_id": event_id, "reason": "记错了", "child_ids": [target]}
            if kind == "HomeVisitMade" and rng.random() < 0.5:
                draft["replacement"] = {"type": "HomeVisitMade", "child_id": target, "visitor": "王建国"}
                draft["replacement_occurred_at"] = self.when().isoformat()
            self.record(draft)
            return "correct"
        if roll < 0.8:  # others' work received from the center
            site = rng.choice([self.school, self.village])
            care: c.CareEventBase = rng.choice([
                c.TalkHeld(child_id=child, teacher="李老师", record_card="学习认真"),
                c.HomeVisitMade(child_id=child, visitor="何主任"),
                c.StatusAssessed(child_id=child, safety=rng.choice(list(StatusLevel))),
                c.ParentCallMade(child_id=child, parent="父亲", channel=CallChannel.PHONE, minutes=5),
            ])
            d = site.write(care, self.when())
            if rng.random() < 0.3:  # and that site corrects it
                fix = c.EventCorrected(corrected_event_id=d.event.event_id, reason="写错了", child_ids_list=[child])
                self.receive([d.event, site.write(fix, self.when()).event])
            else:
                self.receive([d.event])
            return "receive"
        # an event naming two children, first received cut to one, later widened to both
        other = rng.choice(self.children)
        pair = [child, other] if other != child else [child]
        tutoring = c.TutoringGiven(child_ids_list=pair, tutor="王芳", subject="数学", minutes=40)
        d = self.school.write(tutoring, self.when())
        cut = msgspec.structs.replace(d.event, children=pair[:1], payload=msgspec.Raw(
            msgspec.json.encode({"type": "TutoringGiven", "child_ids": pair[:1], "tutor": "王芳", "subject": "数学",
                                 "minutes": 40})))
        self.receive([cut], {cut.event_id: d.hash})
        self.receive([d.event] if rng.random() < 0.5 else [cut], None)
        self.receive([d.event], {d.event.event_id: d.hash} if rng.random() < 0.5 else None)
        return "widen"


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_cache_equals_a_fresh_rebuild_after_every_change(tmp_path: Path, seed: int) -> None:
    """After each recorded, received, widened or corrected event the cache's archives (all, and
    the registered unmerged ones the lists show) equal a rebuild from zero; a look with nothing
    new rebuilds nobody."""
    w = World(tmp_path, random.Random(seed))
    cache = StationArchives(w.log)
    seen: set[str] = set()
    try:
        for _ in range(80):
            seen.add(w.step())
            expected = fresh(w.log)
            assert cache.all() == expected
            assert cache.listed() == [a for _, a in sorted(expected.items()) if a.registered
                                      and a.merged_into is None]
            before = cache.rebuilt
            assert cache.all() == expected and cache.rebuilt == before, "nothing new: nobody rebuilt"
        assert seen == {"register", "record", "correct", "receive", "widen"}
    finally:
        w.log.close()
        w.inbound.close()


def test_only_the_changed_children_are_rebuilt(tmp_path: Path) -> None:
    """One visit recorded here rebuilds that child alone; an inbound batch rebuilds the children it
    names; a copy widened to a second child rebuilds both children it names."""
    w = World(tmp_path, random.Random(9))
    try:
        for _ in range(6):
            reg = sample_registration(w.rng, village_site=SITE, school_site=SCHOOL)
            w.receive([w.school.write(reg, w.when()).event])
            w.children.append(reg.child_id)
        cache = StationArchives(w.log)
        cache.all()
        a, b, x = w.children[0], w.children[1], w.children[2]
        before = cache.rebuilt
        w.record({"type": "HomeVisitMade", "child_id": a, "visitor": "石红", "occurred_at": w.when().isoformat()})
        assert cache.all() == fresh(w.log) and cache.rebuilt == before + 1
        before = cache.rebuilt
        w.receive([w.village.write(c.HomeVisitMade(child_id=b, visitor="何主任"), w.when()).event,
                   w.village.write(c.HomeVisitMade(child_id=x, visitor="何主任"), w.when()).event])
        assert cache.all() == fresh(w.log) and cache.rebuilt == before + 2
        d = w.school.write(c.TutoringGiven(child_ids_list=[a, b], tutor="王芳", subject="语文", minutes=30), w.when())
        cut = msgspec.structs.replace(d.event, children=[a], payload=msgspec.Raw(msgspec.json.encode(
            {"type": "TutoringGiven", "child_ids": [a], "tutor": "王芳", "subject": "语文", "minutes": 30})))
        w.receive([cut], {cut.event_id: d.hash})
        assert cache.all() == fresh(w.log)
        before = cache.rebuilt
        w.receive([d.event])  # the whole event: b newly named, a's copy widened
        assert cache.all() == fresh(w.log) and cache.rebuilt == before + 2
    finally:
        w.log.close()
        w.inbound.close()
