"""PostgreSQL connections with the codecs the store relies on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
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
    conn: asyncpg.Connection = await asyncpg.connect(url, **kwargs)
    await _init_connection(conn)
    return conn


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pools' reset on release: nothing beyond what asyncpg always does (roll back a
    transaction left open, forget the connection's listeners). Its default reset would add a
    round trip per release (RESET ALL, UNLISTEN *, advisory unlock, CLOSE ALL) for session state
    this project never leaves on a pooled connection: settings are SET LOCAL or function-level,
    advisory locks are transaction-scoped, a LISTEN is undone before its connection goes back
    (projections.runner), cursors live inside transactions. Keep it so: a plain SET, a session
    advisory lock or a LISTEN left behind would leak into the next user of the connection.
    It was a third of the server's time per single-event append."""


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 8, **kwargs: Any) -> asyncpg.Pool:
    kwargs.setdefault("reset", keep_session)
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, **kwargs
    )


@contextlib.asynccontextmanager
async def pool_for(url: str, *, max_size: int = 2,
                   prepare: Callable[[asyncpg.Connection], Awaitable[object]] | None = None,
                   ) -> AsyncIterator[asyncpg.Pool]:
    """A command's pool: `prepare` (e.g. store.migrate.migrate) runs first on a connection of its
    own, closed before the pool opens; the pool is closed however the block ends. A server that
    cannot be reached raises asyncpg's or the OS's error unchanged: `shouwang` turns those into
    its one-line "cannot reach" message."""
    if prepare is not None:
        conn = await connect(url)
        try:
            await prepare(conn)
        finally:
            await conn.close()
    pool = await create_pool(url, min_size=1, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()
