"""The station's roster import and its "this week" list, served by `shouwang agent serve` beside
the other station pages (registered from `sync_agent/pages.py`, behind the same door).

* ``GET /import``: how to import a roster (花名册), the template to download, the upload form.
* ``GET /import/template.xlsx``: the empty roster in Chinese (`roster_import.template_bytes`).
* ``POST /import``: the sheet (multipart, field ``roster``, with the session's CSRF token), at most
  `roster_import.MAX_BYTES`; every new child registered in one `LocalLog.record`, or nobody, with
  each problem listed by row and column (`roster_import.import_roster`).
* ``GET /this-week``: who is overdue for a contact and whose contact falls due in the next 7
  days, by the township's follow-up rules in force (`projections.rules`: the defaults, or what
  the township office set and the center fanned out), each with a link to the form that records
  that contact (``/record/<EventType>?child=...``).
  ``?day=YYYY-MM-DD`` shows the week from another day (by the rules, a monthly contact falls due
  on a month's last day, so most weeks list nobody as due: a director plans the next one).

The archives behind "this week" are the station's one cache (`sync_agent.view.station_archives`),
rebuilt only for the children whose events changed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import HTTPRouteHandler

from projections import rules
from sync_agent.config import SiteConfig
from sync_agent.door import form_csrf_ok, identity_of
from sync_agent.locallog import LocalLog, LocalLogError
from sync_agent.roster_import import (
    COLUMNS,
    MAX_BYTES,
    MAX_ROWS,
    XLSX_TYPE,
    BadFile,
    Outcome,
    import_roster,
    template_bytes,
)
from sync_agent.view import StationArchives, station_archives
from web import i18n, lang_of, page
from web.security import CSRF_FIELD

WEEK_DAYS = 7
TEMPLATE_NAME = "儿童花名册模板.xlsx"


def this_week(archives: StationArchives, site: str, kind: str, today: dt.date, lang: str = i18n.DEFAULT_LANG
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(overdue, due within WEEK_DAYS) rows by child rule of the township's rules in force
    (projections.rules, `StationArchives.rule_overdue`): overdue on `today`; due this week is what
    will be overdue `WEEK_DAYS` days later and is not yet."""
    names = {a.child_id: a.name or "" for a in archives.rule_inputs(site, kind).archives}

    now, then = ({(f.rule_id, child): (f, o) for child, found in by_child.items() for f, o in found}
                 for by_child in archives.rule_overdue(site, kind, today, today + dt.timedelta(days=WEEK_DAYS)))
    overdue = [_row(names, f, o, today, lang) for f, o in now.values()]
    due = [_row(names, f, o, today, lang) for key, (f, o) in then.items() if key not in now]
    overdue.sort(key=lambda r: (-r["days_overdue"], r["name"], r["rule"]))
    due.sort(key=lambda r: (r["due_on"], r["name"], r["rule"]))
    return overdue, due


def _day(raw: str | None, today: dt.date) -> dt.date:
    """``?day=YYYY-MM-DD``: the week from another day (planning the next one), within a year of
    today; anything else is today."""
    try:
        day = dt.date.fromisoformat(raw or "")
    except ValueError:
        return today
    return day if abs((day - today).days) <= 366 else today


def _row(names: dict[str, str], f: rules.RuleFigures, o: rules.OverdueEntry, today: dt.date, lang: str
         ) -> dict[str, Any]:
    form = f.event_types[0]
    return {"child_id": o.subject, "name": names.get(o.subject, ""), "rule": f.rule_id,
            "label": f.en if lang == "en" else f.zh, "due_on": o.due_on, "last_done": o.last_done,
            "days_overdue": (today - o.due_on).days, "days_left": (o.due_on - today).days,
            "form": f"/record/{form}?child={quote(o.subject)}",
            "do": i18n.text("week.record", lang, what=i18n.label("event", form, lang))}


def roster_routes(log: LocalLog, config: SiteConfig, on_recorded: Callable[[], None], *,
                  common: Callable[[Request[Any, Any, Any]], dict[str, Any]], nav: list[tuple[str, str]],
                  secret: bytes) -> list[HTTPRouteHandler]:
    """The import and "this week" handlers; adds their entries to the station's `nav`."""
    for entry in (("/this-week", "nav.this_week"), ("/import", "nav.import")):
        if entry not in nav:
            nav.append(entry)
    archives = station_archives(log)  # the station's one cache of archives (sync_agent/view.py)
    template = template_bytes()
    required = [c.header for c in COLUMNS if c.required]

    def import_page(request: Request[Any, Any, Any], ctx: dict[str, Any], *, status: int = 200,
                    outcome: Outcome | None = None, error: str = "") -> Response[str]:
        return page(request, "station/import.html", status_code=status, outcome=outcome, error=error,
                    required=required, mb=MAX_BYTES // (1024 * 1024), max_rows=MAX_ROWS, **ctx)

    @get("/import", include_in_schema=False)
    async def import_form(request: Request[Any, Any, Any]) -> Response[str]:
        return import_page(request, await asyncio.to_thread(common, request))

    @get("/import/template.xlsx", include_in_schema=False)
    async def import_template() -> Response[bytes]:
        disposition = f"attachment; filename=\"roster-template.xlsx\"; filename*=UTF-8''{quote(TEMPLATE_NAME)}"
        return Response(template, media_type=XLSX_TYPE, headers={"Content-Disposition": disposition,
                                                                 "Cache-Control": "no-store"})

    @post("/import", include_in_schema=False, status_code=200, request_max_body_size=MAX_BYTES + 256 * 1024)
    async def import_post(request: Request[Any, Any, Any]) -> Response[str]:
        ctx = await asyncio.to_thread(common, request)
        lang = lang_of(request)
        try:
            form = await request.form()
        except RequestEntityTooLarge:
            return import_page(request, ctx, status=413, error=i18n.text("import.too_big", lang,
                                                                          mb=MAX_BYTES // (1024 * 1024)))
        who = identity_of(request)
        posted = form.get(CSRF_FIELD)
        if not form_csrf_ok(secret, who, posted if isinstance(posted, str) else None):
            return page(request, "station/message.html", status_code=403,
                        message=i18n.text("station.csrf_refused", lang), **ctx)
        upload = form.get("roster")
        data = await upload.read(MAX_BYTES + 1) if isinstance(upload, UploadFile) else b""
        try:
            outcome = await asyncio.to_thread(import_roster, log, data, actor=who.name, lang=lang)
        except BadFile as err:
            return import_page(request, ctx, status=413 if err.key == "import.too_big" else 400,
                               error=err.text(lang))
        except LocalLogError as err:
            return import_page(request, ctx, status=503, error=i18n.text("import.failed", lang, error=str(err)))
        if outcome.registered:
            on_recorded()
            ctx = await asyncio.to_thread(common, request)  # the banner counts what waits to upload
        return import_page(request, ctx, status=422 if outcome.refused else 200, outcome=outcome)

    @get("/this-week", include_in_schema=False)
    async def week(request: Request[Any, Any, Any]) -> Response[str]:
        today = _day(request.query_params.get("day"), dt.date.today())
        overdue, due = await asyncio.to_thread(this_week, archives, config.site_id, str(config.kind), today,
                                               lang_of(request))
        return page(request, "station/this_week.html", overdue=overdue, due=due, today=today,
                    until=today + dt.timedelta(days=WEEK_DAYS - 1), **await asyncio.to_thread(common, request))

    return [import_form, import_template, import_post, week]
