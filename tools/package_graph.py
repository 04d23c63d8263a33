"""Print the project's package graph: which top-level package imports which, and how often.

    python tools/package_graph.py [--dot]

Built with grimp (import-linter's graph library) from the source tree it runs in; the arrows
are the ones `lint-imports` checks against the contracts in pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import grimp

PACKAGES = ("events", "runtime", "store", "web", "projections", "service", "sync_agent", "testbed", "shouwang")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dot", action="store_true", help="Graphviz dot instead of text")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    present = [p for p in PACKAGES if (args.root / p / "__init__.py").exists()]
    graph = grimp.build_graph(*present, cache_dir=None)
    arrows: Counter[tuple[str, str]] = Counter()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = importer.split(".")[0], imported.split(".")[0]
            if a != b and b in present:
                arrows[a, b] += 1
    if args.dot:
        print("digraph packages {")
        for (a, b), n in sorted(arrows.items()):
            print(f'  "{a}" -> "{b}" [label={n}];')
        print("}")
        return 0
    for pkg in present:
        outs = ", ".join(f"{b} ({arrows[a, b]})" for (a, b) in sorted(arrows) if a == pkg)
        print(f"{pkg:12} -> {outs or '-'}")
    cycles = sorted({tuple(sorted((a, b))) for (a, b) in arrows if (b, a) in arrows})
    print("cycles between packages:", ", ".join(f"{a} <-> {b}" for a, b in cycles) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
