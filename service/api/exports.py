"""Exports of the year-end summary (年终工作总结) for a site or the township and a period: XLSX
(openpyxl) and CSV for people, each figure labelled in Chinese, and JSON for machines.

Every format is made from one list of labelled figures (:func:`figures`), so the three never
disagree. Money is shown in yuan (the store keeps fen).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from openpyxl import Workbook
from openpyxl.styles import Font

from projections import county as pc
from projections import rollups as pr
from projections.figures import LabelledFigure, labelled
from projections.names import scope_names
from service.api.county import RegionQuery, county_rollup
from service.api.rollups import PERIOD_RULES, EndQuery, PeriodQuery, ScopeQuery, StartQuery, caller_rollup
from service.api.scoping import LISTERS, allow

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class SummaryJson(msgspec.Struct, frozen=True):
    scope: str
    period: str
    start: dt.date
    end: dt.date
    as_of: dt.date
    figures: list[LabelledFigure]
    rollup: pr.Rollup


def figures(r: pr.Rollup, sites: Mapping[str, str] | None = None) -> list[LabelledFigure]:
    """Every figure of a rollup, in the order of the year-end summary, labelled in Chinese by the
    one catalogue (projections.figures) the dashboard and the API use too; `sites` (id -> name,
    projections.names) names the sites of the figures per site."""
    return labelled(r, "zh", now=dt.datetime.now(dt.UTC), sites=sites)


def _title(r: pr.Rollup, scope_name: str | None = None) -> list[tuple[str, str]]:
    return [("范围", scope_name or r.scope), ("统计期", r.period), ("起始日", r.start.isoformat()),
            ("截止日", (r.end - dt.timedelta(days=1)).isoformat()), ("在册状态截至", r.as_of.isoformat())]


HEADER = ("项目", "数值", "单位", "占比（%）", "代码")


def to_csv(r: pr.Rollup, sites: Mapping[str, str] | None = None, scope_name: str | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["守望 年终工作总结 汇总表"])
    for k, v in _title(r, scope_name):
        w.writerow([k, v])
    w.writerow([])
    w.writerow(HEADER)
    for f in figures(r, sites):
        w.writerow([f.label, f.value, f.unit, "" if f.pct is None else f.pct, f.key])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")  # BOM: Excel opens UTF-8 CSV as such


def to_xlsx(r: pr.Rollup, sites: Mapping[str, str] | None = None, scope_name: str | None = None) -> bytes:
    wb = Workbook()
    ws = wb.worksheets[0]  # a new workbook has one sheet; .active may be a chartsheet or none to the type checker
    ws.title = "年终工作总结"
    ws.append(["守望 年终工作总结 汇总表"])
    ws["A1"].font = Font(bold=True, size=14)
    for k, v in _title(r, scope_name):
        ws.append([k, v])
    ws.append([])
    ws.append(list(HEADER))
    for cell in ws[ws.max_row]:
        cell.font = Font(bold=True)
    for f in figures(r, sites):
        ws.append([f.label, f.value, f.unit, f.pct, f.key])
    ws.column_dimensions["A"].width = 44
    ws.column_dimensions["B"].width = 22
    ws.column_dimensions["E"].width = 36
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


COUNTY_TITLE = "守望 全县各乡镇对比表"


def _county_table(cr: pc.CountyRollup) -> list[list[Any]]:
    """The county comparison as rows: a title, the period, a header of township names, then one row
    per figure (projections.county.comparison), values in the townships' order and the total."""
    head = ["项目", "单位", *(t.name for t in cr.townships), "全县合计", "代码"]
    out: list[list[Any]] = [[COUNTY_TITLE], ["范围", cr.region], ["统计期", cr.period],
                            ["起始日", cr.start.isoformat()], ["截止日", (cr.end - dt.timedelta(days=1)).isoformat()],
                            ["在册状态截至", cr.as_of.isoformat()], [], head]
    out += [[row.label, row.unit, *row.values, row.total, row.key] for row in pc.comparison(cr, "zh")]
    return out


def county_csv(cr: pc.CountyRollup) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(_county_table(cr))
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def county_xlsx(cr: pc.CountyRollup) -> bytes:
    wb = Workbook()
    ws = wb.worksheets[0]
    ws.title = "各乡镇对比"
    rows = _county_table(cr)
    for row in rows:
        ws.append(row)
    ws["A1"].font = Font(bold=True, size=14)
    for cell in ws[rows.index(next(r for r in rows if r and r[0] == "项目")) + 1]:
        cell.font = Font(bold=True)
    ws.column_dimensions["A"].width = 44
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _filename(r: pr.Rollup, ext: str) -> str:
    return f"summary-{r.scope}-{r.period.replace('..', '_')}.{ext}"


class ExportsController(Controller):
    path = "/exports"
    tags = ["exports"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow(*LISTERS)]  # noqa: RUF012 (as above)

    @get("/summary.xlsx", media_type=XLSX, summary="Year-end summary as an Excel workbook (labels in Chinese)",
         opt=PERIOD_RULES)
    async def xlsx(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> Response[bytes]:
        r = await caller_rollup(request, area, period, start, end)
        names = await scope_names(request.app.state.pool, area)
        return Response(to_xlsx(r, names.sites, names.name), media_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="{_filename(r, "xlsx")}"'})

    @get("/summary.csv", media_type="text/csv; charset=utf-8",
         summary="Year-end summary as CSV (UTF-8 with BOM, labels in Chinese)", opt=PERIOD_RULES)
    async def csv(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> Response[bytes]:
        r = await caller_rollup(request, area, period, start, end)
        names = await scope_names(request.app.state.pool, area)
        return Response(to_csv(r, names.sites, names.name), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{_filename(r, "csv")}"'})

    @get("/summary.json", summary="Year-end summary for machines: labelled figures and the whole rollup",
         opt=PERIOD_RULES)
    async def json(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> SummaryJson:
        r = await caller_rollup(request, area, period, start, end)
        names = await scope_names(request.app.state.pool, area)
        return SummaryJson(scope=r.scope, period=r.period, start=r.start, end=r.end, as_of=r.as_of,
                           figures=figures(r, names.sites), rollup=r)

    @get("/county.xlsx", media_type=XLSX, guards=[allow("county")],
         summary="The county's townships side by side as an Excel workbook (labels in Chinese)",
         description="One row per figure, one column per township of the region (by name) and the region's total, "
                     "then each township's freshness. The county role, its own region only (else 404).",
         opt=PERIOD_RULES)
    async def xlsx_county(
        self, request: Request[Any, Any, Any],
        region: RegionQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> Response[bytes]:
        cr = await county_rollup(request, region, period, start, end)
        name = f"county-{cr.region}-{cr.period.replace('..', '_')}.xlsx"
        return Response(county_xlsx(cr), media_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @get("/county.csv", media_type="text/csv; charset=utf-8", guards=[allow("county")],
         summary="The county's townships side by side as CSV (UTF-8 with BOM, labels in Chinese)",
         description="As /exports/county.xlsx.", opt=PERIOD_RULES)
    async def csv_county(
        self, request: Request[Any, Any, Any],
        region: RegionQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
    ) -> Response[bytes]:
        cr = await county_rollup(request, region, period, start, end)
        name = f"county-{cr.region}-{cr.period.replace('..', '_')}.csv"
        return Response(county_csv(cr), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
