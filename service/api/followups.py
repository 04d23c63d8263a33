"""Follow-ups: a child's against each rule of its township, and the overdue list per site.

The rules are the township's in force (events/rules.py) and the arithmetic the projections'
(:mod:`projections.rules`, fed by :mod:`projections.rule_queries`); this module only scopes, logs
and pages. A child's follow-ups are part of its record, so reading them is
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
from projections import rule_queries
from projections.facts import township_of
from projections.rules import RuleFigures
from service.api import archives
from service.api.children import query_text, route_of
from service.api.errors import ApiError, bad, not_found
from service.api.limits import PERIOD_PATTERN
from service.api.rollups import rule_figures, rule_inputs
from service.api.scoping import LISTERS, READERS, ChildIdPath, Params, SiteIdPath, allow, caller_of, may_see_site


class FollowUpView(msgspec.Struct, frozen=True, kw_only=True):
    """A child's follow-ups in a period: each child rule of its township in force (GET /rules),
    judged for this child alone: the periods due and met, and whether it is overdue on `on`."""

    child_id: str
    period: str
    on: dt.date  # the period's last day, or today if earlier
    rules: list[RuleFigures]


class OverdueLine(msgspec.Struct, frozen=True, omit_defaults=True):
    child_id: str
    rule: str  # the rule's id (GET /rules)
    last_done: dt.date | None
    due_on: dt.date
    days_overdue: int
    name: str | None = None
    rule_zh: str = ""  # the rule's names
    rule_en: str = ""


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
         summary="A child's follow-ups: each rule of its township against the child",
         description="Each child rule of the township's rules in force (GET /rules), judged for this child alone: "
                     "applies_to (1 if the rule holds it on `on`), the periods due and met, and the child in "
                     "`overdue` if it is overdue on `on` (the period's last day, or today if earlier). Logged in "
                     "the read log.")
    async def child_followups(
        self, request: Request[Any, Any, Any], child_id: ChildIdPath,
        period: Annotated[str, Parameter(pattern=PERIOD_PATTERN,
                                         description="YYYY, YYYY-MM, YYYY-S1 (Feb-Jul), YYYY-S2 (Aug-Jan) or "
                                                     "YYYY-SY (Aug-Jul)")],
    ) -> FollowUpView:
        caller = caller_of(request)
        p = period_of(period)
        pool = request.app.state.pool
        a = await archives.logged_archive(pool, caller, child_id, route_of(request), query_text(request))
        if a is None:
            raise not_found("child", child_id, "child_id")
        on = min(local_today(), p.last_day)
        found: list[RuleFigures] = []
        for town in sorted({township_of(s) for s in a.sites}):
            inputs = await rule_inputs(pool, request.app.state.get("rule_inputs"), town)
            found += rule_queries.child_figures(inputs, a.child_id, town, p, on)
        return FollowUpView(child_id=child_id, period=p.label, on=on, rules=found)

    @get("/sites/{site_id:str}/overdue", summary="Children of a site overdue for a rule, most overdue first",
         description="Under the township's rules in force (GET /rules): each child rule's overdue children held by "
                     "the site, judged on `today`, with the rule's id and names; the same as GET /rules for the "
                     "site's scope.")
    async def overdue(
        self, request: Request[Any, Any, Any], site_id: SiteIdPath,
        today: Annotated[dt.date | None, Parameter(description="the day to judge on (default: today, UTC+8)")] = None,
    ) -> OverdueList:
        caller = caller_of(request)
        if not may_see_site(caller, site_id):
            raise ApiError(404, f"site {site_id} was not found", field="site_id", value=site_id)
        day = today or local_today()
        pool = request.app.state.pool
        figures = await rule_figures(pool, request.app.state.get("rule_inputs"), site_id, pf.month_of(day), day)
        late = [(o, f) for f in figures if f.target == "child" for o in f.overdue]
        p = Params()
        async with pool.acquire() as conn:  # the names, of the children the caller may see only
            kids = await archives.archives_where(
                conn, caller, p, [f"a.child_id = ANY({p.add(sorted({o.subject for o, _ in late}))}::text[])"])
        names = {a.child_id: a.name for a in kids}
        late = [(o, f) for o, f in late if o.subject in names]
        late.sort(key=lambda x: (-x[0].days_overdue, x[1].rule_id, x[0].subject))
        return OverdueList(site_id=site_id, today=day, items=[
            OverdueLine(child_id=o.subject, rule=f.rule_id, last_done=o.last_done, due_on=o.due_on,
                        days_overdue=o.days_overdue, name=names[o.subject], rule_zh=f.zh, rule_en=f.en)
            for o, f in late])
