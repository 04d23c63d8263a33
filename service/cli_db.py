"""`shouwang db ...` and `shouwang audit verify-chain`: the store's operator commands."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from runtime.cli import database_url, emit, run_async
from runtime.db import connect, pool_for
from runtime.settings import Settings
from store import migrate
from store.postgres import EventStore


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="the central event store: migrate, status")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = dbsub.add_parser("migrate", help="apply pending SQL migrations (safe to run at every start)")
    m.add_argument("--database-url", help="PostgreSQL URL (default SHOUWANG_DATABASE_URL)")
    m.set_defaults(handler=_migrate)
    st = dbsub.add_parser("status", help="schema version, events stored, per-site watermarks")
    st.add_argument("--database-url")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=_status)

    audit = sub.add_parser("audit", help="auditors' tools: verify a site's hash chain")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = asub.add_parser("verify-chain", help="recompute each site's hash chain from the store")
    v.add_argument("--site", action="append", help="site id (repeatable; default all sites)")
    v.add_argument("--database-url")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_verify)
    from projections.cli import register_audit  # `audit asof`: the projections' replay as of a time

    register_audit(asub)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        conn = await connect(database_url(args, settings))
        try:
            applied = await migrate.migrate(conn)
            version = await migrate.current_version(conn)
        finally:
            await conn.close()
        print(f"schema at version {version}; applied now: {applied or 'nothing'}")
        return 0

    return run_async(go())


def _status(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        async with pool_for(database_url(args, settings), max_size=2) as pool:
            store = EventStore(pool)
            async with pool.acquire() as conn:
                version = await migrate.current_version(conn)
            sites = await store.all_progress()
            total = await store.count()

        def lines() -> Iterator[str]:
            yield f"schema version {version}, {total} events"
            for s in sites:
                yield f"  {s.site_id:<28} watermark {s.watermark:>8}  max {s.max_seq:>8}  holes {s.holes or '-'}"

        emit({"schema_version": version, "events": total, "sites": sites}, args.json, lines)
        return 0

    return run_async(go())


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        async with pool_for(database_url(args, settings), max_size=2) as pool:
            store = EventStore(pool)
            sites = args.site or [s.site_id for s in await store.all_progress()]
            reports = [await store.verify_chain(s) for s in sites]

        def lines() -> Iterator[str]:
            for r in reports:
                yield f"{r.site_id:<28} {'ok' if r.ok else 'BROKEN':<7} {r.verified} events"
                yield from (f"    {p}" for p in r.problems)

        emit(reports, args.json, lines)
        return 0 if all(r.ok for r in reports) else 1

    return run_async(go())
