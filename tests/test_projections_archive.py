"""The pure archive reducer: convergence, conflicts, corrections, merges (no database)."""

from __future__ import annotations

import datetime as dt
import random

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import catalogue as c
from events.envelope import DecodedEvent, Event
from events.samples import sample_registration
from events.types import GuardianshipType, StatusLevel
from projections import archive
from tests.factory import SiteWriter

KIDS = [f"c-{i:032x}" for i in range(1, 4)]
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def _pairs(ds: list[DecodedEvent]) -> list[tuple[Event, c.CareEventBase | None]]:
    return [(d.event, d.care) for d in ds]


def _encoded(archives: dict[str, archive.ChildArchive]) -> dict[str, bytes]:
    return {k: archive.encode_archive(v) for k, v in archives.items()}


def random_world(seed: int, n: int) -> list[DecodedEvent]:
    """n events from three sites about three children: every kind that changes an archive,
    updates with random (often stale) bases, corrections, merges, unmerges and resolutions."""
    rng = random.Random(seed)
    sites = [SiteWriter(s) for s in ("r.t.v01", "r.t.v02", "r.t.s01")]
    written: list[DecodedEvent] = []
    for i, kid in enumerate(KIDS):
        written.append(sites[i].write(sample_registration(rng, kid, village_site=sites[i].site_id), T0))
    for _ in range(n):
        w = rng.choice(sites)
        kid = rng.choice(KIDS)
        when = T0 + dt.timedelta(days=rng.randint(0, 200))
        base = rng.choice(written).event.event_id
        k = rng.randrange(15)
        if k == 0:
            care: c.CareEventBase = c.GuardianChanged(child_id=kid, guardian=c.Guardian(
                type=rng.choice(list(GuardianshipType))))
            d = w.write(care, when, based_on={"guardian": base} if rng.random() < 0.7 else None)
        elif k == 1:
            d = w.write(c.StatusAssessed(child_id=kid, study=rng.choice(list(StatusLevel))), when,
                        based_on={"status.study": base})
        elif k == 2:
            d = w.write(c.ArchiveUpdated(child_id=kid, grade=rng.randint(1, 6)), when)
        elif k == 3:
            d = w.write(c.HomeVisitMade(child_id=kid, visitor="石晓"), when)
        elif k == 4:
            d = w.write(c.ParentCallMade(child_id=kid, parent="母亲"), when)
        elif k == 5:
            target = rng.choice(written)
            repl = c.TalkHeld(child_id=kid, teacher="云安", record_card="谈心") if rng.random() < 0.5 else None
            d = w.write(c.EventCorrected(corrected_event_id=target.event.event_id, reason="填错",
                                         child_ids_list=list(target.event.children), replacement=repl), when)
        elif k == 6:
            other = rng.choice([x for x in KIDS if x != kid])
            d = w.write(c.ArchivesMerged(kept_child_id=kid, merged_child_id=other), when)
        elif k == 7:
            merges = [x for x in written if isinstance(x.care, c.ArchivesMerged)]
            if not merges:
                continue
            m = rng.choice(merges)
            assert isinstance(m.care, c.ArchivesMerged)
            d = w.write(c.ArchivesUnmerged(merge_event_id=m.event.event_id, kept_child_id=m.care.kept_child_id,
                                           merged_child_id=m.care.merged_child_id), when)
        elif k == 8:
            d = w.write(c.ConflictResolved(child_id=kid, field="guardian", chosen_event_id=base), when)
        elif k == 9:
            d = w.write(c.ArchiveClosed(child_id=kid, reason=c.ClosingReason.PARENTS_RETURNED), when)
        elif k == 11:
            d = w.write(c.AidGiven(child_id=kid, amount_fen=rng.choice((100, 2000)), source=c.AidSource.CHARITY), when)
        elif k == 12:
            d = w.write(c.CondolenceVisitMade(child_ids_list=sorted(set(rng.sample(KIDS, 2))),
                                              occasion=c.Occasion.SPRING_FESTIVAL, money_fen_each=500), when)
        elif k == 13:
            d = w.write(c.ActivityHeld(activity_id=f"a-{rng.getrandbits(128):032x}", kind=c.ActivityKind.OUTING,
                                       title="春游", participants_total=9), when)  # about no child
        else:
            d = w.write(c.PairingStarted(pairing_id=f"p-{rng.getrandbits(128):032x}", child_id=kid,
                                         partner_kind=c.PartnerKind.TEACHER, partner_name="柏宁"), when)
        written.append(d)
    return written


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), n=st.integers(0, 40), order=st.randoms(use_true_random=False))
def test_any_order_with_duplicates_gives_the_same_archives(seed: int, n: int, order: random.Random) -> None:
    """The same set of events, shuffled and partly repeated, builds byte-identical archives."""
    events = random_world(seed, n)
    reference = _encoded(archive.build(_pairs(events)))
    delivered = events + order.sample(events, k=len(events) // 2)
    order.shuffle(delivered)
    assert _encoded(archive.build(_pairs(delivered))) == reference


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), order=st.randoms(use_true_random=False))
def test_incremental_apply_equals_build(seed: int, order: random.Random) -> None:
    """Adding events one at a time to an ArchiveBook, in any order, ends where build() of the
    whole set ends."""
    events = random_world(seed, 30)
    shuffled = list(events)
    order.shuffle(shuffled)
    book = archive.ArchiveBook()
    for d in shuffled:
        book.add(d.event, d.care)
    assert _encoded(book.archives()) == _encoded(archive.build(_pairs(events)))


def _registered() -> tuple[SiteWriter, SiteWriter, DecodedEvent]:
    a, b = SiteWriter("r.t.v01"), SiteWriter("r.t.s01")
    reg = a.write(sample_registration(random.Random(3), KIDS[0], village_site="r.t.v01"), T0)
    return a, b, reg


def _guardian(t: GuardianshipType) -> c.GuardianChanged:
    return c.GuardianChanged(child_id=KIDS[0], guardian=c.Guardian(type=t))


def test_concurrent_disagreeing_updates_open_a_conflict_with_a_deterministic_winner() -> None:
    """Two sites change the guardian from the same base to different values: one open conflict."""
    a, b, reg = _registered()
    base = {"guardian": reg.event.event_id}
    g1 = a.write(_guardian(GuardianshipType.RELATIVES), based_on=base)
    g2 = b.write(_guardian(GuardianshipType.NONE), based_on=base)
    arch = archive.build(_pairs([reg, g2, g1]))[KIDS[0]]
    [conflict] = arch.open_conflicts
    assert conflict.field == "guardian"
    assert conflict.heads == sorted([g1.event.event_id, g2.event.event_id])
    winner = max((g1, g2), key=lambda d: (d.event.recorded_at, d.event.site_id, d.event.site_seq))
    assert conflict.winner == winner.event.event_id
    assert arch.sources["guardian"].event_id == winner.event.event_id


def test_sequential_updates_do_not_conflict() -> None:
    """An update based on the other, or a later one at the same site, is not a conflict."""
    a, b, reg = _registered()
    g1 = a.write(_guardian(GuardianshipType.RELATIVES), based_on={"guardian": reg.event.event_id})
    g2 = b.write(_guardian(GuardianshipType.NONE), based_on={"guardian": g1.event.event_id})
    g3 = b.write(_guardian(GuardianshipType.ONE_PARENT))  # same site as g2, knows it without based_on
    arch = archive.build(_pairs([g3, g2, reg, g1]))[KIDS[0]]
    assert arch.conflicts == []
    assert arch.guardian is not None and arch.guardian.type == GuardianshipType.ONE_PARENT


def test_concurrent_agreeing_updates_do_not_conflict() -> None:
    """Two sites set the same value concurrently: nothing to settle."""
    a, b, reg = _registered()
    base = {"guardian": reg.event.event_id}
    a.write(_guardian(GuardianshipType.RELATIVES), based_on=base)
    b.write(_guardian(GuardianshipType.RELATIVES), based_on=base)
    assert archive.build(_pairs([*a.written, *b.written]))[KIDS[0]].conflicts == []


def test_resolution_closes_the_conflict_and_shows_the_chosen_value() -> None:
    """ConflictResolved picks the losing head: the conflict is closed and its value shown."""
    a, b, reg = _registered()
    base = {"guardian": reg.event.event_id}
    g1 = a.write(_guardian(GuardianshipType.RELATIVES), based_on=base)
    g2 = b.write(_guardian(GuardianshipType.NONE), based_on=base)
    heads = archive.build(_pairs([reg, g1, g2]))[KIDS[0]].open_conflicts[0]
    loser = g1 if heads.winner == g2.event.event_id else g2
    b.clock.observe(g1.event.recorded_at)  # the resolving site has received both (as an agent's inbox does)
    res = b.write(c.ConflictResolved(child_id=KIDS[0], field="guardian", chosen_event_id=loser.event.event_id))
    arch = archive.build(_pairs([res, g2, reg, g1]))[KIDS[0]]
    assert arch.open_conflicts == []
    [closed] = arch.conflicts
    assert closed.resolved_by == res.event.event_id
    assert arch.guardian == loser.care.guardian  # type: ignore[union-attr]


def test_retraction_and_replacement_change_counts_and_the_timeline_keeps_both() -> None:
    """A retracted visit no longer counts, a replaced one counts as its replacement, and the
    timeline lists originals and corrections."""
    a, _, reg = _registered()
    v1 = a.write(c.HomeVisitMade(child_id=KIDS[0], visitor="石晓"), T0)
    v2 = a.write(c.HomeVisitMade(child_id=KIDS[0], visitor="石晓"), T0)
    r1 = a.write(c.EventCorrected(corrected_event_id=v1.event.event_id, reason="没有去", child_ids_list=[KIDS[0]]))
    r2 = a.write(c.EventCorrected(
        corrected_event_id=v2.event.event_id, reason="是电话", child_ids_list=[KIDS[0]],
        replacement=c.ParentCallMade(child_id=KIDS[0], parent="父亲"),
        replacement_occurred_at=T0 + dt.timedelta(days=40)))
    events = [reg, v1, v2, r1, r2]
    arch = archive.build(_pairs(events))[KIDS[0]]
    assert arch.last_visit is None
    assert arch.months == [archive.MonthWork(month="2026-04", calls=1)]
    states, _ = archive.build_states(_pairs(events))
    items = {i.event_id: i for i in archive.timeline(states[KIDS[0]].entries.values())}
    assert len(items) == 5
    assert items[v1.event.event_id].retracted and items[v1.event.event_id].corrected_by == r1.event.event_id
    assert not items[v2.event.event_id].retracted and items[v2.event.event_id].corrected_by == r2.event.event_id
    assert items[r2.event.event_id].corrects == v2.event.event_id


def test_merge_joins_histories_and_unmerge_separates_them() -> None:
    """After a merge the kept archive counts the merged child's visits; an unmerge undoes it."""
    a, b, _ = _registered()
    rng = random.Random(5)
    b.write(sample_registration(rng, KIDS[1], school_site="r.t.s01"), T0)
    b.write(c.HomeVisitMade(child_id=KIDS[1], visitor="云安"), T0 + dt.timedelta(days=1))
    m = a.write(c.ArchivesMerged(kept_child_id=KIDS[0], merged_child_id=KIDS[1]))
    merged = archive.build(_pairs([*a.written, *b.written]))
    assert merged[KIDS[1]].merged_into == KIDS[0]
    assert merged[KIDS[0]].merged_from == [KIDS[1]]
    assert merged[KIDS[0]].last_visit == (T0 + dt.timedelta(days=1)).date()
    a.write(c.ArchivesUnmerged(merge_event_id=m.event.event_id, kept_child_id=KIDS[0], merged_child_id=KIDS[1]))
    apart = archive.build(_pairs([*a.written, *b.written]))
    assert apart[KIDS[1]].merged_into is None and apart[KIDS[0]].last_visit is None
    assert apart[KIDS[1]].last_visit == (T0 + dt.timedelta(days=1)).date()


def test_events_not_understood_are_skipped_and_counted() -> None:
    """An event without a typed payload (unknown type) changes nothing and is counted."""
    _, _, reg = _registered()
    unknown = msgspec.structs.replace(reg.event, event_id="01937a0c-3f2b-7c8d-9e0f-112233445566", type="FutureThing")
    states, skipped = archive.build_states([(reg.event, reg.care), (unknown, None)])
    assert skipped == 1
    assert list(states[KIDS[0]].entries) == [reg.event.event_id]


def test_close_and_reopen_make_intervals_by_occurred_time() -> None:
    """Closing and reopening, delivered out of order, give intervals sorted by when they happened."""
    a, _, reg = _registered()
    cl = a.write(c.ArchiveClosed(child_id=KIDS[0], reason=c.ClosingReason.PARENTS_RETURNED), T0 + dt.timedelta(days=10))
    ro = a.write(c.ArchiveReopened(child_id=KIDS[0], reason="又外出"), T0 + dt.timedelta(days=20))
    arch = archive.build(_pairs([ro, cl, reg]))[KIDS[0]]
    d0 = T0.date()
    assert arch.intervals == [(d0, d0 + dt.timedelta(days=10)), (d0 + dt.timedelta(days=20), None)]
    assert arch.open and arch.open_on(d0 + dt.timedelta(days=5)) and not arch.open_on(d0 + dt.timedelta(days=15))
