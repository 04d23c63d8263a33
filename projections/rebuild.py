"""Rebuild every read model from zero into a shadow schema, then swap it in.

The live schema (`proj`) keeps serving the whole time. The shadow (`proj_shadow`) is filled in
memory from an ordered scan of the log (pages of thousands, one fold with the same pure code the
runner uses, rows written with COPY), then caught up with the runner's incremental step, and
finally, under the runner's lock and in one transaction, caught up to the last event and
renamed into place. Readers see either the old read models or the new ones, never a mix.

All projections share one fold and one checkpoint (a fact or a rollup needs the archive's
corrections and merges), so a rebuild rebuilds them together.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable

import asyncpg
import msgspec

from projections import tables
from projections.archive import ArchiveBook, Effective, derive_all, merge_edges
from projections.facts import facts_from
from projections.runner import LOCK_KEY, Checkpoint, Runner, advance, write_checkpoint
from projections.source import Page, scan_page
from service import log as service_log
from service.store import ORIGIN

Progress = Callable[[int, int], None]
log = service_log.get("projections.rebuild")


class RebuildReport(msgspec.Struct, frozen=True):
    events: int
    skipped: int
    children: int
    facts: int
    seconds: float
    events_per_second: float


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


async def fill(pool: asyncpg.Pool, schema: str, *, page: int = 5000, progress: Progress | None = None
               ) -> RebuildReport:
    """Fold the whole log as it is now into `schema`: its tables must be empty and without keys
    (`shouwang_projection_schema`); they get them after the load (`shouwang_projection_indexes`)."""
    # Millions of small long-lived objects and no reference cycles: the cyclic collector would
    # rescan them over and over (quadratic in the log's size), so it is paused while folding.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return await _fill(pool, schema, page=page, progress=progress)
    finally:
        if gc_was_enabled:
            gc.enable()


async def _fill(pool: asyncpg.Pool, schema: str, *, page: int, progress: Progress | None) -> RebuildReport:
    started = time.perf_counter()
    book = ArchiveBook()
    cp = Checkpoint(ORIGIN, 0, 0, None)
    n = 0
    async with pool.acquire() as conn, pool.acquire() as ahead:
        total = int(await conn.fetchval("SELECT count(*) FROM events"))
        # Read the next page on a second connection while this one is folded.
        nxt: asyncio.Task[Page | None] = asyncio.ensure_future(scan_page(ahead, ORIGIN, page))
        while (current := await nxt) is not None:
            nxt = asyncio.ensure_future(scan_page(ahead, current.last, page))
            for eid, entry in current.entries:
                if entry is None:
                    book.skipped.add(eid)
                else:
                    book.add_entry(entry)
            n += len(current.entries)
            cp = Checkpoint(current.last, n - len(book.skipped), len(book.skipped), current.last_committed_at)
            if progress is not None:
                progress(n, max(total, n))
        t_read = time.perf_counter()
        effs: list[list[Effective]] = []
        archives = derive_all(book.states, effs)
        t_derive = time.perf_counter()
        facts = facts_from(effs)
        t_facts = time.perf_counter()
        edges = merge_edges(x for st in book.states.values() for x in st.entries.values()
                            if x.type in ("ArchivesMerged", "ArchivesUnmerged", "EventCorrected"))
        fact_rows = [tables.fact_row(f) for f in facts.values() if f is not None]
        async with conn.transaction():
            await conn.copy_records_to_table("archive", schema_name=schema, columns=tables.ARCHIVE_COLS,
                                             records=[tables.archive_row(a) for a in archives.values()])
            await conn.copy_records_to_table("followup", schema_name=schema, columns=tables.FOLLOWUP_COLS,
                                             records=[r for a in archives.values() for r in tables.followup_rows(a)])
            await conn.copy_records_to_table("conflict", schema_name=schema, columns=tables.CONFLICT_COLS,
                                             records=[r for a in archives.values() for r in tables.conflict_rows(a)])
            await conn.copy_records_to_table("fact", schema_name=schema, records=fact_rows, columns=tables.FACT_COLS)
            await conn.copy_records_to_table("merge_edge", schema_name=schema, columns=tables.EDGE_COLS,
                                             records=[tables.edge_row(e) for e in edges])
            await conn.execute("SELECT shouwang_projection_indexes($1)", schema)
            await write_checkpoint(conn, schema, cp)
    seconds = time.perf_counter() - started
    phases = {"read_fold": t_read - started, "derive": t_derive - t_read, "facts": t_facts - t_derive,
              "write": time.perf_counter() - t_facts}
    log.info("rebuild phases", **{k: round(v, 3) for k, v in phases.items()})
    return RebuildReport(events=n, skipped=len(book.skipped), children=len(archives), facts=len(fact_rows),
                         seconds=seconds, events_per_second=n / seconds if seconds else 0.0)


async def rebuild(pool: asyncpg.Pool, *, page: int = 5000, progress: Progress | None = None) -> RebuildReport:
    """Rebuild all read models in the shadow schema and swap them in while the live ones serve."""
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {tables.SHADOW} CASCADE")
        await conn.execute("SELECT shouwang_projection_schema($1)", tables.SHADOW)
    report = await fill(pool, tables.SHADOW, page=page, progress=progress)
    # Catch the shadow up with what was committed meanwhile, outside the lock...
    await Runner(pool, schema=tables.SHADOW, batch_size=page).catch_up()
    # ...then the last stretch and the swap under the lock, so the live runner cannot move in between.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        while await advance(conn, tables.SHADOW, page):
            pass
        await conn.execute(f"ALTER SCHEMA {tables.SCHEMA} RENAME TO proj_retired")
        await conn.execute(f"ALTER SCHEMA {tables.SHADOW} RENAME TO {tables.SCHEMA}")
        await conn.execute("DROP SCHEMA proj_retired CASCADE")
    return report
