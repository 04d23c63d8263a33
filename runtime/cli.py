"""What every package's commands share: the error a user can fix and running a coroutine.

The `shouwang` command itself (the parser and `main`) is `shouwang.cli`, above every package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class CliError(Exception):
    """A command failed in a way the user can fix; printed without a traceback, exit 2."""


def run_async(coro: Coroutine[Any, Any, int | None]) -> int:
    return int(asyncio.run(coro) or 0)
