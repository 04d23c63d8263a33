"""Care work of a small made-up township, as station apps submit it, with its figures counted here.

The restore tests (tests/test_office_relay.py, tests/test_runbook.py) record this work at a
school and a village station, lose and restore things, and then compare the center's figures
with the counts kept here, which never look at the store or the projections. All the work falls
in one month (`MONTH`), so one rollup period holds it. Names and numbers are made up
(events.samples).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import msgspec

from events.samples import sample_registration, samples

MONTH = "2026-03"
_TZ = dt.timezone(dt.timedelta(hours=8))


class TownshipWork:
    """The drafts of one township's sites, and what they add up to."""

    def __init__(self, township: str, seed: int) -> None:
        self.township = township
        self.office = f"{township}.office"
        self.village = f"{township}.v01"
        self.school = f"{township}.s01"
        self.rng = random.Random(seed)
        self.children: list[str] = []
        self.visits = 0
        self.calls = 0
        self.talks = 0
        self.recorded: dict[str, int] = {self.office: 0, self.village: 0, self.school: 0}

    def _at(self) -> str:
        day = self.rng.randint(2, 27)
        return dt.datetime(2026, 3, day, self.rng.randint(8, 17), self.rng.randint(0, 59), tzinfo=_TZ).isoformat()

    def _draft(self, site: str, care: msgspec.Struct) -> dict[str, Any]:
        self.recorded[site] += 1
        return {**msgspec.to_builtins(care), "occurred_at": self._at()}

    def registrations(self, n: int) -> list[dict[str, Any]]:
        """The school registers `n` children who live in the village station's village."""
        out = []
        for _ in range(n):
            cid = "c-" + f"{self.rng.getrandbits(128):032x}"
            self.children.append(cid)
            care = sample_registration(self.rng, cid, village_site=self.village, school_site=self.school)
            out.append(self._draft(self.school, care))
        return out

    def village_work(self, per_child: int = 1) -> list[dict[str, Any]]:
        """A home visit and a call with the parents for every child, `per_child` times."""
        out = []
        for _ in range(per_child):
            for cid in self.children:
                kinds = samples(self.rng, cid)
                out.append(self._draft(self.village, kinds["HomeVisitMade"]))
                out.append(self._draft(self.village, kinds["ParentCallMade"]))
                self.visits += 1
                self.calls += 1
        return out

    def school_work(self, per_child: int = 1) -> list[dict[str, Any]]:
        """The class teacher's talk with every child, `per_child` times."""
        out = []
        for _ in range(per_child):
            for cid in self.children:
                out.append(self._draft(self.school, samples(self.rng, cid)["TalkHeld"]))
                self.talks += 1
        return out

    def truth(self) -> dict[str, int]:
        """The township's figures for MONTH as counted from what was recorded."""
        return {"children_archived": len(self.children), "visit": self.visits, "call": self.calls,
                "talk": self.talks}


def figures(rollup: Any) -> dict[str, int]:
    """The same figures from a rollup: projections.rollups.Rollup, or the API's JSON of one."""
    doc = rollup if isinstance(rollup, dict) else msgspec.to_builtins(rollup)
    return {"children_archived": doc["children_archived"], "visit": doc["home_visits"],
            "call": doc["parent_calls"], "talk": doc["talks"]}


def as_json(drafts: list[dict[str, Any]]) -> bytes:
    """Drafts as `shouwang agent record` reads them."""
    return json.dumps(drafts, ensure_ascii=False).encode()
