"""Validation at the edge: every problem of an input, each naming its field and value.

msgspec stops at the first type error, which is right for the hot path (the center's ingest
of well-formed events) but not for a person at a station who should see every mistake of a
form at once. So the fast path decodes with a prebuilt Decoder, and only when that fails do
we walk the input field by field (:func:`collect_field_problems`) to list all of them.

Checks a type cannot express live here too: the GB 11643 check digit, dates not in the
future beyond a tolerance, and the envelope agreeing with its payload.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import msgspec

from events.catalogue import (
    ARCHIVE_FIELDS,
    EVENT_TYPES,
    CareEventBase,
    EventCorrected,
    FollowUpRuleSet,
    SchoolCalendarSet,
)
from events.ids import resident_id_problem
from events.localtime import local_day
from events.rules import calendar_problems, rule_problems

# A person enters `occurred_at`; clocks at stations drift. Beyond this it is a typo.
FUTURE_TOLERANCE = dt.timedelta(days=1)
_MAX_VALUE_SHOWN = 80


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with an input: where (a dotted path, list indexes in brackets), why, and
    the offending value as text (shortened)."""

    field: str
    message: str
    value: str | None = None

    def __str__(self) -> str:
        shown = f" (got {self.value})" if self.value is not None else ""
        return f"{self.field or '$'}: {self.message}{shown}"


class EventError(Exception):
    """Base class of the catalogue's errors."""


class ValidationFailed(EventError):
    """The input was refused; ``problems`` lists every problem found, each naming its field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems) or "invalid input")


def show_value(value: Any) -> str:
    text = msgspec.json.encode(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_VALUE_SHOWN else text[: _MAX_VALUE_SHOWN - 3] + "..."


_PATH_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def problem_from_msgspec(err: msgspec.MsgspecError, source: Any = None, prefix: str = "") -> Problem:
    """Turn msgspec's message ("Expected `int`, got `str` - at `$.a[0].b`") into a Problem,
    looking the offending value up in the generic form of the input when we have it."""
    m = _PATH_RE.match(str(err))
    assert m is not None
    msg, path = m.group("msg"), m.group("path") or ""
    field = join_path(prefix, path.lstrip("."))
    value = _lookup(source, path) if source is not None else _MISSING
    return Problem(field=field, message=msg, value=None if value is _MISSING else show_value(value))


def join_path(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


_MISSING = object()
_TOKEN_RE = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _lookup(obj: Any, path: str) -> Any:
    for m in _TOKEN_RE.finditer(path):
        key, index = m.group(1), m.group(2)
        try:
            obj = obj[int(index)] if index is not None else obj[key]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return obj


def collect_field_problems(cls: type[CareEventBase], obj: Any, prefix: str = "") -> list[Problem]:
    """All type problems of `obj` as a payload of `cls`, one per field (not just the first)."""
    if not isinstance(obj, dict):
        return [Problem(prefix, f"expected an object for {cls.__name__}", show_value(obj))]
    problems: list[Problem] = []
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    for key in obj:
        if key != "type" and key not in fields:
            problems.append(Problem(join_path(prefix, key), f"unknown field for {cls.__name__}",
                                    show_value(obj[key])))
    for name, f in fields.items():
        if name not in obj:
            if f.required:
                problems.append(Problem(join_path(prefix, name), "required field is missing"))
            continue
        try:
            msgspec.convert(obj[name], type=f.type, strict=True)
        except msgspec.ValidationError as err:
            p = problem_from_msgspec(err, obj[name], join_path(prefix, name))
            problems.append(p)
    return problems


def semantic_problems(
    care: CareEventBase,
    *,
    occurred_at: dt.datetime | None,
    now: dt.datetime,
    prefix: str = "",
    tolerance: dt.timedelta = FUTURE_TOLERANCE,
) -> list[Problem]:
    """Checks that types cannot express, on an already typed payload."""
    problems: list[Problem] = []
    rid = getattr(care, "resident_id", None)
    if isinstance(rid, str):
        why = resident_id_problem(rid)
        if why is not None:
            problems.append(Problem(join_path(prefix, "resident_id"), why, show_value(rid)))
    birth = getattr(care, "birth_date", None)
    if isinstance(birth, dt.date) and birth > local_day(now):
        problems.append(Problem(join_path(prefix, "birth_date"), "is in the future", birth.isoformat()))
    if occurred_at is not None:
        problems += future_problems(join_path(prefix, "occurred_at"), occurred_at, now, tolerance)
    if isinstance(care, FollowUpRuleSet):
        problems += [Problem(join_path(prefix, "rule"), why) for why in rule_problems(care.rule)]
    if isinstance(care, SchoolCalendarSet):
        problems += [Problem(join_path(prefix, "calendar"), why) for why in calendar_problems(care.calendar)]
    if isinstance(care, EventCorrected) and care.replacement is not None:
        if type(care.replacement) is EventCorrected:
            problems.append(Problem(join_path(prefix, "replacement.type"), "a correction cannot replace a correction"))
        problems += semantic_problems(
            care.replacement, occurred_at=care.replacement_occurred_at, now=now,
            prefix=join_path(prefix, "replacement"), tolerance=tolerance,
        )
    return problems


def future_problems(
    field: str, value: dt.datetime, now: dt.datetime, tolerance: dt.timedelta = FUTURE_TOLERANCE
) -> list[Problem]:
    if value <= now + tolerance:
        return []
    return [Problem(field, f"is more than {tolerance} in the future (now is {now.isoformat(timespec='seconds')})",
                    value.isoformat())]


def based_on_problems(based_on: dict[str, str], prefix: str = "based_on") -> list[Problem]:
    return [
        Problem(f"{prefix}.{key}", "not an archive field", show_value(key))
        for key in based_on
        if key not in ARCHIVE_FIELDS
    ]


def known_type(name: str) -> type[CareEventBase] | None:
    return EVENT_TYPES.get(name)
