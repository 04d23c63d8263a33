"""Identifiers made at the site: UUIDv7 event ids, child and reference ids, resident ID checks."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits.

    Within one millisecond the 74 random bits are incremented rather than redrawn, so ids made
    by one process are strictly increasing; that keeps B-tree inserts at the right edge.
    """
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_rand + 1
            if rand >= 1 << 74:  # exhausted within a millisecond: borrow the next one
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big") >> 6
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 6
        _last_ms, _last_rand = ms, rand
    rand_a = rand >> 62  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def new_event_id() -> str:
    return str(uuid7())


def new_child_id() -> str:
    return "c-" + uuid7().hex


def new_ref_id(prefix: str) -> str:
    """An id for a pairing ('p'), rights case ('rc') or activity ('a')."""
    return f"{prefix}-{uuid7().hex}"


_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def resident_id_problem(value: str) -> str | None:
    """Why a resident ID number is invalid, or None. Format is checked by the type already."""
    if len(value) != 18 or not value[:17].isdigit():
        return "must be 17 digits and a check digit or X"
    expected = resident_id_check_char(value[:17])
    if value[17] != expected:
        return f"check digit is {value[17]!r}, GB 11643 gives {expected!r}: a digit is probably mistyped"
    try:
        dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return f"birth date part {value[6:14]!r} is not a real date"
    return None


def mask_resident_id(value: str | None) -> str | None:
    """Masked form for lists and logs: region prefix and check digit kept, the birth date hidden."""
    if value is None:
        return None
    if len(value) < 8:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 5) + value[-2:]
