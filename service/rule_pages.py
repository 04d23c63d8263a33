"""The dashboard's page of the township's follow-up rules (``/ui/rules``): each rule in Chinese
(English selectable), whom it applies to, what counts and how often, and its figures for a
period (due, met, the percentage, who is overdue); a township supervisor changes a rule's "at
least" and period from a day on, or stops it, through the API (``POST /rules``,
``POST /rules/{id}/retire``: events of the township office's site), and every figure of a
period from that day follows.

Registered by :func:`service.dashboard.dashboard_routes` (``rule_routes()``); reads and writes
through the API with the person's own token, like every dashboard page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from events.rules import PeriodKind
from service.dashboard import (
    _PERIOD,
    PREFIX,
    Api,
    _api_refused,
    _bad_input,
    _ctx,
    _is_day,
    _scope,
    _year_ok,
    signed_form,
    signed_in,
)
from web import i18n, lang_of, obj, page

PERIOD_KINDS = [str(k) for k in PeriodKind]


def rule_routes() -> list[HTTPRouteHandler]:
    @get(f"{PREFIX}/rules", include_in_schema=False, exclude_from_auth=True)
    async def rules_page(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        scope = _scope(me)  # a site, a township, or the county's region
        if scope is None:
            return _bad_input(request, me, "scope", "", "rules.want_scope")
        today = dt.date.today()
        period = request.query_params.get("period") or f"{today.year:04d}"
        if not _year_ok(_PERIOD.match(period)):
            return _bad_input(request, me, "period", period, "dash.want_period")
        as_of = request.query_params.get("as_of") or ""
        if as_of and not _is_day(as_of):
            return _bad_input(request, me, "as_of", as_of, "dash.want_day")
        school_year = today.year if today.month >= 8 else today.year - 1
        async with Api(request, token) as api:
            status, doc = await api.get("/rules", scope=scope, period=period, as_of=as_of)
            cal_status, cal = (await api.get("/rules/calendar", scope=scope, school_year=school_year)
                               if scope.count(".") else (404, None))
        refused = _api_refused(request, me, status, doc)
        if refused is not None:
            return refused
        lang = lang_of(request)
        rows = [{**r, "name": r["en"] if lang == "en" else r["zh"],
                 "applies": r["applies_en"] if lang == "en" else r["applies_zh"],
                 "what": "、".join(i18n.label("event", t, lang) for t in r["event_types"]),
                 "every": i18n.text("rules.every", lang, n=r["at_least"],
                                    period=i18n.text("rules.period." + r["period_kind"], lang))}
                for r in (doc or [])] if status == 200 else []
        return page(request, "dash/rules.html", rules=obj(rows), period=period, as_of=as_of, scope=scope,
                    calendar=obj(cal) if cal_status == 200 else None, school_year=school_year,
                    can_change=me.get("role") == "township", kinds=PERIOD_KINDS, today=today.isoformat(),
                    done=request.query_params.get("done"), **_ctx(me))

    async def _form(request: Request[Any, Any, Any]) -> tuple[str, dict[str, Any], dict[str, str]]:
        token, me, form = await signed_form(request)
        return token, me, {k: str(v) for k, v in form.items()}

    def _failed(request: Request[Any, Any, Any], me: dict[str, Any], status: int, out: Any) -> Response[str]:
        return page(request, "dash/message.html", status_code=status, message=(out or {}).get("message", ""),
                    **_ctx(me))

    @post(f"{PREFIX}/rules/{{rule_id:str}}", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def change(request: Request[Any, Any, Any], rule_id: FromPath[str]) -> Response[str]:
        token, me, form = await _form(request)
        day = form.get("effective_from", "")
        if not _is_day(day):
            return _bad_input(request, me, "effective_from", day, "dash.want_day")
        try:
            at_least = int(form.get("at_least", ""))
        except ValueError:
            return _bad_input(request, me, "at_least", form.get("at_least", ""), "rules.want_at_least")
        if form.get("period") not in PERIOD_KINDS:
            return _bad_input(request, me, "period", form.get("period", ""), "rules.want_period")
        async with Api(request, token) as api:
            status, history = await api.get("/rules/history", scope=me.get("township"), day=day)
            current = next((h["in_force"] for h in history or [] if h["rule_id"] == rule_id and h["in_force"]),
                           None) if status == 200 else None
            if current is None:
                return _bad_input(request, me, "rule_id", rule_id, "rules.want_rule")
            rule = {**current, "counts": {**current["counts"], "at_least": at_least, "period": form["period"]},
                    "zh": form.get("zh") or current["zh"], "en": form.get("en") or current["en"]}
            status, out = await api.post("/rules", {"rule": rule, "effective_from": day,
                                                    "note": form.get("note") or None})
        if status != 201:
            return _failed(request, me, status, out)
        done = quote(i18n.text("rules.changed", lang_of(request), day=day))
        return Response("", status_code=303, headers={"Location": f"{PREFIX}/rules?done={done}"})

    @post(f"{PREFIX}/rules/{{rule_id:str}}/retire", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def retire(request: Request[Any, Any, Any], rule_id: FromPath[str]) -> Response[str]:
        token, me, form = await _form(request)
        day = form.get("effective_from", "")
        if not _is_day(day):
            return _bad_input(request, me, "effective_from", day, "dash.want_day")
        async with Api(request, token) as api:
            status, out = await api.post(f"/rules/{quote(rule_id)}/retire",
                                         {"effective_from": day, "note": form.get("note") or None})
        if status != 201:
            return _failed(request, me, status, out)
        done = quote(i18n.text("rules.retired", lang_of(request), day=day))
        return Response("", status_code=303, headers={"Location": f"{PREFIX}/rules?done={done}"})

    @post(f"{PREFIX}/rules-calendar", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def set_calendar(request: Request[Any, Any, Any]) -> Response[str]:
        token, me, form = await _form(request)
        days = {}
        for field in ("autumn_first", "autumn_last", "spring_first", "spring_last"):
            value = form.get(field, "")
            if not _is_day(value):
                return _bad_input(request, me, field, value, "dash.want_day")
            days[field] = value
        year = form.get("school_year", "")
        if not year.isdigit() or not 2000 <= int(year) <= 2100:
            return _bad_input(request, me, "school_year", year, "rules.want_school_year")
        body = {"calendar": {"school_year": int(year), "terms": [[days["autumn_first"], days["autumn_last"]],
                                                                 [days["spring_first"], days["spring_last"]]]},
                "note": form.get("note") or None}
        async with Api(request, token) as api:
            status, out = await api.post("/rules/calendar", body)
        if status != 201:
            return _failed(request, me, status, out)
        done = quote(i18n.text("rules.calendar_set", lang_of(request), year=year))
        return Response("", status_code=303, headers={"Location": f"{PREFIX}/rules?done={done}"})

    return [rules_page, change, retire, set_calendar]
