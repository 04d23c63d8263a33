"""The simulated township: deterministic, valid as a station would submit it, and complete."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from events import ValidationFailed, parse_drafts
from testbed.simulation import generate

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_same_seed_same_scenario() -> None:
    """A seed reproduces the scenario exactly (fault runs must be replayable)."""
    a, b = generate(seed=7, children=40, days=90), generate(seed=7, children=40, days=90)
    assert msgspec.json.encode(a) == msgspec.json.encode(b)
    assert msgspec.json.encode(a) != msgspec.json.encode(generate(seed=8, children=40, days=90))


def test_every_planned_record_is_valid_except_the_ones_meant_to_be_refused() -> None:
    """What the generator plans parses as a station draft; the mistyped ID is refused by name."""
    sc = generate(seed=3, children=60, days=160)
    refused = 0
    for p in sc.records:
        body = msgspec.json.encode(p.draft)
        if p.refused:
            with pytest.raises(ValidationFailed) as exc:
                parse_drafts(body, now=NOW)
            assert any(pr.field == "resident_id" for pr in exc.value.problems)
            refused += 1
        else:
            parse_drafts(body, now=NOW)
    assert refused == sc.truth.refused_at_station == 1


def test_scenario_has_the_special_cases_the_demo_needs() -> None:
    """A duplicate registration, a conflict, a transfer, an offline station, aid and condolence."""
    sc = generate(seed=1, children=80, days=160)
    t = sc.truth
    assert t.duplicate_pairs == 1 and t.conflicts == 1 and t.transfers == 1
    assert t.condolence_visits >= 2 and t.aid_children >= 1
    assert sc.offline and all(lo < hi for lo, hi in sc.offline.values())
    kinds = {s.kind for s in sc.sites}
    assert kinds == {"village", "school", "township"}
    counted = sum(1 for p in sc.records if p.draft["type"] == "HomeVisitMade")
    assert counted == t.home_visits
    assert sum(t.children_by_guardianship.values()) == t.children_archived
    assert t.children_by_guardianship["grandparents"] > t.children_archived * 0.3


def test_records_are_in_day_order_and_inside_the_period() -> None:
    sc = generate(seed=5, children=30, days=60)
    days = [p.day for p in sc.records]
    assert days == sorted(days)
    assert days[0] >= 0 and days[-1] < 60


def test_scenario_with_a_community_and_a_drop_out() -> None:
    """With a community the township has a site of that kind registering, visiting and condoling its own
    children (every draft valid); one pupil drops out near the end and leaves the archived figures; a scenario
    without communities keeps every record it had before they existed."""
    plain = generate(seed=1, children=80, days=160)
    sc = generate(seed=1, children=80, days=160, communities=1)
    assert {s.kind for s in sc.sites} == {"village", "school", "township", "community"}
    community = next(s.site_id for s in sc.sites if s.kind == "community")
    mine = [p for p in sc.records if p.site_id == community]
    assert {p.draft["type"] for p in mine} == {"ChildRegistered", "HomeVisitMade", "CondolenceVisitMade"}
    for p in mine:
        parse_drafts(msgspec.json.encode(p.draft), now=NOW)
    assert all(p.draft["village_site"] == community for p in mine if p.draft["type"] == "ChildRegistered")
    t = sc.truth
    assert t.dropped_out == 1 and t.dropped_out_poverty in (0, 1)
    [closing] = [p for p in sc.records if p.draft["type"] == "ArchiveClosed"]
    assert closing.draft["reason"] == "dropped_out"
    assert sum(t.children_by_guardianship.values()) == t.children_archived == plain.truth.children_archived + 3
    assert t.condolence_households == t.condolence_children_covered
    assert [p for p in sc.records if p.site_id != community] == plain.records
