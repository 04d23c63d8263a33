"""Refusals in a receipt stop the agent from sending an event only when they are about that event."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from events.envelope import parse_drafts
from events.ids import new_event_id
from events.wire import Receipt, Refusal
from sync_agent.locallog import LocalLog

SITE = "gx-lp.xy.v02"
DRAFT = {"type": "HomeVisitMade", "occurred_at": "2026-03-02T09:30:00+08:00", "child_id": "c-" + "1" * 32,
         "visitor": "张老师"}


def receipt(*refused: Refusal) -> Receipt:
    return Receipt(site_id=SITE, watermark=1, max_seq=1, holes=[], refused=list(refused),
                   center_time=dt.datetime.now(dt.UTC))


def test_a_refusal_naming_another_events_id_does_not_drop_an_own_event(tmp_path: Path) -> None:
    """A forged message on this site's subject with another site's event renumbered to our next
    site_seq is refused by the center, and the receipt names that site_seq; the agent must still
    send (and count as pending) its own event of that number, or it is lost (found by the chaos
    harness: the center kept a hole the agent never filled)."""
    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        done = log.record(parse_drafts(json.dumps([DRAFT] * 3).encode()), default_actor="station")
        log.apply_receipt(receipt(Refusal(quarantine_id=7, reason="forged site", event_id=new_event_id(), site_seq=2),
                                  Refusal(quarantine_id=8, reason="unreadable", site_seq=3)))
        assert log.refused_seqs() == set()
        assert log.pending() == (2, 2)
        log.apply_receipt(receipt(Refusal(quarantine_id=9, reason="bad", event_id=done[1].event_id, site_seq=2)))
        assert log.refused_seqs() == {2}
        assert log.pending() == (1, 3)


def test_a_center_restored_from_an_older_backup_gets_the_refused_events_again(tmp_path: Path) -> None:
    """Refusals kept at the station from before a center's restore (the restored quarantine may
    lack their rows, and reuse their ids): once a receipt's watermark goes back, every refused
    event is pending again, to be decided afresh and quarantined there again."""
    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        done = log.record(parse_drafts(json.dumps([DRAFT] * 3).encode()), default_actor="station")
        log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]], refused=[
            Refusal(quarantine_id=4, reason="not authorized", event_id=done[1].event_id, site_seq=2)]))
        assert (log.refused_seqs(), log.pending()) == ({2}, (0, None))
        log.apply_receipt(Receipt(site_id=SITE, watermark=3, max_seq=3))  # an admin replayed it
        log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=1))  # the center's restore
        assert (log.refused_seqs(), log.pending()) == (set(), (2, 2))
        log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]], refused=[
            Refusal(quarantine_id=4, reason="not authorized", event_id=done[1].event_id, site_seq=2)]))
        assert (log.refused_seqs(), log.pending()) == ({2}, (0, None))


def test_a_refusal_the_center_no_longer_holds_is_forgotten_and_its_event_sent_again(tmp_path: Path) -> None:
    """A center restored from a backup taken before it refused an event that waited in a hole: its
    watermark does not go back, but its quarantine lacks the refusal. The answer to a receipt
    request lists every refusal the center holds (refused_all); the agent forgets any other, and
    the event is pending again (found by the cluster chaos run, seed 11: a school's event refused,
    the refusal lost with the restore, never sent again)."""
    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        done = log.record(parse_drafts(json.dumps([DRAFT] * 4).encode()), default_actor="station")
        own = [Refusal(quarantine_id=4, reason="not authorized", event_id=done[1].event_id, site_seq=2),
               Refusal(quarantine_id=5, reason="not authorized", event_id=done[3].event_id, site_seq=4)]
        log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]], refused=own))
        assert (log.refused_seqs(), log.pending()) == ({2, 4}, (0, None))
        # A receipt from care.down lists only its own commit's refusals: nothing is forgotten.
        effect = log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]]))
        assert (effect.forgotten, log.refused_seqs()) == ((), {2, 4})
        # The answer to a request, from the restored center: it holds the refusal of 4 only.
        effect = log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]], refused=own[1:],
                                           refused_all=True))
        assert (effect.went_back, effect.forgotten) == (False, (2,))
        assert (log.refused_seqs(), log.pending()) == ({4}, (1, 2))
        # Both held again: nothing forgotten, nothing pending.
        effect = log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]], refused=own,
                                           refused_all=True))
        assert (effect.forgotten, log.refused_seqs(), log.pending()) == ((), {2, 4}, (0, None))
        assert [r["site_seq"] for r in log.refusals()] == [2, 4]
        # Refusals of what the station did not send (unreadable bytes on its subject: no numbers,
        # or numbers it has not used) are kept for its pages, and a list without them forgets
        # nothing of them (the cluster chaos run's bad input: such a row once broke the answer).
        log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]], refused=[
            Refusal(quarantine_id=6, reason="invalid event: $: malformed JSON"),
            Refusal(quarantine_id=7, reason="invalid event: site_seq", event_id=new_event_id(), site_seq=9)]))
        effect = log.apply_receipt(Receipt(site_id=SITE, watermark=1, max_seq=3, holes=[[2, 2]], refused=own,
                                           refused_all=True))
        assert effect.forgotten == ()
        assert [r["quarantine_id"] for r in log.refusals()] == [4, 5, 6, 7]
        assert (log.refused_seqs(), log.pending()) == ({2, 4}, (0, None))


def test_a_refusal_of_a_damaged_copy_with_our_numbers_does_not_drop_the_real_event(tmp_path: Path) -> None:
    """Someone with the station's credentials sends a damaged copy of one of its events (same
    event_id and site_seq, other content) before the real one arrives; the center refuses the copy
    and its receipt names our numbers. The refusal carries the digest of the bytes refused, which
    are not the bytes we sent: the event stays pending and is sent (found by the chaos harness: a
    copy with an injected child_id made the agent stop sending its last event). A refusal whose
    digest is of our own bytes stops it, as before."""
    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        done = log.record(parse_drafts(json.dumps([DRAFT] * 3).encode()), default_actor="station")
        ours = log.read_range(2, 2, 1)[0]
        assert ours.event_id == done[1].event_id
        damaged = ours.body.replace(b"HomeVisitMade", b"HomeVisitMadeX")
        assert damaged != ours.body
        log.apply_receipt(receipt(Refusal(quarantine_id=11, reason="invalid event: type", event_id=ours.event_id,
                                          site_seq=2, digest=hashlib.sha256(damaged).hexdigest())))
        assert log.refused_seqs() == set()
        assert log.pending() == (2, 2)
        assert log.refusals() == []
        log.apply_receipt(receipt(Refusal(quarantine_id=12, reason="not authorized", event_id=ours.event_id,
                                          site_seq=2, digest=hashlib.sha256(ours.body).hexdigest())))
        assert log.refused_seqs() == {2}
        assert log.pending() == (1, 3)
