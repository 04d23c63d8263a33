"""Figures, the printed table and the results files every benchmark shares."""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path

import msgspec

RESULTS = Path(__file__).parent / "results"


class Figure(msgspec.Struct, omit_defaults=True):
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    note: str | None = None


def figure(name: str, value: float, unit: str, baseline_name: str | None = None,
           baseline_value: float | None = None, note: str | None = None) -> Figure:
    ratio = round(value / baseline_value, 3) if baseline_value else None
    return Figure(name, round(value, 3), unit, baseline_name,
                  round(baseline_value, 3) if baseline_value is not None else None, ratio, note)


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "unit", "baseline", "baseline value", "ratio")]
    for f in figures:
        rows.append((f.name, f"{f.value:,.1f}", f.unit, f.baseline_name or "", "" if f.baseline_value is None
                     else f"{f.baseline_value:,.1f}", "" if f.ratio is None else f"{f.ratio:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write(figures: list[Figure], meta: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        **meta,
        "figures": msgspec.to_builtins(figures),
    }
    text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    dated = RESULTS / f"{now:%Y-%m-%d}.json"
    dated.write_text(text, encoding="utf-8")
    (RESULTS / "latest.json").write_text(text, encoding="utf-8")
    return dated


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
