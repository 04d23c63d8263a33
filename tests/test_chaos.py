"""The fault-injection harness (tests/chaos), short and seeded, as CI runs it."""

from __future__ import annotations

from tests.chaos.faults import WEIGHTS
from tests.chaos.harness import run

SEED = 7
MINUTES = 1.0


async def test_a_short_seeded_chaos_run_loses_duplicates_and_mis_merges_nothing() -> None:
    """Under kill -9 of agents, center and projections, server restarts, cut lines, skewed
    clocks, duplicated and reordered deliveries and a center restored from a backup, every
    recorded event is stored exactly once, chains verify without holes, read models equal a
    rebuild, every site's archives equal the center's, the rollup equals the truth, and every
    piece of bad input is refused (ingest: quarantined, one row each) without killing anything."""
    # Its own folder, not under pytest's tmp_path: a pytest session starting meanwhile resets its
    # root to 0700, and PostgreSQL (run as another user when we are root) could not open its data.
    summary = await run(MINUTES, SEED, progress=lambda _: None)
    assert summary["mismatches"] == [], summary
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["converged"], summary
    assert summary["events_recorded"] == summary["events_stored"] > 100
    assert set(summary["faults"]) >= {*WEIGHTS, "backup", "restore"}, summary["faults"]
    assert summary["duplicate_deliveries"] > 0 and summary["recorded_via_cli"] > 0
    assert summary["archives_compared"] > 0
    bad = summary["bad_input"]
    assert bad["ingest_quarantined"] == bad["ingest"] > 0
    assert bad["agent_http"] > 0 and bad["agent_cli"] > 0 and bad["api"] > 0
    assert summary["ok"]
