"""The projector's full garbage collections, at quiet moments instead of in the middle of a batch.

A projector keeps its cache between batches (projections/hot.py): at 10,000 archives and their
structural entries, some 450,000 objects that CPython's collector tracks. CPython runs a full
collection by itself whenever the objects that survived the young collections reach a quarter
of those already old; a projector under load replaces a thousand archives a batch, so that comes
every few dozen batches and walks the whole cache, inside whichever batch is running: 200-600 ms
at 1M events (measured with gc.callbacks in `projections run`; bench/README.md, "Projection lag
under load"), and about a third of the projector's CPU at 2,000 events/s. It finds almost
nothing: the cache holds no reference cycles (what it drops is freed by reference counting).

`QuietCollector` turns CPython's automatic full collection off for the process (the young
generations are still collected automatically, so the cycles of short-lived objects, such as
asyncio's and asyncpg's, are freed as before) and runs the full collection itself, from the
runner's loop (`Runner.run`):
* when the runner has nothing to apply, once `every` seconds have passed since the last one;
* between two batches, once `at_most` seconds have passed, if the runner is never idle that long
  (sustained load), so that cycles among long-lived objects are still freed.

Used by `shouwang projections run` (a process of its own, as `center run` starts it); the
setting is process-wide, so it is entered there and restored on exit.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from types import TracebackType

EVERY = 60.0  # seconds: a full collection when idle at most this often
AT_MOST = 900.0  # seconds: a full collection between batches even when busy, at least this often
_NEVER = 2**31 - 1  # a threshold the count of young collections never reaches


class QuietCollector:
    """Full collections when the runner says it is quiet (see the module's docstring)."""

    def __init__(self, every: float = EVERY, at_most: float = AT_MOST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < every <= at_most:
            raise ValueError(f"need 0 < every <= at_most, got every={every}, at_most={at_most}")
        self.every = every
        self.at_most = at_most
        self._clock = clock
        self._saved: tuple[int, int, int] | None = None
        self._last = clock()
        self.passes = 0  # full collections run
        self.seconds = 0.0  # time they took, in all
        self.longest = 0.0
        self.freed = 0  # unreachable objects they found

    def __enter__(self) -> QuietCollector:
        young, middle, _ = self._saved = gc.get_threshold()
        gc.set_threshold(young, middle, _NEVER)
        self._last = self._clock()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def due(self, idle: bool) -> bool:
        waited = self._clock() - self._last
        return waited >= self.at_most or (idle and waited >= self.every)

    def maybe_collect(self, idle: bool) -> bool:
        """Run a full collection if one is due (`idle`: the runner has nothing to apply now)."""
        if not self.due(idle):
            return False
        start = time.perf_counter()
        self.freed += gc.collect()
        took = time.perf_counter() - start
        self.passes += 1
        self.seconds += took
        self.longest = max(self.longest, took)
        self._last = self._clock()
        return True
