"""`shouwang center user add|list|disable` and `shouwang center token issue|revoke`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from service.api import auth
from service.sites import register_site


def _shouwang(database_url: str, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url, "SHOUWANG_LOG_LEVEL": "warning"}
    if password is not None:
        env["SHOUWANG_NEW_PASSWORD"] = password
    command = [sys.executable, "-c", "import sys; from shouwang.cli import main; sys.exit(main())", "center", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          check=False)


async def test_user_and_token_commands(database_url: str, pool: asyncpg.Pool) -> None:
    """An admin adds a user, issues a token that works, revokes it, and disables the user; bad input is refused
    with a message naming the problem."""
    await register_site(pool, "gx-lp.xy.v01", "village", "v01")
    run = asyncio.to_thread
    added = await run(_shouwang, database_url, "user", "add", "li.v01", "--role", "station", "--site", "gx-lp.xy.v01",
                      password="a long password")
    assert added.returncode == 0, added.stderr
    wrong_kind = await run(_shouwang, database_url, "user", "add", "x", "--role", "school", "--site", "gx-lp.xy.v01",
                           password="a long password")
    assert wrong_kind.returncode == 2 and "village site" in wrong_kind.stderr
    listed = await run(_shouwang, database_url, "user", "list")
    assert "li.v01" in listed.stdout and "station" in listed.stdout
    issued = await run(_shouwang, database_url, "token", "issue", "li.v01", "--hours", "2")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    caller = await auth.caller_of_token(pool, token)
    assert caller is not None and caller.username == "li.v01" and caller.site_id == "gx-lp.xy.v01"
    revoked = await run(_shouwang, database_url, "token", "revoke", caller.token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert await auth.caller_of_token(pool, token) is None
    again = await run(_shouwang, database_url, "token", "issue", "li.v01")
    disabled = await run(_shouwang, database_url, "user", "disable", "li.v01")
    assert disabled.returncode == 0
    assert await auth.caller_of_token(pool, again.stdout.strip()) is None
    refused = await run(_shouwang, database_url, "token", "issue", "li.v01")
    assert refused.returncode == 2 and "disabled" in refused.stderr
