"""The helpers every command module shares: runtime.cli (errors, output, URL) and runtime.db.pool_for."""

from __future__ import annotations

import argparse
import datetime as dt

import asyncpg
import msgspec
import pytest

from runtime.cli import CliError, cli_errors, database_url, emit, emit_json
from runtime.db import pool_for
from runtime.settings import Settings


class _Row(msgspec.Struct):
    name: str
    at: dt.datetime


ROW = _Row(name="青石村", at=dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC))


def test_cli_errors_turns_the_named_errors_into_a_cli_error_with_the_same_message() -> None:
    """A listed error becomes CliError (one line, exit 2) with its text; others pass through unchanged."""
    with pytest.raises(CliError) as caught, cli_errors(ValueError, LookupError):
        raise LookupError("site 'x' is not registered")
    assert str(caught.value) == "site 'x' is not registered"
    assert caught.value.__suppress_context__  # the original is not printed as the cause
    with pytest.raises(OSError), cli_errors(ValueError):
        raise OSError("disk")


def test_database_url_prefers_the_flag_over_the_setting() -> None:
    """--database-url wins; without it SHOUWANG_DATABASE_URL (the settings) does."""
    settings = Settings(database_url="postgresql://from-settings/db")
    assert database_url(argparse.Namespace(database_url="postgresql://flag/db"), settings) == "postgresql://flag/db"
    assert database_url(argparse.Namespace(database_url=None), settings) == "postgresql://from-settings/db"


def test_emit_json_writes_structs_and_chinese_text_as_is(capsys: pytest.CaptureFixture[str]) -> None:
    """Structs inside a result are written as msgspec writes them, indented, Chinese not escaped."""
    emit_json({"rows": [ROW]})
    assert capsys.readouterr().out == (
        '{\n  "rows": [\n    {\n      "name": "青石村",\n      "at": "2026-03-01T10:00:00Z"\n    }\n  ]\n}\n')
    emit_json([{"event_id": "e1", "site_seq": 1}], indent=None)
    assert capsys.readouterr().out == '[{"event_id": "e1", "site_seq": 1}]\n'


def test_emit_prints_json_or_the_human_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """With --json the document; without, each line `human` yields (and nothing for no lines)."""
    emit([ROW], True, lambda: ["never built"])
    assert msgspec.json.decode(capsys.readouterr().out) == [{"name": "青石村", "at": "2026-03-01T10:00:00Z"}]
    emit([ROW], False, lambda: (f"{r.name} {r.at:%Y-%m-%d}" for r in [ROW]))
    assert capsys.readouterr().out == "青石村 2026-03-01\n"
    emit([], False, lambda: [])
    assert capsys.readouterr().out == ""


async def test_pool_for_prepares_first_and_always_closes_the_pool(database_url: str) -> None:
    """`prepare` runs on a connection of its own before the pool opens; the pool closes even on an error."""
    prepared: list[asyncpg.Connection] = []

    async def prepare(conn: asyncpg.Connection) -> None:
        prepared.append(conn)

    with pytest.raises(CliError):
        async with pool_for(database_url, max_size=2, prepare=prepare) as pool:
            assert await pool.fetchval("SELECT 1") == 1
            assert pool.get_max_size() == 2
            raise CliError("refused")
    assert len(prepared) == 1 and prepared[0].is_closed()
    assert pool._closed  # asyncpg has no public "closed" flag on a pool
