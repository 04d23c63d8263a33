"""Open (and settled) conflicts between concurrent updates of one archive field.

Detected by the pure reducer (projections.archive: heads of a field's updates that disagree);
kept in `proj.conflict`; closed by a `ConflictResolved` event a person records.
"""

from __future__ import annotations

import asyncpg
import msgspec

from projections import tables


class ConflictRow(msgspec.Struct, frozen=True, kw_only=True):
    child_id: str
    field: str
    heads: list[str]  # the concurrent update events
    winner: str  # the one the archive shows until someone settles it
    resolved_by: str | None


async def conflicts(pool: asyncpg.Pool, scope: str = "", *, open_only: bool = True) -> list[ConflictRow]:
    """Conflicts of children in `scope` (a site, township, region or '' for all)."""
    where = ["true"]
    args: list[object] = []
    if open_only:
        where.append("k.resolved_by = ''")
    if scope.count(".") == 2:
        args.append(scope)
        where.append("a.sites @> ARRAY[$1]::text[]")
    elif scope:
        args.append(scope)
        where.append("EXISTS (SELECT 1 FROM unnest(a.townships) t WHERE t = $1 OR t LIKE $1 || '.%')")
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT k.child_id, k.field, k.heads, k.winner, k.resolved_by
                  FROM {tables.SCHEMA}.conflict k JOIN {tables.SCHEMA}.archive a USING (child_id)
                 WHERE {' AND '.join(where)} ORDER BY k.child_id, k.field, k.heads""", *args)
    return [ConflictRow(child_id=r["child_id"], field=r["field"], heads=list(r["heads"]), winner=r["winner"],
                        resolved_by=r["resolved_by"] or None) for r in rows]
