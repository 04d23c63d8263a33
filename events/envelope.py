"""The envelope every care event travels and is stored in, its hash chain, and its codecs.

Wire and storage form (JSON; MessagePack is accepted too)::

    {"event_id": "<uuid7>", "type": "HomeVisitMade", "schema_version": 1,
     "site_id": "gx-lp.xy.v03", "site_seq": 17, "actor": "staff-0007",
     "occurred_at": "2026-03-02T09:30:00Z", "recorded_at": <HLC int>,
     "prev_hash": "<64 hex>", "children": ["c-..."], "based_on": {"guardian": "<event id>"},
     "payload": {"type": "HomeVisitMade", "child_id": "c-...", "visitor": "..."}}

``payload`` is kept as the raw JSON the site sent, at the schema version it was written in,
so the store never rewrites history and the hash of an event can always be recomputed;
readers get the typed, upcast form through :func:`decode_event` / :func:`care_of`.

Hash chain (guarantee 8). ``event_hash`` is the SHA-256 of the *canonical form*: the envelope
as a JSON object with keys sorted, ``occurred_at`` in UTC, and the payload as its generic JSON
value (so key order and whitespace in transit do not matter). Each event's ``prev_hash`` is
the hash of the site's previous event (``GENESIS_HASH`` for ``site_seq`` 1), so removing or
altering any event breaks every later link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Any

import msgspec

from events.catalogue import EVENT_TYPES, CareEvent, CareEventBase
from events.ids import resident_id_problem
from events.types import ChildId, EventId, SiteId
from events.upcasters import UpcastError, upcast
from events.validation import (
    FUTURE_TOLERANCE,
    Problem,
    ValidationFailed,
    based_on_problems,
    collect_field_problems,
    future_problems,
    join_path,
    problem_from_msgspec,
    semantic_problems,
    show_value,
)

GENESIS_HASH = "0" * 64
MAX_EVENT_BYTES = 64 * 1024  # an event larger than this is refused before decoding

Hash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
TypeName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Za-z0-9]{1,63}$")]
ActorId = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9._@-]{1,64}$", description="Staff account that recorded it.")
]
FieldName = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One care event as recorded at a site: the envelope and its raw JSON payload."""

    event_id: EventId
    type: TypeName
    schema_version: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    site_id: SiteId
    site_seq: Annotated[int, msgspec.Meta(ge=1, le=2**62)]
    actor: ActorId
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    recorded_at: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    prev_hash: Hash
    children: Annotated[list[ChildId], msgspec.Meta(max_length=500)] = []
    based_on: Annotated[dict[FieldName, EventId], msgspec.Meta(max_length=32)] = {}
    payload: msgspec.Raw = msgspec.Raw(b"{}")


class _EventMsgpack(Event, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """MessagePack flavour: the payload arrives as a value and is re-encoded as JSON."""

    payload: Any = None


class DecodedEvent(msgspec.Struct, frozen=True):
    """An event that passed validation. ``care`` is the typed, upcast payload, or None when this
    code does not understand it (a type it does not know yet, or a newer schema version): such
    an event is still stored and chained, just not projected."""

    event: Event
    care: CareEvent | None
    hash: str
    understood: bool


_json_encoder = msgspec.json.Encoder()
_canonical_encoder = msgspec.json.Encoder(order="sorted")
_event_decoder = msgspec.json.Decoder(Event)
_event_msgpack_decoder = msgspec.msgpack.Decoder(_EventMsgpack)
_msgpack_encoder = msgspec.msgpack.Encoder()
_generic_json = msgspec.json.Decoder()
_care_decoder = msgspec.json.Decoder(CareEvent)
_care_decoders: dict[type[CareEventBase], msgspec.json.Decoder[Any]] = {
    cls: msgspec.json.Decoder(cls) for cls in EVENT_TYPES.values()
}


_UNSET: Any = object()


def canonical_bytes(event: Event, payload: Any = _UNSET) -> bytes:
    """The bytes an event's hash covers. `payload`: the payload already decoded generically, if
    the caller has it (validation does), so it is not decoded twice."""
    doc = {
        "event_id": event.event_id,
        "type": event.type,
        "schema_version": event.schema_version,
        "site_id": event.site_id,
        "site_seq": event.site_seq,
        "actor": event.actor,
        "occurred_at": event.occurred_at.astimezone(dt.UTC),
        "recorded_at": event.recorded_at,
        "prev_hash": event.prev_hash,
        "children": event.children,
        "based_on": event.based_on,
        "payload": _generic_json.decode(event.payload) if payload is _UNSET else payload,
    }
    return _canonical_encoder.encode(doc)


def event_hash(event: Event, payload: Any = _UNSET) -> str:
    return hashlib.sha256(canonical_bytes(event, payload)).hexdigest()


def encode_event(event: Event) -> bytes:
    return _json_encoder.encode(event)


def encode_event_msgpack(event: Event) -> bytes:
    as_value = msgspec.structs.replace(event, payload=msgspec.Raw(b"{}"))
    body = msgspec.structs.asdict(as_value)
    body["payload"] = _generic_json.decode(event.payload)
    return _msgpack_encoder.encode(body)


def encode_payload(care: CareEventBase) -> bytes:
    return _json_encoder.encode(care)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def decode_event(
    data: bytes,
    *,
    msgpack: bool = False,
    now: dt.datetime | None = None,
    tolerance: dt.timedelta = FUTURE_TOLERANCE,
) -> DecodedEvent:
    """Decode and validate one event from the wire. Raises ValidationFailed listing problems."""
    if len(data) > MAX_EVENT_BYTES:
        raise ValidationFailed([Problem("$", f"event is {len(data)} bytes, the limit is {MAX_EVENT_BYTES}")])
    try:
        if msgpack:
            mp = _event_msgpack_decoder.decode(data)
            body = msgspec.structs.asdict(mp)
            body["payload"] = msgspec.Raw(_json_encoder.encode(mp.payload))
            event = Event(**body)
        else:
            event = _event_decoder.decode(data)
    except msgspec.DecodeError as err:  # not JSON / not MessagePack at all, or truncated
        if isinstance(err, msgspec.ValidationError):
            raise ValidationFailed([_envelope_problem(err, data, msgpack)]) from None
        raise ValidationFailed([Problem("$", f"malformed {'MessagePack' if msgpack else 'JSON'}: {err}")]) from None
    except UnicodeDecodeError as err:  # MessagePack strings are not checked by the decoder itself
        raise ValidationFailed([Problem("$", f"a text field is not valid UTF-8: {err.reason} at byte {err.start}")]) \
            from None
    return validate_event(event, now=now, tolerance=tolerance)


def _envelope_problem(err: msgspec.ValidationError, data: bytes, msgpack: bool) -> Problem:
    try:
        generic = msgspec.msgpack.decode(data) if msgpack else _generic_json.decode(data)
    except msgspec.DecodeError:
        generic = None
    return problem_from_msgspec(err, generic)


def validate_event(
    event: Event, *, now: dt.datetime | None = None, tolerance: dt.timedelta = FUTURE_TOLERANCE
) -> DecodedEvent:
    """Validate the payload against the catalogue and the envelope against its payload."""
    now = now or _utcnow()
    cls = EVENT_TYPES.get(event.type)
    problems: list[Problem] = based_on_problems(event.based_on)
    problems += future_problems("occurred_at", event.occurred_at, now, tolerance)
    try:
        generic = _generic_json.decode(event.payload)
    except msgspec.DecodeError as err:
        raise ValidationFailed([*problems, Problem("payload", f"malformed JSON: {err}")]) from None
    if not isinstance(generic, dict):
        raise ValidationFailed([*problems, Problem("payload", "must be an object", show_value(generic))])
    raw_doc: Any = generic  # as sent: the hash covers it
    if generic.get("type", event.type) != event.type:
        problems.append(Problem("payload.type", f"does not match the envelope type {event.type!r}",
                                show_value(generic.get("type"))))
    if cls is None or event.schema_version > cls.SCHEMA_VERSION:
        # Kept, not understood: a newer agent may send what this center does not know yet.
        if problems:
            raise ValidationFailed(problems)
        return DecodedEvent(event, None, event_hash(event, raw_doc), False)
    care: CareEventBase | None = None
    if event.schema_version < cls.SCHEMA_VERSION:
        raw_doc = _UNSET  # an upcaster may change the dict in place: the hash decodes afresh
        try:
            generic = upcast(event.type, event.schema_version, cls.SCHEMA_VERSION, generic)
        except UpcastError as err:
            raise ValidationFailed([*problems, Problem("payload", str(err))]) from None
        try:
            care = msgspec.convert({**generic, "type": event.type}, type=cls)
        except msgspec.ValidationError:
            problems += collect_field_problems(cls, generic, "payload")
    else:
        try:
            care = _care_decoders[cls].decode(event.payload)
        except msgspec.ValidationError:
            problems += collect_field_problems(cls, generic, "payload")
    if care is not None:
        problems += semantic_problems(care, occurred_at=None, now=now, prefix="payload", tolerance=tolerance)
        expected = set(care.child_ids())
        if set(event.children) != expected:
            problems.append(Problem("children", f"must list the payload's children {sorted(expected)}",
                                    show_value(event.children)))
    if problems:
        raise ValidationFailed(problems)
    return DecodedEvent(event, care, event_hash(event, raw_doc), True)  # type: ignore[arg-type]


def care_of(event: Event) -> CareEvent | None:
    """The typed, upcast payload of a stored event (trusted input), or None if not understood."""
    cls = EVENT_TYPES.get(event.type)
    if cls is None or event.schema_version > cls.SCHEMA_VERSION:
        return None
    if event.schema_version == cls.SCHEMA_VERSION:
        return _care_decoders[cls].decode(event.payload)  # type: ignore[no-any-return]
    generic = upcast(event.type, event.schema_version, cls.SCHEMA_VERSION, _generic_json.decode(event.payload))
    return msgspec.convert({**generic, "type": event.type}, type=cls)  # type: ignore[return-value]


# --- drafts: what a person or a station app submits for recording ----------------------


class Draft(msgspec.Struct, frozen=True):
    """A care event before the site has given it an id, a sequence number and a hash."""

    care: CareEvent
    occurred_at: dt.datetime
    actor: str | None = None
    based_on: dict[str, str] | None = None


_DRAFT_ENVELOPE_KEYS = ("occurred_at", "actor", "based_on")
_OccurredAt = Annotated[dt.datetime, msgspec.Meta(tz=True)]


def parse_drafts(data: bytes, *, now: dt.datetime | None = None) -> list[Draft]:
    """Parse one draft or a list of drafts (JSON). Every problem of every draft is listed, with
    list indexes in field paths ("[2].resident_id"); if any draft is bad none is returned."""
    now = now or _utcnow()
    try:
        raw = _generic_json.decode(data)
    except msgspec.DecodeError as err:
        raise ValidationFailed([Problem("$", f"malformed JSON: {err}")]) from None
    except RecursionError:  # e.g. "[[[[..." thousands deep: refused like any malformed input
        raise ValidationFailed([Problem("$", "malformed JSON: nested too deeply")]) from None
    nul = _nul_problem(raw)
    if nul is not None:
        raise ValidationFailed([nul])
    single = isinstance(raw, dict)
    items = [raw] if single else raw
    if not isinstance(items, list):
        raise ValidationFailed([Problem("$", "expected an event object or a list of them", show_value(raw))])
    if not items:
        raise ValidationFailed([Problem("$", "the list of events is empty")])
    if len(items) > 10_000:
        raise ValidationFailed([Problem("$", f"{len(items)} events in one batch, the limit is 10000")])
    drafts: list[Draft] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        prefix = "" if single else f"[{i}]"
        draft, found = _parse_one(item, prefix, now)
        problems += found
        if draft is not None:
            drafts.append(draft)
    if problems:
        raise ValidationFailed(problems)
    return drafts


def _nul_problem(raw: Any) -> Problem | None:
    """The first text holding a NUL character (U+0000), which PostgreSQL's jsonb cannot store:
    a draft accepted with one would be sealed at the site and then refused by the center."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return Problem(path or "$", "text must not contain a NUL character (\\u0000)", show_value(value))
        elif isinstance(value, dict):
            for k, v in value.items():
                if "\x00" in k:
                    return Problem(path or "$", "a field name must not contain a NUL character (\\u0000)",
                                   show_value(k))
                stack.append((join_path(path, k), v))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


def _parse_one(item: Any, prefix: str, now: dt.datetime) -> tuple[Draft | None, list[Problem]]:
    def at(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if not isinstance(item, dict):
        return None, [Problem(prefix or "$", "expected an event object", show_value(item))]
    body = dict(item)
    env = {k: body.pop(k) for k in _DRAFT_ENVELOPE_KEYS if k in body}
    problems: list[Problem] = []
    type_name = body.get("type")
    cls = EVENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        return None, [Problem(at("type"), f"unknown event type; one of: {', '.join(sorted(EVENT_TYPES))}",
                              show_value(type_name))]
    occurred: dt.datetime | None = None
    if "occurred_at" not in env:
        problems.append(Problem(at("occurred_at"), "required field is missing"))
    else:
        try:
            occurred = msgspec.convert(env["occurred_at"], type=_OccurredAt)
        except msgspec.ValidationError as err:
            problems.append(problem_from_msgspec(err, env["occurred_at"], at("occurred_at")))
    actor = env.get("actor")
    if actor is not None and not isinstance(actor, str):
        problems.append(Problem(at("actor"), "must be a string", show_value(actor)))
    based_on = env.get("based_on")
    if based_on is not None:
        try:
            based_on = msgspec.convert(based_on, type=dict[FieldName, EventId])
            problems += based_on_problems(based_on, at("based_on"))
        except msgspec.ValidationError as err:
            problems.append(problem_from_msgspec(err, based_on, at("based_on")))
    if occurred is not None:
        problems += future_problems(at("occurred_at"), occurred, now)
    care: CareEventBase | None = None
    try:
        care = msgspec.convert(body, type=cls)
    except msgspec.ValidationError:
        problems += collect_field_problems(cls, body, prefix)
        # Still tell the person about a mistyped ID in the same pass, not on the next try.
        rid = body.get("resident_id")
        if isinstance(rid, str) and len(rid) == 18 and not any(p.field == at("resident_id") for p in problems):
            why = resident_id_problem(rid)
            if why is not None:
                problems.append(Problem(at("resident_id"), why, show_value(rid)))
    if care is not None:
        problems += semantic_problems(care, occurred_at=None, now=now, prefix=prefix)
    if problems or care is None or occurred is None:
        return None, problems
    return Draft(care=care, occurred_at=occurred, actor=actor, based_on=based_on), []  # type: ignore[arg-type]


def decode_care(data: bytes) -> CareEvent:
    """Decode a bare tagged payload (trusted input)."""
    care: CareEvent = _care_decoder.decode(data)
    return care


def seal(
    care: CareEventBase,
    *,
    site_id: str,
    site_seq: int,
    prev_hash: str,
    recorded_at: int,
    occurred_at: dt.datetime,
    actor: str,
    event_id: str,
    based_on: dict[str, str] | None = None,
) -> DecodedEvent:
    """Give a payload its place in a site's log: the envelope, the link to the previous event,
    and its own hash. The site agent seals every event it records with this; so do tests."""
    event = Event(
        event_id=event_id,
        type=type(care).__name__,
        schema_version=type(care).SCHEMA_VERSION,
        site_id=site_id,
        site_seq=site_seq,
        actor=actor,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        prev_hash=prev_hash,
        children=list(care.child_ids()),
        based_on=based_on or {},
        payload=msgspec.Raw(encode_payload(care)),
    )
    return DecodedEvent(event, care, event_hash(event), True)  # type: ignore[arg-type]
