"""The site's wall clock, as the hybrid logical clock reads it for `recorded_at`.

Site clocks are untrusted and may be days off (docs/ARCHITECTURE.md, "Time"). To test that nothing
depends on them being right, ``SHOUWANG_CLOCK_SKEW_SECONDS`` (a whole number, negative for a
clock that is behind) shifts the wall clock the agent's HLC reads. It changes only the physical
part of `recorded_at`; `occurred_at` is what a person entered, and every validation against
"now" keeps using the real time. Used by the fault-injection harness (tests/chaos); unset in
production.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

SKEW_KEY = "SHOUWANG_CLOCK_SKEW_SECONDS"
MAX_SKEW_SECONDS = 10 * 365 * 24 * 3600


class ClockSettingError(ValueError):
    """SHOUWANG_CLOCK_SKEW_SECONDS has an invalid value; the message names the key and value."""


def skew_seconds(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    raw = env.get(SKEW_KEY, "").strip()
    if not raw:
        return 0
    try:
        skew = int(raw)
    except ValueError:
        raise ClockSettingError(f"{SKEW_KEY}={raw!r}: expected a whole number of seconds") from None
    if abs(skew) > MAX_SKEW_SECONDS:
        raise ClockSettingError(f"{SKEW_KEY}={raw!r}: at most {MAX_SKEW_SECONDS} seconds either way")
    return skew


def site_wall_ms(env: Mapping[str, str] | None = None) -> Callable[[], int]:
    """The wall clock in Unix milliseconds, shifted by the configured skew (read once)."""
    offset = skew_seconds(env) * 1000
    if not offset:
        return lambda: time.time_ns() // 1_000_000
    return lambda: time.time_ns() // 1_000_000 + offset
