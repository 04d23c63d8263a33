"""Build the zstd dictionary that batches on the village link are compressed with.

    python tools/train_dictionary.py [--id care-1] [--size 16384] [--seed 2026]

It trains on **made-up** events only: a simulated township's school year (testbed.simulation:
made-up names, resident ID numbers, phone numbers and places), sealed into a throw-away site log
each as its agent would seal it, so the dictionary learns the envelope, the field names, the
event types and the shape of ids and hashes, never anything of a real child. The result is
written to ``events/dictionaries/<id>.zdict`` and shipped with the package (pyproject's
package-data).

A dictionary, once shipped, is never changed or removed: senders name it in every batch
(``Shouwang-Dict``), and a center must read what any agent in the field sends. To improve it,
build a new id (care-2, ...), ship it to the centers first, then switch ``events.batch.DICTIONARY_ID``
in a later release of the agents.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import msgspec
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from events.batch import DICTIONARIES  # noqa: E402
from events.envelope import parse_drafts  # noqa: E402
from sync_agent.locallog import LocalLog  # noqa: E402
from testbed.simulation import generate  # noqa: E402


def sample_events(seed: int) -> list[bytes]:
    """Every event of a simulated school year, sealed by a local log per site, as sent."""
    scenario = generate(children=160, villages=5, schools=2, days=200, seed=seed)
    bodies: list[bytes] = []
    with tempfile.TemporaryDirectory(prefix="shouwang-dict-") as tmp:
        for spec in scenario.sites:
            plans = [p.draft for p in scenario.for_site(spec.site_id) if not p.refused]
            if not plans:
                continue
            with LocalLog(Path(tmp) / f"{spec.site_id}.sqlite", spec.site_id) as log:
                drafts = parse_drafts(msgspec.json.encode(plans))
                for i in range(0, len(drafts), 500):
                    log.record(drafts[i:i + 500], default_actor=f"staff-{random.Random(i).randint(1, 40):02d}")
                bodies += [o.body for o in log.read_range(1, 10**12, 10**9)]
    return bodies


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--id", default="care-1", help="the dictionary's id (its file name)")
    parser.add_argument("--size", type=int, default=16384, help="dictionary size in bytes")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the simulated township")
    args = parser.parse_args(argv)
    bodies = sample_events(args.seed)
    trained = zstandard.train_dictionary(args.size, bodies, level=12, threads=1)
    DICTIONARIES.mkdir(exist_ok=True)
    out = DICTIONARIES / f"{args.id}.zdict"
    if out.exists():
        print(f"{out} exists: a shipped dictionary is never changed; pick a new --id", file=sys.stderr)
        return 2
    out.write_bytes(trained.as_bytes())
    print(f"wrote {out}: {len(trained.as_bytes())} bytes trained on {len(bodies)} made-up events")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
