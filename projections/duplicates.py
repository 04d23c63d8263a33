"""Candidate duplicate archives: the same child registered twice (at two sites, say).

A pair is a candidate when both archives are unmerged and share a resident ID, or the same
name, birth date and household village (`proj.duplicate`, a view over the archives, so it is
always current). A person settles it by recording `ArchivesMerged` (the merged child's history
joins the kept one); `ArchivesUnmerged` reverses that, and the pair is a candidate again.
"""

from __future__ import annotations

import asyncpg
import msgspec

from projections import tables


class DuplicatePair(msgspec.Struct, frozen=True, kw_only=True):
    child_a: str
    child_b: str
    reason: str  # resident_id | name_birth_village


async def duplicates(pool: asyncpg.Pool, scope: str = "") -> list[DuplicatePair]:
    """Candidate pairs where either child belongs to `scope` (township or region; '' for all)."""
    township = ".".join(scope.split(".")[:2]) if scope else ""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT DISTINCT child_a, child_b, reason FROM {tables.SCHEMA}.duplicate
                 WHERE $1 = '' OR EXISTS (SELECT 1 FROM unnest(townships) t WHERE t = $1 OR t LIKE $1 || '.%')
                 ORDER BY child_a, child_b, reason""", township)
    return [DuplicatePair(child_a=r["child_a"], child_b=r["child_b"], reason=r["reason"]) for r in rows]
