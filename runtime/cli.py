"""What every package's commands share: the error a user can fix, running a coroutine, the
database URL rule and printing a result as JSON or as text.

The `shouwang` command itself (the parser and `main`) is `shouwang.cli`, above every package.
This module stays free of asyncpg (the site agent's commands use it; the pools are runtime.db).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

import msgspec

from runtime.settings import Settings


class CliError(Exception):
    """A command failed in a way the user can fix; printed without a traceback, exit 2."""


class Unreachable(Exception):
    """A server (NATS, PostgreSQL, the center) could not be reached or did not answer in time;
    printed as one line without a traceback, exit 1 (running the command again later may work)."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero (a bad value is refused naming it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def run_async(coro: Coroutine[Any, Any, int | None], *, shutdown_within: float = 5.0) -> int:
    """Run a command's coroutine; then cancel what it left running, waiting at most
    `shutdown_within` seconds, so a command always exits (asyncio.run waits for ever for a task
    that ignores its cancellation, e.g. one inside a NATS connect). Ctrl-C raises
    KeyboardInterrupt (exit 130 in `shouwang.cli`)."""
    runner = asyncio.Runner()
    try:
        return int(runner.run(coro) or 0)
    finally:
        loop = runner.get_loop()
        if _cancel_leftovers(loop, shutdown_within):
            runner.close()
        else:  # a task would not stop: close the loop without waiting for it (or the executor) again
            loop.close()
            asyncio.set_event_loop(None)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop, within: float) -> bool:
    """Cancel every task still on `loop`, again each half second, for at most `within` seconds;
    True when none is left."""
    if loop.is_closed():
        return True
    left = {t for t in asyncio.all_tasks(loop) if not t.done()}
    for _ in range(max(1, int(within / 0.5))):
        if not left:
            return True
        for task in left:
            task.cancel()
        _done, left = loop.run_until_complete(asyncio.wait(left, timeout=0.5))
    if left:
        names = ", ".join(sorted(t.get_name() for t in left))
        print(f"shouwang: left {len(left)} task(s) that did not stop when cancelled: {names}", file=sys.stderr)
    return not left


@contextlib.contextmanager
def cli_errors(*errors: type[Exception]) -> Iterator[None]:
    """Turn these errors (a refusal the user can act on: a bad site id, a missing user) into a
    CliError carrying the same message, so `shouwang` prints one line and exits 2."""
    try:
        yield
    except errors as err:
        raise CliError(str(err)) from None


def database_url(args: argparse.Namespace, settings: Settings) -> str:
    """--database-url when given, else SHOUWANG_DATABASE_URL."""
    return str(args.database_url or settings.database_url)


def _builtins(obj: Any) -> Any:
    # Structs, datetimes and the like inside a result: as msgspec would write them.
    return msgspec.to_builtins(obj)


def emit_json(doc: Any, *, indent: int | None = 2, default: Callable[[Any], Any] = _builtins) -> None:
    """Print `doc` as JSON on stdout, Chinese text as is: indented for people, or on one line
    (indent=None) where scripts read one document per line."""
    print(json.dumps(doc, ensure_ascii=False, indent=indent, default=default))


def emit(doc: Any, as_json: bool, human: Callable[[], Iterable[str]]) -> None:
    """With --json print `doc` as JSON, else the lines `human()` makes of the result (built only
    when wanted; no lines, no output)."""
    if as_json:
        emit_json(doc)
        return
    for line in human():
        print(line)
