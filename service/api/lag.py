"""How far the projections are behind the store, in seconds."""

from __future__ import annotations

import asyncpg

from projections.runner import lag


async def projection_lag(pool: asyncpg.Pool) -> float | None:
    """Seconds the oldest event not yet projected has waited (0 when caught up)."""
    return (await lag(pool)).seconds_behind
