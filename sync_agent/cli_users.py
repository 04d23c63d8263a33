"""`shouwang agent user ...` and `shouwang agent token ...`: who may use the station's pages and
its local HTTP API (sync_agent/accounts.py, kept in the site's data directory, mode 0600)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from runtime.cli import CliError, cli_errors, emit
from runtime.settings import Settings
from sync_agent.accounts import MIN_PASSWORD, ROLES, AccountError, Accounts, check_password
from sync_agent.config import ConfigError, load_config


def register(asub: Any, data_arg: Any) -> None:
    """Add `user` and `token` to the agent's subcommands."""
    user = asub.add_parser("user", help="station accounts for the pages and the local HTTP API (add, list, "
                           "disable, enable)")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = usub.add_parser("add", help=f"add a person who may log in here; the password (at least {MIN_PASSWORD} "
                        "characters) is read from stdin when it is not a terminal, else asked for twice")
    data_arg(p)
    p.add_argument("name", help="user name (letters, digits, . _ @ -); written as the actor of what they record")
    p.add_argument("--role", choices=ROLES, default="staff", help="staff (default) or director")
    p.set_defaults(handler=_user_add)
    p = usub.add_parser("list", help="the station's accounts")
    data_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_user_list)
    for action, disabled in (("disable", True), ("enable", False)):
        p = usub.add_parser(action, help="stop a user from logging in (ends their sessions and stops their tokens)"
                            if disabled else "let a disabled user log in again")
        data_arg(p)
        p.add_argument("name")
        p.set_defaults(handler=_user_disable, disabled=disabled)

    token = asub.add_parser("token", help="Bearer tokens for station apps using the local HTTP API (issue, list, "
                            "revoke)")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = tsub.add_parser("issue", help="a new token for a user; printed once, kept only as a hash")
    data_arg(p)
    p.add_argument("name", help="the user the app acts as (its actor)")
    p.add_argument("--label", default="", help="what the token is for, e.g. the app's name")
    p.set_defaults(handler=_token_issue)
    p = tsub.add_parser("list", help="the station's tokens (ids, users, labels; never the tokens)")
    data_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_token_list)
    p = tsub.add_parser("revoke", help="stop a token working at once")
    data_arg(p)
    p.add_argument("token", help="the token's id (from `agent token list`) or the token itself")
    p.set_defaults(handler=_token_revoke)


def _accounts(data: Path) -> Accounts:
    with cli_errors(ConfigError):
        load_config(data)  # only a site's data directory holds its accounts
    return Accounts(data)


def read_password(stdin: Any = None) -> str:
    """The new password: one line of stdin when it is not a terminal, else typed twice (hidden)."""
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the two passwords differ; nothing was changed")
    try:
        return check_password(password)
    except AccountError as err:
        raise CliError(f"{err}; nothing was changed") from None


def _user_add(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password()
    with _accounts(args.data) as accounts, cli_errors(AccountError):
        user = accounts.add_user(args.name, args.role, password)
    print(f"user {user.name} ({user.role}) may now log in at this station")
    return 0


def _user_list(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(args.data) as accounts:
        users = accounts.users()
    rows = [{"name": u.name, "role": u.role, "disabled": u.disabled, "created_at": u.created_at} for u in users]
    emit(rows, args.json, lambda: [f"{r['name']:<24} {r['role']:<9} {'disabled' if r['disabled'] else 'active'}"
                                   for r in rows] or ["no users yet: `shouwang agent user add NAME --data DIR`"])
    return 0


def _user_disable(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(args.data) as accounts, cli_errors(AccountError):
        accounts.set_disabled(args.name, args.disabled)
    print(f"user {args.name} {'disabled: its sessions ended and its tokens stopped' if args.disabled else 'enabled'}")
    return 0


def _token_issue(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(args.data) as accounts, cli_errors(AccountError):
        token_id, token = accounts.issue_token(args.name, args.label)
    print(token)
    print(f"token {token_id} for {args.name}: shown this once, kept only as a hash; send it as "
          "'Authorization: Bearer <token>'; `shouwang agent token revoke` stops it", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(args.data) as accounts:
        rows = [{"id": t.id, "user": t.username, "label": t.label, "created_at": t.created_at,
                 "revoked_at": t.revoked_at} for t in accounts.tokens()]
    emit(rows, args.json, lambda: [f"{r['id']:>5}  {r['user']:<24} {r['label']:<20} "
                                   f"{'revoked ' + str(r['revoked_at'])[:19] if r['revoked_at'] else 'active'}"
                                   for r in rows] or ["no tokens"])
    return 0


def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(args.data) as accounts, cli_errors(AccountError):
        token_id = accounts.revoke_token(args.token)
    print(f"token {token_id} revoked")
    return 0
