"""SHOUWANG_CLOCK_SKEW_SECONDS: a site clock set days wrong, as the fault harness needs it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from events.hlc import unpack
from sync_agent.clock import SKEW_KEY, ClockSettingError, site_wall_ms, skew_seconds
from sync_agent.locallog import LocalLog

DAY = 86400
DRAFT = json.dumps({"type": "HomeVisitMade", "occurred_at": "2026-03-02T09:30:00+08:00",
                    "child_id": "c-" + "1" * 32, "visitor": "张老师"}).encode()


@pytest.mark.parametrize("days", [3, -3])
def test_skew_moves_only_the_physical_part_of_recorded_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          days: int) -> None:
    """With the setting, events are stamped days ahead or behind the real clock, still in sequence."""
    from events.envelope import parse_drafts

    monkeypatch.setenv(SKEW_KEY, str(days * DAY))
    with LocalLog(tmp_path / "log.sqlite", "gx-lp.xy.v01") as log:
        before = time.time() * 1000
        done = log.record(parse_drafts(DRAFT) * 2, default_actor="station")
        stamps = [e.recorded_at for e in log.own_events()]
    assert [r.site_seq for r in done] == [1, 2]
    assert stamps[0] < stamps[1]
    physical = unpack(stamps[0])[0]
    assert abs(physical - (before + days * DAY * 1000)) < 60_000


def test_unset_means_the_real_clock() -> None:
    """Without the setting the wall clock is the machine's own."""
    assert skew_seconds({}) == 0
    assert abs(site_wall_ms({})() - time.time() * 1000) < 5_000


@pytest.mark.parametrize("raw", ["soon", "1.5", str(20 * 365 * DAY)])
def test_an_invalid_skew_names_the_key(raw: str) -> None:
    """A value that is not a whole number of seconds within ten years is refused, naming the key."""
    with pytest.raises(ClockSettingError, match=SKEW_KEY):
        skew_seconds({SKEW_KEY: raw})
