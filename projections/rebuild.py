"""Rebuild every read model from zero into a shadow schema, then swap it in.

The live schema (`proj`) keeps serving the whole time. The shadow (`proj_shadow`) is filled in
memory from an ordered scan of the log (pages of thousands, one fold with the same pure code the
runner uses, rows written with COPY), then caught up with the runner's incremental step, and
finally, under the runner's lock and in one transaction, caught up to the last event and
renamed into place. Readers see either the old read models or the new ones, never a mix.

Where the time goes (200k events): reading and decoding the log, folding it, and deriving the
archives are Python on one core. The facts of plain work nothing corrects (most of the log) are
written by PostgreSQL itself (`facts.plain_facts_sql`) while Python derives the rest, so they
cost this process nothing; the tests check them row for row against the runner's.

All projections share one fold and one checkpoint (a fact or a rollup needs the archive's
corrections and merges), so a rebuild rebuilds them together.

Memory: folded at once, the log's every entry is held until the end (~1.4 KB an event). A log of
more than `partition_events` events (default `partitioned.PARTITION_EVENTS`) is instead read in
ranges by two processes, each row spilled to local files of the partitions its archive groups
are in (routed by a hash of their root, partitions sized in the rows they receive), and folded
one partition at a time from those files by the same two processes (`_fill_partitioned`,
projections/partitioned.py): the peak follows the partition, not the log, and the rows are the
same (tests/test_projections_partitioned.py).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import multiprocessing.process
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec

from projections import daily, partitioned, tables
from projections.archive import (
    ArchiveBook,
    ChildArchive,
    Effective,
    Entry,
    MergeEdge,
    derive_full,
    effective,
    group,
    merge_edges,
    roots,
)
from projections.facts import fact_rows_from, plain_facts_sql
from projections.runner import LOCK_KEY, Checkpoint, Runner, advance, write_checkpoint, write_fold_version
from projections.source import Page, scan_page
from runtime import log as service_log
from runtime.db import connect
from store.conn import Conn
from store.postgres import ORIGIN, Position

Progress = Callable[[int, int], None]
_MERGE_TYPES = frozenset(("ArchivesMerged", "ArchivesUnmerged", "EventCorrected"))  # as archive.derive_all
INDEX_MEMORY = "256MB"  # maintenance_work_mem while the shadow's keys and indexes are built
PARALLEL_FROM = 50_000  # events: below this, derive and write in one process whatever `workers` says
PARTITIONED_WORKERS = 2  # processes reading and folding the partitions when `workers` is not given
log = service_log.get("projections.rebuild")
T = TypeVar("T")


class RebuildReport(msgspec.Struct, frozen=True):
    events: int
    skipped: int
    children: int
    facts: int
    seconds: float
    events_per_second: float
    worker_peak_mib: float = 0.0  # the highest peak RSS of the forked workers of a partitioned fold (0: none)


def terminal_progress(label: str = "rebuild") -> Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""
    if not sys.stderr.isatty():
        return lambda done, total: None
    start = time.perf_counter()

    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        rate = done / max(time.perf_counter() - start, 1e-9)
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} events "
                         f"{rate:,.0f}/s ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


class RebuildError(Exception):
    """A rebuild failed; the live read models are as they were."""


async def fill(pool: asyncpg.Pool, schema: str, *, page: int = 5000, progress: Progress | None = None,
               database_url: str | None = None, workers: int | None = None, parallel_from: int = PARALLEL_FROM,
               partition_events: int = partitioned.PARTITION_EVENTS) -> RebuildReport:
    """Fold the whole log as it is now into `schema`: its tables must be empty and without keys
    (`shouwang_projection_schema`); they get them after the load (`shouwang_projection_indexes`,
    through `shouwang_projection_keys`, which keys only proj_shadow)."""
    # Millions of small long-lived objects and no reference cycles: the cyclic collector would
    # rescan them over and over (quadratic in the log's size), so it is paused while folding.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        async with pool.acquire() as conn:
            upto, total = await partitioned.head(conn)
        parts = partitioned.partitions_for(total, partition_events)
        if parts > 1:  # the log is more than one partition's worth: fold it partition by partition
            # two processes by default, each reading and folding its own partitions
            return await _fill_partitioned(pool, schema, upto, total, partition_events, page=page, progress=progress,
                                           database_url=database_url, workers=workers or PARTITIONED_WORKERS)
        return await _fill(pool, schema, page=page, progress=progress, database_url=database_url,
                           workers=workers or 1, parallel_from=parallel_from)
    finally:
        if gc_was_enabled:
            gc.enable()


async def _fill(pool: asyncpg.Pool, schema: str, *, page: int, progress: Progress | None, database_url: str | None,
                workers: int, parallel_from: int) -> RebuildReport:
    started, c_started = time.perf_counter(), time.process_time()
    book = ArchiveBook()
    cp = Checkpoint(ORIGIN, 0, 0, None)
    n = 0
    async with pool.acquire() as conn, pool.acquire() as ahead:
        # The count is for the progress bar only (a scan of its own over a big log).
        total = int(await conn.fetchval("SELECT count(*) FROM events")) if progress is not None else 0
        merge_entries: list[Entry] = []  # what merge_edges needs, gathered on the way
        upcast: set[str] = set()  # events read through an upcaster: their facts are Python's to write
        # Read the next page on a second connection while this one is folded.
        nxt: asyncio.Task[Page | None] = asyncio.ensure_future(scan_page(ahead, ORIGIN, page))
        while (current := await nxt) is not None:
            nxt = asyncio.ensure_future(scan_page(ahead, current.last, page))
            for eid, entry in current.entries:
                if entry is None:
                    book.skipped.add(eid)
                else:
                    book.fold(entry)
                    if entry.type in _MERGE_TYPES:
                        merge_entries.append(entry)
            upcast.update(current.upcast)
            n += len(current.entries)
            cp = Checkpoint(current.last, n - len(book.skipped), len(book.skipped), current.last_committed_at)
            if progress is not None:
                progress(n, max(total, n))
        t_read, c_read = time.perf_counter(), time.process_time()
        # PostgreSQL writes the facts of plain uncorrected events (most of the log) on the
        # reading connection while this process derives and writes the rest.
        # No parameters (the position's two integers are in the text): one simple query, sent
        # on the next turn of the loop, so it runs while the derive below holds this thread.
        plain: asyncio.Future[str] = asyncio.ensure_future(
            ahead.execute(plain_facts_sql(schema, int(cp.position.tx), int(cp.position.pos))))
        await asyncio.sleep(0)
        try:
            edges, archives_written, fact_count = await _derive_and_write(
                conn, schema, book, merge_entries, upcast, plain, n, database_url, workers, parallel_from)
        finally:
            if not plain.done():
                plain.cancel()
                await asyncio.gather(plain, return_exceptions=True)
        t_derive = t_facts = time.perf_counter()
        c_derive = time.process_time()
        async with conn.transaction():
            await conn.copy_records_to_table("merge_edge", schema_name=schema, columns=tables.EDGE_COLS,
                                             records=[tables.edge_row(e) for e in edges])
            # Room to sort a big log's keys in memory (the default 64MB spills a million facts to disk).
            await conn.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_MEMORY}'")
            await daily.refresh(conn, schema, None)  # every day's sums, by the runner's own aggregate
            await conn.execute("SELECT shouwang_projection_keys($1)", schema)
            await write_checkpoint(conn, schema, cp)
            await write_fold_version(conn, schema)
    seconds = time.perf_counter() - started
    phases = {"read_fold": t_read - started, "derive_count_write": t_derive - t_read,
              "index_swap_ready": time.perf_counter() - t_facts, "read_fold_cpu": c_read - c_started,
              "derive_count_write_cpu": c_derive - c_read}
    log.info("rebuild phases", **{k: round(v, 3) for k, v in phases.items()})
    return RebuildReport(events=n, skipped=len(book.skipped), children=archives_written, facts=fact_count,
                         seconds=seconds, events_per_second=n / seconds if seconds else 0.0)


async def _fill_partitioned(pool: asyncpg.Pool, schema: str, upto: Position, total: int, partition_events: int, *,
                            page: int, progress: Progress | None, database_url: str | None, workers: int
                            ) -> RebuildReport:
    """`fill` for a log of several partitions (projections/partitioned.py): size the partitions
    by the rows they will receive (`bounds_for_rows`) and plan the groups; then the log is read
    once, in its order, cut into `workers` ranges, each spilled by a process of its own to files
    of the partitions (a temporary directory, removed after, also on an error); then each process
    folds, derives and writes every `workers`-th partition from its files, one at a time, so the
    peak is one partition's book. The processes are forked when given the URL."""
    started = time.perf_counter()
    async with pool.acquire() as conn, pool.acquire() as ahead, pool.acquire() as reader:
        shares = max(1, workers) if database_url is not None else 1
        # the tally, the plan's deciding events and the ranges' cuts: three reads of the log at once
        tally: partitioned.Tally
        plan: partitioned.Plan
        ranges: list[tuple[Position, Position]]
        tally, plan, ranges = await _together(partitioned.tally(ahead, upto), partitioned.plan(conn, upto, 1),
                                              partitioned.split(reader, upto, total, shares))
        plan.bounds = partitioned.bounds_for_rows(tally.by_children, partition_events, shares)
        t_plan, c_plan = time.perf_counter(), time.process_time()
        plain: asyncio.Future[str] | None = None
        with tempfile.TemporaryDirectory(prefix="shouwang-rebuild-") as tmp:  # spill files, the workers' peaks
            directory = Path(tmp)
            try:
                # PostgreSQL writes the facts of plain uncorrected work while the log is spilled and folded
                plain = asyncio.ensure_future(ahead.execute(plain_facts_sql(schema, int(upto.tx), int(upto.pos))))
                # 1. each range of the log spilled to the partitions' files by a process of its own
                step = (lambda n: progress(min(n * len(ranges), total), total)) if progress is not None else None
                rows = await _forked(
                    [(_spill_process, (database_url, directory, plan, after, last, spiller, page))
                     for spiller, (after, last) in enumerate(ranges[1:], 1)],
                    partitioned.spill(reader, plan, *ranges[0], directory, 0, page, step))
                t_spill, c_spill = time.perf_counter(), time.process_time()
                # nothing after needs the maps of corrected families (they grow with the log)
                plan.family, plan.family_keys = {}, {}
                # 2. each process folds, derives and writes every `shares`-th partition from the files
                await _forked(
                    [(_partitions_process, (database_url, schema, directory, plan, share, shares, len(ranges)))
                     for share in range(1, shares)],
                    _fold_partitions(conn, schema, plan, directory, 0, shares, len(ranges)))
                await plain
            finally:
                if plain is not None and not plain.done():
                    plain.cancel()
                    await asyncio.gather(plain, return_exceptions=True)
            worker_peak = _workers_peak(directory)
        t_derive = time.perf_counter()
        counts = await conn.fetchrow(f"SELECT (SELECT count(*) FROM {schema}.archive) AS a, "
                                     f"(SELECT count(*) FROM {schema}.fact) AS f")
        assert counts is not None
        cp = Checkpoint(upto, total - tally.skipped, tally.skipped, tally.last_committed_at)
        async with conn.transaction():
            await conn.copy_records_to_table("merge_edge", schema_name=schema, columns=tables.EDGE_COLS,
                                             records=[tables.edge_row(e) for e in plan.edges])
            await conn.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_MEMORY}'")
            await daily.refresh(conn, schema, None)
            await conn.execute("SELECT shouwang_projection_keys($1)", schema)
            await write_checkpoint(conn, schema, cp)
            await write_fold_version(conn, schema)
    seconds = time.perf_counter() - started
    log.info("rebuild phases", partitions=plan.parts, spilled_rows=rows, plan=round(t_plan - started, 3),
             spill=round(t_spill - t_plan, 3), spill_cpu=round(c_spill - c_plan, 3),
             fold_derive_write=round(t_derive - t_spill, 3),
             index_swap_ready=round(time.perf_counter() - t_derive, 3))
    return RebuildReport(events=total, skipped=tally.skipped, children=int(counts["a"]),
                         facts=int(counts["f"]), seconds=seconds,
                         events_per_second=total / seconds if seconds else 0.0, worker_peak_mib=worker_peak)


async def _together(*steps: Awaitable[object]) -> list[Any]:
    """Run these steps at once (each on a connection of its own) and return their results; if one
    fails, the others are cancelled and awaited before the failure is raised."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _forked(workers: list[tuple[Callable[..., None], tuple[object, ...]]], own: Awaitable[T]) -> T:
    """Fork a process for each (target, args) of `workers`, run `own` here meanwhile, and wait for
    them all (also when `own` fails); a worker that did not exit 0 fails the rebuild."""
    ctx = multiprocessing.get_context("fork")
    children: list[multiprocessing.process.BaseProcess] = []
    try:
        for target, args in workers:
            child = ctx.Process(target=target, name=f"rebuild-{target.__name__.strip('_')}-{len(children) + 1}",
                                args=args)
            child.start()
            children.append(child)
        result = await own
    finally:
        await _joined(children)
    _succeeded(children)
    return result


def _spill_process(database_url: str, directory: Path, plan: partitioned.Plan, after: Position, upto: Position,
                   spiller: int, page: int) -> None:
    """A forked rebuild worker spilling its range of the log (`partitioned.spill`); exit code 0
    on success."""
    async def run() -> None:
        conn = await connect(database_url)
        try:
            started, cpu = time.perf_counter(), time.process_time()
            rows = await partitioned.spill(conn, plan, after, upto, directory, spiller, page)
            log.info("rebuild spill", spiller=spiller, rows=rows, seconds=round(time.perf_counter() - started, 3),
                     cpu=round(time.process_time() - cpu, 3))
        finally:
            await conn.close()

    asyncio.run(run())
    (directory / f"spill-{spiller}.peak").write_text(str(_peak_mib()))


class _Folded(msgspec.Struct):
    rows: int = 0  # rows folded over this share's partitions (an event of several partitions counts in each)
    folded: float = 0.0  # seconds reading the files, decoding and folding
    written: float = 0.0  # seconds deriving and writing
    folded_cpu: float = 0.0  # of which this process's CPU
    written_cpu: float = 0.0


async def _fold_partitions(writer: Conn, schema: str, plan: partitioned.Plan, directory: Path, share: int,
                           shares: int, spillers: int) -> _Folded:
    """Fold, derive and write the partitions of this share (every `shares`-th from `share`), one
    at a time, from the files `spillers` processes spilled them to."""
    out = _Folded()
    clock = time.perf_counter
    cpu = time.process_time
    for part in range(share, plan.parts, shares):
        t, c = clock(), cpu()
        # the last partition's book is gone (no cycles); this one holds states of this partition's keys only
        book = ArchiveBook(keep=plan.keeper(part))
        folded = partitioned.fold_partition(book, directory, part, spillers)
        out.rows += folded.rows
        t_folded, c_folded = clock(), cpu()
        out.folded += t_folded - t
        out.folded_cpu += c_folded - c
        await _write_share(writer, schema, book, plan.edges, folded.upcast, part, plan.parts, plan.part_of,
                           folded.others)
        out.written += clock() - t_folded
        out.written_cpu += cpu() - c_folded
        del book, folded
    log.info("rebuild share", share=share, rows=out.rows, folded=round(out.folded, 3),
             derived_written=round(out.written, 3), folded_cpu=round(out.folded_cpu, 3),
             derived_written_cpu=round(out.written_cpu, 3))
    return out


def _partitions_process(database_url: str, schema: str, directory: Path, plan: partitioned.Plan, share: int,
                        shares: int, spillers: int) -> None:
    """A forked rebuild worker folding, deriving and writing every `shares`-th partition; exit
    code 0 on success."""
    async def run() -> None:
        writer = await connect(database_url)
        try:
            await _fold_partitions(writer, schema, plan, directory, share, shares, spillers)
        finally:
            await writer.close()

    asyncio.run(run())
    (directory / f"{share}.peak").write_text(str(_peak_mib()))


def _workers_peak(directory: Path) -> float:
    """The highest peak the forked workers left in `directory` (MiB; 0 with none)."""
    return max((float(f.read_text()) for f in directory.glob("*.peak")), default=0.0)


def _peak_mib() -> float:
    """This process's peak resident set size (the kernel's high-water mark), MiB; 0 off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _derive_and_write(conn: Conn, schema: str, book: ArchiveBook, merge_entries: list[Entry],
                            upcast: set[str], plain: asyncio.Future[str], n: int, database_url: str | None,
                            workers: int, parallel_from: int) -> tuple[list[MergeEdge], int, int]:
    """Derive every archive and the facts Python writes, in this process or shared by forked
    ones, then wait for `plain` (PostgreSQL's facts); returns (merge edges, archive rows, fact rows)."""
    edges = merge_edges(merge_entries)
    shares = workers if database_url is not None and n >= parallel_from else 1
    children: list[multiprocessing.process.BaseProcess] = []
    if shares > 1:
        # Derive, count and write in `shares` processes that inherit the folded book (fork:
        # copy-on-write, nothing is sent). Each writes the groups whose root hashes to it
        # and the facts it owns; the rows become visible only with the swap.
        ctx = multiprocessing.get_context("fork")
        for share in range(1, shares):
            worker = ctx.Process(target=_share_process, name=f"rebuild-share-{share}",
                                 args=(database_url, schema, book, edges, upcast, share, shares))
            worker.start()
            children.append(worker)
    try:
        archives_written, fact_count = await _write_share(conn, schema, book, edges, upcast, 0, shares)
    finally:
        await _joined(children)
    _succeeded(children)
    waited = time.perf_counter()
    inserted = int((await plain).split()[-1])  # "INSERT 0 <rows>"
    log.info("rebuild facts of plain work", rows=inserted, waited_seconds=round(time.perf_counter() - waited, 3))
    if shares > 1:
        counts = await conn.fetchrow(f"SELECT (SELECT count(*) FROM {schema}.archive) AS a, "
                                     f"(SELECT count(*) FROM {schema}.fact) AS f")
        assert counts is not None  # scalar subqueries return one row
        return edges, int(counts["a"]), int(counts["f"])
    return edges, archives_written, fact_count + inserted


async def _joined(children: list[multiprocessing.process.BaseProcess]) -> None:
    """Wait for every forked worker to exit (without blocking the event loop) and reap it."""
    for proc in children:
        await _exited(proc)
        proc.join()


def _succeeded(children: list[multiprocessing.process.BaseProcess]) -> None:
    """A worker that failed fails the rebuild, before anything is swapped in."""
    failed = [proc.name for proc in children if proc.exitcode != 0]
    if failed:
        raise RebuildError(f"rebuild worker(s) {failed} failed; the live read models are untouched")


async def _exited(proc: multiprocessing.process.BaseProcess) -> None:
    """Wait for a worker without a thread (threads and fork do not mix): its sentinel becomes
    readable when it exits."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    def mark() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(proc.sentinel, mark)
    try:
        await done
    finally:
        loop.remove_reader(proc.sentinel)


def _share_process(database_url: str, schema: str, book: ArchiveBook, edges: list[MergeEdge], upcast: set[str],
                   share: int, shares: int) -> None:
    """A forked rebuild worker: its own event loop and connection; exit code 0 on success."""
    async def run() -> None:
        conn = await connect(database_url)
        try:
            await _write_share(conn, schema, book, edges, upcast, share, shares)
        finally:
            await conn.close()

    asyncio.run(run())


async def _write_share(conn: Conn, schema: str, book: ArchiveBook, edges: list[MergeEdge],
                       upcast: set[str], share: int, shares: int, share_of: Callable[[str], int] | None = None,
                       others: set[str] | None = None) -> tuple[int, int]:
    """Derive the archives of the groups in this share (of `shares`; a group's share by its root's
    key, `share_of`, by default `partitioned.share_of`), their facts that this share owns, and
    COPY them. Returns (archive rows, fact rows). `others`: the events among the book's whose
    facts other shares write (a partition's, from its spill), so ownership is not computed here."""
    root_of = roots(edges)
    _share_of = share_of or (lambda key: partitioned.share_of(key, shares))
    archives: list[ChildArchive] = []
    effs: list[list[Effective]] = []
    for root, members in group(book.states, root_of).items():
        if _share_of(root) != share:
            continue
        entries = [e for m in members if m in book.states for e in book.states[m].entries.values()]
        arch, group_effs = derive_full(root, entries, members[1:])
        archives.append(arch)
        effs.append(group_effs)
        archives.extend(ChildArchive(child_id=m, merged_into=root) for m in members[1:])
    for key, st in book.states.items():
        if key.startswith("ev:") and _share_of(key) == share:
            effs.append(effective(st.entries.values())[0])
    # the other plain facts: facts.plain_facts_sql
    facts = fact_rows_from(effs, plain_in_sql=upcast, skip=others or frozenset())
    if others is None and shares > 1:  # an event in groups of several shares is written by the share of its first root
        ours: dict[str, bool] = {}  # root -> in this share (a root has many facts: hashed once)
        one_key = book.one_key

        def owned(eid: str) -> bool:
            if one_key(eid):  # its one key is a member of a group of this share: its fact is ours
                return True
            first = min(root_of.get(k, k) for k in book.family_keys(eid))
            mine = ours.get(first)
            if mine is None:
                mine = ours[first] = _share_of(first) == share
            return mine

        facts = {eid: f for eid, f in facts.items() if f is not None and owned(eid)}
    fact_rows = [f for f in facts.values() if f is not None]
    async with conn.transaction():
        await conn.copy_records_to_table("archive", schema_name=schema, columns=tables.ARCHIVE_COLS,
                                         records=[tables.archive_row(a) for a in archives])
        await conn.copy_records_to_table("followup", schema_name=schema, columns=tables.FOLLOWUP_COLS,
                                         records=[r for a in archives for r in tables.followup_rows(a)])
        await conn.copy_records_to_table("conflict", schema_name=schema, columns=tables.CONFLICT_COLS,
                                         records=[r for a in archives for r in tables.conflict_rows(a)])
        await conn.copy_records_to_table("fact", schema_name=schema, records=fact_rows, columns=tables.FACT_COLS)
    return len(archives), len(fact_rows)


async def rebuild(pool: asyncpg.Pool, *, page: int = 5000, progress: Progress | None = None,
                  database_url: str | None = None, workers: int | None = None, partition_events: int | None = None
                  ) -> RebuildReport:
    """Rebuild all read models in the shadow schema and swap them in while the live ones serve.
    With a URL and workers > 1, the derive-and-write phase is shared by forked processes."""
    async with pool.acquire() as conn:
        # Schemas are the owner role's: these SECURITY DEFINER functions (migration 0007) drop,
        # make and swap the shadow for a service role that owns nothing.
        await conn.execute("SELECT shouwang_projection_shadow()")
    report = await fill(pool, tables.SHADOW, page=page, progress=progress, database_url=database_url,
                        workers=workers, partition_events=partition_events or partitioned.PARTITION_EVENTS)
    # Catch the shadow up with what was committed meanwhile, outside the lock...
    await Runner(pool, schema=tables.SHADOW, batch_size=page, max_batch=4 * page).catch_up()
    # ...then the last stretch and the swap under the lock, so the live runner cannot move in between.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        while await advance(conn, tables.SHADOW, page):
            pass
        await conn.execute("SELECT shouwang_projection_swap()")  # proj_shadow becomes proj
    return report
