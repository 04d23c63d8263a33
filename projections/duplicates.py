"""Candidate duplicate archives: the same child registered twice (at two sites, say).

A pair is a candidate when both archives are unmerged and share a resident ID, or the same
name, birth date and household village (`proj.duplicate`, a view over the archives, so it is
always current). A person settles it by recording `ArchivesMerged` (the merged child's history
joins the kept one); `ArchivesUnmerged` reverses that, and the pair is a candidate again. Or by
recording `DuplicateDismissed` (two different children): the pair is never proposed again, since
each archive keeps the other in `not_same_as` (a rebuild derives the same).
"""

from __future__ import annotations

import asyncpg
import msgspec

from projections import tables
from projections.archive import decode_archive
from store.conn import Conn


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
        dismissed = await dismissed_pairs(conn, {(r["child_a"], r["child_b"]) for r in rows})
    return [DuplicatePair(child_a=r["child_a"], child_b=r["child_b"], reason=r["reason"]) for r in rows
            if (r["child_a"], r["child_b"]) not in dismissed]


async def dismissed_pairs(conn: Conn, pairs: set[tuple[str, str]],
                          schema: str = tables.SCHEMA) -> set[tuple[str, str]]:
    """Those of `pairs` a person recorded as two different children (`DuplicateDismissed`)."""
    if not pairs:
        return set()
    ids = sorted({x for pair in pairs for x in pair})
    rows = await conn.fetch(f"SELECT child_id, view FROM {tables.check_schema(schema)}.archive "
                            "WHERE child_id = ANY($1::text[])", ids)
    not_same = {r["child_id"]: set(decode_archive(bytes(r["view"])).not_same_as) for r in rows}
    return {(a, b) for a, b in pairs if b in not_same.get(a, ()) or a in not_same.get(b, ())}
