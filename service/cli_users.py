"""`shouwang center user add|list|disable|enable|reset`, `shouwang center token issue|revoke` and
`shouwang center api`: the people who use the HTTP API, their tokens, and the API server.

Hooked into the `center` command group by service/cli_center.py (``cli_users.register(csub)``).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg

from runtime.cli import CliError, cli_errors, database_url, emit, run_async
from runtime.db import connect, pool_for
from runtime.settings import Settings
from store import migrate


def register(csub: Any) -> None:
    """Add `user`, `token` and `api` to the subparsers of `shouwang center`."""
    user = csub.add_parser("user", help="people who use the HTTP API: add, list, disable, enable, reset")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = usub.add_parser("add", help="add a user (the password is read from SHOUWANG_NEW_PASSWORD or asked, "
                                      "or --code: a one-time code with which they set their own)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=["station", "school", "township", "auditor", "admin",
                                                             "county"])
    add.add_argument("--site", help="the user's site (station, school, township users)")
    add.add_argument("--township", help="region.township an auditor sees, e.g. gx-lp.xy")
    add.add_argument("--region", help="the region a county user sees (figures and masked lists), e.g. gx-lp")
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--code", action="store_true",
                     help="no password: print a one-time code with which the person sets their own")
    add.add_argument("--hours", type=float, default=72, help="how long the one-time code lasts (default 72)")
    _common(add)
    add.set_defaults(handler=_user_add)
    ls = usub.add_parser("list", help="every user")
    ls.add_argument("--json", action="store_true")
    _common(ls)
    ls.set_defaults(handler=_user_list)
    dis = usub.add_parser("disable", help="disable a user: their tokens stop working at once")
    dis.add_argument("username")
    _common(dis)
    dis.set_defaults(handler=_user_disable)
    ena = usub.add_parser("enable", help="enable a disabled user again")
    ena.add_argument("username")
    _common(ena)
    ena.set_defaults(handler=_user_enable)
    rst = usub.add_parser("reset", help="reset a password: the old one stops working, the user's tokens are "
                                        "revoked, and a one-time code is printed (once) for them to set their own")
    rst.add_argument("username")
    rst.add_argument("--hours", type=float, default=72, help="how long the code lasts (default 72)")
    _common(rst)
    rst.set_defaults(handler=_user_reset)

    token = csub.add_parser("token", help="API tokens: issue, revoke")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    iss = tsub.add_parser("issue", help="issue a token for a user (printed once)")
    iss.add_argument("username")
    iss.add_argument("--hours", type=float, default=24 * 30, help="lifetime in hours (default 720)")
    iss.add_argument("--label", default="cli", help="what the token is for")
    _common(iss)
    iss.set_defaults(handler=_token_issue)
    rev = tsub.add_parser("revoke", help="revoke a token by its id, or every token of --user")
    rev.add_argument("token_id", nargs="?")
    rev.add_argument("--user", help="revoke every live token of this user")
    _common(rev)
    rev.set_defaults(handler=_token_revoke)

    api = csub.add_parser("api", help="serve the HTTP API (SHOUWANG_API_HOST, SHOUWANG_API_PORT)")
    api.add_argument("--host", help="listen address (default SHOUWANG_API_HOST or 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default SHOUWANG_API_PORT or 8800)")
    api.set_defaults(handler=_serve)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="PostgreSQL URL (default SHOUWANG_DATABASE_URL)")


def _pool(args: argparse.Namespace, settings: Settings) -> contextlib.AbstractAsyncContextManager[asyncpg.Pool]:
    """Like the other center commands, these migrate first (the first admin may be added to a new database)."""
    return pool_for(database_url(args, settings), max_size=2, prepare=migrate.migrate)


def _actor() -> str:
    """Who acts from the command line, for the log of account actions."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _print_code(code: Any) -> None:
    print(code.code)
    print(f"one-time code for {code.username}, valid until {code.expires_at:%Y-%m-%d %H:%M} UTC: they type it at "
          "the log-in form in place of a password, or open /ui/password?code=<code>, and choose their own",
          file=sys.stderr)


def _password() -> str:
    env = os.environ.get("SHOUWANG_NEW_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the two passwords differ")
    return first


def _user_add(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.auth import AuthError, add_user, issue_code

    password = None if args.code else _password()

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(AuthError):
                u = await add_user(pool, args.username, args.role, password, site_id=args.site,
                                   township=args.township, display_name=args.name, actor=_actor(),
                                   region=args.region)
                code = await issue_code(pool, u.username, actor=_actor(), hours=args.hours) if args.code else None
        where = u.site_id or u.township or (f"region {u.region}" if u.region else "all sites")
        print(f"added {u.username} ({u.role}, {where})", file=sys.stderr if code else sys.stdout)
        if code is not None:
            _print_code(code)
        return 0

    return run_async(go())


def _user_list(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.auth import list_users

    async def go() -> int:
        async with _pool(args, settings) as pool:
            users = await list_users(pool)

        def lines() -> Iterator[str]:
            for u in users:
                state = "active" if u.active else f"disabled {u.disabled_at:%Y-%m-%d}"
                if u.code_expires_at is not None:
                    state += f", one-time code until {u.code_expires_at:%Y-%m-%d %H:%M}"
                yield f"{u.username:24} {u.role:9} {u.site_id or u.township or u.region or '-':28} {state}"

        emit(users, args.json, lines)
        return 0

    return run_async(go())


def _user_disable(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.auth import AuthError, disable_user

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(AuthError):
                await disable_user(pool, args.username, actor=_actor())
        print(f"disabled {args.username}; their tokens no longer work")
        return 0

    return run_async(go())


def _user_enable(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.auth import AuthError, enable_user

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(AuthError):
                await enable_user(pool, args.username, actor=_actor())
        print(f"enabled {args.username}; they log in with their password again")
        return 0

    return run_async(go())


def _user_reset(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.auth import AuthError, issue_code

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(AuthError):
                code = await issue_code(pool, args.username, actor=_actor(), hours=args.hours)
        _print_code(code)
        return 0

    return run_async(go())


def _token_issue(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.auth import AuthError, issue_token

    async def go() -> int:
        async with _pool(args, settings) as pool:
            with cli_errors(AuthError):
                t = await issue_token(pool, args.username, hours=args.hours, label=args.label)
        print(t.token)
        print(f"token id {t.token_id}, for {t.username}, expires {t.expires_at:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
        return 0

    return run_async(go())


def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.auth import AuthError, revoke_all, revoke_token

    if (args.token_id is None) == (args.user is None):
        raise CliError("give a token id, or --user USER to revoke every token of a user")

    async def go() -> int:
        async with _pool(args, settings) as pool:
            if args.user is not None:
                n = await revoke_all(pool, args.user)
                print(f"revoked {n} token(s) of {args.user}")
                return 0
            with cli_errors(AuthError):
                done = await revoke_token(pool, args.token_id)
        if not done:
            raise CliError(f"no live token {args.token_id}")
        print(f"revoked {args.token_id}")
        return 0

    return run_async(go())


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from runtime.log import route_libraries, uvicorn_log_config
    from service.api.app import create_app
    from service.api.config import ApiSettings

    async def migrated() -> int:
        conn = await connect(settings.database_url)  # the API opens its own pool (create_app)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        return 0

    run_async(migrated())
    api = ApiSettings.from_env()
    app = create_app(settings, api)
    route_libraries()  # litestar's own logging configuration replaced the root logger's handler
    # Logs through structlog, with an access log (path without its query string, no headers).
    uvicorn.run(app, host=args.host or api.host, port=args.port or api.port, log_config=uvicorn_log_config(),
                log_level="info", proxy_headers=False, server_header=False)
    return 0
