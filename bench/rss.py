"""Run a module as ``python -m`` would and write its peak resident set size to a file at exit.

    python -m bench.rss OUT.json MODULE [ARGS...]      # e.g. runtime.cli agent sync --once ...
    python -m bench.rss OUT.json --import MODULE...    # only import the modules, then exit

The second form is the baseline: an interpreter holding the same code, doing nothing. Peak RSS
is the kernel's high-water mark of the process's own memory, ``VmHWM`` in ``/proc/self/status``
(KiB). Not ``getrusage``'s ``ru_maxrss``: Linux carries that over from the parent through fork
and exec, so a child of a big benchmark process reported the parent's peak.
"""

from __future__ import annotations

import importlib
import json
import runpy
import sys
from pathlib import Path


def peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main(argv: list[str]) -> int:
    out, rest = argv[0], argv[1:]
    code: int | str | None = 0
    try:
        if rest[0] == "--import":
            for name in rest[1:]:
                importlib.import_module(name)
        else:
            sys.argv = [rest[0], *rest[1:]]
            try:
                runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
            except SystemExit as exit_:
                code = exit_.code
    finally:
        peak = peak_kib()
        with open(out, "w") as f:
            json.dump({"peak_rss_kib": peak, "exit": code if isinstance(code, int) else 1}, f)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
