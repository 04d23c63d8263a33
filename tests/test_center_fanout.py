"""Fan-out: each committed event reaches exactly the sites whose scope holds its children."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from events.catalogue import ArchivesMerged, ChildTransferred, HomeVisitMade, TalkHeld
from events.samples import sample_registration
from service.center import Center, run_center
from service.sites import disable_site, register_site
from service.streams import StreamSettings
from store.postgres import EventStore
from testbed.embedded import EmbeddedNats
from tests.center_kit import SiteInbox, client, own_nats, publish, wait_for
from tests.factory import SiteWriter

__all__ = ["client", "own_nats"]

V1, V2, S1, S2 = "gx-lp.xy.v01", "gx-lp.xy.v02", "gx-lp.xy.s01", "gx-lp.xy.s02"
OFFICE, FAR_OFFICE, FAR_VILLAGE = "gx-lp.xy.office", "gx-lp.zz.office", "gx-lp.zz.v03"
KINDS = {V1: "village", V2: "village", S1: "school", S2: "school", OFFICE: "township", FAR_OFFICE: "township",
         FAR_VILLAGE: "village"}
A = "c-" + "1" * 32
B = "c-" + "2" * 32


async def _stored(pool: asyncpg.Pool, n: int) -> bool:
    return await EventStore(pool).count() == n


async def test_scope_transfer_township_and_merge(database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats,
                                                 client: NATS) -> None:
    """Events go to the child's village, school and township office (never back to the sender, never elsewhere); a
    transfer brings the new school the whole history and stops the old one; a merge joins two children's scopes."""
    for site, kind in KINDS.items():
        await register_site(pool, site, kind, site)
    w = {s: SiteWriter(s) for s in KINDS}
    rng = random.Random(3)
    js = client.jetstream()
    inbox = {s: SiteInbox(js, s) for s in KINDS}
    async with run_center(database_url, own_nats.url):
        # Phase 1: V1 registers A at school S1 (V1 is A's village station by being the registrar).
        reg_a = w[V1].write(sample_registration(rng, A, school_site=S1))
        visit_a = w[V1].write(HomeVisitMade(child_id=A, visitor="石晓"))
        talk_a = w[S1].write(TalkHeld(child_id=A, teacher="云老师", record_card="情绪稳定"))
        noise = w[FAR_VILLAGE].write(HomeVisitMade(child_id="c-" + "9" * 32, visitor="舒安"))
        await publish(js, [reg_a, visit_a, talk_a, noise])
        await wait_for(lambda: _stored(pool, 4))
        await inbox[OFFICE].wait_events(3)
        await inbox[S1].wait_events(2)
        await inbox[V1].wait_events(1)
        await inbox[FAR_OFFICE].wait_events(1)
        assert inbox[S1].event_ids() == {reg_a.event.event_id, visit_a.event.event_id}
        assert inbox[V1].event_ids() == {talk_a.event.event_id}
        assert inbox[OFFICE].event_ids() == {reg_a.event.event_id, visit_a.event.event_id, talk_a.event.event_id}
        assert inbox[FAR_OFFICE].event_ids() == {noise.event.event_id}

        # Phase 2: S1 hands A over to S2. S2 gets the history and the transfer; S1 hears no more.
        transfer = w[S1].write(ChildTransferred(child_id=A, to_school_site=S2, school="第二小学", grade=5))
        await publish(js, transfer)
        await wait_for(lambda: _stored(pool, 5))
        await inbox[S2].wait_events(4)
        assert inbox[S2].event_ids() == {reg_a.event.event_id, visit_a.event.event_id, talk_a.event.event_id,
                                         transfer.event.event_id}
        later = w[V1].write(HomeVisitMade(child_id=A, visitor="石晓", findings="新学校适应良好"))
        await publish(js, later)
        await inbox[S2].wait_events(5)
        await inbox[OFFICE].wait_events(5)

        # Phase 3: V2 registered B; the office merges B into A; each side's sites then see the other's events.
        reg_b = w[V2].write(sample_registration(rng, B))
        await publish(js, reg_b)
        await wait_for(lambda: _stored(pool, 7))
        merge = w[OFFICE].write(ArchivesMerged(kept_child_id=A, merged_child_id=B, note="同一身份证号"))
        await publish(js, merge)
        await wait_for(lambda: _stored(pool, 8))
        after_merge = w[V2].write(HomeVisitMade(child_id=B, visitor="柏宁"))
        await publish(js, after_merge)
        await wait_for(lambda: _stored(pool, 9))
        await inbox[V1].wait_events(4)  # talk, B's registration (history), merge, after_merge
        assert {reg_b.event.event_id, merge.event.event_id, after_merge.event.event_id} <= inbox[V1].event_ids()
        await inbox[V2].wait_events(5)  # A's history up to the merge, and the merge
        assert {reg_a.event.event_id, transfer.event.event_id, later.event.event_id} <= inbox[V2].event_ids()
        await inbox[S2].wait_events(8)
        for site in KINDS:
            await inbox[site].drain()
        assert inbox[S1].event_ids() == {reg_a.event.event_id, visit_a.event.event_id}
        assert inbox[FAR_OFFICE].event_ids() == {noise.event.event_id}
        assert inbox[FAR_VILLAGE].event_ids() == set()
        for site in KINDS:
            assert all(e.site_id != site for e in inbox[site].events), f"{site} got its own events back"


async def test_disabled_site_gets_nothing_and_fanout_resumes(database_url: str, pool: asyncpg.Pool,
                                                             own_nats: EmbeddedNats, client: NATS) -> None:
    """A disabled site is sent nothing; a restarted center resumes fan-out from its checkpoint (without resending,
    with no resend window; with one, it resends the events committed within the window)."""
    no_resend = StreamSettings(fanout_resend_window=0)
    for site in (V1, S1, OFFICE):
        await register_site(pool, site, KINDS[site], site)
    rng = random.Random(5)
    w = SiteWriter(V1)
    js = client.jetstream()
    events = [w.write(sample_registration(rng, A, school_site=S1))]
    events += [w.write(HomeVisitMade(child_id=A, visitor="石晓")) for _ in range(20)]
    s1 = SiteInbox(js, S1)
    async with run_center(database_url, own_nats.url, settings=no_resend) as center:
        await publish(js, events[:11])
        await s1.wait_events(11)
        await wait_for(lambda: _fanned_out(center, 22), what="the first events sent to S1 and the office")
        await disable_site(pool, OFFICE)
    async with run_center(database_url, own_nats.url, settings=no_resend) as center:
        await publish(js, events[11:])
        await s1.wait_events(21)
        assert len(s1.events) == 21, "a restart must not resend what was sent before"
        await wait_for(lambda: _fanned_out(center, 10), what="the new events sent")
    async with run_center(database_url, own_nats.url) as center:  # default window: everything was just sent
        await wait_for(lambda: _fanned_out(center, 21), what="the resend after a restart")
    office = SiteInbox(js, OFFICE)
    await office.drain()
    assert len(office.events) == 11, "the office got the first events only, before it was disabled"


async def _fanned_out(center: Center, n: int) -> bool:
    return center.stats()["fanned_out"] == n


async def test_a_townships_rules_reach_every_site_of_the_township(database_url: str, pool: asyncpg.Pool,
                                                                  own_nats: EmbeddedNats, client: NATS) -> None:
    """A rule and a calendar the township office sets reach each of its villages and schools (their
    follow-up pages judge by it), never another township's sites."""
    from events.catalogue import FollowUpRuleRetired

    for site, kind in KINDS.items():
        await register_site(pool, site, kind, site)
    js = client.jetstream()
    inbox = {s: SiteInbox(js, s) for s in KINDS}
    office = SiteWriter(OFFICE)
    retired = office.write(FollowUpRuleRetired(township="gx-lp.xy", rule_id="childrens_home",
                                               effective_from=dt.date(2026, 3, 1)))
    async with run_center(database_url, own_nats.url):
        await publish(js, [retired])
        await wait_for(lambda: _stored(pool, 1))
        for site in (V1, V2, S1, S2):
            await inbox[site].wait_events(1)
            assert inbox[site].event_ids() == {retired.event.event_id}
    for site in (FAR_OFFICE, FAR_VILLAGE, OFFICE):
        await inbox[site].drain()
        assert inbox[site].events == [], site


async def test_a_site_registered_after_the_rules_gets_them(database_url: str, pool: asyncpg.Pool,
                                                           own_nats: EmbeddedNats, client: NATS) -> None:
    """A village station registered after its township office set a rule receives that rule with
    the next events the fan-out sends (it would otherwise judge its children by the defaults)."""
    from events.catalogue import FollowUpRuleRetired

    for site in (V1, OFFICE):
        await register_site(pool, site, KINDS[site], site)
    js = client.jetstream()
    office = SiteWriter(OFFICE)
    retired = office.write(FollowUpRuleRetired(township="gx-lp.xy", rule_id="childrens_home",
                                               effective_from=dt.date(2026, 3, 1)))
    async with run_center(database_url, own_nats.url):
        await publish(js, [retired])
        await SiteInbox(js, V1).wait_events(1)
        await register_site(pool, V2, "village", V2)
        late = SiteInbox(js, V2)
        w = SiteWriter(V1)
        await publish(js, [w.write(sample_registration(random.Random(9), A))])
        await wait_for(lambda: _stored(pool, 2))
        await late.wait_events(1)
        assert late.event_ids() == {retired.event.event_id}


async def test_a_correction_of_a_rule_reaches_every_site_and_the_station_follows_it(
        database_url: str, pool: asyncpg.Pool, own_nats: EmbeddedNats, client: NATS, tmp_path: Path) -> None:
    """The office sets a rule (two visits a month from 1 April), then corrects it (three): the
    correction names no child, yet reaches each site of the township as the rule did (never
    another township's), and a station that keeps both judges by the corrected rule."""
    from events.catalogue import EventCorrected, FollowUpRuleSet
    from events.envelope import encode_event
    from events.rules import DEFAULT_RULES
    from sync_agent.locallog import LocalLog
    from sync_agent.view import station_archives

    for site, kind in KINDS.items():
        await register_site(pool, site, kind, site)
    js = client.jetstream()
    inbox = {s: SiteInbox(js, s) for s in KINDS}
    office = SiteWriter(OFFICE)
    base = DEFAULT_RULES[0]

    def visits(n: int) -> FollowUpRuleSet:
        rule = msgspec.structs.replace(base, zh=f"代管家长每月家访{n}次",
                                       counts=msgspec.structs.replace(base.counts, at_least=n))
        return FollowUpRuleSet(township="gx-lp.xy", rule=rule, effective_from=dt.date(2026, 4, 1))

    rule = office.write(visits(2))
    fix = office.write(EventCorrected(corrected_event_id=rule.event.event_id, reason="应为每月三次",
                                      replacement=visits(3)))
    async with run_center(database_url, own_nats.url):
        await publish(js, [rule, fix])
        await wait_for(lambda: _stored(pool, 2))
        for site in (V1, V2, S1, S2):
            await inbox[site].wait_events(2)
            assert inbox[site].event_ids() == {rule.event.event_id, fix.event.event_id}, site
    for site in (FAR_OFFICE, FAR_VILLAGE, OFFICE):
        await inbox[site].drain()
        assert inbox[site].events == [], site

    with LocalLog(tmp_path / "v1.sqlite", V1) as log:
        log.apply_inbound([(e, encode_event(e)) for e in inbox[V1].events])
        book = station_archives(log).rule_inputs(V1, "village").book
        found = book.in_force("gx-lp.xy", "proxy_visit", dt.date(2026, 5, 1))
        assert found is not None and found.rule is not None
        assert (found.rule.counts.at_least, found.rule.zh) == (3, "代管家长每月家访3次")
        before = book.in_force("gx-lp.xy", "proxy_visit", dt.date(2026, 3, 31))
        assert before is not None and before.rule == base  # before its day: the default
