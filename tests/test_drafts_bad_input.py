"""Drafts that must be refused at the station, found by the fault harness's bad-input corpus."""

from __future__ import annotations

import json

import pytest

from events.envelope import parse_drafts
from events.validation import ValidationFailed

GOOD = {"type": "HomeVisitMade", "occurred_at": "2026-03-02T09:30:00+08:00", "child_id": "c-" + "1" * 32,
        "visitor": "张老师"}


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    """JSON nested past the decoder's recursion limit is a ValidationFailed like other malformed
    input (it raised RecursionError: a 500 at the agent's endpoint, a traceback in `agent record`)."""
    with pytest.raises(ValidationFailed, match="nested too deeply"):
        parse_drafts(b"[" * 200_000 + b"]" * 200_000)


@pytest.mark.parametrize("where", ["visitor", "findings"])
def test_a_nul_character_in_text_is_refused_naming_the_field(where: str) -> None:
    """A NUL in any text is refused at recording (PostgreSQL's jsonb cannot store it, so the
    center would refuse an event the station had already called recorded)."""
    draft = dict(GOOD, **{where: "a\u0000b"})
    with pytest.raises(ValidationFailed) as err:
        parse_drafts(json.dumps(draft).encode())
    assert [p.field for p in err.value.problems] == [where]
    with pytest.raises(ValidationFailed) as err:
        parse_drafts(json.dumps([GOOD, draft]).encode())
    assert [p.field for p in err.value.problems] == [f"[1].{where}"]


def test_a_nul_in_a_field_name_is_refused() -> None:
    """A NUL hidden in a key is refused too."""
    with pytest.raises(ValidationFailed, match="NUL"):
        parse_drafts(json.dumps(dict(GOOD, **{"vis\u0000itor": "x"})).encode())
