"""`python -m shouwang` (how the demo and the harness start every part) reports errors cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_cli_error_under_python_m_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A subcommand's CliError, run as `python -m shouwang`, prints `shouwang: ...` and exits 2
    (it escaped as a traceback: `__main__.CliError` is not `runtime.cli.CliError`)."""
    data = tmp_path / "site"
    init = subprocess.run([sys.executable, "-m", "shouwang", "agent", "init", "--data", str(data), "--site",
                           "gx-lp.xy.v01", "--kind", "village", "--name", "站", "--nats", "nats://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert init.returncode == 0, init.stderr
    out = subprocess.run([sys.executable, "-m", "shouwang", "agent", "record", "--data", str(data),
                          str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("shouwang: cannot read")
