"""Hybrid logical clock for `recorded_at`.

A timestamp is one 64-bit integer: the physical part in Unix milliseconds shifted left by 16
bits, plus a 16-bit logical counter. Integers compare and sort cheaply everywhere (SQLite,
PostgreSQL, msgspec) and the order is total once the site id breaks ties. The site's wall
clock is untrusted (it may be days off); the HLC only promises that an event recorded after
another one it knew of has a larger timestamp, which is what field merges need.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def pack(physical_ms: int, logical: int) -> int:
    return (physical_ms << LOGICAL_BITS) | logical


def unpack(ts: int) -> tuple[int, int]:
    return ts >> LOGICAL_BITS, ts & _LOGICAL_MASK


def to_datetime(ts: int) -> dt.datetime:
    """The physical part as an aware UTC datetime (for display only)."""
    return dt.datetime.fromtimestamp((ts >> LOGICAL_BITS) / 1000, tz=dt.UTC)


class HybridClock:
    """Issues monotonically increasing HLC timestamps; `observe` merges a remote one."""

    def __init__(self, last: int = 0, wall_ms: Callable[[], int] | None = None) -> None:
        self._last = last
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        physical, logical = unpack(self._last)
        wall = self._wall_ms()
        if wall > physical:
            self._last = pack(wall, 0)
        elif logical < _LOGICAL_MASK:
            self._last = pack(physical, logical + 1)
        else:  # counter exhausted within one millisecond: step the physical part
            self._last = pack(physical + 1, 0)
        return self._last

    def observe(self, remote: int) -> None:
        """Make every later `now()` exceed `remote` (an event this site has now seen)."""
        if remote > self._last:
            self._last = remote
