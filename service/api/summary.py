"""The drafted year-end summary (年终工作总结) through the API: the draft as JSON (the dashboard
renders it), as a Word document staff edit and submit, and the latest period with work in it (the
summary opens there, not on today's period, which early in a school year is all zeros).

The draft is `projections.summary.draft` of the rollup the caller may see (the same read as
GET /rollups); every number in it names its figure.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from events.localtime import local_today
from projections import followups as pf
from projections import queries
from projections.names import scope_names
from projections.summary import Draft, draft
from service.api.rollups import (
    PERIOD_RULES,
    EndQuery,
    LangQuery,
    PeriodQuery,
    ScopeQuery,
    StartQuery,
    caller_rollup,
    check_scope,
    rule_figures,
)
from service.api.scoping import LISTERS, allow, caller_of

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class LatestPeriod(msgspec.Struct, frozen=True):
    """The periods holding the newest work of a scope (today's, when it has none yet)."""

    scope: str
    newest_work: dt.date | None
    school_year: str
    semester: str
    year: str
    month: str


async def caller_draft(request: Request[Any, Any, Any], scope: str, period: str | None, start: dt.date | None,
                       end: dt.date | None, lang: str) -> Draft:
    r = await caller_rollup(request, scope, period, start, end)
    pool = request.app.state.pool
    # Each township's rules in force (GET /rules) tell what was met and who is overdue, judged on
    # the rollup's day: the same figures as the rollup's `rules`, told per township.
    rules = await rule_figures(pool, request.app.state.get("rule_inputs"), scope,
                               pf.Period(r.period, r.start, r.end), r.as_of)
    names = await scope_names(pool, scope, lang)
    return draft(r, scope_name=names.name, now=dt.datetime.now(dt.UTC), lang=lang, rules=rules or None,
                 sites=names.sites, townships=names.townships, kinds=names.kinds)


class SummaryController(Controller):
    path = "/summary"
    tags = ["summary"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow(*LISTERS)]  # noqa: RUF012 (as above)

    @get("/latest", summary="The periods holding the newest work of a site or the township",
         description="The school year (YYYY-SY, August to July), semester, year and month of the newest work recorded "
                     "by the scope's sites; today's when there is none. The year-end summary opens on the school year.")
    async def latest(self, request: Request[Any, Any, Any], area: ScopeQuery) -> LatestPeriod:
        check_scope(caller_of(request), area)
        newest = await queries.latest_work_day(request.app.state.pool, area)
        day = newest or local_today()
        return LatestPeriod(scope=area, newest_work=newest, school_year=pf.school_year_of(day).label,
                            semester=pf.semester_of(day).label, year=pf.year_of(day).label,
                            month=pf.month_of(day).label)

    @get("/draft", summary="The year-end summary drafted from the figures",
         description="基本情况, 主要做法, 取得的成效 and 存在的问题 written from the figures of GET /rollups, "
                     "every number with its figure's key and a footnote; 下一步打算 is left for people to write.",
         opt=PERIOD_RULES)
    async def get_draft(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
        lang: LangQuery = "zh",
    ) -> Draft:
        return await caller_draft(request, area, period, start, end, lang)

    @get("/draft.docx", media_type=DOCX, summary="The drafted year-end summary as a Word document to edit and submit",
         opt=PERIOD_RULES)
    async def docx(
        self, request: Request[Any, Any, Any],
        area: ScopeQuery, period: PeriodQuery = None, start: StartQuery = None, end: EndQuery = None,
        lang: Annotated[str, Parameter(pattern=r"^(zh|en)$", description="zh (default) or en")] = "zh",
    ) -> Response[bytes]:
        from service.summary_docx import to_docx

        d = await caller_draft(request, area, period, start, end, lang)
        name = f"summary-{d.scope}-{d.period.replace('..', '_')}.docx"
        return Response(to_docx(d), media_type=DOCX, headers={"Content-Disposition": f'attachment; filename="{name}"'})
