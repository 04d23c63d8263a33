"""`python -m tests.chaos --minutes N --seed S [--json] [--cluster]`: one chaos run, its summary,
exit 0 if every check held (1 if not). `--cluster` runs the center's NATS as a JetStream cluster
of three servers (streams kept 3 times) and adds the faults that kill one of them. The fault
schedule is drawn from the seed alone, so rerunning a failing seed injects the same faults in
the same order; it is written to the run's data folder and, on failure, included in the JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from runtime import log
from tests.chaos.harness import main_sync


def _human(doc: dict[str, Any]) -> str:
    lines = [
        f"chaos run, seed {doc['seed']}, {doc['minutes']} min: {'PASSED' if doc['ok'] else 'FAILED'}",
        f"  faults           {doc.get('faults')}",
        f"  duplicates sent  {doc.get('duplicate_deliveries')}",
        *([f"  NATS servers     3; killed by role {doc.get('nats_node_kills')}, "
           f"site backlogs at a catch-up kill {doc.get('catchup_backlogs')}"] if doc.get("nats_nodes", 1) > 1 else []),
        f"  restarts         {doc.get('restarts')} (exited by themselves: {doc.get('exited_by_themselves')})",
        f"  events recorded  {doc.get('events_recorded')}  stored {doc.get('events_stored')}",
        f"  lost             {doc.get('lost')}   duplicated {doc.get('duplicated')}",
        f"  archives compared {doc.get('archives_compared')}",
        f"  bad input        {doc.get('bad_input')}",
        f"  converged in     {doc.get('converge_seconds')} s",
    ]
    if doc.get("truth_adjusted"):
        lines.append(f"  note             {doc['truth_adjusted']}")
    for m in doc.get("mismatches", []):
        lines.append(f"  MISMATCH         {m}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--minutes", type=float, required=True, help="length of the run (faults take ~70%% of it)")
    p.add_argument("--seed", type=int, required=True, help="seed of the scenario and the fault schedule")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--data", type=Path, help="keep the run's servers, logs and schedule in this folder")
    p.add_argument("--cluster", action="store_true",
                   help="NATS as a cluster of three servers, streams kept 3 times; adds kill -9 of one server")
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log.configure("warning")  # structlog to stderr: stdout carries the summary alone
    t0 = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    doc = main_sync(args.minutes, args.seed, args.data, progress, nats_nodes=3 if args.cluster else 1)
    doc["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(doc, ensure_ascii=False, indent=2) if args.json else _human(doc))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
