"""The archives a runner wrote, kept decoded between its batches (`Runner(cache_archives=N)`).

A batch adds work to the archive of nearly every child it touches: without this, it reads each
archive's ~5 KB view back from PostgreSQL and decodes it (~90 µs a view on a quiet core) only to
add a visit and write it again. The runner keeps what its own batches wrote and reads back only
the archives it does not hold.

What it holds is right only while nobody else wrote the read models since the runner's last
commit. Everything that writes them writes the checkpoint row in the same transaction (another
runner, a rebuild's swap, a restore of the database), so the cache is keyed on the checkpoint
this runner committed: its position and the row version's `xmin` (the id of the transaction that
wrote it, read back with RETURNING in the batch itself). At the start of each batch, inside the
batch's transaction and under the runner's lock, the checkpoint row is read: a different
position or `xmin` drops everything held. A batch's writes are staged and kept only once its
transaction has committed; a batch that fails leaves the held archives as the checkpoint they
were keyed on (if its COMMIT went through after all, the checkpoint's `xmin` is the failed
batch's, and the next batch drops them).

Bounded: the least recently used go first beyond `limit` archives (~19 KB a decoded archive of
about 100 events, measured; 10,000 is ~190 MB).

It also keeps, per child, the entries a structural re-derive reads (the child's state restricted
to `source.STRUCTURAL_READ`, as `source.history_book(structural=True)` reads it), on the same terms: a
structural event of a held child then re-derives from those entries and the batch's own, not
from a read of the child's history (a few dozen rows, each decoded; the biggest cost of a
structural event). Entries are staged by the structural re-derive; a child re-derived in full
(a correction, a merge, a new child) is forgotten, so what is held is always the complete set up
to the checkpoint. ~1 KB an entry, a dozen per child: 10,000 children ~120 MB.

A runner that has nothing to apply warms the cache (`Runner.warm`): in a transaction of its own
under the lock, a chunk at a time between batches, it reads the archives and structural entries
of the children the latest events named (those most likely to be touched next) at the
checkpoint, and keys the cache on that checkpoint (`adopt`). A restarted projector then meets
its first busy minutes with its archives in hand, not a read per child.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TypeVar

from projections.archive import ChildArchive, Entry
from store.postgres import Position


class ArchiveCache:
    """Decoded archives by child id, as the runner's last committed batch left them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: OrderedDict[str, ChildArchive] = OrderedDict()
        self._staged: dict[str, ChildArchive] = {}
        self._key: tuple[Position, int] | None = None  # the checkpoint the held archives belong to
        self._next: tuple[Position, int] | None = None  # the checkpoint the batch under way wrote
        self._entries: OrderedDict[str, dict[str, Entry]] = OrderedDict()
        self._staged_entries: dict[str, dict[str, Entry]] = {}
        self.hits = 0
        self.misses = 0
        self.entry_hits = 0
        self.entry_misses = 0
        self.dropped = 0  # times the held archives were dropped because the checkpoint was not ours

    def __len__(self) -> int:
        return len(self._held)

    def begin(self, position: Position, version: int | None) -> None:
        """A batch starts on the checkpoint (`position`, its row's xmin `version`; None: no row):
        keep the held archives only if that is the checkpoint they belong to."""
        self._staged.clear()
        self._staged_entries.clear()
        self._next = None
        if self._key is None or version is None or self._key != (position, version):
            if self._held or self._entries:
                self.dropped += 1
            self._held.clear()
            self._entries.clear()
            self._key = None

    def adopt(self, position: Position, version: int) -> None:
        """Outside a batch, in a transaction holding the runner's lock that read the checkpoint
        (`position`, `version`) and writes nothing (a warm-up): what it reads is what the read
        models hold at that checkpoint, so the cache is keyed on it (dropping what belonged to
        another)."""
        self.begin(position, version)
        self._key = (position, version)

    def room(self) -> int:
        """How many more archives fit without evicting any."""
        return max(0, self.limit - len(self._held))

    def holds(self, child_id: str) -> bool:
        return child_id in self._held

    def hold(self, archives: Iterable[ChildArchive], entries: dict[str, dict[str, Entry]]) -> None:
        """A warm-up's reads (after `adopt`, same transaction): kept as they are, evicting nothing
        (the least recently used stay first to go)."""
        _fill(self._held, ((a.child_id, a) for a in archives), self.limit)
        _fill(self._entries, entries.items(), self.limit)

    def get(self, child_id: str) -> ChildArchive | None:
        """The archive as this batch sees it: written earlier in the batch, else held."""
        a = _look(self._staged, self._held, child_id)
        if a is None:
            self.misses += 1
        else:
            self.hits += 1
        return a

    def entries(self, child_id: str) -> dict[str, Entry] | None:
        """The child's structural entries as this batch sees them (a copy the caller may extend),
        or None when not held."""
        e = _look(self._staged_entries, self._entries, child_id)
        if e is None:
            self.entry_misses += 1
            return None
        self.entry_hits += 1
        return dict(e)

    def stage_entries(self, entries: dict[str, dict[str, Entry]]) -> None:
        """Children's complete structural entries up to this batch's last position."""
        self._staged_entries.update(entries)

    def forget_entries(self, child_ids: Iterable[str]) -> None:
        """These children's structural entries are no longer known (re-derived in full)."""
        for k in child_ids:
            self._staged_entries.pop(k, None)
            self._entries.pop(k, None)

    def stage(self, archives: Iterable[ChildArchive]) -> None:
        """Archives this batch wrote (or read from the read models) as they now stand in its transaction."""
        for a in archives:
            self._staged[a.child_id] = a

    def wrote_checkpoint(self, position: Position, version: int) -> None:
        """The batch wrote the checkpoint (`position`, its row's xmin `version`)."""
        self._next = (position, version)

    def committed(self) -> None:
        """The batch's transaction committed: what it staged is now what the read models hold."""
        if self._next is None:  # nothing applied (caught up): the checkpoint did not move
            self._staged.clear()
            self._staged_entries.clear()
            return
        _keep(self._staged, self._held, self.limit)
        _keep(self._staged_entries, self._entries, self.limit)
        self._staged.clear()
        self._staged_entries.clear()
        self._key, self._next = self._next, None

    def aborted(self) -> None:
        """The batch's transaction did not commit (as far as this process knows)."""
        self._staged.clear()
        self._staged_entries.clear()
        self._next = None


V = TypeVar("V")


def _look(staged: dict[str, V], held: OrderedDict[str, V], key: str) -> V | None:
    """Staged by this batch, else held (then the most recently used)."""
    v = staged.get(key)
    if v is None:
        v = held.get(key)
        if v is not None:
            held.move_to_end(key)
    return v


def _keep(staged: dict[str, V], held: OrderedDict[str, V], limit: int) -> None:
    """A committed batch's writes held as the most recently used; the least recently used beyond
    `limit` go."""
    for k, v in staged.items():
        held[k] = v
        held.move_to_end(k)
    while len(held) > limit:
        held.popitem(last=False)


def _fill(held: OrderedDict[str, V], items: Iterable[tuple[str, V]], limit: int) -> None:
    """A warm-up's reads, into the room left, as the least recently used (nothing evicted)."""
    for k, v in items:
        if len(held) < limit and k not in held:
            held[k] = v
            held.move_to_end(k, last=False)
