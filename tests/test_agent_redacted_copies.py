"""A station that receives two redacted copies of one event (a child entered its scope between
them) keeps one copy naming every child of both, and the center gives each copy its own
JetStream message id so the wider one is not dropped as a repeat (found by the chaos run)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from events import catalogue as c
from events.envelope import encode_event
from events.samples import SampleSite
from events.types import Occasion
from service.fanout import down_message, redacted
from store.postgres import Position, StoredEvent
from sync_agent.locallog import LocalLog

SITE = "gx-lp.xy.s01"
A, B, C = ("c-" + x * 32 for x in "abc")


def test_a_wider_copy_of_an_event_widens_the_stations_copy(tmp_path: Path) -> None:
    """The first copy names A, the second A and B: the station's copy names both; B's archive has the event."""
    visit = SampleSite("gx-lp.xy.office").write(c.CondolenceVisitMade(child_ids_list=[A, B, C],
                                                                        occasion=Occasion.SPRING_FESTIVAL))
    first, second = redacted(visit.event, {A}), redacted(visit.event, {A, B})
    assert first is not None and second is not None
    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        marks = {visit.event.event_id: visit.hash}
        assert log.apply_inbound([(first, encode_event(first))], marks) == 1
        assert [e.event_id for e in log.child_events(B)] == []
        assert log.apply_inbound([(second, encode_event(second))], marks) == 0  # no new event, a wider copy
        assert [e.event_id for e in log.child_events(B)] == [visit.event.event_id]
        kept = log.child_events(A)[0]
        assert sorted(kept.children) == [A, B] and C not in bytes(kept.payload).decode()
        assert log.redacted_copies() == marks
        # The whole event later (the township office's copy, say): nothing cut any more.
        assert log.apply_inbound([(visit.event, encode_event(visit.event))], {}) == 0
        assert sorted(log.child_events(C)[0].children) == [A, B, C] and log.redacted_copies() == {}


def test_each_set_of_children_has_its_own_message_id() -> None:
    """Two redacted copies of one event to one site get different Nats-Msg-Ids; the whole event the plain one."""
    visit = SampleSite("gx-lp.xy.office").write(c.CondolenceVisitMade(child_ids_list=[A, B, C],
                                                                        occasion=Occasion.SPRING_FESTIVAL))
    when = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    stored = StoredEvent(position=Position(1, 1), committed_at=when, event=visit.event, hash=visit.hash,
                         understood=True)
    ids = [m[2]["Nats-Msg-Id"] for keep in ({A}, {A, B}, {A, B, C}) if (m := down_message(SITE, stored, keep))]
    assert len(set(ids)) == 3 and ids[2] == f"{visit.event.event_id}@{SITE}"
