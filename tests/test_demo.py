"""`shouwang demo` on embedded servers: the whole township end to end, and a clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.embedded import free_port


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (the demo's data folder)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in cmd and state != "Z":
            found.append(f"{pid}: {cmd[:200]}")
    return found


def _wait_gone(text: str, within: float = 20) -> list[str]:
    deadline = time.monotonic() + within
    left = _processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_mentioning(text)
    return left


def test_demo_once_json_matches_the_ground_truth(tmp_path: Path) -> None:
    """A small township runs to the end: every recorded event stored exactly once, nothing
    pending, the duplicate and the conflict detected, the mistyped ID refused at the station,
    the township's figures equal to the generator's, and no server left running."""
    data = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "shouwang", "demo", "--fresh", "--once", "--json", "--data", str(data),
         "--children", "30", "--days", "75", "--port", str(free_port())],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    doc = json.loads(out.stdout)
    events = doc["events"]
    assert events["recorded"] == events["stored"] > 0
    assert events["refused_at_station"] == 1
    assert events["quarantined"] == 0
    assert all(s["pending"] == 0 and not s["holes"] for s in doc["sites"])
    assert {s["kind"] for s in doc["sites"]} == {"village", "school", "township", "community"}
    assert doc["detected"]["duplicate_pairs"] >= 1
    assert doc["detected"]["open_conflicts"] >= 1
    assert doc["mismatches"] == {}
    assert doc["rollup"] == doc["truth"]
    assert doc["rollup"]["home_visits"] > 0
    assert doc["rollup"]["dropped_out"] == 1 and doc["rollup"]["condolence_households"] > 0
    assert set(doc["timings"]) >= {"servers", "center", "agents", "record", "settle"}
    assert _wait_gone(str(data)) == []


def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    """Interactive mode serves until Ctrl-C, then stops the agents, the center and both servers."""
    data = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shouwang", "demo", "--fresh", "--data", str(data), "--children", "12",
         "--days", "35", "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        assert any("dashboard:" in line for line in seen), "".join(seen[-40:])
        assert _processes_mentioning(str(data)), "servers and agents run while the demo serves"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, "".join(seen[-40:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert _wait_gone(str(data)) == []


def test_demo_townships_is_checked(tmp_path: Path) -> None:
    """--townships takes 1 to 10; anything else is a one-line error naming the option and the value."""
    for bad, why in (("0", "must be at least 1"), ("11", "more than 10"), ("two", "not a whole number")):
        out = subprocess.run([sys.executable, "-m", "shouwang", "demo", "--once", "--json", "--data",
                              str(tmp_path / "demo"), "--townships", bad], capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 2, out.stderr
        assert "--townships" in out.stderr and bad in out.stderr and why in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and not (tmp_path / "demo").exists()


def test_demo_of_two_townships_checks_each_and_the_county(tmp_path: Path) -> None:
    """Two townships of one county run to the end: each township's figures equal its own ground truth, the
    county's total equals the sum of them, and the first township's figures are still `rollup`."""
    data = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "shouwang", "demo", "--fresh", "--once", "--json", "--data", str(data),
         "--townships", "2", "--children", "12", "--villages", "2", "--schools", "1", "--days", "35",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    doc = json.loads(out.stdout)
    assert doc["mismatches"] == {} and doc["ok"]
    assert [t["township"] for t in doc["townships"]] == ["demo.qingshi", "demo.liuwan"]
    assert [t["name"] for t in doc["townships"]] == ["青石镇", "柳湾乡"]
    for t in doc["townships"]:
        assert t["mismatches"] == {} and t["rollup"] == t["truth"] and t["rollup"]["children_archived"] > 0
    assert doc["rollup"] == doc["townships"][0]["rollup"]
    county = doc["county"]
    assert county["mismatches"] == {} and county["rollup"] == county["truth"]
    assert county["rollup"]["children_archived"] == sum(t["truth"]["children_archived"] for t in doc["townships"])
    assert {s["site_id"].rsplit(".", 1)[0] for s in doc["sites"]} == {"demo.qingshi", "demo.liuwan"}
    assert doc["events"]["recorded"] == doc["events"]["stored"]
    assert _wait_gone(str(data)) == []
