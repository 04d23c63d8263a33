"""The event catalogue: care events, their envelope, codecs, validation and wire formats.

Imported by every other package; imports none of them.
"""

from events.catalogue import ARCHIVE_FIELDS, EVENT_TYPES, CareEvent, CareEventBase
from events.envelope import (
    GENESIS_HASH,
    DecodedEvent,
    Draft,
    Event,
    care_of,
    decode_event,
    encode_event,
    encode_event_msgpack,
    encode_payload,
    event_hash,
    parse_drafts,
    seal,
    validate_event,
)
from events.validation import EventError, Problem, ValidationFailed

__all__ = [
    "ARCHIVE_FIELDS",
    "EVENT_TYPES",
    "GENESIS_HASH",
    "CareEvent",
    "CareEventBase",
    "DecodedEvent",
    "Draft",
    "Event",
    "EventError",
    "Problem",
    "ValidationFailed",
    "care_of",
    "decode_event",
    "encode_event",
    "encode_event_msgpack",
    "encode_payload",
    "event_hash",
    "parse_drafts",
    "seal",
    "validate_event",
]
