"""`shouwang agent ...`: the site agent's commands (init, record, serve, sync, status, show, verify)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from events.types import SiteKind
from runtime.cli import CliError, Unreachable, cli_errors, emit, emit_json, run_async
from runtime.settings import Settings
from sync_agent import cli_users
from sync_agent.config import ConfigError, SiteConfig, check_nats_url, load_config, log_path, write_config
from sync_agent.locallog import LocalLog, LocalLogError, LogCorrupted

DEFAULT_PORT = 8470
DATA_ENV = "SHOUWANG_DATA"  # the site's data directory when --data is not given


def nats_url_arg(text: str) -> str:
    """An argparse type: a NATS URL (nats://, tls://, ws://, wss:// with a host); a bad one is
    refused naming the flag, before anything is written or connected."""
    try:
        return check_nats_url(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def seconds_arg(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds above 0")
    return value


def register(sub: Any) -> None:
    agent = sub.add_parser(
        "agent", help="the site agent: record care events offline and sync them with the center",
        description="The site agent keeps this site's care records in a local SQLite log and syncs "
        "them with the center over NATS JetStream: every event is kept until the center's receipt "
        "says it is committed; the children's archives are kept locally for offline use.")
    asub = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)

    from_env = os.environ.get(DATA_ENV) or None

    def data_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=from_env is None, default=from_env, type=Path,
                       help=f"the site's data directory (config and local log); default: ${DATA_ENV}"
                       + (f" ({from_env})" if from_env else ", which is not set"))

    p = asub.add_parser("init", help="create a site's data directory with its identity and an empty local log")
    data_arg(p)
    p.add_argument("--site", required=True, help="site id region.township.site, e.g. gx-lp.xy.v03")
    p.add_argument("--kind", required=True, choices=[k.value for k in SiteKind], help="what kind of site")
    p.add_argument("--name", required=True, help="the site's name, e.g. 青石村留守儿童之家")
    p.add_argument("--nats", required=True, type=nats_url_arg, help="NATS URL of the center: nats://, tls://, "
                   "ws:// or wss:// with a host, e.g. nats://center.example:4222")
    p.add_argument("--creds", help="credentials file: JSON from the center's site registration, or a NATS .creds")
    p.add_argument("--tls-ca", help="CA certificate (PEM) of a tls:// server whose certificate the county's own "
                   "CA signed")
    p.add_argument("--js-domain", help="JetStream domain of the county hub, when connecting through the "
                   "township's leaf node (deploy/nats/township-leaf.conf)")
    p.add_argument("--actor", default="station", help="staff account recorded when a draft names none")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name (besides 127.0.0.1, localhost, [::1]) under which `agent serve` answers, e.g. "
                   "this computer's LAN name; repeatable (also SHOUWANG_AGENT_ALLOWED_HOSTS, comma-separated)")
    p.add_argument("--session-minutes", type=int, default=8 * 60, help="how long a log-in at the station's "
                   "pages lasts (default 480)")
    p.set_defaults(handler=_init)

    p = asub.add_parser("record", help="record one event or a list of events (JSON drafts) durably; "
                        "prints their event ids")
    data_arg(p)
    p.add_argument("file", nargs="?", default="-", help="JSON file with the draft(s); '-' or nothing: stdin")
    p.add_argument("--actor", help="staff account recorded for drafts that name none")
    p.add_argument("--json", action="store_true", help="print {event_id, site_seq} objects as JSON")
    p.set_defaults(handler=_record)

    p = asub.add_parser("serve", help="local HTTP endpoint for station apps (POST /events, GET /status, "
                        "GET /children/ID) with the sync loop running")
    data_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer "
                   "only; the station's LAN address to serve its other computers)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--no-access-log", action="store_true", help="do not log each HTTP request (method, path "
                   "without its query, status, time)")
    p.add_argument("--no-sync", action="store_true", help="record only; do not connect to the center")
    p.set_defaults(handler=_serve)

    p = asub.add_parser("sync", help="sync with the center (until stopped, or with --once until nothing is pending)")
    data_arg(p)
    p.add_argument("--once", action="store_true", help="exit 0 when the center, asked on this connection, "
                   "confirms every event (a receipt from its store as it is now), or 1 at the timeout")
    p.add_argument("--timeout", type=seconds_arg, default=600.0, help="seconds --once runs at most, connecting "
                   "included; it exits within a few seconds more, also with the center unreachable (default 600)")
    p.add_argument("--nats", type=nats_url_arg, help="override the NATS URL of the site's config")
    p.set_defaults(handler=_sync)

    p = asub.add_parser("status", help="pending events, oldest pending age, last contact, the center's "
                        "watermark, last error")
    data_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_status)

    p = asub.add_parser("show", help="a child's archive as this site knows it (works offline)")
    data_arg(p)
    p.add_argument("child", help="child id c-...")
    p.add_argument("--json", action="store_true", help="the whole archive and timeline as JSON")
    p.set_defaults(handler=_show)

    p = asub.add_parser("verify", help="check the local log's sequence and hash chain")
    data_arg(p)
    p.set_defaults(handler=_verify)

    p = asub.add_parser("restore", help="fill a new, empty local log with this site's events from the center "
                        "(a station whose disk died); run it before recording anything")
    data_arg(p)
    p.add_argument("--nats", type=nats_url_arg, help="override the NATS URL of the site's config")
    p.add_argument("--timeout", type=seconds_arg, default=30.0, help="seconds to wait for each answer (default 30)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_restore)

    cli_users.register(asub, data_arg)


def _open(data: Path) -> tuple[SiteConfig, LocalLog]:
    with cli_errors(ConfigError, LocalLogError):
        config = load_config(data)
        return config, LocalLog(log_path(data), config.site_id)


def _init(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec

    try:
        config = msgspec.convert({"site_id": args.site, "kind": args.kind, "name": args.name, "nats_url": args.nats,
                                  "creds": args.creds, "tls_ca": args.tls_ca, "js_domain": args.js_domain,
                                  "default_actor": args.actor, "allowed_hosts": args.allowed_host,
                                  "session_minutes": args.session_minutes}, type=SiteConfig)
    except msgspec.ValidationError as err:
        raise CliError(f"invalid site identity: {err}") from None
    with cli_errors(ConfigError, LocalLogError):
        path = write_config(args.data, config)
        LocalLog(log_path(args.data), config.site_id).close()
    print(f"site {config.site_id} ({config.kind.value}) ready in {args.data} ({path.name}, {log_path(args.data).name})")
    return 0


def _record(args: argparse.Namespace, settings: Settings) -> int:
    from events.validation import ValidationFailed
    from sync_agent.record import record_json

    data = sys.stdin.buffer.read() if args.file == "-" else _read(Path(args.file))
    config, log = _open(args.data)
    try:
        done = record_json(log, config, data, actor=args.actor)
    except ValidationFailed as err:
        print(f"refused, nothing recorded ({len(err.problems)} problem{'s' if len(err.problems) != 1 else ''}):",
              file=sys.stderr)
        for p in err.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    except LocalLogError as err:
        raise CliError(str(err)) from None
    finally:
        log.close()
    if args.json:  # one line: scripts read it
        emit_json([{"event_id": r.event_id, "site_seq": r.site_seq} for r in done], indent=None)
    else:
        for r in done:
            print(r.event_id)
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}") from None


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from sync_agent.status import render, site_status

    config, log = _open(args.data)
    try:
        st = site_status(log, config)
    finally:
        log.close()
    emit(st, args.json, lambda: [render(st)])
    return 0


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from sync_agent.readlog import ReadLog, ReadLogError
    from sync_agent.view import as_json

    _, log = _open(args.data)
    try:
        events = log.child_events(args.child)
    finally:
        log.close()
    try:  # a read at the station's own machine goes into the read log too, under the login name
        with ReadLog(args.data) as reads:
            reads.record(f"os:{_os_user()}"[:64], "cli", args.child, "agent show", bool(events))
    except (ReadLogError, OSError) as err:
        raise CliError(f"nothing shown: {err}") from None
    if not events:
        raise CliError(f"this site knows no events of child {args.child}")
    doc = as_json(args.child, events)
    if args.json:
        emit_json(doc, default=str)  # times as str() writes them, as this command always has
        return 0
    print(_render_child(doc))
    return 0


def _render_child(doc: dict[str, Any]) -> str:
    lines = [f"child {doc['child_id']}"]
    if doc.get("merged_into"):
        lines.append(f"  merged into {doc['merged_into']}")
    state = "open" if doc.get("open") else "closed" if doc.get("registered") else "not registered at a site known here"
    lines.append(f"  archive: {state}")
    for key in ("name", "sex", "birth_date", "household_village", "school", "grade", "class_name", "reasons",
                "guardian", "guardian_phone", "parents", "status", "individual_plan", "village_site", "school_site"):
        value = doc.get(key)
        if value not in (None, [], {}):
            lines.append(f"  {key:<18} {json.dumps(value, ensure_ascii=False)}")
    for conflict in doc.get("conflicts", []):
        if conflict.get("resolved_by") is None:
            lines.append(f"  CONFLICT on {conflict['field']}: updates {', '.join(conflict['heads'])} disagree; "
                         "record ConflictResolved to settle it")
    lines.append(f"  timeline ({len(doc.get('timeline', []))} events):")
    for item in doc.get("timeline", []):
        mark = " (retracted)" if item.get("retracted") else (" (corrected)" if item.get("corrected_by") else "")
        lines.append(f"    {str(item['occurred_at'])[:16]}  {item['type']:<22} {item['site_id']}{mark}")
    return "\n".join(lines)


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    config, log = _open(args.data)
    try:
        report = log.verify()
    except LogCorrupted as err:
        raise CliError(str(err)) from None
    finally:
        log.close()
    print(f"local log of {config.site_id}: {report.events} events, site_seq 1..{report.head_seq} gapless, "
          f"hash chain intact (head {report.head_hash[:16]}...)")
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from sync_agent.restore import CenterUnreachable, RestoreError, restore

    def show(done: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\rrestored {done:,} of {total:,} events ")
            sys.stderr.flush()

    async def go() -> int:
        try:
            report = await restore(args.data, nats_url=args.nats, answer_within=args.timeout, on_page=show)
        except CenterUnreachable as err:
            raise Unreachable(f"{err} (this station records nothing until a restore has finished; run it again "
                              "when the line is back)") from None
        except RestoreError as err:
            raise CliError(f"{err} (this station records nothing until a restore has finished: its next "
                             "event would take a sequence number the center already holds)") from None
        except (ConfigError, LocalLogError) as err:
            raise CliError(str(err)) from None
        finally:
            if sys.stderr.isatty():
                sys.stderr.write("\n")
        if args.json:  # one line: scripts read it
            emit_json({"site_id": report.site_id, "restored": report.events, "head_seq": report.head_seq,
                       "head_hash": report.head_hash, "watermark": report.watermark, "received": report.received},
                      indent=None)
        else:
            print(f"restored {report.events} events of {report.site_id} from the center; the log is whole up to "
                  f"site_seq {report.head_seq} and the next event continues its chain; {report.received} events "
                  "of other sites about its children are back too")
        return 0

    return run_async(go())


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from runtime.log import route_libraries, uvicorn_log_config
    from sync_agent.serve import create_app

    with cli_errors(ConfigError, LocalLogError):
        app = create_app(args.data, sync=not args.no_sync)
    route_libraries()  # litestar's own logging configuration replaced the root logger's handler
    # Logs through structlog; the access log without query strings, cookies or tokens.
    uvicorn.run(app, host=args.host, port=args.port, log_config=uvicorn_log_config(), log_level="info",
                access_log=not args.no_access_log)
    return 0


class ProgressBar:
    """A one-line bar on stderr while a backlog drains; silent when stderr is not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.enabled = stream.isatty()
        self.start: int | None = None
        self.drawn = False

    def __call__(self, pending: int, recorded: int) -> None:
        if not self.enabled:
            return
        if self.start is None:
            self.start = pending
        total = max(self.start, pending, 1)
        if total < 100 and not self.drawn:
            return  # a small backlog drains before a bar would help
        done = total - pending
        filled = int(self.width * done / total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} receipted, "
                          f"{pending} pending ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from sync_agent.agent import Agent

    async def go() -> int:
        started = time.monotonic()
        with cli_errors(ConfigError, LocalLogError):
            agent = Agent(args.data, nats_url=args.nats)
        bar = ProgressBar()
        try:
            await agent.start()
        except (ConfigError, LocalLogError) as err:
            await agent.stop()
            raise CliError(str(err)) from None
        try:
            if args.once:
                ok = await agent.wait_synced(max(0.0, args.timeout - (time.monotonic() - started)), on_progress=bar)
                bar.close()
                if not ok:
                    pending = agent.pending()
                    why = (f"{pending} events still not receipted by the center" if pending else
                           "the township's relay round has not finished (the center may lack other sites' "
                           "events this office holds)" if agent.confirmed() else
                           "the center has not confirmed this station's events since it connected (a receipt "
                           "from before would not show what a restored center lacks)")
                    print(f"shouwang: not synced after {args.timeout:g} s: {why}; they stay in the local log and "
                          f"will be sent next time (last error: {agent.log.meta('last_error') or '-'})",
                          file=sys.stderr)
                    return 1
                refused = len(agent.log.refused_seqs())
                print(f"in sync: all {agent.log.last_seq() - refused} events of {agent.config.site_id} are receipted "
                      "by the center, confirmed on this connection"
                      + (f"; {refused} refused, kept in its quarantine (`shouwang agent status` lists them)"
                         if refused else ""))
                if agent.relays and agent.relayed.offered:
                    r = agent.relayed
                    print(f"relayed {r.offered} events of the township's sites that the center lacked: {r.stored} "
                          f"taken back, {r.duplicates} it had meanwhile, {r.refused} refused")
                return 0
            stop = asyncio.Event()
            stopped_by: list[int] = []

            def on_signal(sig: int) -> None:
                stopped_by.append(sig)
                stop.set()

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, on_signal, sig)
            while not stop.is_set():
                bar(agent.pending(), agent.log.last_seq())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
            bar.close()
            # SIGTERM (systemd stopping the unit) is a normal end; Ctrl-C is an interruption.
            return 130 if stopped_by[:1] == [signal.SIGINT] else 0
        finally:
            await agent.stop()

    return run_async(go())
