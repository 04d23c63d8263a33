"""A station's "this week" judges by the township's rules it holds: the defaults until the
township office's rule reaches it from the center, that rule from its day on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec

from events import catalogue as c
from events.envelope import encode_event, parse_drafts
from events.samples import SampleSite
from events.types import GuardianshipType, PartnerKind, Reason, Sex
from sync_agent.locallog import LocalLog
from sync_agent.roster_pages import this_week
from sync_agent.view import station_archives

SITE, OFFICE = "gx.xy.v07", "gx.xy.office"
KID = "c-" + "e" * 32


def _drafts(*items: dict[str, object]) -> list:  # type: ignore[type-arg]
    return parse_drafts(msgspec.json.encode(list(items)))


def test_a_retired_rule_leaves_this_week_and_a_fanned_out_rule_counts(tmp_path: Path) -> None:
    """Paired with a proxy parent in January and never visited: overdue for the monthly visit on
    10 April; once the office's retirement of that rule (from 1 April) arrives, it is not."""
    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        log.record(_drafts(
            {"type": "ChildRegistered", "child_id": KID, "name": "林小溪", "sex": "female",
             "birth_date": "2016-05-17", "household_village": "青石村", "reasons": ["both_parents_away"],
             "guardian": {"type": "grandparents"}, "occurred_at": "2026-01-05T09:00:00+08:00"},
            {"type": "PairingStarted", "child_id": KID, "pairing_id": "p-" + "e" * 32, "partner_kind": "proxy_parent",
             "partner_name": "云晓", "occurred_at": "2026-01-05T10:00:00+08:00"}), default_actor="director-07")
        archives = station_archives(log)
        day = dt.date(2026, 4, 10)
        overdue, _ = this_week(archives, SITE, "village", day)
        # due by 28 February (January's registration month not due): 41 days overdue on 10 April
        assert {(r["rule"], r["days_overdue"]) for r in overdue} >= {("proxy_visit", 41), ("proxy_call", 41)}
        assert all(r["label"] for r in overdue)
        office = SampleSite(OFFICE)
        retired = office.write(c.FollowUpRuleRetired(township="gx.xy", rule_id="proxy_visit",
                                                     effective_from=dt.date(2026, 4, 1)),
                               dt.datetime(2026, 3, 30, 2, tzinfo=dt.UTC))
        log.apply_inbound([(retired.event, encode_event(retired.event))])
        overdue, _ = this_week(archives, SITE, "village", day)
        assert {r["rule"] for r in overdue} == {"proxy_call"}


def test_the_stations_rules_are_the_pure_evaluation_of_its_events(tmp_path: Path) -> None:
    """The station's cached inputs (archives kept, work read again only for changed children) give
    the figures `projections.rules.inputs_from` gives over the same events, before and after a
    change and a correction."""
    from projections import rules
    from projections.followups import month_of
    from sync_agent.view import station_archives as cache_of

    with LocalLog(tmp_path / "log.sqlite", SITE) as log:
        log.record(_drafts(*[
            {"type": "ChildRegistered", "child_id": f"c-{i:032x}", "name": "林小溪", "sex": "female",
             "birth_date": "2016-05-17", "household_village": "青石村", "reasons": ["both_parents_away"],
             "guardian": {"type": "grandparents"}, "grade": 3, "occurred_at": "2026-01-05T09:00:00+08:00"}
            for i in range(1, 4)],
            {"type": "PairingStarted", "child_id": f"c-{1:032x}", "pairing_id": "p-" + "e" * 32,
             "partner_kind": "proxy_parent", "partner_name": "云晓", "occurred_at": "2026-01-05T10:00:00+08:00"},
            {"type": "HomeVisitMade", "child_id": f"c-{1:032x}", "visitor": "云晓",
             "occurred_at": "2026-03-05T10:00:00+08:00"}), default_actor="director-07")
        cache = cache_of(log)
        sites = {SITE: rules.SiteInfo("village")}
        day = dt.date(2026, 6, 10)

        def both() -> tuple[object, object]:
            mine = cache.rule_figures(SITE, "village", day)[0]
            events = {e.event_id: e for cid in log.children() for e in log.child_events(cid)}
            from events.envelope import care_of
            pure = rules.inputs_from(((e, care_of(e)) for e in events.values()), sites)
            return mine, rules.rule_figures(pure.book, pure.archives, pure.work, sites, SITE, month_of(day), day)

        mine, pure = both()
        assert mine == pure and any(f.overdue for f in mine)
        visit = next(e for e in log.own_events() if e.type == "HomeVisitMade")
        log.record(_drafts({"type": "HomeVisitMade", "child_id": f"c-{1:032x}", "visitor": "云晓",
                            "occurred_at": "2026-05-05T10:00:00+08:00"},
                           {"type": "EventCorrected", "corrected_event_id": visit.event_id, "reason": "没有去",
                            "child_ids": [f"c-{1:032x}"], "occurred_at": "2026-05-06T10:00:00+08:00"}),
                   default_actor="director-07")
        mine, pure = both()
        assert mine == pure


def test_a_township_offices_this_week_covers_its_township(tmp_path: Path) -> None:
    """The office's agent holds the villages' children (fanned out to it): its "this week" lists
    them, though the office itself holds none."""
    village = SampleSite("gx.xy.v01")
    reg = village.write(c.ChildRegistered(
        child_id=KID, name="林小溪", sex=Sex.FEMALE, birth_date=dt.date(2016, 5, 17), household_village="青石村",
        reasons=[Reason.BOTH_PARENTS_AWAY], guardian=c.Guardian(type=GuardianshipType.GRANDPARENTS)),
        dt.datetime(2026, 1, 5, 1, tzinfo=dt.UTC))
    paired = village.write(c.PairingStarted(pairing_id="p-" + "e" * 32, child_id=KID,
                                            partner_kind=PartnerKind.PROXY_PARENT, partner_name="云晓"),
                           dt.datetime(2026, 1, 5, 2, tzinfo=dt.UTC))
    with LocalLog(tmp_path / "log.sqlite", OFFICE) as log:
        log.apply_inbound([(d.event, encode_event(d.event)) for d in (reg, paired)])
        overdue, _ = this_week(station_archives(log), OFFICE, "township", dt.date(2026, 4, 10))
        assert {(r["child_id"], r["rule"], r["days_overdue"]) for r in overdue} >= {(KID, "proxy_visit", 41)}
