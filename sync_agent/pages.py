"""The station's own web pages, served by `shouwang agent serve` from the agent's local data.

They work with no connection at all: the children list and archives are the merged view the
agent holds (its own events and those the center fanned out to it), the overdue list is
computed from those archives, and a form posts a draft that is recorded in the local log
(durable before the page says "saved") and uploaded when the line is back.

Only a logged-in person sees them (``/login``; the door, sync_agent/door.py, sends everyone
else here). Every form carries the session's CSRF token and a post without it changes nothing;
what a form records carries the person as its ``actor``; opening a child's page is written to
the read log (sync_agent/readlog.py) before the page is shown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.handlers import HTTPRouteHandler
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from events.ids import mask_resident_id
from sync_agent.accounts import Accounts
from sync_agent.child_pages import child_routes
from sync_agent.config import SiteConfig
from sync_agent.door import cookie_name, form_csrf_ok, identity_of, session_csrf, set_cookie
from sync_agent.forms import forms_for
from sync_agent.locallog import LocalLog
from sync_agent.readlog import ReadLog
from sync_agent.record_pages import record_routes
from sync_agent.roster_pages import roster_routes
from sync_agent.status import site_status
from sync_agent.view import station_archives
from web import STATIC_DIR, i18n, lang_of, page
from web.security import CSRF_FIELD, csrf_ok, csrf_token, new_session_value

# Failed log-ins per user name before it is locked for LOCK_SECONDS (a guessing program).
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60


def station_routes(log: LocalLog, config: SiteConfig, on_recorded: Callable[[], None], *, accounts: Accounts,
                   reads: ReadLog, on_read: Callable[[], None], secret: bytes) -> list[ControllerRouterHandler]:
    """Route handlers for the station pages (mounted beside the agent's JSON endpoints)."""
    nav = [("/", "nav.children"), ("/overdue", "nav.overdue"), ("/record", "nav.record"),
           ("/print/roster", "nav.roster")]
    session_cookie = cookie_name(config.site_id)
    login_cookie = cookie_name(config.site_id, "login")
    failures: dict[str, list[float]] = {}
    listed = [(t, f) for t, f in forms_for(config.kind).items() if f.listed]  # this kind of site's forms
    archives = station_archives(log)  # every page's archives, rebuilt per child as events change

    def common(request: Request[Any, Any, Any]) -> dict[str, Any]:
        status = site_status(log, config)
        who = identity_of(request)
        return {"nav": nav, "home": "/", "prefix": "", "static_prefix": "/static", "site_name": config.name,
                "sync": {"pending": status["pending"], "last_contact": (status["last_contact"] or "")[:19]
                         .replace("T", " ")}, "forms": listed,
                "user": who.name, "csrf_token": session_csrf(secret, who)}

    def refused(request: Request[Any, Any, Any], ctx: dict[str, Any]) -> Response[str]:
        return page(request, "station/message.html", status_code=403,
                    message=i18n.text("station.csrf_refused", lang_of(request)), **ctx)

    # --- log-in -------------------------------------------------------------------------

    def login_page(request: Request[Any, Any, Any], *, status: int = 200, error: str = "", nxt: str = "/",
                   ) -> Response[str]:
        pre = request.cookies.get(login_cookie) or ""
        fresh = not pre or len(pre) > 64
        if fresh:
            pre = new_session_value()
        response = page(request, "station/login.html", status_code=status, nav=[], home="/login", prefix="",
                        static_prefix="/static", site_name=config.name, error=error, next=nxt,
                        csrf_token=csrf_token(secret, pre))
        if fresh:
            set_cookie(response, login_cookie, pre, max_age=3600, secure=_tls(request))
        response.headers["Cache-Control"] = "no-store"
        return response

    @get("/login", include_in_schema=False)
    async def login_form(request: Request[Any, Any, Any]) -> Response[str]:
        return login_page(request, nxt=_safe_next(request.query_params.get("next")))

    @post("/login", include_in_schema=False, status_code=200)
    async def login(request: Request[Any, Any, Any]) -> Response[str]:
        form = await request.form()
        lang = lang_of(request)
        nxt = _safe_next(_one(form, "next"))
        if not csrf_ok(secret, request.cookies.get(login_cookie), _one(form, CSRF_FIELD)):
            return login_page(request, status=403, error=i18n.text("station.login_expired", lang), nxt=nxt)
        name, password = _one(form, "username").strip()[:64], _one(form, "password")
        now = time.monotonic()
        recent = [t for t in failures.get(name, []) if now - t < LOCK_SECONDS]
        if len(recent) >= MAX_FAILURES:
            return login_page(request, status=429, nxt=nxt, error=i18n.text(
                "station.login_locked", lang, m=int((LOCK_SECONDS - (now - recent[0])) // 60) + 1))
        user = await asyncio.to_thread(accounts.authenticate, name, password)
        if user is None:
            failures[name] = [*recent, now]
            if len(failures) > 10_000:  # bounded: a flood of made-up names forgets the oldest
                failures.pop(next(iter(failures)))
            return login_page(request, status=401, error=i18n.text("station.login_failed", lang), nxt=nxt)
        failures.pop(name, None)
        lifetime = dt.timedelta(minutes=config.session_minutes)
        sid = await asyncio.to_thread(accounts.open_session, user, lifetime)
        response: Response[str] = Response("", status_code=303, headers={"Location": nxt, "Cache-Control": "no-store"})
        set_cookie(response, session_cookie, sid, max_age=int(lifetime.total_seconds()), secure=_tls(request))
        set_cookie(response, login_cookie, "", max_age=0, secure=_tls(request))
        return response

    @post("/logout", include_in_schema=False, status_code=200)
    async def logout(request: Request[Any, Any, Any]) -> Response[str]:
        who = identity_of(request)
        if not form_csrf_ok(secret, who, _one(await request.form(), CSRF_FIELD)):
            return refused(request, await asyncio.to_thread(common, request))
        await asyncio.to_thread(accounts.close_session, who)
        response: Response[str] = Response("", status_code=303, headers={"Location": "/login"})
        set_cookie(response, session_cookie, "", max_age=0, secure=_tls(request))
        return response

    # --- the pages ----------------------------------------------------------------------

    @get("/", include_in_schema=False)
    async def children(request: Request[Any, Any, Any]) -> Response[str]:
        today = dt.date.today()
        lang = lang_of(request)

        def rows() -> list[dict[str, Any]]:
            listed = archives.listed()
            late = archives.rule_overdue(config.site_id, str(config.kind), today)[0]
            return [{
                "child_id": a.child_id, "name": a.name, "sex": a.sex, "grade": a.grade, "open": a.open,
                "guardianship": a.guardian.type if a.guardian else None,
                "resident_id_masked": mask_resident_id(a.resident_id),
                "overdue": [f.en if lang == "en" else f.zh for f, _ in late.get(a.child_id, [])],
            } for a in sorted(listed, key=lambda a: (a.name or "", a.child_id))]

        return page(request, "station/children.html", children=await asyncio.to_thread(rows),
                    **await asyncio.to_thread(common, request))

    @get("/overdue", include_in_schema=False)
    async def overdue(request: Request[Any, Any, Any]) -> Response[str]:
        today = dt.date.today()
        lang = lang_of(request)
        listed = await asyncio.to_thread(archives.listed)
        # the township's rules in force (projections.rules), kept until the log changes
        late = (await asyncio.to_thread(archives.rule_overdue, config.site_id, str(config.kind), today))[0]
        items: list[dict[str, Any]] = sorted(
            ({"child_id": child, "rule": f.rule_id, "label": f.en if lang == "en" else f.zh,
              "days_overdue": o.days_overdue} for child, found in late.items() for f, o in found),
            key=lambda o: (-o["days_overdue"], o["rule"], o["child_id"]))
        names = {a.child_id: a.name or a.child_id for a in listed}
        return page(request, "station/overdue.html", overdue=items, names=names,
                    **await asyncio.to_thread(common, request))

    static = create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False)
    handlers: list[HTTPRouteHandler] = [login_form, login, logout, children, overdue]
    handlers += record_routes(log, config, on_recorded, secret=secret, common=common)
    handlers += child_routes(log, config, reads=reads, on_read=on_read, common=common)
    handlers += roster_routes(log, config, on_recorded, common=common, nav=nav, secret=secret)
    return [*handlers, static]


def _one(form: FormMultiDict, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this station only (never another site)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or len(target) > 2000:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target


def _tls(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"
