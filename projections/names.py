"""How the summary and the figures name a scope and its sites: by the names they were registered
with (the `sites` registry), never by their ids, on every page and document people read.

A site is its registered name; a township the township name its sites were registered with (its
office's first), else its office's site name (as projections.county names a county's townships);
a region has no registered name, so it is called the county (全县) in the language asked.
"""

from __future__ import annotations

import asyncpg
import msgspec

from projections.county import SiteOfRegion, township_names

REGION_WORDS = ("全县", "the county")


class ScopeNames(msgspec.Struct, frozen=True):
    scope: str
    name: str  # the scope's own name, in the language asked
    sites: dict[str, str]  # every registered site of the scope -> its name
    townships: dict[str, str]  # every township with a registered site in the scope -> its name
    kinds: dict[str, str]  # every active registered site of the scope -> its kind (village, school...)


async def scope_names(pool: asyncpg.Pool, scope: str, lang: str = "zh") -> ScopeNames:
    """The name of `scope` (a site, a township or a region) and of each of its registered sites."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT site_id, kind, name, township, active FROM sites
                WHERE site_id = $1 OR starts_with(site_id, $1 || '.') ORDER BY site_id""", scope)
    sites = [SiteOfRegion(site_id=r["site_id"], kind=r["kind"], name=r["name"], township_name=r["township"],
                          active=True, last_committed_at=None, newest_occurred_at=None) for r in rows]
    names = {s.site_id: s.name for s in sites}
    towns = township_names(sites)
    dots = scope.count(".")
    if dots == 2:
        name = names.get(scope, scope)
    elif dots == 1:
        name = towns.get(scope, scope)
    else:
        name = REGION_WORDS[1] if lang == "en" else REGION_WORDS[0]
    kinds = {r["site_id"]: r["kind"] for r in rows if r["active"]}
    return ScopeNames(scope=scope, name=name, sites=names, townships=towns, kinds=kinds)
