"""Exports of the year-end summary (年终工作总结) for a site or the township and a period: XLSX
(openpyxl) and CSV for people, each figure labelled in Chinese, and JSON for machines.

Every format is made from one list of labelled figures (:func:`figures`), so the three never
disagree. Money is shown in yuan (the store keeps fen).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from openpyxl import Workbook
from openpyxl.styles import Font

from projections import rollups as pr
from service.api.rollups import EndQuery, PeriodQuery, ScopeQuery, StartQuery, caller_rollup
from service.api.scoping import READERS, allow

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

GUARDIANSHIP = {"grandparents": "隔代监护", "one_parent": "单亲监护", "relatives": "亲朋监护",
                "teacher_or_institution": "教师或机构监护", "none": "无人监护", "unknown": "未登记"}
REASON = {"both_parents_away": "父母均外出务工", "one_parent_away": "父母一方外出务工", "single_parent": "单亲家庭",
          "orphan": "孤儿", "poverty": "家庭贫困", "disability": "残疾", "other_difficulty": "其他困境"}
BAND = {"1-3": "1-3年级", "4-6": "4-6年级", "7-9": "7-9年级", "other": "其他（未入学或未登记）"}
PARTNER = {"teacher": "教师", "classmate": "同学（一帮一）", "proxy_parent": "代理家长", "volunteer": "志愿者",
           "loving_mother": "爱心妈妈"}
SOURCE = {"government": "政府", "township": "乡镇", "school": "学校", "charity": "慈善组织", "enterprise": "企业",
          "individual": "个人", "unknown": "未登记"}
ACTIVITY = {"performance": "文艺演出", "contest": "竞赛", "childrens_home": "留守儿童之家活动",
            "safety_lecture": "安全教育讲座", "legal_lecture": "法治讲座", "outing": "外出活动", "other": "其他活动"}
SEVERITY = {"minor": "轻微", "serious": "严重", "fatal": "死亡", "unknown": "未登记"}
RULE = {"visit": "家访（每月一次）", "call": "与父母通话（每月一次）", "talk": "班主任谈心（每月一次）",
        "letter": "给父母写信（每学期一次）"}
RULE_PART = {"done": "完成次数", "due": "应做人次", "met": "达标人次", "pct_met": "达标率（%）",
             "overdue": "逾期儿童数"}


class LabelledFigure(msgspec.Struct, frozen=True, omit_defaults=True):
    """One figure: a machine key, its Chinese label, the value and, for shares, the percentage."""

    key: str
    label: str
    value: float | int | str
    unit: str = ""
    pct: float | None = None


class SummaryJson(msgspec.Struct, frozen=True):
    scope: str
    period: str
    start: dt.date
    end: dt.date
    as_of: dt.date
    figures: list[LabelledFigure]
    rollup: pr.Rollup


def _yuan(fen: int) -> float:
    return round(fen / 100, 2)


def figures(r: pr.Rollup) -> list[LabelledFigure]:
    """Every figure of a rollup, in the order of the year-end summary, labelled in Chinese."""
    out: list[LabelledFigure] = []

    def add(key: str, label: str, value: float | int | str, unit: str = "", pct: float | None = None) -> None:
        out.append(LabelledFigure(key=key, label=label, value=value, unit=unit, pct=pct))

    def shares(prefix: str, title: str, items: dict[str, pr.Share], names: dict[str, str]) -> None:
        for k, s in items.items():
            add(f"{prefix}.{k}", f"{title}：{names.get(k, k)}", s.count, "人", s.pct)

    add("children_archived", "建档儿童数（期末在册）", r.children_archived, "人")
    add("children_registered", "本期新建档儿童数", r.children_registered, "人")
    add("children_closed", "本期销档儿童数", r.children_closed, "人")
    for site, n in r.by_site.items():
        add(f"by_site.{site}", f"按站点统计在册儿童：{site}", n, "人")
    shares("by_guardianship", "监护类型", r.by_guardianship, GUARDIANSHIP)
    shares("by_grade_band", "年级段", r.by_grade_band, BAND)
    shares("by_reason", "建档原因", r.by_reason, REASON)
    add("individual_plan", "需个别教育方案的儿童", r.individual_plan.count, "人", r.individual_plan.pct)
    add("children_paired", "已结对帮扶的儿童", r.children_paired.count, "人", r.children_paired.pct)
    for k, n in r.paired_by.items():
        add(f"paired_by.{k}", f"结对帮扶对象：{PARTNER.get(k, k)}", n, "人")
    add("proxy_parents_matched", "在册代理家长（含爱心妈妈）结对数", r.proxy_parents_matched, "对")
    add("proxy_parents_new", "本期新匹配代理家长（含爱心妈妈）", r.proxy_parents_new, "对")
    add("pairings_started", "本期新结对", r.pairings_started, "对")
    add("pairings_ended", "本期结束结对", r.pairings_ended, "对")
    for rule, fig in r.rules.items():
        for part, label in RULE_PART.items():
            unit = "" if part == "pct_met" else ("次" if part in ("done", "due", "met") else "人")
            add(f"rules.{rule}.{part}", f"{RULE.get(rule, rule)}：{label}", getattr(fig, part), unit)
    add("overdue_children", "有逾期未完成事项的儿童", r.overdue_children, "人")
    add("aid_children", "受资助儿童数", r.aid_children, "人")
    add("aid_events", "资助次数", r.aid_events, "次")
    add("aid_amount", "资助金额", _yuan(r.aid_amount_fen), "元")
    for k, fen in r.aid_by_source.items():
        add(f"aid_by_source.{k}", f"资助来源：{SOURCE.get(k, k)}", _yuan(fen), "元")
    add("condolence_visits", "慰问次数", r.condolence_visits, "次")
    add("condolence_children", "慰问儿童数", r.condolence_children, "人")
    add("condolence_amount", "慰问金额", _yuan(r.condolence_amount_fen), "元")
    add("activities", "开展活动次数", r.activities, "次")
    for k, n in r.activities_by_kind.items():
        add(f"activities_by_kind.{k}", f"活动类型：{ACTIVITY.get(k, k)}", n, "次")
    add("activity_participants", "活动参与人次", r.activity_participants, "人次")
    add("activity_children", "参与活动的在册儿童", r.activity_children, "人")
    add("tutoring_sessions", "学业辅导次数", r.tutoring_sessions, "次")
    add("counselling_sessions", "心理辅导次数", r.counselling_sessions, "次")
    add("guardian_trainings", "监护人培训次数", r.guardian_trainings, "次")
    add("guardians_trained", "受培训监护人数", r.guardians_trained, "人次")
    add("meetings", "座谈会次数", r.meetings, "次")
    add("meeting_attendees", "座谈会参加人次", r.meeting_attendees, "人次")
    add("safety_incidents", "安全事故数", r.safety_incidents, "起")
    for k, n in r.incidents_by_severity.items():
        add(f"incidents_by_severity.{k}", f"安全事故程度：{SEVERITY.get(k, k)}", n, "起")
    add("rights_cases_opened", "受理维权案件", r.rights_cases_opened, "件")
    add("rights_cases_closed", "办结维权案件", r.rights_cases_closed, "件")
    add("rights_cases_open", "在办维权案件（期末）", r.rights_cases_open, "件")
    for f in r.freshness:
        last = f.last_committed_at.isoformat(timespec="seconds") if f.last_committed_at else "从未同步"
        newest = f.newest_occurred_at.isoformat(timespec="seconds") if f.newest_occurred_at else "无"
        add(f"freshness.{f.site_id}.last_committed_at", f"数据新鲜度：{f.site_id} 最近同步时间", last)
        add(f"freshness.{f.site_id}.newest_occurred_at", f"数据新鲜度：{f.site_id} 最新工作发生时间", newest)
    return out


def _title(r: pr.Rollup) -> list[tuple[str, str]]:
    return [("范围", r.scope), ("统计期", r.period), ("起始日", r.start.isoformat()),
            ("截止日", (r.end - dt.timedelta(days=1)).isoformat()), ("在册状态截至", r.as_of.isoformat())]


HEADER = ("项目", "数值", "单位", "占比（%）", "代码")


def to_csv(r: pr.Rollup) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["守望 年终工作总结 汇总表"])
    for k, v in _title(r):
        w.writerow([k, v])
    w.writerow([])
    w.writerow(HEADER)
    for f in figures(r):
        w.writerow([f.label, f.value, f.unit, "" if f.pct is None else f.pct, f.key])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")  # BOM: Excel opens UTF-8 CSV as such


def to_xlsx(r: pr.Rollup) -> bytes:
    wb = Workbook()
    ws = wb.worksheets[0]  # a new workbook has one sheet; .active may be a chartsheet or none to the type checker
    ws.title = "年终工作总结"
    ws.append(["守望 年终工作总结 汇总表"])
    ws["A1"].font = Font(bold=True, size=14)
    for k, v in _title(r):
        ws.append([k, v])
    ws.append([])
    ws.append(list(HEADER))
    for cell in ws[ws.max_row]:
        cell.font = Font(bold=True)
    for f in figures(r):
        ws.append([f.label, f.value, f.unit, f.pct, f.key])
    ws.column_dimensions["A"].width = 44
    ws.column_dimensions["B"].width = 22
    ws.column_dimensions["E"].width = 36
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _filename(r: pr.Rollup, ext: str) -> str:
    return f"summary-{r.scope}-{r.period.replace('..', '_')}.{ext}"


class ExportsController(Controller):
    path = "/exports"
    tags = ["exports"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow(*READERS)]  # noqa: RUF012 (as above)

    @get("/summary.xlsx", media_type=XLSX, summary="Year-end summary as an Excel workbook (labels in Chinese)")
    async def xlsx(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> Response[bytes]:
        r = await caller_rollup(request, area, period, start, end)
        return Response(to_xlsx(r), media_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="{_filename(r, "xlsx")}"'})

    @get("/summary.csv", media_type="text/csv; charset=utf-8",
         summary="Year-end summary as CSV (UTF-8 with BOM, labels in Chinese)")
    async def csv(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> Response[bytes]:
        r = await caller_rollup(request, area, period, start, end)
        return Response(to_csv(r), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{_filename(r, "csv")}"'})

    @get("/summary.json", summary="Year-end summary for machines: labelled figures and the whole rollup")
    async def json(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> SummaryJson:
        r = await caller_rollup(request, area, period, start, end)
        return SummaryJson(scope=r.scope, period=r.period, start=r.start, end=r.end, as_of=r.as_of,
                           figures=figures(r), rollup=r)
