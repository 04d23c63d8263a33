"""The connection type that store, projection and service functions take.

Callers hand these functions either a connection of their own (`asyncpg.connect`) or one
borrowed from a pool (`pool.acquire()`), which asyncpg wraps in a proxy with the same methods
but no common base class; the annotation names both so that the type checker sees what runs.
"""
from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
