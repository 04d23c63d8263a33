"""The county's pages of the dashboard: its townships side by side, and the drill-down to a township
and to a site.

Like every page of the dashboard (:mod:`service.dashboard`) they read through the center's API with
the signed-in person's token, so they show only what the ``county`` role may: figures of its region,
no child. Townships and sites are shown by name (a township's name as :mod:`projections.county`
chooses it, a site's from the registry); ids stay in links only. Per-site figures (children by
site, each site's freshness) appear on the township's page, by site name.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from projections import county as pc
from projections import figures as pf
from projections.rollups import Rollup
from service.dashboard import (
    _PERIOD,
    PREFIX,
    STALE_AFTER,
    AnsweredEarly,
    Api,
    _api_refused,
    _bad_input,
    _ctx,
    _latest_month,
    _year_ok,
    signed_in,
)
from web import i18n, lang_of, obj, page
from web.charts import bar_chart

CST = dt.timezone(dt.timedelta(hours=8))
_TOWNSHIP = re.compile(r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}$")
_SITE = re.compile(r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}$")
# The figures of the comparison table and its charts, in this order (projections.figures keys).
HEADLINE = ("children_archived", "children_registered", "children_paired", "proxy_parent_children",
            "rules.proxy_visit.pct_met", "rules.proxy_call.pct_met", "rules.teacher_talk.pct_met", "overdue_children",
            "aid_amount",
            "condolence_visits", "activities", "safety_incidents", "rights_cases_open")
# Figures the drill-down pages leave out of their list: they name sites (shown by name instead).
_PER_SITE = ("by_site.", "freshness.")


def _when(value: str | dt.datetime | None) -> str:
    if not value:
        return ""
    at = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.astimezone(CST).strftime("%Y-%m-%d %H:%M")


def _stale(last: str | dt.datetime | None, now: dt.datetime) -> bool:
    if not last:
        return True
    at = dt.datetime.fromisoformat(last) if isinstance(last, str) else last
    return now - at > STALE_AFTER


def _shown(value: object) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}"
    return str(value)


async def _who(request: Request[Any, Any, Any]) -> tuple[str, dict[str, Any]]:
    """The county user's token and who they are; anyone else gets a page saying the pages are the county's."""
    token, me = await signed_in(request)
    if me.get("role") != "county":
        message = i18n.text("county.only", lang_of(request))
        raise AnsweredEarly(page(request, "dash/message.html", status_code=403, message=message, **_ctx(me)))
    return token, me


async def _period(request: Request[Any, Any, Any], api: Api, me: dict[str, Any]) -> str | Response[str]:
    """The period asked for (checked), else the latest year with work in it."""
    period = request.query_params.get("period") or ""
    if period and not _year_ok(_PERIOD.fullmatch(period)):
        return _bad_input(request, me, "period", period, "dash.want_period")
    if not period:
        _, sites_doc = await api.get("/sites")
        period = _latest_month((sites_doc or {}).get("items", []))[:4]
    return period


def _not_found(request: Request[Any, Any, Any], me: dict[str, Any]) -> Response[str]:
    return page(request, "dash/message.html", status_code=404,
                message=i18n.text("county.not_found", lang_of(request)), **_ctx(me))


async def _rollup_and_sites(request: Request[Any, Any, Any], token: str, me: dict[str, Any], scope: str,
                            township: str) -> tuple[str, Any, list[dict[str, Any]]] | Response[str]:
    """The drill-down pages' reads: the period asked for, the scope's rollup through the API (its
    refusal or a 404 page when it answers otherwise) and the sites of the township."""
    async with Api(request, token) as api:
        period = await _period(request, api, me)
        if isinstance(period, Response):
            return period
        status, doc = await api.get("/rollups", scope=scope, period=period)
        refused = _api_refused(request, me, status, doc)
        if refused is not None:
            return refused
        if status != 200:
            return _not_found(request, me)
        _, sites_doc = await api.get("/sites")
    return period, doc, [s for s in (sites_doc or {}).get("items", []) if s["site_id"].startswith(township + ".")]


def _sites_of_region(items: list[dict[str, Any]]) -> list[pc.SiteOfRegion]:
    return [pc.SiteOfRegion(site_id=s["site_id"], kind=s["kind"], name=s["name"], township_name=s.get("township"),
                            active=s.get("active", True), last_committed_at=None, newest_occurred_at=None)
            for s in items]


def _figure_list(r: Rollup, lang: str) -> list[dict[str, Any]]:
    return [{"label": f.label, "value": _shown(f.value), "unit": f.unit, "pct": f.pct}
            for f in pf.labelled(r, lang) if not f.key.startswith(_PER_SITE)]


def county_routes() -> list[HTTPRouteHandler]:
    """Route handlers of the county's pages, mounted under /ui with the rest of the dashboard."""

    @get(f"{PREFIX}/county", include_in_schema=False, exclude_from_auth=True)
    async def county(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await _who(request)
        lang = lang_of(request)
        async with Api(request, token) as api:
            period = await _period(request, api, me)
            if isinstance(period, Response):
                return period
            status, doc = await api.get("/county/rollups", region=me.get("region"), period=period)
        refused = _api_refused(request, me, status, doc)
        if refused is not None:
            return refused
        if status != 200:
            return _not_found(request, me)
        cr = msgspec.convert(doc, pc.CountyRollup, strict=False)
        rows = pc.comparison(cr, lang)
        by_key = {row.key: row for row in rows}
        chosen = request.query_params.get("figure") or "children_archived"
        if chosen not in by_key:
            return _bad_input(request, me, "figure", chosen, "county.want_figure")
        now = dt.datetime.now(dt.UTC)
        names = [t.name for t in cr.townships]
        columns = [by_key[k] for k in HEADLINE if k in by_key]
        townships = [{"township": t.township, "name": t.name, "values": [_shown(c.values[i]) for c in columns],
                      "sites": t.freshness.sites, "heard": t.freshness.sites_heard,
                      "oldest": _when(t.freshness.oldest_contact), "newest": _when(t.freshness.newest_contact),
                      "stale": t.freshness.sites_heard < t.freshness.sites or _stale(t.freshness.oldest_contact, now),
                      "link": f"{PREFIX}/county/township/{quote(t.township)}?{urlencode({'period': period})}"}
                     for i, t in enumerate(cr.townships)]

        def chart(row: pc.ComparisonRow) -> str:
            values = [(n, float(v)) for n, v in zip(names, row.values, strict=True) if isinstance(v, int | float)]
            return bar_chart(values, title=row.label, unit=row.unit if row.unit in ("%", "元") else "")

        charts = [{"key": c.key, "label": c.label, "svg": chart(c)} for c in columns if c.key != chosen]
        picked = {"key": chosen, "label": by_key[chosen].label, "svg": chart(by_key[chosen]),
                  "total": _shown(by_key[chosen].total), "unit": by_key[chosen].unit}
        choices = [(row.key, row.label) for row in rows if not row.key.startswith("freshness.")]
        export = urlencode({"region": me.get("region") or "", "period": period})
        summary = urlencode({"scope": me.get("region") or "", "period": period})
        return page(request, "dash/county.html", period=period, columns=obj([{"label": c.label, "unit": c.unit,
                                                                                "total": _shown(c.total)}
                                                                               for c in columns]),
                    townships=obj(townships), charts=obj(charts), picked=obj(picked), choices=choices,
                    export=export, summary=summary, **_ctx(me))

    @get(f"{PREFIX}/county/township/{{township:str}}", include_in_schema=False, exclude_from_auth=True)
    async def township(request: Request[Any, Any, Any], township: FromPath[str]) -> Response[str]:
        token, me = await _who(request)
        lang = lang_of(request)
        if not _TOWNSHIP.fullmatch(township):
            return _bad_input(request, me, "township", township, "county.want_township")
        got_rollup = await _rollup_and_sites(request, token, me, township, township)
        if isinstance(got_rollup, Response):
            return got_rollup
        period, doc, sites = got_rollup
        name = pc.township_names(_sites_of_region(sites)).get(township, township)
        r = msgspec.convert(doc, Rollup, strict=False)
        now = dt.datetime.now(dt.UTC)
        q = urlencode({"period": period})
        rows = [{"name": s["name"], "kind": i18n.label("site_kind", s["kind"], lang),
                 "children": r.by_site.get(s["site_id"], 0), "last": _when(s.get("last_contact")),
                 "newest": (s.get("newest_occurred_at") or "")[:10], "stale": _stale(s.get("last_contact"), now),
                 "link": f"{PREFIX}/county/site/{quote(s['site_id'])}?{q}"} for s in sites]
        chart = bar_chart(sorted(((row["name"], float(row["children"])) for row in rows), key=lambda kv: -kv[1]),
                          title=i18n.text("dash.by_site", lang))
        return page(request, "dash/county_township.html", period=period, name=name, sites=obj(rows), chart=chart,
                    figures=obj(_figure_list(r, lang)), back=f"{PREFIX}/county?{q}",
                    export=urlencode({"scope": township, "period": period}), **_ctx(me))

    @get(f"{PREFIX}/county/site/{{site_id:str}}", include_in_schema=False, exclude_from_auth=True)
    async def site(request: Request[Any, Any, Any], site_id: FromPath[str]) -> Response[str]:
        token, me = await _who(request)
        lang = lang_of(request)
        if not _SITE.fullmatch(site_id):
            return _bad_input(request, me, "site_id", site_id, "county.want_site")
        township = site_id.rsplit(".", 1)[0]
        got_rollup = await _rollup_and_sites(request, token, me, site_id, township)
        if isinstance(got_rollup, Response):
            return got_rollup
        period, doc, sites = got_rollup
        this = next((s for s in sites if s["site_id"] == site_id), None)
        if this is None:
            return _not_found(request, me)
        r = msgspec.convert(doc, Rollup, strict=False)
        q = urlencode({"period": period})
        return page(request, "dash/county_site.html", period=period, name=this["name"],
                    kind=i18n.label("site_kind", this["kind"], lang),
                    township=pc.township_names(_sites_of_region(sites)).get(township, township),
                    last=_when(this.get("last_contact")), newest=(this.get("newest_occurred_at") or "")[:10],
                    stale=_stale(this.get("last_contact"), dt.datetime.now(dt.UTC)),
                    figures=obj(_figure_list(r, lang)), back=f"{PREFIX}/county?{q}",
                    up=f"{PREFIX}/county/township/{quote(township)}?{q}", **_ctx(me))

    @get(f"{PREFIX}/county/export/{{fmt:str}}", include_in_schema=False, exclude_from_auth=True)
    async def export(request: Request[Any, Any, Any], fmt: FromPath[str]) -> Response[bytes]:
        token, _ = await signed_in(request)
        if fmt not in ("xlsx", "csv"):
            return Response(b"", status_code=404)
        async with Api(request, token) as api:
            r = await api.raw(f"/exports/county.{fmt}", **dict(request.query_params))
        headers = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "content-disposition")}
        return Response(r.content, status_code=r.status_code, headers=headers)

    return [county, township, site, export]
