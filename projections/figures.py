"""The catalogue of figures: every figure of a rollup with its one label (Chinese and English) and
unit, and the one way to list a rollup's figures labelled.

The dashboard, the exports (XLSX, CSV, JSON), the API (`GET /rollups/figures`) and the drafted
year-end summary all name a figure from here, so the same figure is never called two things (the
dashboard said 隔代监护（祖辈） where the export said 隔代监护). Values of enumerations inside a
figure (a guardianship type, a reason...) are labelled by `events.labels`.

A figure's key is its place in the rollup: `children_archived`, `by_guardianship.grandparents`,
`rules.teacher_talk.met` (a follow-up rule by its id: the townships' rules in force,
projections/rules.py). Money is kept in fen and shown in yuan under the keys `aid_amount`,
`aid_by_source.<source>` and `condolence_amount`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import NamedTuple

import msgspec

from events.labels import enum_label
from events.rules import DEFAULT_RULES
from projections.rollups import Rollup, Share


class Label(NamedTuple):
    zh: str
    en: str
    unit_zh: str = ""
    unit_en: str = ""

    def text(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh

    def unit(self, lang: str) -> str:
        return self.unit_en if lang == "en" else self.unit_zh


_KIDS = ("人", "children")
_TIMES = ("次", "times")
_PAIRS = ("对", "pairings")
_YUAN = ("元", "yuan")
_VISITS = ("人次", "attendances")
_CASES = ("件", "cases")
_INCIDENTS = ("起", "incidents")

# Scalar figures, in the order of the year-end summary.
FIGURES: dict[str, Label] = {
    "children_archived": Label("建档儿童数（期末在册）", "children archived (on the last day)", *_KIDS),
    "children_registered": Label("本期新建档儿童数", "children newly registered", *_KIDS),
    "children_closed": Label("本期销档儿童数", "archives closed", *_KIDS),
    "dropped_out": Label("本期因辍学销档的儿童", "children who dropped out of school", *_KIDS),
    "dropped_out_poverty": Label("因家庭贫困辍学的儿童", "children who dropped out, registered for poverty",
                                 *_KIDS),
    "individual_plan": Label("需个别教育方案的儿童", "children needing an individual plan", *_KIDS),
    "children_paired": Label("已结对帮扶的儿童", "children paired", *_KIDS),
    "proxy_parent_children": Label("有代理家长（代理妈妈、代管家长、爱心妈妈）的儿童",
                                   "children with a proxy parent or loving mother", *_KIDS),
    "proxy_parent_children_new": Label("本期新找到代理家长（含爱心妈妈）的儿童",
                                       "children newly matched with a proxy parent", *_KIDS),
    "proxy_parents_matched": Label("代理家长（含爱心妈妈）结对数（期末）",
                                   "proxy-parent pairings active (on the last day)", *_PAIRS),
    "proxy_parents_new": Label("本期新建代理家长（含爱心妈妈）结对数", "proxy-parent pairings started", *_PAIRS),
    "pairings_started": Label("本期新结对", "pairings started", *_PAIRS),
    "pairings_ended": Label("本期结束结对", "pairings ended", *_PAIRS),
    "home_visits": Label("家访次数", "home visits", *_TIMES),
    "parent_calls": Label("与在外务工父母通话次数", "calls with migrant parents", *_TIMES),
    "letters": Label("书信往来次数", "letters", *_TIMES),
    "talks": Label("班主任谈心次数", "talks with the class teacher", *_TIMES),
    "overdue_children": Label("有规定动作逾期未完成的儿童", "children overdue for a rule", *_KIDS),
    "aid_children": Label("受资助儿童数", "children aided", *_KIDS),
    "aid_events": Label("资助次数", "aid given", *_TIMES),
    "aid_amount": Label("资助金额", "aid amount", *_YUAN),
    "condolence_visits": Label("节日慰问次数", "condolence visits", *_TIMES),
    "condolence_households": Label("慰问户数", "households visited", "户", "households"),
    "condolence_children": Label("慰问儿童数", "children visited", *_KIDS),
    "condolence_amount": Label("慰问金额", "condolence money", *_YUAN),
    "activities": Label("开展活动次数", "activities held", *_TIMES),
    "activity_participants": Label("活动参加人次", "activity participants", *_VISITS),
    "activity_children": Label("参加活动的在册儿童", "registered children taking part", *_KIDS),
    "tutoring_sessions": Label("学业辅导次数", "tutoring sessions", *_TIMES),
    "counselling_sessions": Label("心理辅导次数", "counselling sessions", *_TIMES),
    "guardian_trainings": Label("监护人培训次数", "guardian trainings", *_TIMES),
    "guardians_trained": Label("受培训监护人", "guardians trained", *_VISITS),
    "meetings": Label("座谈会次数", "meetings held", *_TIMES),
    "meeting_attendees": Label("座谈会参加人次", "meeting attendees", *_VISITS),
    "safety_incidents": Label("安全事故数", "safety incidents", *_INCIDENTS),
    "rights_cases_opened": Label("受理维权案件", "rights cases opened", *_CASES),
    "rights_cases_closed": Label("办结维权案件", "rights cases closed", *_CASES),
    "rights_cases_open": Label("在办维权案件（期末）", "rights cases open (on the last day)", *_CASES),
    "conflicts_open": Label("待处理的档案冲突", "open archive conflicts", "处", "conflicts"),
    "stale_sites": Label("超过 3 天未同步的站点", "sites not synced for over 3 days", "个", "sites"),
}

# Figures with one member per value: (the family's title, the enumeration that labels a member).
FAMILIES: dict[str, tuple[Label, str | None]] = {
    "by_site": (Label("按站点统计在册儿童", "children archived by site", *_KIDS), None),
    "by_guardianship": (Label("监护类型", "guardianship", *_KIDS), "guardianship"),
    "by_grade_band": (Label("年级段", "grade band", *_KIDS), "grade_band"),
    "by_reason": (Label("建档原因", "reason registered", *_KIDS), "reason"),
    "closed_by_reason": (Label("本期销档原因", "archives closed by why", *_KIDS), "closing_reason"),
    "dropped_out_by_reason": (Label("辍学儿童的建档原因", "children who dropped out, by reason registered",
                                    *_KIDS), "reason"),
    "paired_by": (Label("结对帮扶对象", "paired with", *_KIDS), "partner"),
    "aid_by_source": (Label("资助来源", "aid by source", *_YUAN), "aid_source"),
    "activities_by_kind": (Label("活动类型", "activities by kind", *_TIMES), "activity"),
    "incidents_by_severity": (Label("安全事故程度", "safety incidents by severity", *_INCIDENTS), "severity"),
}

# The default rules' names (events.rules.DEFAULT_RULES); a rule a township made up is named by
# its figure (`RuleFigure.zh`, `.en`), or by its id where only the key is at hand.
RULES: dict[str, Label] = {r.rule_id: Label(r.zh, r.en) for r in DEFAULT_RULES}
RULE_PARTS: dict[str, Label] = {
    "done": Label("完成次数", "done", *_TIMES),
    "due": Label("应做人次", "due", "人次", "periods"),
    "met": Label("达标人次", "met", "人次", "periods"),
    "pct_met": Label("达标率", "% met", "%", "%"),
    "overdue": Label("逾期数", "overdue", "人", "overdue"),
}
# Per site of the scope, when the center last heard from it: `freshness.<site>.<part>`.
FRESHNESS: dict[str, Label] = {
    "last_committed_at": Label("最近同步时间", "last synced"),
    "newest_occurred_at": Label("最新工作发生时间", "newest work done"),
}
# Figures of the sites registry, not of the rollup (projections.names counts them): the sites of
# the scope registered and active, in all (`sites`) and by kind (`sites_by_kind.<kind>`).
SITES = Label("登记在用的站点", "sites registered and active", "个", "sites")
NEVER = Label("从未同步", "never")
MONEY = frozenset({"aid_amount", "condolence_amount"})
STALE_AFTER = dt.timedelta(days=3)


class LabelledFigure(msgspec.Struct, frozen=True, omit_defaults=True):
    """One figure: its key, its label in the asked language, the value and, for shares, the percentage."""

    key: str
    label: str
    value: float | int | str
    unit: str = ""
    pct: float | None = None


def yuan(fen: int) -> float:
    return round(fen / 100, 2)


def label_of(key: str, lang: str = "zh", sites: Mapping[str, str] | None = None) -> str:
    """The label of any figure key (a scalar, a family's member, a rule's part) in `lang`; a share's
    percentage is its key and `.pct`. A figure per site (`by_site.<site>`, `freshness.<site>.<part>`)
    names its site by `sites` (site id -> registered name, projections.names), its id only when the
    site is not in it."""
    sites = sites or {}
    if key.endswith(".pct"):
        return label_of(key.removesuffix(".pct"), lang, sites) + (" (%)" if lang == "en" else "（占比）")
    if key in FIGURES:
        return FIGURES[key].text(lang)
    if key == "sites":
        return SITES.text(lang)
    head, _, rest = key.partition(".")
    if head == "sites_by_kind":
        sep = ": " if lang == "en" else "："
        return f"{SITES.text(lang)}{sep}{enum_label('site_kind', rest, lang)}"
    if head == "rules":
        rule, _, part = rest.partition(".")
        sep = ": " if lang == "en" else "："
        return f"{RULES[rule].text(lang) if rule in RULES else rule}{sep}{RULE_PARTS[part].text(lang)}"
    if head == "freshness":
        site, _, part = rest.rpartition(".")
        site = sites.get(site, site)
        return f"data freshness: {site} {FRESHNESS[part].en}" if lang == "en" else \
            f"数据新鲜度：{site} {FRESHNESS[part].zh}"
    if head in FAMILIES:
        title, kind = FAMILIES[head]
        member = enum_label(kind, rest, lang) if kind else sites.get(rest, rest) if head == "by_site" else rest
        return f"{title.text(lang)}: {member}" if lang == "en" else f"{title.text(lang)}：{member}"
    raise KeyError(f"no figure {key!r} in the catalogue (projections/figures.py)")


def unit_of(key: str, lang: str = "zh") -> str:
    if key.endswith(".pct"):
        return "%"
    if key in FIGURES:
        return FIGURES[key].unit(lang)
    if key == "sites" or key.startswith("sites_by_kind."):
        return SITES.unit(lang)
    head, _, rest = key.partition(".")
    if head == "rules":
        return RULE_PARTS[rest.partition(".")[2]].unit(lang)
    if head == "freshness":
        return ""
    return FAMILIES[head][0].unit(lang)


def stale_sites(r: Rollup, now: dt.datetime) -> int:
    """Sites of the scope the center has not heard from for over three days at `now` (or never)."""
    return sum(1 for f in r.freshness if f.last_committed_at is None or now - f.last_committed_at > STALE_AFTER)


def value_of(r: Rollup, key: str, now: dt.datetime | None = None) -> int | float:
    """The value of a figure key in a rollup (shares: the count; `<key>.pct`: the percentage)."""
    if key == "stale_sites":
        if now is None:
            raise KeyError("stale_sites needs the time it is judged at")
        return stale_sites(r, now)
    if key in MONEY:
        return yuan(getattr(r, key + "_fen"))
    head, _, rest = key.partition(".")
    if head == "aid_by_source":
        return yuan(r.aid_by_source.get(rest, 0))
    pct = rest.endswith(".pct") or rest == "pct"
    if pct:
        rest = rest.removesuffix("pct").removesuffix(".")
    value: object = getattr(r, head)
    if head in FAMILIES:  # a member's name may hold dots (a site id)
        assert isinstance(value, dict)
        value = value.get(rest, 0)
    else:
        for part in rest.split(".") if rest else ():
            value = value.get(part, 0) if isinstance(value, dict) else getattr(value, part, 0)
    if isinstance(value, Share):
        return value.pct if pct else value.count
    assert isinstance(value, int | float), key
    return value


def labelled(r: Rollup, lang: str = "zh", now: dt.datetime | None = None,
             sites: Mapping[str, str] | None = None) -> list[LabelledFigure]:
    """Every figure of a rollup, in the order of the year-end summary, labelled in `lang`; with
    `now`, the sites not heard from for three days too; with `sites` (id -> name), the figures per
    site name their sites."""
    out: list[LabelledFigure] = []

    def add(key: str, value: float | int | str, pct: float | None = None) -> None:
        out.append(LabelledFigure(key=key, label=label_of(key, lang, sites), value=value, unit=unit_of(key, lang),
                                  pct=pct))

    def scalar(key: str) -> None:
        v: object = getattr(r, key) if key not in MONEY else None
        if isinstance(v, Share):
            add(key, v.count, v.pct)
        else:
            add(key, value_of(r, key))

    def family(name: str) -> None:
        items: dict[str, object] = getattr(r, name)
        for k, v in items.items():
            if isinstance(v, Share):
                add(f"{name}.{k}", v.count, v.pct)
            else:
                add(f"{name}.{k}", value_of(r, f"{name}.{k}"))

    for key in ("children_archived", "children_registered", "children_closed"):
        scalar(key)
    family("closed_by_reason")
    scalar("dropped_out")
    family("dropped_out_by_reason")
    scalar("dropped_out_poverty")
    for name in ("by_site", "by_guardianship", "by_grade_band", "by_reason"):
        family(name)
    for key in ("individual_plan", "children_paired"):
        scalar(key)
    family("paired_by")
    for key in ("proxy_parent_children", "proxy_parent_children_new", "proxy_parents_matched", "proxy_parents_new",
                "pairings_started", "pairings_ended"):
        scalar(key)
    for key in ("home_visits", "parent_calls", "letters", "talks"):
        scalar(key)
    for rule, fig in r.rules.items():
        name = (fig.en if lang == "en" else fig.zh) or (RULES[rule].text(lang) if rule in RULES else rule)
        for part in RULE_PARTS:
            sep = ": " if lang == "en" else "："
            out.append(LabelledFigure(key=f"rules.{rule}.{part}", label=f"{name}{sep}{RULE_PARTS[part].text(lang)}",
                                      value=getattr(fig, part), unit=unit_of(f"rules.{rule}.{part}", lang)))
    scalar("overdue_children")
    for key in ("aid_children", "aid_events", "aid_amount"):
        scalar(key)
    family("aid_by_source")
    for key in ("condolence_visits", "condolence_households", "condolence_children", "condolence_amount",
                "activities"):
        scalar(key)
    family("activities_by_kind")
    for key in ("activity_participants", "activity_children", "tutoring_sessions", "counselling_sessions",
                "guardian_trainings", "guardians_trained", "meetings", "meeting_attendees", "safety_incidents"):
        scalar(key)
    family("incidents_by_severity")
    for key in ("rights_cases_opened", "rights_cases_closed", "rights_cases_open", "conflicts_open"):
        scalar(key)
    if now is not None:
        add("stale_sites", stale_sites(r, now))
    for f in r.freshness:
        last = f.last_committed_at.isoformat(timespec="seconds") if f.last_committed_at else NEVER.text(lang)
        newest = f.newest_occurred_at.isoformat(timespec="seconds") if f.newest_occurred_at else "—"
        add(f"freshness.{f.site_id}.last_committed_at", last)
        add(f"freshness.{f.site_id}.newest_occurred_at", newest)
    return out
