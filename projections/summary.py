"""The year-end summary (年终工作总结), drafted from the figures.

Township and school staff write this document by hand every year, and the ones they write share a
shape: the basic situation (基本情况: how many children are archived, with whom they live, why they
are counted, in which grades), the main work done (主要做法: each kind of work with its counts),
what it achieved (取得的成效: the rules met, no incident, no child out of school), the problems
(存在的问题) and the plans for next year (下一步打算). This module drafts the first four from a
rollup, in that order, and leaves the fifth for people to write: plans are not in the records.

Every number in a draft is a `Num`: the figure's key (projections/figures.py), its value and the
text shown. The dashboard shows the key on hover and in a footnote, the Word document in its
notes, so an auditor can trace each number of a submitted summary to the figure it came from.
Sentences are written here, not copied from anyone's summary; the draft is for staff to edit.

Pure: the API (service/api/summary.py) feeds it the rollup and names, and renders nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

import msgspec

from events.labels import enum_label
from projections.figures import MONEY, label_of, value_of
from projections.rollups import Rollup
from projections.rules import RuleFigures

SECTIONS = ("basics", "work", "results", "problems", "plans")


class Num(msgspec.Struct, frozen=True, tag=True):
    """A number taken from a figure: `key` names the figure, `note` its footnote's number."""

    key: str
    value: float | int
    text: str
    note: int


class Paragraph(msgspec.Struct, frozen=True):
    parts: list[str | Num]

    @property
    def plain(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)


class Section(msgspec.Struct, frozen=True):
    key: str  # one of SECTIONS
    title: str
    paragraphs: list[Paragraph]
    to_write: bool = False  # left for people to write (下一步打算)


class Note(msgspec.Struct, frozen=True):
    """A footnote: which figure a number came from, for an auditor."""

    note: int
    key: str
    label: str
    value: float | int


class Draft(msgspec.Struct, frozen=True):
    title: str
    scope: str
    period: str
    start: dt.date
    end: dt.date  # exclusive
    as_of: dt.date
    lang: str
    preface: str
    sections: list[Section]
    notes: list[Note]
    scope_name: str = ""  # how the title names the scope (its registered name, projections.names)


def period_name(label: str, lang: str = "zh") -> str:
    """'2025-SY' -> '2025—2026学年', '2026-S1' -> '2026年春季学期', '2026' -> '2026年', a month, a range."""
    if ".." in label:
        a, b = label.split("..")
        return f"{a} to {b}" if lang == "en" else f"{a}至{b}"
    if len(label) == 4:
        return label if lang == "en" else f"{label}年"
    year, rest = label.split("-")
    if rest == "SY":
        return f"school year {year}-{int(year) + 1}" if lang == "en" else f"{year}—{int(year) + 1}学年"
    if rest == "S1":
        return f"spring semester {year}" if lang == "en" else f"{year}年春季学期"
    if rest == "S2":
        return f"autumn semester {year}" if lang == "en" else f"{year}年秋季学期"
    return f"{year}-{rest}" if lang == "en" else f"{year}年{int(rest)}月"


def fmt(key: str, value: float | int) -> str:
    """A figure's value as the summary prints it: money with two decimals, a share's percentage with one."""
    if key in MONEY or key.startswith("aid_by_source."):
        return f"{value:.2f}"
    if key.endswith("pct") or key.endswith("pct_met"):
        return f"{value:.1f}"
    return str(int(value)) if float(value).is_integer() else str(value)


RULE_PARTS = {"applies_to": ("适用", "applies to"), "due": ("应做", "due"), "met": ("达标", "met"),
              "pct_met": ("达标率", "% met"), "overdue": ("逾期", "overdue")}


def rule_key(f: RuleFigures, part: str) -> str:
    """The key of a township rule's figure (GET /rules): township_rules.<township>.<rule id>.<part>."""
    return f"township_rules.{f.township}.{f.rule_id}.{part}"


def rule_values(rules: Sequence[RuleFigures], lang: str) -> dict[str, tuple[float | int, str]]:
    """Each figure of the townships' rules by its key: (value, label); `overdue` is how many are overdue."""
    out: dict[str, tuple[float | int, str]] = {}
    for f in rules:
        name = f.en if lang == "en" else f.zh
        for part, (zh, en) in RULE_PARTS.items():
            value = len(f.overdue) if part == "overdue" else getattr(f, part)
            out[rule_key(f, part)] = (value, f"{name}: {en}" if lang == "en" else f"{name}：{zh}")
    return out


def site_values(kinds: Mapping[str, str], lang: str) -> dict[str, tuple[float | int, str]]:
    """The scope's active sites, in all (`sites`) and by kind (`sites_by_kind.<kind>`): (value, label)."""
    out: dict[str, tuple[float | int, str]] = {"sites": (len(kinds), label_of("sites", lang))}
    for kind in sorted(set(kinds.values())):
        key = f"sites_by_kind.{kind}"
        out[key] = (sum(1 for k in kinds.values() if k == kind), label_of(key, lang))
    return out


class _Writer:
    """Builds paragraphs whose numbers are figures, numbering a footnote for each."""

    def __init__(self, r: Rollup, lang: str, now: dt.datetime,
                 extra: dict[str, tuple[float | int, str]] | None = None, sites: Mapping[str, str] | None = None,
                 townships: Mapping[str, str] | None = None) -> None:
        self.r, self.lang, self.now = r, lang, now
        self.extra = extra or {}
        self.sites = sites or {}
        self.townships = townships or {}
        self.notes: list[Note] = []

    def t(self, zh: str, en: str) -> str:
        return en if self.lang == "en" else zh

    def n(self, key: str) -> Num:
        if key in self.extra:
            value, label = self.extra[key]
        else:
            value, label = value_of(self.r, key, self.now), label_of(key, self.lang, self.sites)
        note = len(self.notes) + 1
        self.notes.append(Note(note=note, key=key, label=label, value=value))
        return Num(key=key, value=value, text=fmt(key, value), note=note)

    def v(self, key: str) -> float | int:
        """A figure's value, to choose the words (not printed)."""
        return value_of(self.r, key, self.now)

    def listing(self, family: str, kind: str, each: Callable[[str, str], list[str | Num]]) -> list[str | Num]:
        """'A n人、B m人' over a family's members (largest first), joined in the language's way."""
        items = sorted(getattr(self.r, family).items(), key=lambda kv: (-_count(kv[1]), kv[0]))
        out: list[str | Num] = []
        for i, (member, _) in enumerate(items):
            if i:
                out.append(self.t("，", ", "))
            out.extend(each(f"{family}.{member}", enum_label(kind, member, self.lang)))
        return out


def _count(v: object) -> float:
    return float(v.count) if hasattr(v, "count") else float(v)  # type: ignore[arg-type]


def draft(r: Rollup, *, scope_name: str, now: dt.datetime, lang: str = "zh",
          rules: Sequence[RuleFigures] | None = None, sites: Mapping[str, str] | None = None,
          townships: Mapping[str, str] | None = None, kinds: Mapping[str, str] | None = None) -> Draft:
    """The year-end summary of `r` drafted in `lang` ('zh' or 'en'), judged at `now` (stale sites).
    With `rules` (the scope's townships' own rules and their figures, projections.rule_queries),
    what was achieved and who is overdue are told per township; without, by the rollup's `rules`
    (the same rules in force, summed over the townships of the scope). `scope_name`, `sites` and
    `townships` (id -> registered name, projections.names) name the scope, its sites and its
    townships: a draft shows no id; `kinds` (each active site of the scope -> its kind) counts its
    sites by kind in 基本情况."""
    extra = rule_values(rules, lang) if rules is not None else {}
    extra.update(site_values(kinds, lang) if kinds else {})
    w = _Writer(r, lang, now, extra, sites, townships)
    t = w.t
    pname = period_name(r.period, lang)
    as_of = r.as_of.isoformat()
    sections = [
        Section("basics", t("一、基本情况", "1. The situation"), _basics(w, scope_name, as_of)),
        Section("work", t("二、主要做法", "2. What was done"), _work(w)),
        Section("results", t("三、取得的成效", "3. What it achieved"), _results(w, rules)),
        Section("problems", t("四、存在的问题", "4. Problems"), _problems(w, as_of, rules)),
        Section("plans", t("五、下一步打算", "5. Plans for next year"),
                [Paragraph([t("（请填写下一年度的工作打算。）", "(Write the plans for the next year here.)")])],
                to_write=True),
    ]
    title = t(f"{scope_name}{pname}关爱留守儿童工作总结",
              f"{scope_name[:1].upper()}{scope_name[1:]}: care for left-behind children, {pname}")
    preface = t(f"本稿由系统根据截至 {as_of} 的记录自动起草，每个数字都注明了来源指标，请核对、修改后提交。",
                f"Drafted from the records as of {as_of}; each number names the figure it came from. Check and "
                "edit it before submitting.")
    return Draft(title=title, scope=r.scope, period=r.period, start=r.start, end=r.end, as_of=r.as_of, lang=lang,
                 preface=preface, sections=sections, notes=w.notes, scope_name=scope_name)


def _basics(w: _Writer, scope_name: str, as_of: str) -> list[Paragraph]:
    t, n, r = w.t, w.n, w.r
    out = [Paragraph([
        t(f"截至{as_of}，{scope_name}共为", f"On {as_of}, {scope_name} kept archives for "), n("children_archived"),
        t("名留守儿童和困境儿童建立了档案并在册管理", " left-behind children and children in difficulty"),
        t("。本期新建档", ". Newly registered this period: "), n("children_registered"),
        t("人，销档", "; archives closed: "), n("children_closed"), t("人。", "."),
    ])]
    if "sites" in w.extra:
        by_kind = sorted((k for k in w.extra if k.startswith("sites_by_kind.")),
                         key=lambda k: (-w.extra[k][0], k))
        sites: list[str | Num] = [t("全部工作由", "The work was done at "), n("sites"), t("个站点承担：", " sites: ")]
        for i, key in enumerate(by_kind):
            sites += [t("、" if i else "", ", " if i else ""), enum_label("site_kind", key.split(".", 1)[1], w.lang),
                      t("", " "), n(key), t("个", "")]
        out.append(Paragraph([*sites, t("。", ".")]))
    if len(r.by_site) > 1:
        by_site: list[str | Num] = [t("分站点看，", "By site: ")]
        for i, (site, _) in enumerate(sorted(r.by_site.items(), key=lambda kv: (-kv[1], kv[0]))):
            by_site += [t("、" if i else "", ", " if i else ""), w.sites.get(site, site), t("", " "),
                        n(f"by_site.{site}"), t("人", "")]
        out.append(Paragraph([*by_site, t("（一名儿童可由几个站点共同照看）。",
                                          " (a child may be in several sites' care).")]))
    if r.by_guardianship:
        out.append(Paragraph([
            t("从监护类型看，", "By guardianship: "),
            *w.listing("by_guardianship", "guardianship", lambda k, name: [
                name, t("", " "), n(k), t("人（占", " ("), n(k + ".pct"), "%)" if w.lang == "en" else "%）"]),
            t("。", "."),
        ]))
    if r.by_reason:
        out.append(Paragraph([
            t("从建档原因看，", "Why they are counted: "),
            *w.listing("by_reason", "reason", lambda k, name: [name, t("", " "), n(k), t("人", "")]),
            t("（一名儿童可有多个原因）。", " (a child may have several reasons)."),
        ]))
    if r.by_grade_band:
        out.append(Paragraph([
            t("按年级段分，", "By grade: "),
            *w.listing("by_grade_band", "grade_band", lambda k, name: [name, t("", " "), n(k), t("人", "")]),
            t("。需要制定个别教育方案的儿童", ". Children needing an individual education plan: "),
            n("individual_plan"), t("人。", "."),
        ]))
    return out


def _work(w: _Writer) -> list[Paragraph]:
    t, n, r = w.t, w.n, w.r
    out = [Paragraph([
        t("（一）家访与亲情联系。本期开展家访", "Contact with families: home visits "), n("home_visits"),
        t("次，与在外务工父母通话", ", calls with migrant parents "), n("parent_calls"),
        t("次，书信往来", ", letters "), n("letters"),
        t("封，班主任与留守儿童谈心", ", talks with the class teacher "), n("talks"), t("次。", "."),
    ])]
    pairing: list[str | Num] = [
        t("（二）结对帮扶。在册儿童中已有", "Pairing: "), n("children_paired"),
        t("人结对帮扶，占", " archived children are paired ("), n("children_paired.pct"), t("%", "%)"),
    ]
    if r.paired_by:
        pairing += [t("，其中", "; paired with "),
                    *w.listing("paired_by", "partner", lambda k, name: [name, t("", " "), n(k), t("人", "")])]
    pairing += [
        t("。为", ". "), n("proxy_parent_children"),
        t("名留守儿童找到了代理家长（代理妈妈、代管家长或爱心妈妈），其中本期新找到",
          " children have a proxy parent (proxy mother, guardian or loving mother), of whom newly matched: "),
        n("proxy_parent_children_new"), t("名。本期新结对", ". Pairings started "), n("pairings_started"),
        t("对，结束", ", ended "), n("pairings_ended"), t("对。", "."),
    ]
    out.append(Paragraph(pairing))
    aid: list[str | Num] = [
        t("（三）资助与慰问。资助困难儿童", "Aid and condolence visits: "), n("aid_children"),
        t("人、", " children aided, "), n("aid_events"), t("次，金额", " times, "), n("aid_amount"), t("元", " yuan"),
    ]
    if r.aid_by_source:
        aid += [t("（", " ("),
                *w.listing("aid_by_source", "aid_source", lambda k, name: [name, t("", " "), n(k), t("元", " yuan")]),
                t("）", ")")]
    aid += [
        t("；开展节日慰问", "; condolence visits "), n("condolence_visits"), t("次，慰问", ", reaching "),
        n("condolence_households"), t("户", " households and "), n("condolence_children"),
        t("名儿童，发放慰问金", " children, with money "), n("condolence_amount"), t("元。", " yuan."),
    ]
    out.append(Paragraph(aid))
    acts: list[str | Num] = [t("（四）关爱活动。组织各类活动", "Activities: "), n("activities"), t("次", " held")]
    if r.activities_by_kind:
        acts += [t("（", " ("),
                 *w.listing("activities_by_kind", "activity", lambda k, name: [name, t("", " "), n(k), t("次", "")]),
                 t("）", ")")]
    acts += [t("，参加", ", "), n("activity_participants"), t("人次，其中在册儿童", " participants, of them registered "
                                                             "children: "),
             n("activity_children"), t("人。", ".")]
    out.append(Paragraph(acts))
    out.append(Paragraph([
        t("（五）辅导、培训与讲座。开展学业辅导", "Tutoring, training and lectures: tutoring "), n("tutoring_sessions"),
        t("次、心理辅导", ", counselling "), n("counselling_sessions"),
        t("次；举办监护人培训", "; guardian trainings "), n("guardian_trainings"), t("次，培训监护人", ", guardians "),
        n("guardians_trained"), t("人次；召开座谈会", "; meetings "), n("meetings"), t("次，参加", ", attended by "),
        n("meeting_attendees"), t("人次；举办安全教育讲座", "; safety lectures "),
        n("activities_by_kind.safety_lecture"), t("次、法制教育讲座", ", legal lectures "),
        n("activities_by_kind.legal_lecture"), t("次。", "."),
    ]))
    out.append(Paragraph([
        t("（六）依法维权。受理留守儿童维权案件", "Rights cases: opened "), n("rights_cases_opened"),
        t("件，办结", ", closed "), n("rights_cases_closed"), t("件，期末在办", ", open at the end "),
        n("rights_cases_open"), t("件。", "."),
    ]))
    return out


def _township_rules(w: _Writer, rules: Sequence[RuleFigures]) -> list[str | Num]:
    """'规则（适用于…）应做 n，达标 m，达标率 p%' for each township rule that fell due."""
    t, n = w.t, w.n
    out: list[str | Num] = [t("规定动作落实情况（按本镇规则）：", "Rules met (the township's own): ")]
    several = len({f.township for f in rules}) > 1
    first = True
    for f in rules:
        if not f.due:
            continue
        name, applies = (f.en, f.applies_en) if w.lang == "en" else (f.zh, f.applies_zh)
        unit = t("个站点", " sites") if f.target == "site" else t("人次", "")
        out += [t("；" if not first else "", "; " if not first else ""),
                f"{w.townships.get(f.township, f.township)} " if several else "",
                t(f"{name}（{applies}）应做", f"{name} ({applies}): due "), n(rule_key(f, "due")),
                t(f"{unit}，已达标", f"{unit}, met "), n(rule_key(f, "met")), t(f"{unit}，达标率", " ("),
                n(rule_key(f, "pct_met")), t("%", "%)")]
        first = False
    if first:
        out.append(t("本期尚无到期的规定动作", "nothing fell due in this period"))
    out.append(t("。", "."))
    return out


def _results(w: _Writer, township_rules: Sequence[RuleFigures] | None = None) -> list[Paragraph]:
    t, n, r = w.t, w.n, w.r
    if township_rules is not None:
        return [Paragraph(_township_rules(w, township_rules)), *_headlines(w)]
    rules: list[str | Num] = [t("规定动作落实情况：", "Rules met: ")]
    first = True
    for rule, fig in r.rules.items():
        if not w.v(f"rules.{rule}.due"):
            continue
        zh, en = fig.zh or rule, fig.en or rule
        rules += [t("；" if not first else "", "; " if not first else ""), t(f"{zh}应做", f"{en}: due "),
                  n(f"rules.{rule}.due"), t("人次，已完成", ", met "), n(f"rules.{rule}.met"),
                  t("人次，完成率", " (" if w.lang == "en" else "人次，完成率"), n(f"rules.{rule}.pct_met"),
                  t("%", "%)")]
        first = False
    if first:
        rules.append(t("本期尚无到期的规定动作", "nothing fell due in this period"))
    rules.append(t("。", "."))
    return [Paragraph(rules), *_headlines(w)]


def _headlines(w: _Writer) -> list[Paragraph]:
    """No safety incident, no child out of school for poverty: the two headline figures."""
    t, n = w.t, w.n
    out = []
    if w.v("safety_incidents") == 0:
        out.append(Paragraph([t("在册儿童无一例安全事故发生（安全事故 ", "No safety incident among the children ("),
                              n("safety_incidents"), t(" 起）。", ").")]))
    else:
        out.append(Paragraph([
            t("本期发生安全事故", "Safety incidents: "), n("safety_incidents"), t("起", ""),
            t("（", " ("), *w.listing("incidents_by_severity", "severity", lambda k, name: [name, t("", " "), n(k),
                                                                                           t("起", "")]),
            t("），均已记录在案。", "), each on record."),
        ]))
    if w.v("dropped_out_poverty") == 0:
        out.append(Paragraph([t("没有一名儿童因家庭贫困而失学（因贫辍学 ", "No child left school because of poverty ("),
                              n("dropped_out_poverty"), t(" 人）", ")"),
                              t("；本期因辍学销档的儿童共", "; children who dropped out this period: "),
                              n("dropped_out"), t("人。", ".")]))
    else:
        out.append(Paragraph([
            t("本期有", "This period "), n("dropped_out"), t("名儿童辍学，其中因家庭贫困的", " children dropped out, "),
            n("dropped_out_poverty"), t("名，需要重点跟进。", " of them registered for poverty: follow them up."),
        ]))
    return out


def _problems(w: _Writer, as_of: str, township_rules: Sequence[RuleFigures] | None = None) -> list[Paragraph]:
    first = _overdue_by_rules(w, as_of, township_rules) if township_rules is not None else _overdue(w, as_of)
    return [first, *_waiting(w)]


def _overdue_by_rules(w: _Writer, as_of: str, township_rules: Sequence[RuleFigures]) -> Paragraph:
    t, n = w.t, w.n
    late = [f for f in township_rules if f.overdue]
    several = len({f.township for f in township_rules}) > 1
    words: list[str | Num] = [t(f"截至{as_of}，", f"On {as_of}, ")]
    if not late:
        words.append(t("本镇规定的各项动作均无逾期。", "nothing is overdue under the township's rules."))
        return Paragraph(words)
    words.append(t("按本镇规则仍有逾期未完成的：", "overdue under the township's rules: "))
    for i, f in enumerate(late):
        name = f.en if w.lang == "en" else f.zh
        unit = t("个站点", " sites") if f.target == "site" else t("人", " children")
        words += [t("；" if i else "", "; " if i else ""),
                  f"{w.townships.get(f.township, f.township)} " if several else "", t(f"{name}逾期", f"{name}: "),
                  n(rule_key(f, "overdue")), unit]
    words.append(t("。", "."))
    return Paragraph(words)


def _overdue(w: _Writer, as_of: str) -> Paragraph:
    t, n, r = w.t, w.n, w.r
    overdue: list[str | Num] = [t(f"截至{as_of}，仍有", f"On {as_of}, "), n("overdue_children"),
                                t("名儿童有规定动作逾期未完成", " children are overdue for a rule")]
    parts = [rule for rule, fig in r.rules.items() if fig.target == "child" and w.v(f"rules.{rule}.overdue")]
    if parts:
        overdue.append(t("，其中", ": "))
        for i, rule in enumerate(parts):
            zh, en = r.rules[rule].zh or rule, r.rules[rule].en or rule
            overdue += [t("、" if i else "", ", " if i else ""), t(f"{zh}逾期", f"{en} "), n(f"rules.{rule}.overdue"),
                        t("人", "")]
    overdue.append(t("。", "."))
    return Paragraph(overdue)


def _waiting(w: _Writer) -> list[Paragraph]:
    """Sites the center has not heard from, conflicts nobody has settled."""
    t, n = w.t, w.n
    return [
        Paragraph([n("stale_sites"), t("个站点超过 3 天未与中心同步，这些站点的数字可能还会增加。",
                                       " sites have not synced for over three days: their figures may still grow.")]),
        Paragraph([t("尚有", "Open archive conflicts to settle: "), n("conflicts_open"),
                   t("处档案冲突（不同站点离线修改不一致）等待镇里处理。",
                     " (offline edits at two sites that disagree).")]),
    ]
