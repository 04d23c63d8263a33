"""A station shows a child as the center counts it: its own event that the center refused (kept
in quarantine there, listed as refused here) drops out of the child's events and archive, in the
page cache too (found by the station sync-equality test: a school closing a child it had handed
over showed the archive closed, which the center refused)."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec

from events.envelope import parse_drafts
from events.samples import sample_registration
from events.wire import Receipt, Refusal
from sync_agent.locallog import LocalLog
from sync_agent.view import station_archives

SITE = "gx-lp.xy.s01"
CHILD = "c-" + "d" * 32


def test_a_refused_own_event_leaves_the_childs_view(tmp_path: Path) -> None:
    """After a receipt refuses the station's closing, the child's events and the cached archive no longer hold it."""
    reg = sample_registration(random.Random(3), CHILD)
    drafts = [{"type": "ChildRegistered", "occurred_at": "2026-03-01T09:00:00+08:00",
               **{k: v for k, v in msgspec.to_builtins(reg).items() if k != "type"}},
              {"type": "ArchiveClosed", "occurred_at": "2026-03-02T09:00:00+08:00", "child_id": CHILD,
               "reason": "parents_returned"}]
    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        done = log.record(parse_drafts(msgspec.json.encode(drafts)), default_actor="staff-01")
        cache = station_archives(log)
        assert cache.all()[CHILD].open is False and len(log.child_events(CHILD)) == 2
        closing = done[1]
        log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=1, refused=[Refusal(
            quarantine_id=1, reason="not authorized: this site does not hold child", event_id=closing.event_id,
            site_seq=closing.site_seq)]))
        assert [e.type for e in log.child_events(CHILD)] == ["ChildRegistered"]
        assert cache.all()[CHILD].open is True
