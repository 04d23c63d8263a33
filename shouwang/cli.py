"""`shouwang`: one command, with subcommands for the center, the site agent and operators.

Each package registers its own subcommands (a `register(subparsers)` function in its `cli`
module), so the agent's commands live in `sync_agent/`, the center's in `service/`, and so on.
This module imports them by name, so the package graph shows every arrow.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from projections import cli as projections_cli
from runtime import log
from runtime.cli import CliError
from runtime.settings import Settings, SettingsError
from service import cli_center, cli_db
from sync_agent import cli as agent_cli
from testbed import cli_demo

# Modules whose `register(subparsers)` adds subcommands, in the order `--help` lists them.
COMMAND_MODULES = (cli_db, cli_demo, cli_center, agent_cli, projections_cli)


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
    )
    parser.add_argument("--version", action="version", version=f"shouwang {_version()}")
    parser.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"),
                        help="how much to log (default: SHOUWANG_LOG_LEVEL, else info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
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
    handler: Handler = args.handler
    try:
        return handler(args, settings) or 0
    except CliError as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        unreachable = unreachable_message(err)
        if unreachable is None:
            raise
        # A server that is down or a wrong URL: one line an operator can act on, not a traceback
        # (systemd restarts the unit; it succeeds once the server is back).
        print(f"shouwang: {unreachable}", file=sys.stderr)
        return 1


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
