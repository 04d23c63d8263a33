"""The township dashboard: server-rendered pages on top of the center's HTTP API.

Every page reads through the API with the signed-in person's own token (an in-process call to
the same Litestar app), so the pages show exactly what the API lets that role see, and each
archive read lands in the read log like any other. The token lives in an HttpOnly, SameSite
cookie set at log-in, lasting as long as the token; logging out revokes it.

Forms. Every POST (log-in, resolving a conflict, merging a pair) must come from this site
(``Origin``, or ``Referer`` without it, names this host) and carry a CSRF token bound to the
session (web.security): HMAC of the session cookie's value, or before log-in of a random
``sw_csrf`` cookie, under the app's secret. Anything else is refused with 403 and changes
nothing. The pages carry the security headers of the app (web.security; no inline scripts or
styles) and are not kept by the browser's cache.

Query parameters (``period``, ``as_of``) are checked here and a bad one is a 400 page naming it;
those passed on to the API come back as the API's 400, shown the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap

from projections import followups as pf
from projections.county import SiteOfRegion, township_names
from projections.figures import label_of
from projections.summary import period_name
from service.api.auth import client_address
from web import STATIC_DIR, i18n, lang_of, obj, page
from web.security import CSRF_FIELD, csrf_token, form_refusal, new_session_value

COOKIE = "sw_token"
LOGIN_COOKIE = "sw_csrf"  # before log-in: the random value the log-in form's CSRF token is bound to
MIN_YEAR, MAX_YEAR = 1900, 2199  # as the API's (service.api.app)
_MONTH = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")
_PERIOD = re.compile(r"^([0-9]{4})(-(0[1-9]|1[0-2]|S1|S2|SY))?$")
PREFIX = "/ui"
STALE_AFTER = dt.timedelta(days=3)


class Api:
    """The center's own API, called in-process with the person's token."""

    def __init__(self, request: Request[Any, Any, Any], token: str) -> None:
        app: Any = request.app  # Litestar's ASGI signature is narrower than httpx's annotation
        # The API sees the person's own address (for log-in throttling), not this process's.
        peer = client_address(request.scope, request.app.state.trusted_proxies) or "127.0.0.1"
        transport = httpx.ASGITransport(app=app, client=(peer, 0))
        self._client = httpx.AsyncClient(transport=transport, base_url="http://center",
                                         headers={"Authorization": f"Bearer {token}"}, timeout=60)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        r = await self._client.get(path, params={k: v for k, v in params.items() if v not in (None, "")})
        return r.status_code, _json(r)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        r = await self._client.post(path, json=body)
        return r.status_code, _json(r)

    async def raw(self, path: str, **params: Any) -> httpx.Response:
        return await self._client.get(path, params=params)


def place_names(sites: list[dict[str, Any]]) -> dict[str, str]:
    """Each site of `sites` (the API's /sites items) and each of their townships -> the name
    people know it by: a site's registered name, a township's as projections.county names it."""
    named = {str(s["site_id"]): str(s.get("name") or s["site_id"]) for s in sites}
    towns = township_names([SiteOfRegion(site_id=s["site_id"], kind=s.get("kind") or "", name=named[s["site_id"]],
                                         township_name=s.get("township"), active=True, last_committed_at=None,
                                         newest_occurred_at=None) for s in sites])
    return {**towns, **named}


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _nav(role: str) -> list[tuple[str, str]]:
    if role == "county":  # figures of its townships, no child's page (service.county_pages)
        return [(f"{PREFIX}/county", "nav.county"), (f"{PREFIX}/summary", "nav.summary"),
                (f"{PREFIX}/password", "nav.password"), (f"{PREFIX}/logout", "nav.logout")]
    items = [(f"{PREFIX}/", "nav.overview"), (f"{PREFIX}/children", "nav.children")]
    if role in ("township", "auditor"):
        items += [(f"{PREFIX}/conflicts", "nav.conflicts"), (f"{PREFIX}/duplicates", "nav.duplicates")]
    if role in ("township", "auditor", "admin"):
        items.append((f"{PREFIX}/sites", "nav.sites"))
    if role in ("township", "admin"):
        items.append((f"{PREFIX}/quarantine", "nav.quarantine"))
    if role == "auditor":
        items += [(f"{PREFIX}/reads", "nav.reads"), (f"{PREFIX}/chains", "nav.chains"), (f"{PREFIX}/asof", "nav.asof")]
    elif role == "admin":
        items.append((f"{PREFIX}/chains", "nav.chains"))
    if role != "admin":
        items.append((f"{PREFIX}/rules", "nav.rules"))  # service.rule_pages
        items.append((f"{PREFIX}/summary", "nav.summary"))
    if role in ("admin", "auditor"):
        items.append((f"{PREFIX}/users", "nav.users"))  # service.admin_pages
    items += [(f"{PREFIX}/password", "nav.password"), (f"{PREFIX}/logout", "nav.logout")]
    return items


def _login_redirect() -> Response[str]:
    return Response("", status_code=303, headers={"Location": f"{PREFIX}/login"})


async def _me(request: Request[Any, Any, Any]) -> tuple[str, dict[str, Any]] | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    async with Api(request, token) as api:
        status, me = await api.get("/auth/me")
    if status != 200:
        return None
    me["csrf"] = csrf_token(request.app.state.csrf_secret, token)  # the forms' token, bound to this session
    return token, me


class AnsweredEarly(Exception):
    """A page's answer other than its own: the log-in page, or a refused form. Raised by
    `signed_in` and `signed_form`; the dashboard's router returns its response
    (`DASHBOARD_EXCEPTION_HANDLERS`)."""

    def __init__(self, response: Response[str]) -> None:
        super().__init__(response.status_code)
        self.response = response


def _answered_early(_request: Request[Any, Any, Any], exc: AnsweredEarly) -> Response[str]:
    return exc.response


DASHBOARD_EXCEPTION_HANDLERS: ExceptionHandlersMap = {AnsweredEarly: _answered_early}


async def signed_in(request: Request[Any, Any, Any]) -> tuple[str, dict[str, Any]]:
    """The person's token and who they are (GET /auth/me with it); without a valid session the
    page answers with the log-in page instead."""
    who = await _me(request)
    if who is None:
        raise AnsweredEarly(_login_redirect())
    return who


async def signed_form(request: Request[Any, Any, Any]) -> tuple[str, dict[str, Any], Any]:
    """`signed_in`, and the posted form once it has passed the CSRF check (our own page, this
    session's token); else the page answers 403 and nothing is changed."""
    token, me = await signed_in(request)
    form = await request.form()
    if _refusal(request, token, str(form.get(CSRF_FIELD, ""))) is not None:
        raise AnsweredEarly(_refused(request, me))
    return token, me, form


def _scope(me: dict[str, Any]) -> str | None:
    """The widest scope the person's figures are read for: a site, a township or (the county) a region."""
    if me.get("role") in ("station", "school"):
        return str(me["site_id"])
    if me.get("role") == "county":
        return me.get("region")
    return me.get("township")


def _ctx(me: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"nav": _nav(str(me.get("role"))), "home": f"{PREFIX}/", "prefix": PREFIX, "static_prefix": "/static",
            "site_name": f"{me.get('username')} · {me.get('role')}", "me": me, "csrf_field": CSRF_FIELD,
            "csrf": me.get("csrf", ""), **extra}


def _refusal(request: Request[Any, Any, Any], session_value: str | None, token: str | None) -> str | None:
    """None if this POST came from our own page with its session's token, else which check failed."""
    return form_refusal(request.method, request.headers, request.app.state.csrf_secret, session_value, token)


def _refused(request: Request[Any, Any, Any], me: dict[str, Any] | None) -> Response[str]:
    message = i18n.text("dash.csrf_refused", lang_of(request))
    if me is None:
        return page(request, "dash/message.html", status_code=403, message=message, nav=[], home=f"{PREFIX}/",
                    prefix=PREFIX, static_prefix="/static", site_name="", csrf_field=CSRF_FIELD, csrf="")
    return page(request, "dash/message.html", status_code=403, message=message, **_ctx(me))


def _bad_input(request: Request[Any, Any, Any], me: dict[str, Any], field: str, value: str,
               why_key: str) -> Response[str]:
    """A 400 page naming the query parameter at fault."""
    lang = lang_of(request)
    shown = value if len(value) <= 40 else value[:40] + "…"
    message = i18n.text("dash.bad_input", lang).format(field=field, value=shown, why=i18n.text(why_key, lang))
    return page(request, "dash/message.html", status_code=400, message=message, **_ctx(me))


def _year_ok(match: re.Match[str] | None) -> bool:
    return match is not None and MIN_YEAR <= int(match.group(1)) <= MAX_YEAR


def _is_day(text: str) -> bool:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10 and MIN_YEAR <= day.year <= MAX_YEAR


def _secure(request: Request[Any, Any, Any]) -> bool:
    """Whether cookies are marked Secure: served over HTTPS, or the operator says it is (behind a proxy)."""
    return bool(request.app.state.api_settings.secure_cookies) or request.url.scheme == "https"


def _api_refused(request: Request[Any, Any, Any], me: dict[str, Any], status: int, doc: Any) -> Response[str] | None:
    """The API's 400 or 422 (a parameter passed on was bad, or parameters that do not go together)
    as a 400 page with its message, else None."""
    if status not in (400, 422):
        return None
    return page(request, "dash/message.html", status_code=400, message=(doc or {}).get("message", ""), **_ctx(me))


def _shares(d: dict[str, Any], kind: str, lang: str) -> list[tuple[str, float]]:
    out = []
    for key, value in d.items():
        count = value["count"] if isinstance(value, dict) else value  # a Share, or a plain count
        out.append((i18n.label(kind, key, lang), float(count)))
    return sorted(out, key=lambda kv: -kv[1])


def _month_back(month: str, n: int) -> str:
    y, m = int(month[:4]), int(month[5:7]) - n
    while m <= 0:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}"


def _latest_month(sites: Sequence[dict[str, Any]]) -> str:
    newest = [str(s["newest_occurred_at"]) for s in sites if s.get("newest_occurred_at")]
    if newest:
        return max(newest)[:7]
    return dt.date.today().strftime("%Y-%m")


def _month_end(month: str) -> dt.date:
    y, m = int(month[:4]), int(month[5:7])
    first_next = dt.date(y + (m == 12), m % 12 + 1, 1)
    return first_next - dt.timedelta(days=1)


async def _list_page(request: Request[Any, Any, Any], api_path: str, template: str) -> Response[str]:
    """A page that lists the API's `items` at `api_path` (conflicts, duplicates, quarantine)."""
    token, me = await signed_in(request)
    async with Api(request, token) as api:
        status, doc = await api.get(api_path)
    refused = _api_refused(request, me, status, doc)
    if refused is not None:
        return refused
    items = (doc or {}).get("items", []) if status == 200 else []
    return page(request, template, items=obj(items), done=request.query_params.get("done"), **_ctx(me))


async def _post_form(request: Request[Any, Any, Any], api_path: str, fields: tuple[str, ...],
                     back: str) -> Response[str]:
    """Post a form's fields to the API as JSON (an event of the township's site); on success go
    back to the list, else show the API's message."""
    token, me, form = await signed_form(request)
    body = {k: str(form.get(k, "")) for k in fields}
    async with Api(request, token) as api:
        status, out = await api.post(api_path, body)
    if status != 201:
        return page(request, "dash/message.html", status_code=status, message=(out or {}).get("message", ""),
                    **_ctx(me))
    return Response("", status_code=303, headers={"Location": back})


def dashboard_routes() -> list[ControllerRouterHandler]:
    """Route handlers of the township dashboard, mounted under /ui of the center's app."""

    def _login_page(request: Request[Any, Any, Any], error: str | None, status_code: int = 200) -> Response[str]:
        """The log-in form, with a fresh pre-session value (cookie) and the CSRF token bound to it."""
        seed = new_session_value()
        response = page(request, "dash/login.html", status_code=status_code, nav=[], home=f"{PREFIX}/",
                        prefix=PREFIX, static_prefix="/static", site_name="", error=error, csrf_field=CSRF_FIELD,
                        csrf=csrf_token(request.app.state.csrf_secret, seed))
        response.set_cookie(LOGIN_COOKIE, seed, httponly=True, samesite="strict", path=PREFIX,
                            secure=_secure(request))
        return response

    @get(f"{PREFIX}/login", include_in_schema=False, exclude_from_auth=True)
    async def login_form(request: Request[Any, Any, Any]) -> Response[str]:
        return _login_page(request, None)

    @post(f"{PREFIX}/login", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def login(request: Request[Any, Any, Any]) -> Response[str]:
        form = await request.form()
        refusal = _refusal(request, request.cookies.get(LOGIN_COOKIE), str(form.get(CSRF_FIELD, "")))
        if refusal == "origin":
            return _refused(request, None)
        if refusal is not None:  # our own page, but its token is stale (a restart, a lost cookie): ask again
            return _login_page(request, i18n.text("dash.login_expired", lang_of(request)), status_code=403)
        body = {"username": str(form.get("username", "")), "password": str(form.get("password", ""))}
        async with Api(request, "") as api:
            status, out = await api.post("/auth/token", body)
        if status == 403 and (out or {}).get("code") == "one_time_code":  # a one-time code typed as password
            from service.admin_pages import code_form

            return code_form(request, body["password"])
        if status != 201:
            lang = lang_of(request)
            message = i18n.text("dash.login_failed", lang) if status == 401 else (out or {}).get("message", "")
            return _login_page(request, message, status_code=401 if status == 401 else status)
        expires = dt.datetime.fromisoformat(out["expires_at"])
        lifetime = max(1, int((expires - dt.datetime.now(dt.UTC)).total_seconds()))
        response: Response[str] = Response("", status_code=303, headers={"Location": f"{PREFIX}/"})
        response.set_cookie(COOKIE, out["token"], httponly=True, samesite="strict", path="/", max_age=lifetime,
                            secure=_secure(request))
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    @get(f"{PREFIX}/logout", include_in_schema=False, exclude_from_auth=True)
    async def logout(request: Request[Any, Any, Any]) -> Response[str]:
        token = request.cookies.get(COOKIE)
        if token:
            async with Api(request, token) as api:
                await api._client.delete("/auth/token")
        response: Response[str] = _login_redirect()
        response.delete_cookie(COOKIE, path="/")
        return response

    @get(f"{PREFIX}/", include_in_schema=False, exclude_from_auth=True)
    async def overview(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        if me.get("role") == "county":  # the county's overview compares its townships
            return Response("", status_code=303, headers={"Location": f"{PREFIX}/county"})
        lang = lang_of(request)
        scope = _scope(me)
        async with Api(request, token) as api:
            _, sites_doc = await api.get("/sites")
            sites = (sites_doc or {}).get("items", [])
            asked = request.query_params.get("period")
            if asked and not _year_ok(_MONTH.fullmatch(asked)):
                return _bad_input(request, me, "period", asked, "dash.want_month")
            month = asked or _latest_month(sites)
            rollup = None
            months: list[tuple[str, dict[str, Any]]] = []
            overdue: list[dict[str, Any]] = []
            if scope and me.get("role") != "admin":
                status, rollup = await api.get("/rollups", scope=scope, period=month)
                if status != 200:
                    rollup = None
                for back in range(5, -1, -1):
                    m = _month_back(month, back)
                    s, r = await api.get("/rollups", scope=scope, period=m)
                    if s == 200:
                        months.append((m, r))
                # judged on the last day of the month shown (or today, for the current month)
                judge = min(dt.date.today(), _month_end(month)).isoformat()
                seen: set[tuple[str, str]] = set()
                for site in sites:
                    if site.get("kind") == "township":
                        continue
                    s, doc = await api.get(f"/sites/{quote(site['site_id'])}/overdue", today=judge)
                    for item in doc.get("items", []) if s == 200 else []:
                        key = (item["child_id"], item["rule"])
                        if key not in seen:  # a child is listed by its village station and its school
                            seen.add(key)
                            name = item.get("rule_en" if lang == "en" else "rule_zh") or item["rule"]
                            overdue.append(dict(item, site_id=site["site_id"], site_name=site.get("name"),
                                                rule_name=name))
        now = dt.datetime.now(dt.UTC)
        for site in sites:
            last = site.get("last_contact")
            site["stale"] = last is None or (now - dt.datetime.fromisoformat(last)) > STALE_AFTER
        overdue.sort(key=lambda o: -int(o.get("days_overdue", 0)))
        charts: dict[str, str] = {}
        if rollup:
            from web.charts import bar_chart, donut_chart

            charts["guardianship"] = donut_chart(_shares(rollup["by_guardianship"], "guardianship", lang),
                                                 title=i18n.text("dash.by_guardianship", lang))
            charts["reason"] = bar_chart(_shares(rollup["by_reason"], "reason", lang),
                                         title=i18n.text("dash.by_reason", lang))
            site_names = {s["site_id"]: s.get("name") or s["site_id"] for s in sites}
            charts["site"] = bar_chart(sorted(((site_names.get(k, k), float(v)) for k, v in rollup["by_site"].items()),
                                              key=lambda kv: -kv[1]), title=i18n.text("dash.by_site", lang))
            rules_rows = []
            for m, r in months:  # the townships' rules in force that fell due that month
                for rule, fig in r.get("rules", {}).items():
                    if fig.get("due"):
                        name = fig.get("en" if lang == "en" else "zh") or rule
                        rules_rows.append((f"{m} {name}", float(fig.get("pct_met", 0))))
            charts["rules"] = bar_chart(rules_rows, title=i18n.text("dash.rules", lang), unit="%")
            charts["freshness"] = ""
        kpis = ("children_archived", "overdue_children", "home_visits", "parent_calls", "talks",
                "aid_children", "condolence_households", "condolence_children", "proxy_parent_children",
                "safety_incidents")
        return page(request, "dash/overview.html", rollup=obj(rollup), month=month, charts=charts, sites=obj(sites),
                    scope_name=place_names(sites).get(scope or "", scope or ""),
                    F={k: label_of(k, lang) for k in kpis},
                    overdue=obj(overdue[:30]), scope=scope, **_ctx(me))

    @get(f"{PREFIX}/summary", include_in_schema=False, exclude_from_auth=True)
    async def summary(request: Request[Any, Any, Any]) -> Response[str]:
        """The year-end summary drafted from the figures (projections/summary.py), every number
        with its figure on hover and in a footnote; `print=1` is the A4 print view. It opens on the
        school year of the newest work in the scope, not on today's period."""
        token, me = await signed_in(request)
        lang = lang_of(request)
        scope = request.query_params.get("scope") or _scope(me) or ""
        period = request.query_params.get("period") or ""
        if period and not _year_ok(_PERIOD.fullmatch(period)):
            return _bad_input(request, me, "period", period, "dash.want_period")
        doc = figures = None
        scopes: list[tuple[str, str]] = []
        async with Api(request, token) as api:
            if scope and not period:
                status, latest = await api.get("/summary/latest", scope=scope)
                period = latest["school_year"] if status == 200 else pf.school_year_of(dt.date.today()).label
            if scope:
                status, doc = await api.get("/summary/draft", scope=scope, period=period, lang=lang)
                refused = _api_refused(request, me, status, doc)
                if refused is not None:
                    return refused
                if status != 200:
                    doc = None
                status, figures = await api.get("/rollups/figures", scope=scope, period=period, lang=lang)
                if status != 200:
                    figures = None
            _, sites_doc = await api.get("/sites")
        own = _scope(me)
        if own and own.count(".") == 0:  # the county: its region (townships and sites by the scope parameter)
            scopes = [(own, i18n.text("sum.whole_county", lang))]
            if scope != own:  # a township or site of the region, by the name the draft gives it
                scopes.append((scope, str((doc or {}).get("scope_name") or scope)))
        elif own and own.count(".") == 1:  # township staff and auditors: the township or one of its sites
            scopes = [(own, i18n.text("sum.whole_township", lang))] + [
                (str(x["site_id"]), str(x.get("name") or x["site_id"])) for x in (sites_doc or {}).get("items", [])
                if x.get("kind") != "township"]
        start = pf.parse_period(period).start if period else dt.date.today()
        sy = pf.school_year_of(start)
        choices = [pf.school_year_of(sy.start - dt.timedelta(days=1)), sy, pf.semester_of(sy.start),
                   pf.semester_of(sy.last_day), pf.year_of(start)]
        periods = [(p.label, period_name(p.label, lang)) for p in dict.fromkeys(choices)]
        query = urlencode({"scope": scope, "period": period})
        context = dict(draft=obj(doc), figures=obj(figures), period=period, period_title=period_name(period, lang)
                       if period else "", periods=periods, scope=scope, scopes=scopes, query=query)
        if request.query_params.get("print") == "1":
            return page(request, "dash/summary_print.html", back=f"{PREFIX}/summary?{query}", **context, **_ctx(me))
        return page(request, "dash/summary.html", **context, **_ctx(me))

    @get(f"{PREFIX}/export/{{fmt:str}}", include_in_schema=False, exclude_from_auth=True)
    async def export(request: Request[Any, Any, Any], fmt: FromPath[str]) -> Response[bytes]:
        token, _ = await signed_in(request)
        if fmt not in ("xlsx", "csv", "json", "docx"):
            return Response(b"", status_code=404)
        path = "/summary/draft.docx" if fmt == "docx" else f"/exports/summary.{fmt}"  # the draft, to edit in Word
        async with Api(request, token) as api:
            r = await api.raw(path, **dict(request.query_params))
        headers = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "content-disposition")}
        return Response(r.content, status_code=r.status_code, headers=headers)

    from service.admin_pages import admin_routes  # users (admins), passwords (everyone)
    from service.county_pages import county_routes  # the county's townships side by side, drill-down
    from service.decisions import decision_routes  # conflicts, duplicates, merges (it imports this module)
    from service.rule_pages import rule_routes  # the township's follow-up rules (it imports this module)
    from service.township_pages import township_routes  # children, a child, sites, quarantine, the auditor's pages

    handlers: list[HTTPRouteHandler] = [login_form, login, logout, overview, summary, export, *decision_routes(),
                                        *township_routes(), *admin_routes(), *rule_routes(), *county_routes()]
    static = create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False,
                                        opt={"exclude_from_auth": True})
    return [*handlers, static]
