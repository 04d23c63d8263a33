"""The archive book: every child's state held in memory (a site agent's, a rebuild's), fed
events in any order, any number of times; `archives()` derives every archive (`derive_all`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import msgspec

from events import catalogue as c
from events.envelope import Event
from projections.archive.corrections import Effective, effective
from projections.archive.derived import ChildArchive, archive_encoder, derive_full
from projections.archive.merges import MERGE_TYPES, group, merge_edges, roots
from projections.archive.state import ChildState, Entry, entry_of, family_of, keys_of


def derive_all(states: Mapping[str, ChildState], effs_out: list[list[Effective]] | None = None
               ) -> dict[str, ChildArchive]:
    """Every child's archive from every child's state: merged children get a stub naming the
    child they are merged into; the kept child's archive joins their events. With `effs_out`,
    also collects each group's (and each pseudo-key's) events as they count, for facts."""
    edges = merge_edges(e for s in states.values() for e in s.entries.values()
                        if e.type in MERGE_TYPES)
    root_of = roots(edges)
    out: dict[str, ChildArchive] = {}
    for r, members in group(states, root_of).items():
        entries = [e for m in members if m in states for e in states[m].entries.values()]
        out[r], effs = derive_full(r, entries, members[1:])
        if effs_out is not None:
            effs_out.append(effs)
        for m in members[1:]:
            out[m] = ChildArchive(child_id=m, merged_into=r)
    if effs_out is not None:
        for k, st in states.items():
            if k.startswith("ev:"):
                effs_out.append(effective(st.entries.values())[0])
    return out



def _one_child(cls: type[c.CareEventBase]) -> bool:
    """Payloads whose keys_of is always (child_id,): one required child, not a correction."""
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    return (cls is not c.EventCorrected and cls.child_ids is c.CareEventBase.child_ids
            and "child_id" in fields and fields["child_id"].required and "child_ids_list" not in fields)


_ONE_CHILD = frozenset(cls for cls in c.EVENT_TYPES.values() if _one_child(cls))


def _listed(cls: type[c.CareEventBase]) -> bool:
    """Payloads whose keys_of is their `child_ids_list` when it is not empty (without repeats):
    work about several children named in a list, not a correction."""
    fields = {f.name for f in msgspec.structs.fields(cls)}
    return (cls is not c.EventCorrected and cls.child_ids is c.CareEventBase.child_ids
            and "child_ids_list" in fields and "child_id" not in fields)


_LISTED = frozenset(cls for cls in c.EVENT_TYPES.values() if _listed(cls))


class ArchiveBook:
    """Incremental, in-memory holder of child states (a site agent's or a rebuild's): `add`
    events in any order, any number of times; `archives()` derives every archive.

    It routes by correction family (`family_of`): every member goes to the keys of every member.

    With `keep`, only the keys it accepts get a state (a partitioned rebuild's book: an event about
    children of several partitions is held once, in the states of this partition's children, not
    in a state for each of the others'); the correction families are tracked in full all the same."""

    def __init__(self, keep: Callable[[str], bool] | None = None) -> None:
        self.states: dict[str, ChildState] = {}
        self._keep = keep
        self.skipped: set[str] = set()
        # Families with a correction in them (keyed by the corrected event id): their keys and
        # members. An event nothing corrects (most of them) is a family of one and is kept only
        # in `_entry`; it joins these maps when its first correction arrives.
        self._family_keys: dict[str, set[str]] = {}
        self._family_members: dict[str, list[str]] = {}
        self._entry: dict[str, Entry] = {}  # event id -> its entry

    def add(self, event: Event, care: c.CareEventBase | None) -> set[str]:
        """Add one event; returns the keys (child ids or "ev:" pseudo-keys) whose state changed."""
        if care is None:
            self.skipped.add(event.event_id)
            return set()
        return self.add_entry(entry_of(event, care))

    def add_entry(self, entry: Entry) -> set[str]:
        eid = entry.event_id
        known = self._entry
        if eid in known:
            return set()
        care = entry.care
        fam = care.corrected_event_id if isinstance(care, c.EventCorrected) else eid  # family_of
        own = keys_of(care, eid)
        keys = self._family_keys.get(fam)
        states = self.states
        if keys is None:
            original = known.get(fam) if fam != eid else None
            if original is None or isinstance(original.care, c.EventCorrected):
                # The first event of its family (the common case: an uncorrected event).
                if fam != eid:  # a correction before (or without) its original: track its family
                    self._family_keys[fam] = set(own)
                    self._family_members[fam] = [eid]
                for k in own if self._keep is None else filter(self._keep, own):
                    st = states.get(k)
                    if st is None:
                        st = states[k] = ChildState(child_id=k)
                    st.entries[eid] = entry
                known[eid] = entry
                return set(own)
            # The first correction of an original in hand: its family is tracked from now on.
            keys = self._family_keys[fam] = set(keys_of(original.care, fam))
            self._family_members[fam] = [fam]
        members = self._family_members[fam]
        new_keys = set(own) - keys
        changed = keys | set(own)
        held = new_keys if self._keep is None else set(filter(self._keep, new_keys))
        for other in members:  # earlier members reach the keys this event brings
            earlier = known[other]
            for k in held:
                states.setdefault(k, ChildState(child_id=k)).entries[other] = earlier
        keys |= new_keys
        for k in keys if self._keep is None else filter(self._keep, keys):
            states.setdefault(k, ChildState(child_id=k)).entries[eid] = entry
        members.append(eid)
        known[eid] = entry
        return changed

    def fold(self, entry: Entry) -> None:
        """`add_entry` without telling which keys changed (a rebuild's fold): an event about
        one child, or several in a list, that no correction reached first goes straight to their
        states."""
        self._fold(entry, self._keep)

    def fold_own(self, entry: Entry) -> None:
        """`fold` of an event that is in this book for a child of its own (a partitioned rebuild's
        row routed by its children, not by its correction family): one about one child goes
        straight to that child's state without asking `keep`, whose answer is yes (its child is
        why the row is here); any other as `fold`."""
        self._fold(entry, None)

    def _fold(self, entry: Entry, keep: Callable[[str], bool] | None) -> None:
        """`fold` asking `keep` (None: not asking) about an event of one child."""
        kind = type(entry.care)
        if kind in _LISTED:
            self._fold_listed(entry, self._keep)
            return
        if kind not in _ONE_CHILD:
            self.add_entry(entry)
            return
        eid = entry.event_id
        known = self._entry
        if eid in known:
            return
        if eid in self._family_keys:  # a correction of it came first
            self.add_entry(entry)
            return
        key = entry.care.child_id  # type: ignore[union-attr]
        known[eid] = entry
        if keep is not None and not keep(key):
            return
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = ChildState(child_id=key)
        st.entries[eid] = entry

    def _fold_listed(self, entry: Entry, keep: Callable[[str], bool] | None) -> None:
        """`fold` of work about the children of a list: `add_entry`'s first event of a family,
        without its key tuple and changed set (a repeated child meets its state twice, once in it)."""
        listed = entry.care.child_ids_list  # type: ignore[union-attr]
        eid = entry.event_id
        known = self._entry
        if not listed or eid in self._family_keys:  # about no child (a pseudo-key), or a correction came first
            self.add_entry(entry)
            return
        if eid in known:
            return
        known[eid] = entry
        states = self.states
        for k in listed if keep is None else filter(keep, listed):
            st = states.get(k)
            if st is None:
                st = states[k] = ChildState(child_id=k)
            st.entries[eid] = entry

    def archives(self) -> dict[str, ChildArchive]:
        return derive_all(self.states)

    def one_key(self, event_id: str) -> bool:
        """Whether this event's family goes to one key only, told without computing its keys: an
        event of a type about one child that nothing corrects (most of a log)."""
        if event_id in self._family_keys:
            return False
        entry = self._entry.get(event_id)
        return entry is not None and type(entry.care) in _ONE_CHILD

    def family_keys(self, event_id: str) -> set[str]:
        """Every key the family of this (non-correction) event goes to."""
        keys = self._family_keys.get(event_id)
        if keys:
            return keys
        e = self._entry[event_id]
        own = keys_of(e.care, event_id)
        return set(own) if family_of(e.care, event_id) == event_id else {own[0]}


def build_states(events: Iterable[tuple[Event, c.CareEventBase | None]]) -> tuple[dict[str, ChildState], int]:
    """Fold events into states (any order, duplicates welcome); returns (states, the number of
    distinct events not understood)."""
    book = ArchiveBook()
    for event, care in events:
        book.add(event, care)
    return book.states, len(book.skipped)


def build(events: Iterable[tuple[Event, c.CareEventBase | None]]) -> dict[str, ChildArchive]:
    """Every child's archive from a set of events (pairs of envelope and typed payload)."""
    states, _ = build_states(events)
    return derive_all(states)


_state_decoder = msgspec.msgpack.Decoder(ChildState)


def encode_state(s: ChildState) -> bytes:
    return archive_encoder.encode(s)


def decode_state(data: bytes) -> ChildState:
    return _state_decoder.decode(data)
