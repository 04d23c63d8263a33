"""The fault-injection harness (tests/chaos) with the center's NATS a JetStream cluster of three
servers (issue 19), short and seeded, as CI runs it.

Seeds 5 and 11 once ended with one school event refused for good: after the center was
restored from a backup, a school resent a ChildTransferred before the village had resent the
registration the restore lost, and the authority check refused it ("not registered at the
center"). Ingest now decides such a refusal again once the child's registration is stored
(tests/test_center_waiting_refusals.py); seed 11 runs here beside seed 7. Seed 11 later ended
with a school's event held for good the same way, waiting for the village's transfer that gave the
school its child: ingest now decides a refusal again once any event that gives or moves its
child's scope is stored, and the answer to a receipt request lists every refusal the center holds,
so a station forgets one that a restore lost (tests/test_agent_refusals.py)."""

from __future__ import annotations

import gc

import pytest

from tests.chaos.faults import CLUSTER_KINDS, WEIGHTS
from tests.chaos.harness import run

SEEDS = (7, 11)
MINUTES = 1.0


# nats-py's reconnect loop replaces the transport of an attempt that failed after connecting (a
# server killed between accepting the socket and sending INFO: "empty response from server when
# expecting INFO message") without closing it, and the StreamWriter warns when collected. The
# harness's own client reconnects through the kills; the warning is the library's, not a leak of
# ours (CI, seed 11).
@pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning")
@pytest.mark.parametrize("seed", SEEDS)
async def test_a_cluster_server_killed_mid_ingest_and_mid_catch_up_loses_duplicates_and_skips_nothing(
        seed: int) -> None:
    """Streams kept 3 times; every fault of the single-server run, plus kill -9 of one server
    (the leader of CARE_UP, of CARE_DOWN, of the meta group, or any) while the sites record and
    the center ingests, and kill -9 of CARE_UP's leader while a site whose line was cut sends
    its backlog; each server started again. Every recorded event is stored exactly once, chains
    verify without holes, read models equal a rebuild, every site's archives equal the center's
    and the rollup equals the truth: the same checks, against the same ground truth, as
    tests/test_chaos.py."""
    # Its own folder, not under pytest's tmp_path: a pytest session starting meanwhile resets its
    # root to 0700, and PostgreSQL (run as another user when we are root) could not open its data.
    summary = await run(MINUTES, seed, progress=lambda _: None, nats_nodes=3)
    gc.collect()  # the failed attempts' transports (above) are collected under this test's filter
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
