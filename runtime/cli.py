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
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

import msgspec

from runtime.settings import Settings


class CliError(Exception):
    """A command failed in a way the user can fix; printed without a traceback, exit 2."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero (a bad value is refused naming it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def run_async(coro: Coroutine[Any, Any, int | None]) -> int:
    return int(asyncio.run(coro) or 0)


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
