"""The simulated township: what each site's staff record, day by day, over a school year.

A seeded generator used by the demo, the benchmarks and the fault-injection harness. It makes
a township office, village rights stations and schools, a few hundred children whose mix of
guardianship types, reasons and grades follows docs/DOMAIN.md, and the care work done for them:
registration surveys, home visits, calls with the parents, letters, talks with the class
teacher (some children fall behind the rules), pairings and proxy parents, aid, holiday
condolence visits covering many children, activities, a transfer between schools, a child
registered at two sites (a duplicate to merge), two sites editing the same guardian offline
(a conflict), a mistyped resident ID (refused at the station), and one station that is
offline for weeks.

Every record is a *draft* exactly as a station app submits it to its agent (JSON object with
`type`, `occurred_at` and the payload's fields). :class:`Truth` holds the figures computed by
the generator itself, independently of the projections, so the two can be compared.

Names, places and numbers are made up (see events.samples); nothing comes from real people.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import msgspec

from events.ids import resident_id_check_char
from events.samples import fake_name, fake_phone, fake_resident_id

TZ = dt.timezone(dt.timedelta(hours=8))  # China Standard Time: people enter local times
VILLAGE_NAMES = ["青石", "柳湾", "桃源", "云岭", "竹溪", "杏花", "松涛", "莲塘", "梅岗", "石桥"]


class SiteSpec(msgspec.Struct, frozen=True):
    site_id: str
    kind: str  # village | school | township | community
    name: str


class Planned(msgspec.Struct, frozen=True):
    """One thing a person at `site_id` records on `day` (a draft as a station app sends it)."""

    site_id: str
    day: int
    draft: dict[str, Any]
    refused: bool = False  # the station must refuse it (e.g. a mistyped resident ID)
    note: str = ""


class Truth(msgspec.Struct):
    """The township's figures for the whole scenario, as the generator counts them."""

    children_archived: int = 0
    children_by_guardianship: dict[str, int] = {}
    children_by_reason: dict[str, int] = {}
    children_by_grade_band: dict[str, int] = {}
    children_by_site: dict[str, int] = {}
    home_visits: int = 0
    parent_calls: int = 0
    letters: int = 0
    talks: int = 0
    pairings_started: int = 0
    proxy_parents_matched: int = 0
    aid_children: int = 0
    aid_amount_fen: int = 0
    condolence_visits: int = 0
    condolence_children_covered: int = 0
    activities: int = 0
    activity_participants: int = 0
    safety_incidents: int = 0
    rights_cases_opened: int = 0
    rights_cases_closed: int = 0
    transfers: int = 0
    duplicate_pairs: int = 0
    conflicts: int = 0
    refused_at_station: int = 0
    # The seed's headline figures (issue 17): children with a proxy parent, drop-outs and households visited.
    proxy_parent_children: int = 0
    dropped_out: int = 0
    dropped_out_poverty: int = 0
    condolence_households: int = 0


class Scenario(msgspec.Struct):
    township_id: str
    sites: list[SiteSpec]
    start: dt.date
    days: int
    records: list[Planned]
    offline: dict[str, list[int]]  # site id -> [first day, last day] without a connection
    truth: Truth

    def for_site(self, site_id: str) -> list[Planned]:
        return [p for p in self.records if p.site_id == site_id]


def grade_band(grade: int) -> str:
    if 1 <= grade <= 3:
        return "1-3"
    if 4 <= grade <= 6:
        return "4-6"
    if 7 <= grade <= 9:
        return "7-9"
    return "other"


def _at(start: dt.date, day: int, rng: random.Random) -> str:
    moment = dt.datetime.combine(start + dt.timedelta(days=day), dt.time(8 + rng.randint(0, 9), rng.randint(0, 59)),
                                 tzinfo=TZ)
    return moment.isoformat()


def generate(*, children: int = 120, villages: int = 4, schools: int = 2, days: int = 120, seed: int = 2026,
             region: str = "demo", township: str = "qingshi", start: dt.date = dt.date(2025, 9, 1),
             township_name: str | None = None, first_village: int = 0, communities: int = 0) -> Scenario:
    """A township's school year (or part of it) of care work. Deterministic for a seed. With
    `township_name` (a county of several townships) the office and schools carry it, and the
    villages' names start at `first_village` of the list, so two townships' sites differ by name.
    The communities (社区) and their work come after everything else, so a scenario without them is
    the same as before they existed."""
    rng = random.Random(seed)
    truth = Truth(children_by_guardianship={}, children_by_reason={}, children_by_grade_band={},
                  children_by_site={})
    prefix = f"{region}.{township}"
    office = SiteSpec(f"{prefix}.office", "township", f"{township_name or '镇'}儿童督导办公室")
    village_sites = [SiteSpec(f"{prefix}.v{i + 1:02d}", "village",
                              f"{VILLAGE_NAMES[(first_village + i) % len(VILLAGE_NAMES)]}村维权站")
                     for i in range(villages)]
    school_sites = [SiteSpec(f"{prefix}.s{i + 1:02d}", "school", f"{township_name or ''}第{i + 1}中心小学")
                    for i in range(schools)]
    sites = [office, *village_sites, *school_sites]
    records: list[Planned] = []

    def plan(site: SiteSpec, day: int, draft: dict[str, Any], **kw: Any) -> None:
        records.append(Planned(site.site_id, day, draft, **kw))

    # --- registration survey (排摸) in the first weeks ----------------------------------
    kids: list[dict[str, Any]] = []
    for n in range(children):
        village = village_sites[n % villages]
        school = school_sites[n % schools]
        birth = dt.date(rng.randint(2013, 2019), rng.randint(1, 12), rng.randint(1, 28))
        grade = max(1, min(6, start.year - birth.year - 6 + (1 if start.month >= 9 else 0)))
        guardianship = rng.choices(["grandparents", "one_parent", "relatives", "teacher_or_institution", "none"],
                                   weights=[62, 20, 12, 4, 2])[0]
        reason = rng.choices(["both_parents_away", "one_parent_away", "single_parent", "orphan", "poverty",
                              "disability", "other_difficulty"], weights=[55, 22, 7, 2, 8, 3, 3])[0]
        cid = f"c-{rng.getrandbits(128):032x}"
        kid: dict[str, Any] = {"child_id": cid, "village": village, "school": school, "grade": grade,
                               "guardianship": guardianship, "reason": reason, "birth": birth,
                               "behind": rng.random() < 0.15}
        kids.append(kid)
        day = rng.randint(0, min(20, days - 1))
        plan(village, day, {
            "type": "ChildRegistered", "occurred_at": _at(start, day, rng), "child_id": cid,
            "name": fake_name(rng), "sex": rng.choice(["male", "female"]), "birth_date": birth.isoformat(),
            "resident_id": fake_resident_id(rng, birth), "household_village": village.name[:-3] + "村",
            "village_site": village.site_id, "school_site": school.site_id, "school": school.name,
            "grade": grade, "class_name": f"{rng.randint(1, 3)}班", "reasons": [reason],
            "guardian": {"type": guardianship, "name": fake_name(rng), "relation": "祖母", "phone": fake_phone(rng)},
            "parents": [{"relation": "父亲", "work_place": rng.choice(["广东东莞", "浙江义乌", "福建晋江"]),
                         "phone": fake_phone(rng), "calls_per_month": rng.randint(1, 8)}],
        }, note="registration")
        kid["registered_day"] = day
        truth.children_archived += 1
        _bump(truth.children_by_reason, reason)
        _bump(truth.children_by_grade_band, grade_band(grade))
        _bump(truth.children_by_site, village.site_id)

    # --- the same child registered again at a school (a duplicate to merge) ---------------
    if kids:
        dup = kids[0]
        day = min(days - 1, dup["registered_day"] + 3)
        original = next(p for p in records if p.draft.get("child_id") == dup["child_id"])
        again = dict(original.draft, child_id=f"c-{rng.getrandbits(128):032x}", occurred_at=_at(start, day, rng))
        plan(dup["school"], day, again, note="duplicate registration")
        truth.children_archived += 1
        truth.duplicate_pairs += 1
        _bump(truth.children_by_guardianship, dup["guardianship"])  # the duplicate keeps the registered type
        _bump(truth.children_by_reason, dup["reason"])
        _bump(truth.children_by_grade_band, grade_band(dup["grade"]))
        _bump(truth.children_by_site, dup["village"].site_id)

    # --- a mistyped resident ID, refused at the station ----------------------------------
    bad_birth = dt.date(2016, 5, 17)
    body = f"9999{rng.randint(10, 99)}{bad_birth:%Y%m%d}{rng.randint(0, 999):03d}"
    wrong = "0" if resident_id_check_char(body) != "0" else "1"
    plan(village_sites[0], min(days - 1, 5), {
        "type": "ChildRegistered", "occurred_at": _at(start, min(days - 1, 5), rng),
        "child_id": f"c-{rng.getrandbits(128):032x}", "name": fake_name(rng), "sex": "female",
        "birth_date": bad_birth.isoformat(), "resident_id": body + wrong, "household_village": "青石村",
        "reasons": ["both_parents_away"], "guardian": {"type": "grandparents"},
    }, refused=True, note="mistyped resident ID")
    truth.refused_at_station += 1

    # --- the daily care work ---------------------------------------------------------------
    for kid in kids:
        first = kid["registered_day"] + 1
        for month_start in range(0, days, 30):
            lo = max(first, month_start)
            hi = min(days - 1, month_start + 29)
            if lo > hi:
                continue
            behind = kid["behind"] and rng.random() < 0.6
            if not behind:
                d = rng.randint(lo, hi)
                plan(kid["village"], d, {"type": "HomeVisitMade", "occurred_at": _at(start, d, rng),
                                         "child_id": kid["child_id"], "visitor": fake_name(rng),
                                         "findings": "祖辈照看，学习尚可"})
                truth.home_visits += 1
                d = rng.randint(lo, hi)
                plan(kid["village"], d, {"type": "ParentCallMade", "occurred_at": _at(start, d, rng),
                                         "child_id": kid["child_id"], "parent": "母亲", "channel": "video",
                                         "minutes": rng.randint(5, 30)})
                truth.parent_calls += 1
            if rng.random() < 0.9:
                d = rng.randint(lo, hi)
                plan(kid["school"], d, {"type": "TalkHeld", "occurred_at": _at(start, d, rng),
                                        "child_id": kid["child_id"], "teacher": fake_name(rng),
                                        "record_card": "谈心：想念父母，鼓励按时写信"})
                truth.talks += 1
        for semester_start in range(0, days, 120):
            d = min(days - 1, max(first, semester_start + rng.randint(10, 100)))
            if d >= first and rng.random() < 0.85:
                plan(kid["school"], d, {"type": "LetterWritten", "occurred_at": _at(start, d, rng),
                                        "child_id": kid["child_id"], "summary": "给在外打工的父母写信"})
                truth.letters += 1

    # pairings: most children get a teacher or classmate; some a proxy parent (代理妈妈)
    for kid in kids:
        if rng.random() < 0.7 and kid["registered_day"] + 5 < days:
            d = kid["registered_day"] + rng.randint(1, 5)
            kind = rng.choices(["teacher", "classmate", "proxy_parent", "loving_mother", "volunteer"],
                               weights=[45, 25, 15, 10, 5])[0]
            site = kid["school"] if kind in ("teacher", "classmate") else kid["village"]
            plan(site, d, {"type": "PairingStarted", "occurred_at": _at(start, d, rng),
                           "pairing_id": f"p-{rng.getrandbits(128):032x}", "child_id": kid["child_id"],
                           "partner_kind": kind, "partner_name": fake_name(rng)})
            truth.pairings_started += 1
            kid["partner"] = kind
            if kind in ("proxy_parent", "loving_mother"):
                truth.proxy_parents_matched += 1
                truth.proxy_parent_children += 1  # one pairing per child here

    # aid for poor children, from the township office
    for kid in kids:
        if kid["reason"] == "poverty" and kid["registered_day"] + 10 < days:
            d = kid["registered_day"] + 10
            amount = rng.choice([50_000, 100_000, 150_000])
            plan(office, d, {"type": "AidGiven", "occurred_at": _at(start, d, rng), "child_id": kid["child_id"],
                             "amount_fen": amount, "source": "township", "kind": "money"})
            truth.aid_children += 1
            truth.aid_amount_fen += amount

    # holiday condolence visits covering many children (Mid-Autumn ~day 30, Spring Festival ~day 150)
    covered_by_any: set[str] = set()
    for holiday_day, occasion in ((30, "mid_autumn"), (150, "spring_festival")):
        if holiday_day < days:
            covered = [k["child_id"] for k in kids if k["registered_day"] < holiday_day and rng.random() < 0.5]
            for i in range(0, len(covered), 200):
                part = covered[i:i + 200]
                plan(office, holiday_day, {"type": "CondolenceVisitMade", "occurred_at": _at(start, holiday_day, rng),
                                           "child_ids": part, "occasion": occasion, "gifts": "书包、文具、牛奶",
                                           "money_fen_each": 20_000, "source": "township"})
                truth.condolence_visits += 1
                covered_by_any.update(part)
    # Distinct children, as projections/FIGURES.md defines the figure: a child visited at both
    # holidays counts once. Every made-up child has a guardian of its own (name and phone), so
    # each is a household of its own (projections.rollups.household_of).
    truth.condolence_children_covered = len(covered_by_any)
    truth.condolence_households = len(covered_by_any)

    # the children's home (留守儿童之家) at each village, every other week
    for village in village_sites:
        mine = [k for k in kids if k["village"] is village]
        for d in range(21, days, 14):
            present = [k["child_id"] for k in mine if k["registered_day"] < d and rng.random() < 0.4]
            if not present:
                continue
            plan(village, d, {"type": "ActivityHeld", "occurred_at": _at(start, d, rng),
                              "activity_id": f"a-{rng.getrandbits(128):032x}", "kind": "childrens_home",
                              "title": "周末读书会", "child_ids": present, "participants_total": len(present)})
            truth.activities += 1
            truth.activity_participants += len(present)

    # a few safety incidents and rights cases
    for kid in rng.sample(kids, k=min(2, len(kids))):
        d = min(days - 1, kid["registered_day"] + 30)
        plan(kid["school"], d, {"type": "SafetyIncidentReported", "occurred_at": _at(start, d, rng),
                                "child_id": kid["child_id"], "kind": "injury", "severity": "minor",
                                "description": "课间摔伤，已处理"})
        truth.safety_incidents += 1
    for kid in rng.sample(kids, k=min(3, len(kids))):
        d = min(days - 2, kid["registered_day"] + 20)
        case = f"rc-{rng.getrandbits(128):032x}"
        plan(kid["village"], d, {"type": "RightsCaseOpened", "occurred_at": _at(start, d, rng), "case_id": case,
                                 "child_id": kid["child_id"], "kind": "guardianship", "summary": "监护人长期外出"})
        truth.rights_cases_opened += 1
        plan(kid["village"], d + 1, {"type": "RightsCaseClosed", "occurred_at": _at(start, d + 1, rng),
                                     "case_id": case, "child_id": kid["child_id"], "outcome": "resolved"})
        truth.rights_cases_closed += 1

    # a transfer between schools
    if schools >= 2 and len(kids) > 1:
        kid = kids[1]
        d = min(days - 1, kid["registered_day"] + 40)
        target = school_sites[1] if kid["school"] is school_sites[0] else school_sites[0]
        plan(kid["school"], d, {"type": "ChildTransferred", "occurred_at": _at(start, d, rng),
                                "child_id": kid["child_id"], "to_school_site": target.site_id, "school": target.name,
                                "reason": "随祖父母搬迁"})
        truth.transfers += 1

    # two sites change the same guardian while one of them is offline: a conflict
    offline_site = village_sites[-1]
    off_first, off_last = min(days - 1, 40), min(days - 1, 40 + 21)
    conflict_kid = next((k for k in kids if k["village"] is offline_site and k["registered_day"] < off_first), None)
    if conflict_kid is not None and off_first < off_last:
        d = off_first + 2
        plan(offline_site, d, {"type": "GuardianChanged", "occurred_at": _at(start, d, rng),
                               "child_id": conflict_kid["child_id"],
                               "guardian": {"type": "relatives", "name": fake_name(rng), "relation": "姑姑",
                                            "phone": fake_phone(rng)}, "reason": "祖母住院"})
        plan(conflict_kid["school"], d + 1, {"type": "GuardianChanged", "occurred_at": _at(start, d + 1, rng),
                                             "child_id": conflict_kid["child_id"],
                                             "guardian": {"type": "one_parent", "name": fake_name(rng),
                                                          "relation": "母亲", "phone": fake_phone(rng)},
                                             "reason": "母亲返乡"})
        truth.conflicts += 1
        # Until a person settles it, the archive shows the update recorded last (the school's,
        # a day later): the highest hybrid-logical-clock stamp wins.
        conflict_kid["guardianship"] = "one_parent"
    # a pupil who leaves school (辍学) near the end: the village station closes the archive, and
    # the summary's "no child drops out because of poverty" counts it by the child's reasons. Last,
    # so that every record above stays what it was for a seed.
    leaver = next((k for k in kids[2:] if k is not conflict_kid and k.get("partner") not in
                   ("proxy_parent", "loving_mother") and k["registered_day"] + 30 < days - 1), None)
    if leaver is not None:
        d = days - 1
        plan(leaver["village"], d, {"type": "ArchiveClosed", "occurred_at": _at(start, d, rng),
                                    "child_id": leaver["child_id"], "reason": "dropped_out",
                                    "note": "随父母外出后未再返校"}, note="drop-out")
        truth.dropped_out += 1
        truth.dropped_out_poverty += leaver["reason"] == "poverty"
        truth.children_archived -= 1
        for counts, key in ((truth.children_by_reason, leaver["reason"]),
                            (truth.children_by_grade_band, grade_band(leaver["grade"])),
                            (truth.children_by_site, leaver["village"].site_id)):
            counts[key] -= 1
        leaver["closed"] = True
    for kid in kids:
        if not kid.get("closed"):
            _bump(truth.children_by_guardianship, kid["guardianship"])
    for i in range(communities):
        _community(i, prefix, start, days, rng, truth, sites, school_sites, plan)
    records.sort(key=lambda p: (p.day, p.site_id))
    return Scenario(township_id=prefix, sites=sites, start=start, days=days, records=records,
                    offline={offline_site.site_id: [off_first, off_last]}, truth=truth)


def _community(i: int, prefix: str, start: dt.date, days: int, rng: random.Random, truth: Truth,
               sites: list[SiteSpec], school_sites: list[SiteSpec], plan: Any) -> None:
    """A community (社区) in the township's town: it registers a few children who live in it
    (schooled at the township's schools), visits them, and makes a holiday condolence visit to
    them with money and gifts."""
    community = SiteSpec(f"{prefix}.c{i + 1:02d}", "community", f"{['高山街', '府坪', '锣鼓塔'][i % 3]}社区居委会")
    sites.append(community)
    mine = []
    for n in range(3):
        school = school_sites[n % len(school_sites)] if school_sites else None
        birth = dt.date(rng.randint(2014, 2018), rng.randint(1, 12), rng.randint(1, 28))
        grade = max(1, min(6, start.year - birth.year - 6 + (1 if start.month >= 9 else 0)))
        cid = f"c-{rng.getrandbits(128):032x}"
        day = min(days - 1, rng.randint(0, 10))
        plan(community, day, {
            "type": "ChildRegistered", "occurred_at": _at(start, day, rng), "child_id": cid, "name": fake_name(rng),
            "sex": rng.choice(["male", "female"]), "birth_date": birth.isoformat(),
            "resident_id": fake_resident_id(rng, birth), "household_village": community.name[:-3],
            "village_site": community.site_id,  # where the child lives: the community takes a village's part
            **({"school_site": school.site_id, "school": school.name} if school else {}), "grade": grade,
            "reasons": ["both_parents_away"],
            "guardian": {"type": "grandparents", "name": fake_name(rng), "relation": "外婆", "phone": fake_phone(rng)},
        }, note="registration at a community")
        mine.append((cid, day))
        truth.children_archived += 1
        _bump(truth.children_by_guardianship, "grandparents")
        _bump(truth.children_by_reason, "both_parents_away")
        _bump(truth.children_by_grade_band, grade_band(grade))
        _bump(truth.children_by_site, community.site_id)
        if day + 1 < days:
            d = rng.randint(day + 1, days - 1)
            plan(community, d, {"type": "HomeVisitMade", "occurred_at": _at(start, d, rng), "child_id": cid,
                                "visitor": fake_name(rng), "findings": "外婆照看，生活规律"})
            truth.home_visits += 1
    d = min(days - 1, max(day for _, day in mine) + 1)
    plan(community, d, {"type": "CondolenceVisitMade", "occurred_at": _at(start, d, rng),
                        "child_ids": [cid for cid, _ in mine], "occasion": "other", "gifts": "书包、牛奶",
                        "money_fen_each": 10_000, "source": "individual"}, note="community condolence visit")
    truth.condolence_visits += 1
    truth.condolence_children_covered += len(mine)  # none of them is covered by the township's visits
    truth.condolence_households += len(mine)


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def seal_all(scenario: Scenario, *, now: dt.datetime | None = None) -> dict[str, list[Any]]:
    """Every accepted record of the scenario sealed into its site's chained log, without agents:
    for benchmarks and for tests that feed the center directly. An update names the event that
    last set its field at its own site, or the child's registration, as its base (`based_on`),
    so the two guardian changes made without knowledge of each other are a conflict."""
    from events.envelope import parse_drafts
    from events.samples import SampleSite

    now = now or dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    writers = {s.site_id: SampleSite(s.site_id, actor=f"staff-{s.site_id.rsplit('.', 1)[1]}") for s in scenario.sites}
    registration: dict[str, str] = {}
    out: dict[str, list[Any]] = {s.site_id: [] for s in scenario.sites}
    for p in scenario.records:
        if p.refused:
            continue
        [draft] = parse_drafts(msgspec.json.encode(p.draft), now=now)
        care = draft.care
        based_on = None
        fields = care.fields_set()
        child = getattr(care, "child_id", None)
        if fields and child in registration and care.__class__.__name__ != "ChildRegistered":
            based_on = {f: registration[child] for f in fields}
        d = writers[p.site_id].write(care, draft.occurred_at, based_on)
        if care.__class__.__name__ == "ChildRegistered" and child not in registration:
            registration[str(child)] = d.event.event_id
        out[p.site_id].append(d)
    return out
