"""Facts: one row per counted piece of work (a visit, a call, aid, an activity...), after
corrections. The rollups count work from facts and children from archives (FIGURES.md).

A fact is keyed by the id of the event it counts (the original's id, even when a correction
replaced its payload); a retracted event has no fact. `facts_of` gives the same fact for an
event from any state that holds it, because a state always holds a whole correction family.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Container, Iterable
from typing import Any

import msgspec

from events import catalogue as c
from events import traits
from projections.archive import Effective, Entry, effective

# Event types that are work the township counts, and the kind name each fact gets (the `fact`
# column of events.traits).
COUNTED: dict[str, str] = {name: t.fact for name, t in traits.BY_NAME.items() if t.fact is not None}


class Fact(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    kind: str
    site_id: str
    occurred_at: dt.datetime
    children: list[str] = []
    amount_fen: int = 0  # aid: the amount; condolence: money for all children covered
    count: int = 0  # attendees, participants, guardians attended, minutes of tutoring/counselling
    source: str | None = None  # aid source
    detail: str | None = None  # aid kind, occasion, activity/meeting kind, severity, case kind/outcome, partner

    @property
    def township(self) -> str:
        return township_of(self.site_id)


@functools.lru_cache(maxsize=4096)
def township_of(site_id: str) -> str:
    """'region.township.site' -> 'region.township'."""
    return site_id[:site_id.rfind(".")]


def in_scope(site_id: str, scope: str) -> bool:
    """A scope is '' (everything), a region, a township ('region.township') or a site id."""
    return not scope or site_id == scope or site_id.startswith(scope + ".")


_COUNTED_TYPES: dict[type[c.CareEventBase], str] = {c.EVENT_TYPES[name]: kind for name, kind in COUNTED.items()}


def fact_of(care: c.CareEventBase, event_id: str, site_id: str, occurred_at: dt.datetime) -> Fact | None:
    kind = _COUNTED_TYPES.get(type(care))
    if kind is None:
        return None
    amount, count, source, detail = traits.measure(care)
    return Fact(event_id=event_id, kind=kind, site_id=site_id, occurred_at=occurred_at,
                children=sorted(care.child_ids()), amount_fen=amount, count=count, source=source, detail=detail)


def fact_row_of(care: c.CareEventBase, event_id: str, site_id: str, occurred_at: dt.datetime) -> tuple[Any, ...] | None:
    """`tables.fact_row(fact_of(...))` without the Fact in between (a rebuild writes millions)."""
    kind = _COUNTED_TYPES.get(type(care))
    if kind is None:
        return None
    amount, count, source, detail = traits.measure(care)
    return (event_id, kind, site_id, township_of(site_id), occurred_at, sorted(care.child_ids()), amount, count,
            source, detail)


def _plain(cls: type) -> bool:
    """A counted type about one child (a required `child_id`) with no measure: its row is its kind alone."""
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    return (traits.TRAITS[cls].measure is None
            and "child_id" in fields and fields["child_id"].required and "child_ids_list" not in fields
            and cls.child_ids is c.CareEventBase.child_ids)  # type: ignore[attr-defined]


_PLAIN_KIND: dict[type[c.CareEventBase], str] = {cls: kind for cls, kind in _COUNTED_TYPES.items() if _plain(cls)}


def fact_rows_from(groups: Iterable[list[Effective]], plain_in_sql: set[str] | None = None,
                   skip: Container[str] = frozenset()) -> dict[str, tuple[Any, ...] | None]:
    """`facts_from` as table rows (tables.FACT_COLS): event id -> its row, None if not counted.

    With `plain_in_sql` (the ids of events that were upcast), leaves out the uncorrected plain
    events stored at the current version: `plain_facts_sql` writes those. The events in `skip`
    are left out (another partition of a rebuild writes their facts)."""
    out: dict[str, tuple[Any, ...] | None] = {}
    get = out.get
    plain = _PLAIN_KIND.get
    for effs in groups:
        for x in effs:
            eid = x.counts_as
            if get(eid) is None and eid not in skip:
                care = x.care
                kind = plain(type(care))
                if kind is not None and plain_in_sql is not None and x.corrected_by is None \
                        and eid not in plain_in_sql:
                    continue
                if kind is not None:  # fact_row_of, unrolled for the bulk of the log (visits, calls...)
                    site = x.entry.site_id
                    out[eid] = (eid, kind, site, township_of(site), x.occurred_at, [care.child_id],  # type: ignore[attr-defined]
                                0, 0, None, None)
                else:
                    out[eid] = fact_row_of(care, eid, x.entry.site_id, x.occurred_at)
    return out


def facts_from(groups: Iterable[list[Effective]], out: dict[str, Fact | None] | None = None
               ) -> dict[str, Fact | None]:
    """Facts of events as they count (from archive.derive_all's effs_out). Merged into `out`,
    where a fact replaces a None (an event counts wherever it is effective)."""
    out = {} if out is None else out
    for effs in groups:
        for x in effs:
            if out.get(x.counts_as) is None:
                out[x.counts_as] = fact_of(x.care, x.counts_as, x.entry.site_id, x.occurred_at)
    return out


def facts_of(entries: Iterable[Entry]) -> dict[str, Fact | None]:
    """The fact of every event among `entries` (None: not counted, e.g. retracted), keyed by
    the event id it counts under, including the targets of corrections."""
    unique = {e.event_id: e for e in entries}
    effs, corrections = effective(unique.values())
    out: dict[str, Fact | None] = {}
    for e in unique.values():
        if not isinstance(e.care, c.EventCorrected):
            out[e.event_id] = None
    for target in corrections:
        out[target] = None
    for x in effs:
        out[x.counts_as] = fact_of(x.care, x.counts_as, x.entry.site_id, x.occurred_at)
    return out


def plain_facts_sql(schema: str, tx: int, pos: int) -> str:
    """INSERT ... SELECT of the facts `fact_rows_from(..., plain_in_sql=...)` leaves out: the
    events of a plain counted type, understood, stored at the version this code reads, up to the
    position (tx, pos), that no understood correction up to that position corrects. Row for row
    what fact_row_of gives them: PostgreSQL builds them beside the Python fold of the rest."""
    names = {cls: name for name, cls in c.EVENT_TYPES.items() if cls in _PLAIN_KIND}  # the stored type names
    kinds = " ".join(f"WHEN '{names[cls]}' THEN '{kind}'" for cls, kind in _PLAIN_KIND.items())
    types = " OR ".join(f"(e.type = '{names[cls]}' AND e.schema_version = {cls.SCHEMA_VERSION})" for cls in _PLAIN_KIND)
    # township_of: everything before the last dot (no dot: all but the last character, as the slice does)
    township = ("CASE WHEN strpos(e.site_id, '.') > 0 THEN left(e.site_id, length(e.site_id) - strpos(reverse("
                "e.site_id), '.')) ELSE left(e.site_id, -1) END")
    return f"""INSERT INTO {schema}.fact (event_id, kind, site_id, township, occurred_at, children, amount_fen, count,
                                     source, detail)
        SELECT e.event_id::text, CASE e.type {kinds} END, e.site_id, {township}, e.occurred_at,
               ARRAY[e.payload->>'child_id'], 0, 0, NULL, NULL
          FROM events e
         WHERE ({types}) AND e.understood AND (e.tx_id, e.position) <= ({tx:d}, {pos:d})
           AND NOT EXISTS (SELECT 1 FROM events x
                            WHERE x.type = 'EventCorrected' AND x.payload->>'corrected_event_id' = e.event_id::text
                              AND x.understood AND (x.tx_id, x.position) <= ({tx:d}, {pos:d}))"""
