"""Concurrent look-ups of the same kind share one query.

Every request needs its token looked up, and every rollup the projections' checkpoint and its
sites' freshness: one round trip each, which at 50 concurrent clients was most of a cached
rollup's cost. :class:`Batched` gathers the keys asked for while no query of its kind is
running and sends them in one statement (``= ANY($1)``); keys asked for while a query runs wait
for the next one. So each look-up is answered by a query that *started after it was asked*: it
sees everything committed before its request arrived (a token revoked a moment ago is refused,
exactly as with a query of its own), nothing is cached between requests, and one client alone
waits for one query, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batched(Generic[K, V]):
    """`get(key)` answers from `fetch(keys)`, a query for many keys at once (keys it does not
    return answer None). At most one query runs at a time per instance."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch = fetch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="api-batched-lookup")
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    found = await self._fetch(list(batch))
                except asyncio.CancelledError:
                    for futures in batch.values():
                        for f in futures:
                            f.cancel()
                    raise
                except Exception as err:  # each waiting request fails as its own query would have
                    for futures in batch.values():
                        for f in futures:
                            if not f.done():
                                f.set_exception(err)
                    continue
                for key, futures in batch.items():
                    value = found.get(key)
                    for f in futures:
                        if not f.done():  # a request cancelled meanwhile
                            f.set_result(value)
        finally:
            self._runner = None
            for futures in self._waiting.values():  # cancelled while more were waiting
                for f in futures:
                    f.cancel()
            self._waiting = {}
