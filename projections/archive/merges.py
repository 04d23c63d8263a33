"""Merges: `ArchivesMerged` joins the merged child's events to the kept one (`group`), and
`ArchivesUnmerged` naming that merge undoes it. Several merges are applied in stamp order; one
that would make a cycle or give a child a second parent is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from events import catalogue as c
from projections.archive.corrections import Effective, effective
from projections.archive.state import ChildState, Entry


class MergeEdge(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    merge_event_id: str
    kept: str
    merged: str
    stamp: tuple[int, str, int]
    undone: bool


def merge_edges(entries: Iterable[Entry]) -> list[MergeEdge]:
    """The merges these events record, each with whether a later event undid it."""
    effs, _ = effective(entries)
    merges: dict[str, Effective] = {}
    undone: set[str] = set()
    for x in effs:
        if isinstance(x.care, c.ArchivesMerged):
            merges[x.entry.event_id] = x
        elif isinstance(x.care, c.ArchivesUnmerged):
            undone.add(x.care.merge_event_id)
    out = []
    for eid, x in merges.items():
        assert isinstance(x.care, c.ArchivesMerged)
        out.append(MergeEdge(merge_event_id=eid, kept=x.care.kept_child_id, merged=x.care.merged_child_id,
                             stamp=x.entry.stamp, undone=eid in undone))
    return sorted(out, key=lambda e: e.stamp)


def roots(edges: Iterable[MergeEdge]) -> dict[str, str]:
    """child id -> the child it is merged into (transitively), for merged children only."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        seen = set()
        while x in parent and x not in seen:
            seen.add(x)
            x = parent[x]
        return x

    for e in sorted({e.merge_event_id: e for e in edges}.values(), key=lambda e: e.stamp):
        if e.undone or e.merged in parent or e.kept == e.merged or root(e.kept) == e.merged:
            continue
        parent[e.merged] = e.kept
    return {x: root(x) for x in parent}


def group(states: Mapping[str, ChildState], root_of: Mapping[str, str]) -> dict[str, list[str]]:
    """root child id -> every child id whose events make its archive (itself first)."""
    out: dict[str, list[str]] = {}
    for cid in sorted(states):
        if cid.startswith("ev:"):
            continue
        r = root_of.get(cid, cid)
        out.setdefault(r, [r])
        if cid != r:
            out[r].append(cid)
    return out



MERGE_TYPES = frozenset(("ArchivesMerged", "ArchivesUnmerged", "EventCorrected"))
