"""User administration and passwords on the dashboard.

``/ui/users`` (admins): every user (name, role, site or township, active, last log-in), a form to
add one (role and site or township chosen from lists; a one-time code shown once, or a password
typed twice), and per user disable, enable and reset (a one-time code shown once). Admins and
auditors see the log of account actions there (auditors only the log). ``/ui/password``: anyone
signed in changes their own password (the old one, the new twice); with ``?code=...`` (or after
typing a one-time code at the log-in form) a person sets their own password with the code and is
signed in. Each page reads and writes through the center's API with the person's token (as every
dashboard page, service.dashboard); every form carries the session's CSRF token and must come
from this site (for the code form, the pre-session cookie's token, as the log-in form).

Registered by :func:`service.dashboard.dashboard_routes` (``admin_routes()``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from service import dashboard as d
from service.api.auth import ROLES
from service.decisions import local_time
from web import i18n, lang_of, obj, page
from web.security import CSRF_FIELD, csrf_token, new_session_value

PREFIX = d.PREFIX
SITE_ROLES = {"station": "village", "school": "school", "township": "township"}


def _message(request: Request[Any, Any, Any], me: dict[str, Any], status: int, message: str) -> Response[str]:
    return page(request, "dash/message.html", status_code=status, message=message, **d._ctx(me))


_FIELDS = ("username", "display_name", "role", "site_id", "township", "region", "password", "old_password",
           "new_password", "code")


def _problem(out: Any, lang: str, default_field: str = "username") -> str:
    """The API's refusal in words: the field it names and what is wrong (the API's own message in
    English; in Chinese what the field wants, since the API states its reasons in English)."""
    doc = out if isinstance(out, dict) else {}
    field = doc.get("field") or default_field
    if field not in _FIELDS:
        field = default_field
    why = str(doc.get("message", "")) if lang == "en" else i18n.text(f"users.why.{field}", lang)
    if doc.get("status") == 409:
        why = str(doc.get("message", "")) if lang == "en" else i18n.text("users.why.exists", lang)
    return i18n.text("users.field_problem", lang, field=i18n.text(f"users.f.{field}", lang), message=why)


def _api_message(request: Request[Any, Any, Any], me: dict[str, Any], status: int, out: Any) -> Response[str]:
    """The API's refusal as a page naming the field."""
    return _message(request, me, status if status >= 400 else 502, _problem(out, lang_of(request)))


def _forbidden(request: Request[Any, Any, Any], me: dict[str, Any]) -> Response[str]:
    return _message(request, me, 403, i18n.text("users.admins_only", lang_of(request)))


def _user_row(u: dict[str, Any], lang: str, names: dict[str, str]) -> dict[str, Any]:
    place = u.get("site_id") or u.get("township") or u.get("region")
    return {**u, "role_label": i18n.text(f"users.role.{u['role']}", lang),
            "where": i18n.text("users.all_sites", lang) if not place else
            f"{names[place]} · {place}" if names.get(place, place) != place else place,
            "last_login": local_time(u.get("last_login_at")) or i18n.text("users.never", lang),
            "code_until": local_time(u.get("code_expires_at"))}


def _log_row(e: dict[str, Any], lang: str) -> dict[str, Any]:
    return {**e, "when": local_time(e.get("at")), "what": i18n.text(f"users.action.{e['action']}", lang)}


async def _users_page(request: Request[Any, Any, Any], token: str, me: dict[str, Any], *, status_code: int = 200,
                      code: dict[str, Any] | None = None, error: str | None = None,
                      form: dict[str, str] | None = None) -> Response[str]:
    lang = lang_of(request)
    is_admin = me.get("role") == "admin"
    users: list[dict[str, Any]] = []
    sites: list[dict[str, Any]] = []
    async with d.Api(request, token) as api:
        if is_admin:
            _, users_doc = await api.get("/users")
            _, sites_doc = await api.get("/sites")
            every = (sites_doc or {}).get("items", [])
            names = d.place_names(every)
            users = [_user_row(u, lang, names) for u in (users_doc or {}).get("items", [])]
            sites = [s for s in every if s.get("active", True)]
        _, log_doc = await api.get("/account-log", limit=200)
    log = [_log_row(e, lang) for e in (log_doc or {}).get("items", [])]
    town_names = d.place_names(sites)
    townships = [(t, town_names.get(t, t)) for t in sorted({s["site_id"].rsplit(".", 1)[0] for s in sites})]
    regions = sorted({s["site_id"].split(".", 1)[0] for s in sites})
    link = None
    if code is not None:
        link = f"{request.base_url}".rstrip("/") + f"{PREFIX}/password?code={quote(code['code'])}"
    return page(request, "dash/users.html", status_code=status_code, users=obj(users), sites=obj(sites),
                townships=townships, regions=regions, log=obj(log), is_admin=is_admin, roles=ROLES, code=obj(code),
                code_link=link,
                code_until=local_time(code["expires_at"]) if code else "", error=error, form=form or {},
                done=request.query_params.get("done"), **d._ctx(me))


async def _admin_post(request: Request[Any, Any, Any]) -> tuple[str, dict[str, Any], Any]:
    """The signed-in admin's token, who they are and the form; else the page answers with its refusal."""
    token, me, form = await d.signed_form(request)
    if me.get("role") != "admin":
        raise d.AnsweredEarly(_forbidden(request, me))
    return token, me, form


def _code_form(request: Request[Any, Any, Any], code: str, *, error: str | None = None,
               status_code: int = 200) -> Response[str]:
    """The form that sets a password with a one-time code (no session yet: the CSRF token is bound
    to a fresh pre-session cookie, as the log-in form's)."""
    seed = new_session_value()
    response = page(request, "dash/password.html", status_code=status_code, nav=[], home=f"{PREFIX}/",
                    prefix=PREFIX, static_prefix="/static", site_name="", csrf_field=CSRF_FIELD,
                    csrf=csrf_token(request.app.state.csrf_secret, seed), code=code, error=error,
                    rule=i18n.text("users.rule", lang_of(request)))
    response.set_cookie(d.LOGIN_COOKIE, seed, httponly=True, samesite="strict", path=PREFIX,
                        secure=d._secure(request))
    return response


def code_form(request: Request[Any, Any, Any], code: str) -> Response[str]:
    """What the log-in form shows when someone typed their one-time code as the password."""
    return _code_form(request, code, error=i18n.text("users.code_at_login", lang_of(request)))


def _mismatch(lang: str) -> str:
    return i18n.text("users.field_problem", lang, field=i18n.text("users.f.password2", lang),
                     message=i18n.text("users.passwords_differ", lang))


def admin_routes() -> list[HTTPRouteHandler]:
    """The dashboard's user administration and password pages (under /ui)."""

    @get(f"{PREFIX}/users", include_in_schema=False, exclude_from_auth=True)
    async def users(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await d.signed_in(request)
        if me.get("role") not in ("admin", "auditor"):
            return _forbidden(request, me)
        return await _users_page(request, token, me)

    @post(f"{PREFIX}/users", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def add(request: Request[Any, Any, Any]) -> Response[str]:
        token, me, form = await _admin_post(request)
        lang = lang_of(request)
        fields = {k: str(form.get(k, "")).strip() for k in ("username", "display_name", "role", "site_id",
                                                              "township", "region", "how")}
        role = fields["role"]
        body: dict[str, Any] = {"username": fields["username"], "role": role,
                                "display_name": fields["display_name"][:40]}
        if role in SITE_ROLES:
            body["site_id"] = fields["site_id"]
        elif role == "auditor":
            body["township"] = fields["township"]
        elif role == "county":
            body["region"] = fields["region"] or None
        if fields["how"] == "password":
            password, again = str(form.get("password", "")), str(form.get("password2", ""))
            if password != again:
                return await _users_page(request, token, me, status_code=400, error=_mismatch(lang), form=fields)
            body["password"] = password
        async with d.Api(request, token) as api:
            status, out = await api.post("/users", body)
            if status != 201:
                return await _users_page(request, token, me, status_code=status, error=_problem(out, lang),
                                         form=fields)
            code = None
            if fields["how"] != "password":
                c_status, code = await api.post(f"/users/{quote(fields['username'])}/reset", {})
                if c_status != 201:
                    return _api_message(request, me, c_status, code)
        if code is None:
            return Response("", status_code=303, headers={"Location": f"{PREFIX}/users?done=added"})
        return await _users_page(request, token, me, code=code)

    async def _act(request: Request[Any, Any, Any], username: str, action: str) -> Response[str]:
        token, me, _ = await _admin_post(request)
        async with d.Api(request, token) as api:
            status, out = await api.post(f"/users/{quote(username)}/{action}", {})
        if status not in (200, 201):
            return _api_message(request, me, status, out)
        if action == "reset":
            return await _users_page(request, token, me, code=out)
        return Response("", status_code=303, headers={"Location": f"{PREFIX}/users?done={action}d"})

    @post(f"{PREFIX}/users/{{username:str}}/disable", include_in_schema=False, exclude_from_auth=True,
          status_code=200)
    async def disable(request: Request[Any, Any, Any], username: FromPath[str]) -> Response[str]:
        return await _act(request, username, "disable")

    @post(f"{PREFIX}/users/{{username:str}}/enable", include_in_schema=False, exclude_from_auth=True,
          status_code=200)
    async def enable(request: Request[Any, Any, Any], username: FromPath[str]) -> Response[str]:
        return await _act(request, username, "enable")

    @post(f"{PREFIX}/users/{{username:str}}/reset", include_in_schema=False, exclude_from_auth=True,
          status_code=200)
    async def reset(request: Request[Any, Any, Any], username: FromPath[str]) -> Response[str]:
        return await _act(request, username, "reset")

    @get(f"{PREFIX}/password", include_in_schema=False, exclude_from_auth=True)
    async def password_form(request: Request[Any, Any, Any]) -> Response[str]:
        code = request.query_params.get("code")
        if code:
            return _code_form(request, code[:64])
        _, me = await d.signed_in(request)
        return page(request, "dash/password.html", code=None, error=None, done=request.query_params.get("done"),
                    rule=i18n.text("users.rule", lang_of(request)), **d._ctx(me))

    @post(f"{PREFIX}/password", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def password_set(request: Request[Any, Any, Any]) -> Response[str]:
        form = await request.form()
        lang = lang_of(request)
        new, again = str(form.get("new_password", "")), str(form.get("new_password2", ""))
        if "code" in form:
            code = str(form.get("code", ""))[:64]
            refusal = d._refusal(request, request.cookies.get(d.LOGIN_COOKIE), str(form.get(CSRF_FIELD, "")))
            if refusal == "origin":
                return d._refused(request, None)
            if refusal is not None:
                return _code_form(request, code, error=i18n.text("dash.login_expired", lang), status_code=403)
            if new != again:
                return _code_form(request, code, error=_mismatch(lang), status_code=400)
            async with d.Api(request, "") as api:
                status, out = await api.post("/auth/password/code", {"code": code, "new_password": new})
                if status != 200:
                    return _code_form(request, code, error=_problem(out, lang, "code"), status_code=status)
                status, login = await api.post("/auth/token", {"username": out["username"], "password": new})
            if status != 201:
                return Response("", status_code=303, headers={"Location": f"{PREFIX}/login"})
            response: Response[str] = Response("", status_code=303,
                                               headers={"Location": f"{PREFIX}/password?done=1"})
            response.set_cookie(d.COOKIE, login["token"], httponly=True, samesite="strict", path="/",
                                secure=d._secure(request))
            response.delete_cookie(d.LOGIN_COOKIE, path=PREFIX)
            return response
        token, me = await d.signed_in(request)
        if d._refusal(request, token, str(form.get(CSRF_FIELD, ""))) is not None:
            return d._refused(request, me)
        rule = i18n.text("users.rule", lang)
        if new != again:
            return page(request, "dash/password.html", status_code=400, code=None, error=_mismatch(lang), done=None,
                        rule=rule, **d._ctx(me))
        async with d.Api(request, token) as api:
            status, out = await api.post("/auth/password", {"old_password": str(form.get("old_password", "")),
                                                            "new_password": new})
        if status != 200:
            error = _problem(out, lang, "new_password")
            return page(request, "dash/password.html", status_code=status, code=None, error=error, done=None,
                        rule=rule, **d._ctx(me))
        return Response("", status_code=303, headers={"Location": f"{PREFIX}/password?done=1"})

    return [users, add, disable, enable, reset, password_form, password_set]
