"""How far the projections are behind the store, in seconds (None when they keep no checkpoint)."""

from __future__ import annotations

import asyncpg


async def projection_lag(pool: asyncpg.Pool) -> float | None:
    async with pool.acquire() as conn:
        table = await conn.fetchval("SELECT to_regclass('projection_checkpoints')::text")
        if table is None:
            return None
        value = await conn.fetchval(
            """SELECT coalesce(extract(epoch FROM (SELECT max(committed_at) FROM events)
                                       - min(c.committed_at)), 0)::float8
               FROM projection_checkpoints c""")
    return max(0.0, float(value or 0.0))
