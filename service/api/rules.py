"""The township's follow-up rules: each rule in force with its figures, its history, and the
township supervisor's changes (each an event of the township office's site).

The rules are data (events/rules.py) and their figures the projections' (projections/rules.py,
fed by projections/rule_queries.py); this module scopes, validates and records. A change is a
`FollowUpRuleSet`, `FollowUpRuleRetired` or `SchoolCalendarSet` event recorded through
:func:`service.api.writes.record` (the same ingest checks as any event: only the township's own
office may set its rules, service/authority.py); the fan-out sends it to every site of the
township, and every figure of a period that starts on or after its day follows it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter, QueryParameter

from events import catalogue as c
from events.localtime import local_today
from events.rules import (
    FollowUpRule,
    RuleId,
    SchoolCalendar,
    calendar_problems,
    national_calendar,
    rule_problems,
)
from events.types import ShortText
from projections import rule_queries
from projections.rules import RuleFigures, RuleVersion
from service.api.errors import ApiError, bad, broken_rule
from service.api.limits import PERIOD_PATTERN
from service.api.rollups import ScopeQuery, check_scope, period_from
from service.api.scoping import LISTERS, allow, caller_of
from service.api.writes import Recorded, record


class SetRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A rule of the caller's township, new or a new version, in force from `effective_from`."""

    rule: FollowUpRule
    effective_from: dt.date
    note: ShortText | None = None


class RetireRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    effective_from: dt.date
    note: ShortText | None = None


class SetCalendar(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    calendar: SchoolCalendar
    note: ShortText | None = None


class CalendarView(msgspec.Struct, frozen=True, kw_only=True):
    """The terms of a township's school year: as the township set them, or the national pattern."""

    township: str
    calendar: SchoolCalendar
    set_by_township: bool


class RuleHistory(msgspec.Struct, frozen=True, kw_only=True):
    """A rule of a township: the version in force on `day` (None: retired or not yet set) and
    every version, the default first."""

    township: str
    rule_id: str
    day: dt.date
    in_force: FollowUpRule | None
    versions: list[RuleVersion]


def _office_township(caller: Any) -> str:
    if caller.role != "township" or caller.township is None:
        raise ApiError(403, "only township staff set the township's rules", field="role", value=caller.role)
    return str(caller.township)


# What events.rules checks beyond the types, as rules the routes list (their 422 answers, docs/API.md).
RULE_RULES = ["counts.event_types are types a rule can count, and counts.where filters a field of them with "
              "values it allows", "applies.grade_min is not above applies.grade_max",
              "a site rule names site_kinds or sites and nothing of children; a child rule names no sites"]
CALENDAR_RULES = ["each term ends on or after its first day, lies within its school year (August 1 to August 31 "
                  "of the next year), and starts after the previous term ends"]
TownshipOrSite = Annotated[str, QueryParameter(
    name="scope", pattern=r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}(\.[a-z0-9-]{1,24})?$",
    description="a township (region.township) or a site id (region.township.site)")]


def _problems(field: str, value: object, problems: list[str]) -> None:
    if problems:
        raise broken_rule(field, msgspec.json.encode(value).decode()[:200], "; ".join(problems))


class RulesController(Controller):
    path = "/rules"
    tags = ["rules"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow(*LISTERS)]  # noqa: RUF012 (as above)

    @get("/", summary="Each follow-up rule of the townships of a scope, with its figures for a period",
         description="Per rule: its name (zh, en), whom it applies to in words, what counts, how many per which "
                     "period; how many children (or sites) it applies to, the periods due and met, and who is "
                     "overdue on the period's last day (or as_of, if earlier), most overdue first. Only children "
                     "and sites inside the scope are named.")
    async def figures(
        self, request: Request[Any, Any, Any], area: ScopeQuery,
        period: Annotated[str, Parameter(pattern=PERIOD_PATTERN, description="YYYY, YYYY-MM, YYYY-S1 or YYYY-S2")],
        as_of: Annotated[dt.date | None, Parameter(description="the day to judge on (default: today, UTC+8)")] = None,
    ) -> list[RuleFigures]:
        caller = caller_of(request)
        check_scope(caller, area)
        p = period_from(period, None, None)
        return await rule_queries.rule_figures_live(request.app.state.pool, area, p, as_of or local_today())

    @get("/as-of", guards=[allow("township", "auditor")],
         summary="The rules' figures as the center could have given them at a past time",
         description="From the log up to the committed time, with the rules the center held then.")
    async def figures_asof(
        self, request: Request[Any, Any, Any], area: ScopeQuery,
        period: Annotated[str, Parameter(pattern=PERIOD_PATTERN, description="YYYY, YYYY-MM, YYYY-S1 or YYYY-S2")],
        committed: Annotated[dt.datetime, Parameter(description="as of this committed time, with a time zone")],
        as_of: Annotated[dt.date | None, Parameter(description="the day to judge on (default: committed's)")] = None,
    ) -> list[RuleFigures]:
        caller = caller_of(request)
        check_scope(caller, area)
        if committed.tzinfo is None:
            raise bad("committed", committed.isoformat(), "give a time zone, e.g. 2026-06-30T23:59:59+08:00")
        p = period_from(period, None, None)
        return await rule_queries.rule_figures_asof(request.app.state.pool, area, p, as_of, committed_at=committed)

    @get("/history", summary="Every rule of a township: the one in force on a day and all its versions")
    async def history(
        self, request: Request[Any, Any, Any], area: TownshipOrSite,
        day: Annotated[dt.date | None, Parameter(description="default: today (UTC+8)")] = None,
    ) -> list[RuleHistory]:
        caller = caller_of(request)
        check_scope(caller, area)
        if area.count(".") == 0:
            raise bad("scope", area, "give a township (region.township) or a site")
        town = area if area.count(".") == 1 else area.rsplit(".", 1)[0]
        on = day or local_today()
        async with request.app.state.pool.acquire() as conn:
            book = await rule_queries.rule_book(conn, town)
        out = []
        for rid in book.rule_ids(town):
            v = book.in_force(town, rid, on)
            out.append(RuleHistory(township=town, rule_id=rid, day=on, in_force=v.rule if v else None,
                                   versions=book.versions(town, rid)))
        return out

    @get("/calendar", summary="The terms of a school year of a township (set, or the national pattern)")
    async def calendar(
        self, request: Request[Any, Any, Any], area: TownshipOrSite,
        school_year: Annotated[int, Parameter(ge=2000, le=2100, description="the year the school year starts in")],
    ) -> CalendarView:
        caller = caller_of(request)
        check_scope(caller, area)
        if area.count(".") == 0:
            raise bad("scope", area, "give a township (region.township) or a site")
        town = area if area.count(".") == 1 else area.rsplit(".", 1)[0]
        async with request.app.state.pool.acquire() as conn:
            book = await rule_queries.rule_book(conn, town)
        found = book.calendars.get(town, {}).get(school_year)
        return CalendarView(township=town, calendar=found or national_calendar(school_year),
                            set_by_township=found is not None)

    @post("/", guards=[allow("township")], status_code=201,
          summary="Set a rule of your township (a FollowUpRuleSet event), from a day on",
          opt={"rules": RULE_RULES})
    async def set_rule(self, request: Request[Any, Any, Any], data: JSONBody[SetRule]) -> Recorded:
        caller = caller_of(request)
        town = _office_township(caller)
        _problems("rule", data.rule, rule_problems(data.rule))
        care = c.FollowUpRuleSet(township=town, rule=data.rule, effective_from=data.effective_from, note=data.note)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            return await record(conn, caller, care)

    @post("/{rule_id:str}/retire", guards=[allow("township")], status_code=201,
          summary="Stop holding your township to a rule from a day on (a FollowUpRuleRetired event)")
    async def retire(self, request: Request[Any, Any, Any], rule_id: Annotated[RuleId, Parameter()],
                     data: JSONBody[RetireRule]) -> Recorded:
        caller = caller_of(request)
        town = _office_township(caller)
        care = c.FollowUpRuleRetired(township=town, rule_id=rule_id, effective_from=data.effective_from,
                                     note=data.note)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            return await record(conn, caller, care)

    @post("/calendar", guards=[allow("township")], status_code=201,
          summary="Set the terms of a school year for your township (a SchoolCalendarSet event)",
          opt={"rules": CALENDAR_RULES})
    async def set_calendar(self, request: Request[Any, Any, Any], data: JSONBody[SetCalendar]) -> Recorded:
        caller = caller_of(request)
        town = _office_township(caller)
        _problems("calendar", data.calendar, calendar_problems(data.calendar))
        care = c.SchoolCalendarSet(township=town, calendar=data.calendar, note=data.note)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            return await record(conn, caller, care)
