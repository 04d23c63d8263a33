"""`shouwang db ...` and `shouwang audit verify-chain`: the store's operator commands."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

from runtime.cli import cli_errors, database_url, emit, run_async
from runtime.db import connect, pool_for
from runtime.settings import Settings
from store import migrate, partitions, roles
from store.postgres import EventStore


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="the central event store: migrate, status")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = dbsub.add_parser("migrate", help="apply pending SQL migrations as the owner role (safe to run at every start)")
    m.add_argument("--database-url",
                   help="PostgreSQL URL of the owner role "
                        "(default SHOUWANG_DATABASE_OWNER_URL, else SHOUWANG_DATABASE_URL)")
    m.set_defaults(handler=_migrate)
    r = dbsub.add_parser("roles", help="create the owner and the service role, hand the schema to the owner, "
                                       "migrate as the owner and grant the service only what it needs (idempotent)")
    r.add_argument("--database-url", required=True,
                   help="a superuser's URL of the center's database, e.g. postgresql:///shouwang?host=/run/postgresql")
    r.add_argument("--owner", default=roles.DEFAULT_OWNER,
                   help=f"owner role: runs migrations, owns every table (default {roles.DEFAULT_OWNER}); "
                        "password from SHOUWANG_DB_OWNER_PASSWORD")
    r.add_argument("--service", default=roles.DEFAULT_SERVICE,
                   help=f"service role: what the center connects as (default {roles.DEFAULT_SERVICE}); "
                        "password from SHOUWANG_DB_SERVICE_PASSWORD")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_roles)
    st = dbsub.add_parser("status", help="schema version, events stored, per-site watermarks")
    st.add_argument("--database-url")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=_status)

    pt = dbsub.add_parser("partitions", help="the log's partitions (region, month): rows and size on disk; "
                                             "--ensure creates the missing ones first")
    pt.add_argument("--database-url")
    pt.add_argument("--ensure", action="store_true",
                    help="create a partition for every region and for this month and the months ahead, moving "
                         "rows out of the default partitions (what `center run` does at start and daily)")
    pt.add_argument("--ahead", type=_months_ahead, default=partitions.DEFAULT_AHEAD, metavar="MONTHS",
                    help=f"with --ensure: months created ahead of this one (default {partitions.DEFAULT_AHEAD})")
    pt.add_argument("--json", action="store_true", help="machine-readable output")
    pt.set_defaults(handler=_partitions)

    audit = sub.add_parser("audit", help="auditors' tools: verify a site's hash chain")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = asub.add_parser("verify-chain", help="recompute each site's hash chain from the store")
    v.add_argument("--site", action="append", help="site id (repeatable; default all sites)")
    v.add_argument("--database-url")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_verify)
    from projections.cli import register_audit  # `audit asof`: the projections' replay as of a time

    register_audit(asub)


def owner_url(args: argparse.Namespace, settings: Settings) -> str:
    """--database-url when given, else SHOUWANG_DATABASE_OWNER_URL, else SHOUWANG_DATABASE_URL
    (one role: the tests, the demo, an install without `db roles`)."""
    return str(args.database_url or settings.database_owner_url or settings.database_url)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        conn = await connect(owner_url(args, settings))
        try:
            with cli_errors(migrate.MigrationRefused):
                applied = await migrate.migrate(conn)
            version = await migrate.current_version(conn)
        finally:
            await conn.close()
        print(f"schema at version {version}; applied now: {applied or 'nothing'}")
        return 0

    return run_async(go())


def _roles(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        conn = await connect(args.database_url)
        try:
            with cli_errors(roles.RoleError, migrate.MigrationRefused):
                report = await roles.setup_roles(
                    conn, owner=args.owner, service=args.service,
                    owner_password=os.environ.get("SHOUWANG_DB_OWNER_PASSWORD") or None,
                    service_password=os.environ.get("SHOUWANG_DB_SERVICE_PASSWORD") or None)
        finally:
            await conn.close()

        def lines() -> Iterator[str]:
            yield (f"database {report.database}: owner {report.owner} (migrations), service {report.service} "
                   f"(the center); created {report.created or 'no role'}, {report.reassigned} object(s) handed "
                   f"to the owner, migrations applied now: {report.migrated or 'none'}")
            for role, password in report.generated_passwords.items():
                yield f"  new password of {role} (shown once): {password}"

        emit({"database": report.database, "owner": report.owner, "service": report.service,
              "created": report.created, "generated_passwords": report.generated_passwords,
              "reassigned": report.reassigned, "migrated": report.migrated}, args.json, lines)
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


def _months_ahead(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ahead must be a whole number of months, got {text!r}") from None
    if not 0 <= value <= partitions.MAX_AHEAD:
        raise argparse.ArgumentTypeError(f"--ahead must be 0 to {partitions.MAX_AHEAD} months, got {value}")
    return value


def _partitions(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        async with pool_for(database_url(args, settings), max_size=2) as pool, pool.acquire() as conn:
            created = await partitions.ensure(conn, args.ahead) if args.ensure else None
            leaves = await partitions.partitions(conn)

        def lines() -> Iterator[str]:
            if created is not None:
                yield f"partitions created now: {created}"
            rows, size = sum(p.rows for p in leaves), sum(p.bytes for p in leaves)
            yield f"{len(leaves)} partitions, {rows} events, {size / 2**20:.1f} MiB"
            for p in leaves:
                where = f"{p.region or '(no partition yet)'} {p.month or 'default'}"
                per = f"{p.bytes / p.rows:,.0f} B/event" if p.rows else "-"
                yield f"  {p.name:<32} {where:<26} {p.rows:>10} events {p.bytes / 2**20:>9.1f} MiB  {per}"

        emit({"created": created, "partitions": leaves}, args.json, lines)
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
