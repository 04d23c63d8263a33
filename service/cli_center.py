"""`shouwang center ...`: run the center, manage sites, inspect and replay the quarantine."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from runtime import log
from runtime.cli import CliError, cli_errors, database_url, emit, emit_json, run_async
from runtime.db import pool_for
from runtime.settings import Settings, SettingsError
from service import cli_users
from store import migrate

_log = log.get("service.cli_center")

# `center run`'s parts: those of service.center.run_center in this process, and two children.
# The projector (`shouwang projections run`) and the HTTP API with the dashboard (`shouwang
# center api`) each get a process of their own, so neither folding nor rendering pages holds up
# ingest on the event loop; `center run` starts them after the schema is checked, stops them
# on SIGTERM/SIGINT before its own parts, and stops everything if one of them exits.
CHILD_PARTS = ("projections", "api")
PROJECTIONS_ARGV = ("projections", "run")  # the projector's command line (bench/lag.py measures this process)
RUN_PARTS = ("ingest", "receipts", "fanout", "deadletters", "restore", *CHILD_PARTS)
API_PORT = 8800  # service.api.config.ApiSettings.port
CHILD_STOP_SECONDS = 30.0


def register(sub: Any) -> None:
    center = sub.add_parser("center", help="the township center: ingest, receipts, fan-out, sites, quarantine")
    csub = center.add_subparsers(dest="center_command", metavar="ACTION", required=True)

    run = csub.add_parser("run", help="run the whole center (every part, the HTTP API and dashboard included) "
                                      "until SIGTERM/SIGINT")
    run.add_argument("--ingesters", type=int, default=1, help="ingest loops in this process (default 1)")
    run.add_argument("--parts", default=",".join(RUN_PARTS),
                     help=f"comma-separated parts to run here (default all: {','.join(RUN_PARTS)}); "
                          f"{' and '.join(CHILD_PARTS)} run as child processes of this one "
                          f"(`shouwang projections run`, `shouwang center api`)")
    run.add_argument("--host", help="the HTTP API's listen address (default SHOUWANG_API_HOST or 127.0.0.1)")
    run.add_argument("--port", type=int, help=f"the HTTP API's port (default SHOUWANG_API_PORT or {API_PORT})")
    run.add_argument("--max-deliver", type=int, default=None, help="ingest consumer MaxDeliver (default 6)")
    run.add_argument("--backoff", default=None,
                     help="ingest redelivery delays in seconds, comma-separated (default 30,60,120,300,600)")
    run.add_argument("--replicas", type=int, default=None,
                     help="copies of CARE_UP and CARE_DOWN kept by the NATS servers: 1 on one server, 3 on a "
                          "three-server cluster (default SHOUWANG_NATS_REPLICAS or 1); SHOUWANG_NATS_URL then "
                          "lists every server, separated by commas")
    _common(run)
    run.set_defaults(handler=_run)

    site = csub.add_parser("site", help="the site registry and NATS credentials")
    ssub = site.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    add = ssub.add_parser("add", help="register a site (or re-enable it) and print its NATS credentials")
    add.add_argument("site_id", help="region.township.site, e.g. gx-lp.xy.v03")
    add.add_argument("--kind", required=True, choices=["village", "school", "township", "community"])
    add.add_argument("--name", required=True, help="display name of the site")
    add.add_argument("--township", help="display name of its township")
    add.add_argument("--users-file", type=Path, help="rewrite this NATS users file (deploy/nats/users.conf)")
    add.add_argument("--creds-out", type=Path,
                     help="write the site's credentials as JSON (mode 0600) for its agent's `creds` setting")
    add.add_argument("--nats-url", help="also create the site's durable consumer now (default: at center start)")
    _common(add)
    add.set_defaults(handler=_site_add)
    ls = ssub.add_parser("list", help="registered sites with their progress and counters")
    ls.add_argument("--json", action="store_true")
    _common(ls)
    ls.set_defaults(handler=_site_list)
    dis = ssub.add_parser("disable", help="refuse a site's events from now on (they go to quarantine)")
    dis.add_argument("site_id")
    dis.add_argument("--users-file", type=Path, help="rewrite this NATS users file without the site")
    _common(dis)
    dis.set_defaults(handler=_site_disable)
    uf = ssub.add_parser("users-file", help="write the NATS users file for every active site")
    uf.add_argument("path", type=Path)
    _common(uf)
    uf.set_defaults(handler=_users_file)

    q = csub.add_parser("quarantine", help="refused input: list, show, replay")
    qsub = q.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    ql = qsub.add_parser("list", help="held rows (or all with --all)")
    ql.add_argument("--site")
    ql.add_argument("--all", action="store_true", help="include replayed rows")
    ql.add_argument("--limit", type=int, default=100)
    ql.add_argument("--json", action="store_true")
    _common(ql)
    ql.set_defaults(handler=_q_list)
    qs = qsub.add_parser("show", help="one row, with its raw bytes")
    qs.add_argument("id", type=int)
    _common(qs)
    qs.set_defaults(handler=_q_show)
    qr = qsub.add_parser("replay", help="run a held row through ingest again (after a fix)")
    qr.add_argument("id", type=int, nargs="?", help="row id (or --site for every held row of a site)")
    qr.add_argument("--site", help="replay every held row of this site")
    qr.add_argument("--nats-url", help="NATS URL for the receipt (default SHOUWANG_NATS_URL; '' for none)")
    _common(qr)
    qr.set_defaults(handler=_q_replay)

    cli_users.register(csub)  # user, token, api: the HTTP API's commands (service/cli_users.py)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="PostgreSQL URL (default SHOUWANG_DATABASE_URL)")


def _pool(args: argparse.Namespace, settings: Settings) -> contextlib.AbstractAsyncContextManager[asyncpg.Pool]:
    """The center's operator commands migrate first: they may be the first thing run on a new database."""
    return pool_for(database_url(args, settings), max_size=2, prepare=migrate.migrate)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from service.center import CORE_PARTS, run_center
    from service.streams import StreamSettings

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = set(parts) - set(RUN_PARTS)
    if bad or not parts:
        raise CliError(f"--parts {args.parts!r}: unknown {sorted(bad)}; use {', '.join(RUN_PARTS)}")
    if args.ingesters < 1:
        raise CliError(f"--ingesters {args.ingesters}: must be at least 1")
    if args.port is not None and not 0 < args.port < 65536:
        raise CliError(f"--port {args.port}: not a TCP port")
    options: dict[str, Any] = {"batch": settings.ingest_batch}
    if args.backoff is not None:
        try:
            options["backoff"] = tuple(float(x) for x in args.backoff.split(","))
        except ValueError:
            raise CliError(f"--backoff {args.backoff!r}: expected seconds separated by commas, e.g. 30,60") from None
        if not options["backoff"] or min(options["backoff"]) <= 0:
            raise CliError(f"--backoff {args.backoff!r}: each delay must be above 0")
    if args.max_deliver is not None:
        options["max_deliver"] = args.max_deliver
    options["replicas"] = settings.nats_replicas if args.replicas is None else args.replicas
    if not 1 <= options["replicas"] <= 5:
        raise CliError(f"--replicas {args.replicas}: JetStream keeps 1 to 5 copies of a stream")
    stream_settings = StreamSettings(**options)
    if stream_settings.max_deliver <= len(stream_settings.backoff):
        raise CliError(f"--max-deliver {stream_settings.max_deliver}: must exceed the number of --backoff delays "
                       f"({len(stream_settings.backoff)})")
    here = [p for p in parts if p in CORE_PARTS]
    children = [p for p in CHILD_PARTS if p in parts]
    url = database_url(args, settings)
    if "api" in children:
        from service.api.config import ApiSettings

        try:
            ApiSettings.from_env()  # a bad SHOUWANG_API_* is refused here, naming the key, not in the child
        except SettingsError as err:
            raise CliError(str(err)) from None

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        started = False

        def on_signal() -> None:
            stop.set()
            # Still starting (e.g. waiting for NATS, which it does for as long as it takes):
            # nothing to drain yet, so stop now rather than when the server comes back.
            if not started and main_task is not None:
                main_task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)

        async def serve(check: Any) -> None:
            nonlocal started
            running: list[_Child] = []
            try:
                for name in children:
                    running.append(await _Child.start(name, _child_argv(name, args), url))
                started = True
                _log.info("center run started", parts=parts, children={c.name: c.pid for c in running})
                while not stop.is_set():
                    check()
                    for child in running:
                        child.check()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
            finally:
                # The children first (the API takes writes; the projector finishes its batch),
                # then this process's own parts as run_center's block exits.
                await asyncio.gather(*(c.stop() for c in running))

        try:
            if here:
                async with run_center(url, settings.nats_url, ingesters=args.ingesters,
                                      parts=here, settings=stream_settings) as center:
                    await serve(center.check)
            else:
                await serve(lambda: None)
        except asyncio.CancelledError:
            if stop.is_set() and not started:
                print("shouwang: stopped while starting", file=sys.stderr)
                return 0
            raise
        except _PartExited as err:
            print(f"shouwang: {err}", file=sys.stderr)
            return 1
        return 0

    return run_async(go())


class _PartExited(Exception):
    """A child part of `center run` exited by itself; the center stops (exit 1) and its unit restarts it."""


def _child_argv(part: str, args: argparse.Namespace) -> list[str]:
    if part == "projections":
        return list(PROJECTIONS_ARGV)
    argv = ["center", "api"]
    if args.host:
        argv += ["--host", args.host]
    if args.port:
        argv += ["--port", str(args.port)]
    return argv


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when `center run` dies, even by SIGKILL (Linux)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Child:
    """One part of `center run` in a process of its own: `python -m shouwang ARGV`, the same
    environment with the database URL that `center run` uses, stdout and stderr shared."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc = name, proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(cls, name: str, argv: list[str], database_url: str) -> _Child:
        env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url}  # not on the command line (ps shows it)
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shouwang", *argv, env=env,
                                                    stdin=asyncio.subprocess.DEVNULL, preexec_fn=preexec)
        _log.info("center part started", part=name, pid=proc.pid)
        return cls(name, proc)

    def check(self) -> None:
        """Raise if the child has exited: `center run` then stops (its unit restarts it)."""
        if self.proc.returncode is not None:
            raise _PartExited(f"center part {self.name} (pid {self.proc.pid}) exited with {self.proc.returncode}; "
                           f"its log is above; stopping the center")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), CHILD_STOP_SECONDS)
            except TimeoutError:
                _log.error("center part did not stop in time; killing it", part=self.name, pid=self.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        _log.info("center part stopped", part=self.name, pid=self.proc.pid, code=self.proc.returncode)


def _site_add(args: argparse.Namespace, settings: Settings) -> int:
    from service.sites import SiteError, register_site, write_users_file

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(SiteError):
                creds = await register_site(pool, args.site_id, args.kind, args.name, args.township)
            if args.users_file:
                n = await write_users_file(pool, args.users_file)
                print(f"wrote {args.users_file} ({n} sites); reload NATS: nats-server --signal reload")
        if args.nats_url:
            await _ensure_consumer(args.nats_url, args.site_id)
        if args.creds_out:
            args.creds_out.write_bytes(b"")
            args.creds_out.chmod(0o600)
            args.creds_out.write_bytes(msgspec.json.format(msgspec.json.encode(creds)) + b"\n")
            print(f"credentials written to {args.creds_out}")
        print(f"site {creds.site_id} registered. NATS credentials for its agent (shown once here):")
        print(f"  user:         {creds.user}")
        print(f"  password:     {creds.password}")
        print(f"  inbox prefix: {creds.inbox_prefix}")
        print(f"  consumer:     {creds.durable}")
        return 0

    return run_async(go())


async def _ensure_consumer(nats_url: str, site_id: str) -> None:
    from service.center import connect_nats
    from service.streams import ensure_site_consumer, ensure_streams

    nc = await connect_nats(nats_url, max_reconnect_attempts=2)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        await ensure_site_consumer(js, site_id)
    finally:
        await nc.close()


def _site_list(args: argparse.Namespace, settings: Settings) -> int:
    from service.sites import list_sites
    from store.postgres import EventStore

    async def go() -> int:
        async with _pool(args, settings) as pool:
            sites = await list_sites(pool)
            progress = {p.site_id: p for p in await EventStore(pool).all_progress()}
        docs = []
        for s in sites:
            doc = msgspec.to_builtins(s)
            p = progress.get(s.site_id)
            doc["watermark"] = p.watermark if p else 0
            doc["events_stored"] = p.events_stored if p else 0
            docs.append(doc)

        def table() -> Iterator[str]:
            yield (f"{'site':<24} {'kind':<9} {'active':<6} {'stored':>8} {'watermark':>9} {'holes':>5} "
                   f"{'unknown':>7} {'quarant.':>8}  name")
            for s in sites:
                p = progress.get(s.site_id)
                yield (f"{s.site_id:<24} {s.kind:<9} {'yes' if s.active else 'no':<6} "
                       f"{p.events_stored if p else 0:>8} {p.watermark if p else 0:>9} {len(p.holes) if p else 0:>5} "
                       f"{s.not_understood:>7} {s.quarantined:>8}  {s.name}")

        emit(docs, args.json, table)
        return 0

    return run_async(go())


def _site_disable(args: argparse.Namespace, settings: Settings) -> int:
    from service.sites import SiteError, disable_site, write_users_file

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(SiteError):
                await disable_site(pool, args.site_id)
            if args.users_file:
                n = await write_users_file(pool, args.users_file)
                print(f"wrote {args.users_file} ({n} sites); reload NATS: nats-server --signal reload")
        print(f"site {args.site_id} disabled: its events now go to quarantine")
        return 0

    return run_async(go())


def _users_file(args: argparse.Namespace, settings: Settings) -> int:
    from service.sites import write_users_file

    async def go() -> int:
        async with _pool(args, settings) as pool:
            n = await write_users_file(pool, args.path)
        print(f"wrote {args.path} ({n} sites)")
        return 0

    return run_async(go())


def _q_list(args: argparse.Namespace, settings: Settings) -> int:
    from service.quarantine import list_rows

    async def go() -> int:
        async with _pool(args, settings) as pool:
            rows = await list_rows(pool, site_id=args.site, include_replayed=args.all, limit=args.limit)

        def lines() -> Iterator[str]:
            if not rows:
                yield "quarantine is empty" if not args.site else f"nothing held for {args.site}"
            for r in rows:
                yield (f"#{r.id:<6} {r.received_at:%Y-%m-%d %H:%M:%S} {r.status:<8} {r.site_id or '-':<22} "
                       f"{r.size:>6} B  {r.reason[:150]}")

        emit(rows, args.json, lines)
        return 0

    return run_async(go())


def _q_show(args: argparse.Namespace, settings: Settings) -> int:
    from service.quarantine import QuarantineError, get_row

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(QuarantineError):
                row, raw, is_msgpack = await get_row(pool, args.id)
        doc = msgspec.to_builtins(row)
        doc["msgpack"] = is_msgpack
        try:
            doc["raw"] = raw.decode("utf-8") if not is_msgpack else raw.hex()
        except UnicodeDecodeError:
            doc["raw_hex"] = raw.hex()
        emit_json(doc)
        return 0

    return run_async(go())


def _q_replay(args: argparse.Namespace, settings: Settings) -> int:
    from service.quarantine import QuarantineError, held_ids, replay

    if (args.id is None) == (args.site is None):
        raise CliError("give a quarantine row id, or --site SITE to replay every held row of a site")

    async def go() -> int:
        results = []
        async with _pool(args, settings) as pool:
            ids = [args.id] if args.id is not None else await held_ids(pool, args.site)
            for row_id in ids:
                with cli_errors(QuarantineError):
                    results.append(await replay(pool, row_id))
            sites = sorted({r.site_id for r in results if r.site_id and r.outcome != "refused"})
            nats_url = settings.nats_url if args.nats_url is None else args.nats_url
            if sites and nats_url:
                await _send_receipts(pool, nats_url, sites)
        for r in results:
            tail = f": {r.reason}" if r.reason else ""
            print(f"#{r.id} {r.outcome}{tail}")
        return 0 if all(r.outcome != "refused" for r in results) else 1

    return run_async(go())


async def _send_receipts(pool: asyncpg.Pool, nats_url: str, sites: list[str]) -> None:
    from service.center import connect_nats
    from service.receipts import publish_receipts, receipts_for

    nc = await connect_nats(nats_url, max_reconnect_attempts=2)
    try:
        async with pool.acquire() as conn:
            receipts = await receipts_for(conn, sites)
        await publish_receipts(nc.jetstream(), receipts)
    finally:
        await nc.close()
