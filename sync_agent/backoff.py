"""Capped exponential backoff with full jitter, for retrying what is transient."""

from __future__ import annotations

import random


class Backoff:
    """Delays base, 2*base, 4*base ... up to cap, each drawn uniformly from [delay/2, delay].

    The jitter keeps fifty sites that lost the line at the same moment from all retrying in
    the same second when it comes back.
    """

    def __init__(self, base: float = 0.2, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0
