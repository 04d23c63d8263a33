"""PostgreSQL connections with the codecs the store relies on."""

from __future__ import annotations

from typing import Any

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as raw JSON bytes both ways: the ingester stores the payload a site sent
    # without re-encoding it, and readers hand the bytes straight to msgspec.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda b: b"\x01" + bytes(b),
        decoder=lambda b: b[1:],
        format="binary",
    )


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, **kwargs)
    await _init_connection(conn)
    return conn


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 8, **kwargs: Any) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, **kwargs
    )
