"""Which sites look after which child: the fan-out scope, kept in the ingest transaction.

A child's scope is its village station and its school (named by ChildRegistered, moved by
ChildTransferred; a registering station or school that names no site of its own kind holds
that role itself), the sites of any child whose archive was merged with it (ArchivesMerged,
until ArchivesUnmerged), and the township office sites of the townships of all of those.

Rows are versioned by the ingest transaction that changed them (``pg_current_xact_id()``), the
same number the store's global order starts with, so the fan-out, which reads events in
(tx_id, position) order, asks "who was in scope at this event" and "who entered the scope in
this transaction" (they get the child's history). Several changes of one child within one
transaction all count as in scope for that transaction's events: a superset, never a miss.
Conflicting changes are applied in commit order (a scope follows the last transfer committed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from events.catalogue import ArchivesMerged, ArchivesUnmerged, ChildRegistered, ChildTransferred
from events.envelope import DecodedEvent
from events.types import scope_role
from store.conn import Conn

ROLES = ("village", "school")


async def apply_scope(conn: Conn, stored: Sequence[DecodedEvent], kinds: dict[str, str]) -> int:
    """Update the scope for the events just stored in this transaction (in batch order);
    `kinds` maps each sending site to its kind. Returns how many changes were made."""
    changes = 0
    for d in stored:
        care = d.care
        if isinstance(care, ChildRegistered):
            named = {"village": care.village_site, "school": care.school_site}
            origin_role = scope_role(kinds.get(d.event.site_id))  # a community lives-in as a village does
            if origin_role is not None and named[origin_role] is None:
                named[origin_role] = d.event.site_id
            for role, site in named.items():
                if site is not None:
                    changes += await _set_role(conn, care.child_id, role, site, d.event.event_id)
        elif isinstance(care, ChildTransferred):
            for role, site in (("village", care.to_village_site), ("school", care.to_school_site)):
                if site is not None:
                    changes += await _set_role(conn, care.child_id, role, site, d.event.event_id)
        elif isinstance(care, ArchivesMerged):
            changes += await _link(conn, care.kept_child_id, care.merged_child_id, d.event.event_id)
        elif isinstance(care, ArchivesUnmerged):
            changes += await _unlink(conn, care.kept_child_id, care.merged_child_id)
    return changes


async def _set_role(conn: Conn, child_id: str, role: str, site_id: str, event_id: str) -> int:
    current = await conn.fetchval(
        "SELECT site_id FROM child_scope WHERE child_id = $1 AND role = $2 AND until_tx IS NULL", child_id, role
    )
    if current == site_id:
        return 0
    await conn.execute(
        """UPDATE child_scope SET until_tx = pg_current_xact_id()::text::bigint
           WHERE child_id = $1 AND role = $2 AND until_tx IS NULL""", child_id, role,
    )
    await conn.execute(
        """INSERT INTO child_scope (child_id, role, site_id, from_tx, from_event)
           VALUES ($1, $2, $3, pg_current_xact_id()::text::bigint, $4)""", child_id, role, site_id, event_id,
    )
    return 1


async def _link(conn: Conn, a: str, b: str, event_id: str) -> int:
    if a == b:
        return 0
    await conn.execute(
        """INSERT INTO child_links (child_id, linked_child_id, from_tx, from_event)
           SELECT x, y, pg_current_xact_id()::text::bigint, $3 FROM (VALUES ($1, $2), ($2, $1)) AS v(x, y)
           WHERE NOT EXISTS (SELECT 1 FROM child_links l WHERE l.child_id = v.x AND l.linked_child_id = v.y
                             AND l.until_tx IS NULL)""",
        a, b, event_id,
    )
    return 1


async def _unlink(conn: Conn, a: str, b: str) -> int:
    await conn.execute(
        """UPDATE child_links SET until_tx = pg_current_xact_id()::text::bigint
           WHERE until_tx IS NULL
             AND ((child_id = $1 AND linked_child_id = $2) OR (child_id = $2 AND linked_child_id = $1))""",
        a, b,
    )
    return 1


@dataclass(frozen=True, slots=True)
class _Span:
    value: str
    from_tx: int
    until_tx: int | None

    def at(self, tx: int) -> bool:
        return self.from_tx <= tx and (self.until_tx is None or self.until_tx >= tx)

    def before(self, tx: int) -> bool:
        return self.from_tx < tx and (self.until_tx is None or self.until_tx >= tx)


@dataclass(slots=True)
class ScopeView:
    """The scope history of some children, loaded at once for a page of events."""

    sites: dict[str, list[_Span]] = field(default_factory=dict)
    links: dict[str, list[_Span]] = field(default_factory=dict)

    def linked(self, child_id: str, tx: int, *, before: bool = False) -> set[str]:
        spans = self.links.get(child_id, [])
        return {s.value for s in spans if (s.before(tx) if before else s.at(tx))}

    def sites_of(self, child_id: str, tx: int, *, before: bool = False) -> set[str]:
        """Village and school sites of the child and of children merged with it, at tx."""
        out: set[str] = set()
        for c in {child_id, *self.linked(child_id, tx, before=before)}:
            out.update(s.value for s in self.sites.get(c, []) if (s.before(tx) if before else s.at(tx)))
        return out


async def load_scope(conn: Conn, children: Iterable[str]) -> ScopeView:
    """Scope rows of these children and of every child ever linked to them."""
    ids = sorted(set(children))
    view = ScopeView()
    if not ids:
        return view
    links = await conn.fetch(
        "SELECT child_id, linked_child_id, from_tx, until_tx FROM child_links WHERE child_id = ANY($1)", ids
    )
    for r in links:
        view.links.setdefault(r["child_id"], []).append(_Span(r["linked_child_id"], r["from_tx"], r["until_tx"]))
    all_ids = sorted(set(ids) | {r["linked_child_id"] for r in links})
    rows = await conn.fetch(
        "SELECT child_id, site_id, from_tx, until_tx FROM child_scope WHERE child_id = ANY($1)", all_ids
    )
    for r in rows:
        view.sites.setdefault(r["child_id"], []).append(_Span(r["site_id"], r["from_tx"], r["until_tx"]))
    return view
