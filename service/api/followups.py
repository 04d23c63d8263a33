"""Follow-ups: per child and month, whether the rules were met; and the overdue list per site.

The rules and the arithmetic are the projections' (:mod:`projections.followups`); this module
only scopes, logs and pages. A child's follow-ups are part of its record, so reading them is
logged like a read of its archive.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter

from events.localtime import local_today
from projections import followups as pf
from service.api import archives
from service.api.children import query_text, route_of
from service.api.errors import ApiError, bad, not_found
from service.api.limits import PERIOD_PATTERN
from service.api.scoping import LISTERS, READERS, ChildIdPath, Params, SiteIdPath, allow, caller_of, may_see_site


class FollowUpView(msgspec.Struct, frozen=True):
    child_id: str
    period: str
    months: list[pf.MonthCheck]
    letters_in_period: int
    overdue: list[pf.Overdue]


class OverdueLine(msgspec.Struct, frozen=True, omit_defaults=True):
    child_id: str
    rule: str
    last_done: dt.date | None
    due_on: dt.date
    days_overdue: int
    name: str | None = None


class OverdueList(msgspec.Struct, frozen=True):
    site_id: str
    today: dt.date
    items: list[OverdueLine]


def period_of(label: str) -> pf.Period:
    try:
        return pf.parse_period(label)
    except ValueError as err:
        raise bad("period", label, str(err)) from None


class FollowUpsController(Controller):
    path = "/"
    tags = ["follow-ups"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow(*LISTERS)]  # noqa: RUF012 (as above; a child's follow-ups narrow it to READERS)

    @get("/children/{child_id:str}/followups", guards=[allow(*READERS)],
         summary="A child's follow-ups: each month against the rules",
         description="A home visit, a call with the parents and a talk every month; a letter every semester. "
                     "Logged in the read log.")
    async def child_followups(
        self, request: Request[Any, Any, Any], child_id: ChildIdPath,
        period: Annotated[str, Parameter(pattern=PERIOD_PATTERN,
                                         description="YYYY, YYYY-MM, YYYY-S1 (Feb-Jul), YYYY-S2 (Aug-Jan) or "
                                                     "YYYY-SY (Aug-Jul)")],
    ) -> FollowUpView:
        caller = caller_of(request)
        p = period_of(period)
        a = await archives.logged_archive(request.app.state.pool, caller, child_id, route_of(request),
                                          query_text(request))
        if a is None:
            raise not_found("child", child_id, "child_id")
        today = local_today()
        return FollowUpView(child_id=child_id, period=p.label, months=pf.month_checks(a, p),
                            letters_in_period=pf.letters_in(a, p), overdue=pf.overdue_of(a, min(today, p.last_day)))

    @get("/sites/{site_id:str}/overdue", summary="Children of a site overdue for a rule, most overdue first")
    async def overdue(
        self, request: Request[Any, Any, Any], site_id: SiteIdPath,
        today: Annotated[dt.date | None, Parameter(description="the day to judge on (default: today, UTC+8)")] = None,
    ) -> OverdueList:
        caller = caller_of(request)
        if not may_see_site(caller, site_id):
            raise ApiError(404, f"site {site_id} was not found", field="site_id", value=site_id)
        day = today or local_today()
        found: list[tuple[pf.Overdue, str | None]] = []
        p = Params()
        async with request.app.state.pool.acquire() as conn:
            kids = await archives.archives_where(conn, caller, p, [f"a.sites @> ARRAY[{p.add(site_id)}]::text[]"])
        for a in kids:
            found += [(o, a.name) for o in pf.overdue_of(a, day)]
        found.sort(key=lambda x: (-x[0].days_overdue, x[0].rule, x[0].child_id))
        return OverdueList(site_id=site_id, today=day, items=[
            OverdueLine(child_id=o.child_id, rule=o.rule, last_done=o.last_done, due_on=o.due_on,
                        days_overdue=o.days_overdue, name=name) for o, name in found])
