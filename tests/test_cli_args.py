"""The `shouwang` command refuses bad arguments in one line naming the flag and the value, never
with a traceback, and tells its version."""

from __future__ import annotations

import pytest

from shouwang.cli import main


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """`shouwang --version` prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("shouwang ")


@pytest.mark.parametrize(("argv", "words"), [
    (["--log-level", "loud", "db", "status"], "--log-level: invalid choice: 'loud'"),
    (["demo", "--children", "-5", "--once"], "--children: -5 must be at least 1"),
    (["demo", "--days", "many"], "--days: 'many' is not a whole number"),
])
def test_bad_flag_values_are_one_line(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag value exits 2 with argparse's one line naming the flag and the value."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_database_url_that_is_not_one_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`db migrate --database-url not-a-url` says the URL is not valid (exit 1), without a traceback."""
    assert main(["db", "migrate", "--database-url", "not-a-url"]) == 1
    err = capsys.readouterr().err
    assert "the database URL is not valid" in err and "Traceback" not in err
