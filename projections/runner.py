"""The projection runner: follows the store's global order and keeps the read models.

Applied once (guarantee 5). Each batch runs in one transaction that takes the runner's
advisory lock, reads the checkpoint, reads the next events after it (`read_all_in`, which
never skips a late commit), writes the read models and moves the checkpoint. A crash before
the commit leaves the read models and the checkpoint as they were; after it, both moved. Two
runners (or a runner and a rebuild's swap) serialize on the lock.

Each batch brings the archives it touches up to the batch's last position with the same pure
code a rebuild and a site agent use (`project`: a full re-derive from the children's history
for corrections, merges and new children; the structural part only for an uncorrected field
update, pairing or case; `archive.add_work` for uncorrected visits, aid, activities...), so the
incremental result equals a rebuild from zero, byte for byte (tests/test_projections_runner.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet

import asyncpg
import msgspec

from events import traits
from events.envelope import care_of
from events.localtime import local_day
from projections import tables
from projections.archive import (
    CONTACT_TYPES,
    ChildArchive,
    Effective,
    Entry,
    MergeEdge,
    add_work,
    decode_archive,
    derive_full,
    effective,
    entry_of,
    family_of,
    keys_of,
    merge_edges,
    month_key,
    roots,
    view_changed,
)
from projections.collector import QuietCollector
from projections.facts import Fact, fact_of, facts_from
from projections.hot import ArchiveCache
from projections.source import Row, family_members, history_book
from runtime import log as service_log
from store.conn import Conn
from store.postgres import ORIGIN, Position, read_all_in

LOCK_KEY = 0x5052_4F4A_4543_54  # "PROJECT"
CHANNEL = "shouwang_events"
NAME = "main"
CACHE_ARCHIVES = 10_000  # decoded archives a runner keeps between batches (~19 KB each at ~100 events)
log = service_log.get("projections.runner")


class Checkpoint(msgspec.Struct, frozen=True):
    position: Position
    applied: int
    skipped: int
    last_committed_at: dt.datetime | None


class Lag(msgspec.Struct, frozen=True):
    """How far the read models are behind the store."""

    checkpoint: str
    applied: int
    skipped: int
    events_behind: int
    seconds_behind: float


async def read_checkpoint(conn: Conn, schema: str) -> Checkpoint:
    row = await conn.fetchrow(
        f"SELECT tx, pos, applied, skipped, last_committed_at FROM {schema}.checkpoint WHERE name = $1", NAME)
    if row is None:
        return Checkpoint(ORIGIN, 0, 0, None)
    return Checkpoint(Position(row["tx"], row["pos"]), row["applied"], row["skipped"], row["last_committed_at"])


# What the read models mean, as a number: raise it whenever the same events would give other read
# models (a rule, a field, how a day is counted). A live runner that finds models of another
# version rebuilds them (in the shadow schema, while the old ones keep serving) before it
# follows the log, so an upgrade needs no manual step. 1: days counted in UTC; 2: reporting days
# on China Standard Time (events.localtime); 3: every closing of an archive with its reason
# (`ChildArchive.closings`, for the drop-out figures); 4: a call's channel and a letter's
# direction in their facts' detail (the follow-up rules count calls with a parent and letters to
# the parents).
FOLD_VERSION = 4
_VERSION_ROW = "fold_version"  # a row of the checkpoint table whose `tx` holds the version


async def read_fold_version(conn: Conn, schema: str) -> int | None:
    """The fold version the models in `schema` were built with; None when nothing was applied yet."""
    rows = {r["name"]: r["tx"] for r in await conn.fetch(
        f"SELECT name, tx FROM {schema}.checkpoint WHERE name = ANY($1)", [_VERSION_ROW, NAME])}
    if _VERSION_ROW in rows:
        return int(rows[_VERSION_ROW])
    return 1 if NAME in rows else None  # built before versions were recorded


async def write_fold_version(conn: Conn, schema: str, version: int = FOLD_VERSION) -> None:
    await conn.execute(
        f"""INSERT INTO {schema}.checkpoint (name, tx, pos, applied, skipped) VALUES ($1, $2, 0, 0, 0)
            ON CONFLICT (name) DO UPDATE SET tx = $2""", _VERSION_ROW, version)


async def write_checkpoint(conn: Conn, schema: str, cp: Checkpoint) -> int:
    """Move the checkpoint; returns the version of its row this wrote (its xmin: the writing
    transaction's id), which the runner's archive cache is keyed on (projections/hot.py)."""
    version = await conn.fetchval(
        f"""INSERT INTO {schema}.checkpoint (name, tx, pos, applied, skipped, last_committed_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (name) DO UPDATE SET tx = $2, pos = $3, applied = $4, skipped = $5, last_committed_at = $6
            RETURNING xmin::text::bigint""",
        NAME, cp.position.tx, cp.position.pos, cp.applied, cp.skipped, cp.last_committed_at)
    return int(version)


async def _read_checkpoint_version(conn: Conn, schema: str) -> tuple[Checkpoint, int | None]:
    """The checkpoint and its row's version (xmin; None when there is no row)."""
    row = await conn.fetchrow(
        f"""SELECT tx, pos, applied, skipped, last_committed_at, xmin::text::bigint AS version
              FROM {schema}.checkpoint WHERE name = $1""", NAME)
    if row is None:
        return Checkpoint(ORIGIN, 0, 0, None), None
    return (Checkpoint(Position(row["tx"], row["pos"]), row["applied"], row["skipped"], row["last_committed_at"]),
            int(row["version"]))


# How each type folds is its `fold` trait (events.traits): work that only adds to an archive (a
# count, a last date, an aid line) and sets no field applies to the stored archive as a full
# derive would; structural events (fields, open/closed history, pairings, rights cases) re-derive
# only the parts of `derive` that depend on nothing else; the rest (merges, corrections) re-derive
# the whole group.
ADDITIVE = traits.types_where(lambda t: t.fold is traits.Fold.ADDITIVE)
STRUCTURAL = traits.types_where(lambda t: t.fold is traits.Fold.STRUCTURAL)
# The parts of ChildArchive that only additive work changes (kept from the stored archive when
# the structural part is re-derived).
_ADDITIVE_PARTS = ("last_visit", "last_call", "last_letter", "last_talk", "months", "aid", "incidents")


async def project(conn: Conn, schema: str, batch: list[Row], upto: Position,
                  cache: ArchiveCache | None = None) -> None:
    """Bring the read models in `schema` up to `upto` for everything `batch` touches.

    Three paths with one result (tests compare them with a rebuild from zero):
    * full: corrections, merges, an event something corrects, or a child with no archive yet:
      re-derive each touched archive from its children's whole history up to `upto`;
    * structural (a field update, a pairing, a case... that nothing corrects): re-derive only
      the structural part from the children's structural events, keep the additive part;
    * additive (a visit, aid, an activity... that nothing corrects): add it to the stored archive
      (`archive.add_work`, the same arithmetic as `derive`).

    With `cache` (the runner's, already checked against this transaction's checkpoint), stored
    archives are taken from it where it holds them, and every archive written is staged in it."""
    understood = [r for r in batch if r.care is not None]
    if not understood:
        return
    fams = {family_of(r.care, r.event.event_id) for r in understood if r.care is not None}
    members = [*understood, *await family_members(conn, fams, upto, known=[r.event.event_id for r in batch])]
    family_size = Counter(family_of(m.care, m.event.event_id) for m in members if m.care is not None)
    simple = [r for r in understood if family_size[r.event.event_id] <= 1
              and (r.event.type in ADDITIVE or r.event.type in STRUCTURAL)]
    if simple:
        wanted = sorted({k for r in simple for k in r.event.children})
        present = {rec["child_id"] for rec in await conn.fetch(
            f"SELECT child_id FROM {schema}.archive WHERE child_id = ANY($1::text[])", wanted)}
        simple = [r for r in simple if r.event.children and all(k in present for k in r.event.children)]
    fast = [r for r in simple if r.event.type in ADDITIVE]
    structural = [r for r in simple if r.event.type in STRUCTURAL]
    simple_ids = {r.event.event_id for r in simple}
    slow = [r for r in understood if r.event.event_id not in simple_ids]
    derived: set[str] = set()
    written: set[str] = set()  # events whose facts the full re-derive wrote
    if slow:
        slow_fams = {family_of(r.care, r.event.event_id) for r in slow if r.care is not None}
        slow_members = [m for m in members if m.care is not None and family_of(m.care, m.event.event_id) in slow_fams]
        derived, written = await _project_full(conn, schema, slow, slow_members, upto, cache)
    if structural:
        await _project_structural(conn, schema, structural, derived, upto, cache, written)
    if fast:
        await _project_additive(conn, schema, fast, derived, cache, written)


async def _project_structural(conn: Conn, schema: str, batch: list[Row], derived: set[str],
                              upto: Position, cache: ArchiveCache | None = None,
                              written: AbstractSet[str] = frozenset()) -> None:
    """Re-derive the structural part of the archives these events touch (not those re-derived in
    full in this batch) from their children's structural events; keep the additive part."""
    children = sorted({k for r in batch for k in r.event.children})
    root_of = {rec["child_id"]: rec["root_id"] for rec in await conn.fetch(
        f"SELECT child_id, root_id FROM {schema}.archive WHERE child_id = ANY($1::text[])", children)}
    targets = sorted({root_of[k] for k in children} - derived)
    if not targets:
        await _new_facts(conn, schema, batch, written)
        return
    stored = _held(cache, targets)
    rows = await conn.fetch(
        f"""SELECT child_id, root_id, CASE WHEN child_id = root_id AND NOT child_id = ANY($2::text[]) THEN view END
                   AS view, work
              FROM {schema}.archive WHERE root_id = ANY($1::text[])""", targets, list(stored))
    groups: dict[str, list[str]] = {t: [t] for t in targets}
    for rec in rows:
        if rec["child_id"] == rec["root_id"]:
            if rec["view"] is not None:
                stored[rec["child_id"]] = decode_archive(rec["view"], rec["work"])
        else:
            groups[rec["root_id"]].append(rec["child_id"])
    for g in groups.values():
        g[1:] = sorted(g[1:])
    members = sorted({m for g in groups.values() for m in g})
    states = _structural_entries(cache, members, batch)
    unknown = [m for m in members if m not in states]
    if unknown:
        book = await history_book(conn, unknown, (), upto, structural=True)
        for m in unknown:
            states[m] = dict(book.states[m].entries) if m in book.states else {}
    if cache is not None:
        cache.stage_entries(states)
    new_in_group = Counter(root_of[k] for r in batch for k in {root_of[c]: c for c in r.event.children}.values())
    archives: list[ChildArchive] = []
    for root, group in groups.items():
        entries = [x for m in group for x in states[m].values()]
        part = derive_full(root, entries, group[1:])[0]
        old = stored[root]
        keep = {name: getattr(old, name) for name in _ADDITIVE_PARTS}
        archives.append(msgspec.structs.replace(part, events=old.events + new_in_group[root], **keep))
    await tables.write_archives(conn, schema, archives, months={})
    if cache is not None:
        cache.stage(archives)
    await _new_facts(conn, schema, batch, written)


def _structural_entries(cache: ArchiveCache | None, members: list[str], batch: list[Row]
                        ) -> dict[str, dict[str, Entry]]:
    """The structural entries up to this batch's last position of the members the cache holds
    (as of the checkpoint) with this batch's own structural events added: each names only its
    own children and nothing corrects it (the structural path's events), so it goes to those
    children's states alone, as `book_of` would put it. Every other event this batch brings to
    these children is not structural (a correction or a merge re-derives them in full: they are
    not here)."""
    if cache is None:
        return {}
    states: dict[str, dict[str, Entry]] = {}
    for m in members:
        held = cache.entries(m)
        if held is not None:
            states[m] = held
    if states:
        for r in batch:
            assert r.care is not None
            entry = None
            for k in keys_of(r.care, r.event.event_id):
                if k in states:
                    entry = entry or entry_of(r.event, r.care)
                    states[k][r.event.event_id] = entry
    return states


async def _new_facts(conn: Conn, schema: str, batch: list[Row], written: AbstractSet[str]) -> None:
    """The facts of these events, none of which is corrected or stored yet (`written`: those
    the full re-derive of this batch wrote already, left out)."""
    facts: dict[str, Fact | None] = {}
    for r in batch:
        assert r.care is not None
        if r.event.event_id not in written:
            facts[r.event.event_id] = fact_of(r.care, r.event.event_id, r.event.site_id, r.event.occurred_at)
    await tables.write_facts(conn, schema, facts, new=True)


async def _project_additive(conn: Conn, schema: str, fast: list[Row], derived: set[str],
                            cache: ArchiveCache | None = None, written: AbstractSet[str] = frozenset()) -> None:
    """Add uncorrected work to stored archives (those not re-derived in this batch), and its facts
    (but those the full re-derive wrote, `written`)."""
    children = sorted({k for r in fast for k in r.event.children})
    root_of = {rec["child_id"]: rec["root_id"] for rec in await conn.fetch(
        f"SELECT child_id, root_id FROM {schema}.archive WHERE child_id = ANY($1::text[])", children)}
    targets = sorted({root_of[k] for k in children} - derived)
    views = _held(cache, targets)
    missing = [t for t in targets if t not in views]
    if missing:
        views.update({rec["child_id"]: decode_archive(rec["view"], rec["work"]) for rec in await conn.fetch(
            f"SELECT child_id, view, work FROM {schema}.archive WHERE child_id = ANY($1::text[])", missing)})
    before = dict(views)
    months: dict[str, set[str]] = {}
    for r in fast:
        assert r.care is not None
        for root in sorted({root_of[k] for k in r.event.children}):
            if root in views:
                views[root] = add_work(views[root], r.event.event_id, r.care, r.event.occurred_at)
                if r.event.type in CONTACT_TYPES:
                    months.setdefault(root, set()).add(month_key(local_day(r.event.occurred_at)))
    await tables.write_archives(conn, schema, list(views.values()), months=months, conflicts=False,
                               work_only=True, views={k for k, a in views.items() if view_changed(before[k], a)})
    if cache is not None:
        cache.stage(views.values())
    await _new_facts(conn, schema, fast, written)


async def _project_full(conn: Conn, schema: str, understood: list[Row], members: list[Row],
                        upto: Position, cache: ArchiveCache | None = None) -> tuple[set[str], set[str]]:
    """Re-derive every archive these events touch; returns the child ids re-derived and the ids
    of the events whose facts it wrote (or deleted)."""
    keys: set[str] = set()
    for row in [*understood, *members]:
        if row.care is not None:
            keys.update(keys_of(row.care, row.event.event_id))
    children = {k for k in keys if not k.startswith("ev:")}
    pseudo = {k for k in keys if k.startswith("ev:")}
    book = await history_book(conn, sorted(children), sorted(pseudo), upto)

    # Merges: recompute the edges touching these children from their (complete) events.
    old_edges = await tables.read_edges(conn, schema)
    touching = [e for e in merge_edges(x for k in children if k in book.states for x in book.states[k].entries.values())
                if e.kept in children or e.merged in children]
    new_edges = [e for e in old_edges if e.kept not in children and e.merged not in children] + touching
    if _edge_set(old_edges) != _edge_set(new_edges):
        await tables.write_edges(conn, schema, sorted(children), touching)
    old_root, new_root = roots(old_edges), roots(new_edges)
    moved = {x for x in set(old_root) | set(new_root) if old_root.get(x, x) != new_root.get(x, x)}
    affected = {new_root.get(x, x) for x in children | moved} | {old_root.get(x, x) for x in children | moved}
    affected |= moved
    groups: dict[str, list[str]] = {}
    for a in sorted(affected):
        root = new_root.get(a, a)
        groups.setdefault(root, [root])
    for x, root in sorted(new_root.items()):
        if root in groups and x not in groups[root]:
            groups[root].append(x)
    in_groups = {m for g in groups.values() for m in g}
    missing = in_groups - children
    if missing:  # members whose events this batch did not load yet
        children |= missing
        book = await history_book(conn, sorted(children), sorted(pseudo), upto)

    archives: list[ChildArchive] = []
    effs_lists: list[list[Effective]] = []
    for root, group in sorted(groups.items()):
        entries = [x for m in group if m in book.states for x in book.states[m].entries.values()]
        if not entries and root not in keys:
            continue
        arch, effs = derive_full(root, entries, group[1:])
        archives.append(arch)
        effs_lists.append(effs)
        archives.extend(ChildArchive(child_id=m, merged_into=root) for m in group[1:])
    await tables.write_archives(conn, schema, archives)
    if cache is not None:
        cache.stage(archives)
        cache.forget_entries(children | in_groups)
    # Facts: only those of the correction families this batch touches (an event's fact depends on
    # its family alone: the event and its corrections, never on the child's other events or on
    # merges), from every state holding them (keys_of loaded each); the child's other facts were
    # written when their own batches applied them and stay as they are. One that no longer counts
    # (retracted) is deleted. An event counts wherever it is effective, so a fact wins over a None.
    touched = {family_of(r.care, r.event.event_id) for r in [*understood, *members] if r.care is not None}
    facts: dict[str, Fact | None] = {}
    for k in sorted(children | pseudo):
        st = book.states.get(k)
        if st is None:
            continue
        if k.startswith("ev:"):
            effs_lists.append(effective(st.entries.values())[0])
        for entry in st.entries.values():
            target = family_of(entry.care, entry.event_id)
            if target in touched:
                facts.setdefault(target, None)
    facts_from(([x for x in effs if x.counts_as in touched] for effs in effs_lists), facts)
    await tables.write_facts(conn, schema, facts)
    return {m for group in groups.values() for m in group}, set(facts)


async def advance(conn: Conn, schema: str, limit: int, cache: ArchiveCache | None = None) -> int:
    """Inside the caller's transaction (holding LOCK_KEY): project the next `limit` events after
    the checkpoint and move it. Returns how many events it read. With `cache`, the archives it
    holds are used if the checkpoint is the one its last commit wrote (projections/hot.py); the
    caller tells it whether the transaction committed."""
    cp, version = await _read_checkpoint_version(conn, schema)
    if cache is not None:
        cache.begin(cp.position, version)
    stored = await read_all_in(conn, cp.position, limit)
    if not stored:
        return 0
    batch = [Row(s.position, s.committed_at, s.event, care_of(s.event) if s.understood else None) for s in stored]
    upto = batch[-1].position
    await project(conn, schema, batch, upto, cache)
    skipped = sum(1 for r in batch if r.care is None)
    version = await write_checkpoint(conn, schema, Checkpoint(
        upto, cp.applied + len(batch) - skipped, cp.skipped + skipped, batch[-1].committed_at))
    if cache is not None:
        cache.wrote_checkpoint(upto, version)
    if cp.position == ORIGIN:  # the first events ever applied here: the models are this fold's
        await write_fold_version(conn, schema)
    return len(batch)


def _held(cache: ArchiveCache | None, child_ids: list[str]) -> dict[str, ChildArchive]:
    """The archives of these children the cache holds (none without a cache)."""
    if cache is None:
        return {}
    out = {}
    for k in child_ids:
        a = cache.get(k)
        if a is not None:
            out[k] = a
    return out


def _edge_set(edges: list[MergeEdge]) -> set[tuple[object, ...]]:
    return {tables.edge_row(e) for e in edges}


WARM_CHUNK = 100  # children a warm-up reads per transaction (~20 ms quiet; a batch waits at most that)
_RECENT_CHILDREN = """SELECT children FROM events WHERE (tx_id, position) <= ($1, $2) AND cardinality(children) > 0
                       ORDER BY tx_id DESC, position DESC LIMIT $3"""


class Runner:
    """Follows the store and keeps the read models in `schema` (normally the live `proj`)."""

    def __init__(self, pool: asyncpg.Pool, *, schema: str = tables.SCHEMA, batch_size: int = 1000,
                 max_batch: int | None = None, poll_seconds: float = 0.5,
                 before_commit: Callable[[], Awaitable[None]] | None = None,
                 cache_archives: int = CACHE_ARCHIVES, collector: QuietCollector | None = None) -> None:
        self.pool = pool
        self.schema = tables.check_schema(schema)
        self.batch_size = batch_size
        # With max_batch, a runner that is behind (a township back online, a restart) doubles
        # each full batch up to max_batch: a batch's cost grows with the archives it touches,
        # not its events, so big batches catch up several times faster (50k events: 2.6k/s at
        # 1,000, 7.2k/s at 20,000); caught up, it goes back to batch_size. A big batch is seconds
        # of CPU without a pause, so only a runner with a process of its own (`projections
        # run`, a rebuild's catch-up) grows them: inside `center run` it would stall ingest and
        # receipts for that long (the default, None, keeps batch_size).
        self.max_batch = max(batch_size, max_batch or batch_size)
        self.poll_seconds = poll_seconds
        self._before_commit = before_commit  # for the crash test: runs after the writes, before COMMIT
        # The archives its own batches wrote, kept decoded (projections/hot.py); 0: none.
        self.cache = ArchiveCache(cache_archives) if cache_archives > 0 else None
        # Full garbage collections at quiet moments (projections/collector.py); only a runner
        # with a process of its own takes one (the setting is the process's).
        self.collector = collector
        self._wake = asyncio.Event()
        self._warm_queue: list[str] | None = None  # children left to warm; None: not chosen yet
        self._warmed_at_drop = -1  # the cache's `dropped` when the last warm-up finished

    async def step(self, limit: int | None = None) -> int:
        """Apply the next batch (at most `limit` events, default batch_size); returns how many
        events it read (0: caught up)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                n = await advance(conn, self.schema, limit or self.batch_size, self.cache)
                if n and self._before_commit is not None:
                    await self._before_commit()
        except BaseException:
            if self.cache is not None:
                self.cache.aborted()
            raise
        if self.cache is not None:
            self.cache.committed()
        return n

    async def warm(self) -> int:
        """One chunk of the cache's warm-up (projections/hot.py): the archives and structural
        entries, at the checkpoint, of up to WARM_CHUNK children the latest events named that the
        cache does not hold. Returns how many children it read; 0 once the cache is full or
        every such child is held (until the cache is dropped again: another runner or a
        rebuild wrote the read models)."""
        cache = self.cache
        if cache is None or self._warmed_at_drop == cache.dropped:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            cp, version = await _read_checkpoint_version(conn, self.schema)
            if version is None:  # nothing applied yet: nothing to hold
                return 0
            dropped = cache.dropped
            cache.adopt(cp.position, version)
            if self._warm_queue is None or cache.dropped != dropped:
                seen: dict[str, None] = {}
                for rec in await conn.fetch(_RECENT_CHILDREN, cp.position.tx, cp.position.pos, 2 * cache.limit):
                    seen.update(dict.fromkeys(rec["children"]))
                self._warm_queue = list(reversed(seen))  # the most recently named last: popped first
            queue = self._warm_queue
            chunk: list[str] = []
            while queue and len(chunk) < min(WARM_CHUNK, cache.room()):
                k = queue.pop()
                if not cache.holds(k):
                    chunk.append(k)
            if not chunk:
                self._warmed_at_drop, self._warm_queue = cache.dropped, None
                return 0
            rows = await conn.fetch(
                f"SELECT child_id, view, work FROM {self.schema}.archive WHERE child_id = ANY($1::text[]) "
                f"AND root_id = child_id", chunk)
            book = await history_book(conn, chunk, (), cp.position, structural=True)
            cache.hold([decode_archive(r["view"], r["work"]) for r in rows],
                       {k: dict(book.states[k].entries) if k in book.states else {} for k in chunk})
        return len(chunk)

    async def catch_up(self) -> int:
        total, limit = 0, self.batch_size
        while n := await self.step(limit):
            total += n
            if n >= limit:
                limit = min(2 * limit, self.max_batch)
        return total

    async def ensure_version(self) -> bool:
        """Rebuild the read models if another fold version built them; True if it rebuilt."""
        async with self.pool.acquire() as conn:
            version = await read_fold_version(conn, self.schema)
        # None: nothing applied yet; the first batch records this version (advance).
        if version in (None, FOLD_VERSION) or self.schema != tables.SCHEMA:
            return False
        log.warning("read models were built by another fold version; rebuilding them (the old ones serve "
                    "meanwhile)", found=version, wanted=FOLD_VERSION)
        from projections.rebuild import rebuild  # it imports this module

        report = await rebuild(self.pool, page=self.batch_size)
        log.info("read models rebuilt for the new fold version", version=FOLD_VERSION, events=report.events,
                 seconds=round(report.seconds, 1))
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Rebuild the read models if an older fold built them, catch up, then follow new commits
        (woken by NOTIFY, polling as a fallback) until `stop`."""
        await self.ensure_version()
        listener = await self.pool.acquire()
        try:
            await listener.add_listener(CHANNEL, self._notified)
            limit = self.batch_size
            while not stop.is_set():
                try:
                    n = await self.step(limit)
                    warmed = await self.warm() if n == 0 else 0
                except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as err:
                    # Transient: the database restarted or the line dropped. Nothing was applied
                    # (the batch's transaction did not commit); try again shortly.
                    log.warning("projection step failed, retrying", error=type(err).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                    continue
                if self.collector is not None:  # between two transactions, never inside one
                    self.collector.maybe_collect(idle=n == 0 and not warmed)
                if n >= limit:
                    limit = min(2 * limit, self.max_batch)
                    continue
                limit = self.batch_size
                if warmed:
                    continue  # a warm-up chunk read: look for new events before the next one
                if n == 0:
                    self._wake.clear()
                    stopper = asyncio.ensure_future(stop.wait())
                    waker = asyncio.ensure_future(self._wake.wait())
                    try:
                        await asyncio.wait({stopper, waker}, timeout=self.poll_seconds,
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for t in (stopper, waker):
                            t.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await t
        finally:
            with contextlib.suppress(asyncpg.InterfaceError, OSError):
                await listener.remove_listener(CHANNEL, self._notified)
            await self.pool.release(listener)

    def _notified(self, *_: object) -> None:
        self._wake.set()


async def lag(pool: asyncpg.Pool, schema: str = tables.SCHEMA) -> Lag:
    """Events committed after the checkpoint, and how long the oldest of them has waited."""
    async with pool.acquire() as conn:
        cp = await read_checkpoint(conn, schema)
        row = await conn.fetchrow(
            """SELECT count(*) AS n, extract(epoch FROM now() - min(committed_at)) AS s
                 FROM events WHERE (tx_id, position) > ($1, $2)""", cp.position.tx, cp.position.pos)
    assert row is not None  # an aggregate returns one row
    return Lag(str(cp.position), cp.applied, cp.skipped, int(row["n"]), float(row["s"] or 0.0))

