"""The township's and the auditor's pages of the dashboard: children (filters, sorting, paging,
the roster), a child (names instead of ids, corrections with their reasons, as of a date), the
sites' sync state, the quarantine explained, the read log, the hash chains and the township's
figures as of a time.

Like the rest of the dashboard (:mod:`service.dashboard`) every page reads through the center's
API with the signed-in person's token, so it shows what that role may see and each archive read
lands in the read log. Ids are turned into names here: sites from the registry (``/sites``),
people and partners from the events' own fields, children from the archives. Filters are passed
to the API, whose 400 names the parameter at fault.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from events.localtime import local_day
from projections.figures import labelled
from projections.rollups import Rollup
from service.dashboard import (
    PREFIX,
    Api,
    _api_refused,
    _bad_input,
    _ctx,
    _is_day,
    signed_form,
    signed_in,
)
from web import i18n, lang_of, obj, page
from web.charts import day_columns

PAGE_SIZE = 50
CST = dt.timezone(dt.timedelta(hours=8))
# The children list's filters, as the API names them (service/api/children.py).
CHILD_FILTERS = ("name", "site_id", "guardianship", "reason", "grade_band", "state", "overdue_rule", "paired")
SORTS = ("name", "site", "registered", "last_contact")
GRADE_BANDS = ("1-3", "4-6", "7-9", "none")
# The default child rules a child may be overdue for (events.rules.DEFAULT_RULES; GET /rules).
RULES = ("proxy_visit", "proxy_call", "proxy_letter", "teacher_talk")


def _t(key: str, lang: str, **values: object) -> str:
    return i18n.text(key, lang, **values)


async def _site_names(api: Api) -> dict[str, str]:
    """Site id -> its name in the registry, for the sites the caller may see."""
    status, doc = await api.get("/sites")
    return {s["site_id"]: s["name"] for s in (doc or {}).get("items", [])} if status == 200 else {}


def _site_name(names: dict[str, str], site_id: str | None) -> str:
    if not site_id:
        return ""
    return names.get(site_id, site_id)


# --- children --------------------------------------------------------------------------------


def _child_query(q: Any) -> dict[str, str]:
    """The children list's filters and sorting from the page's query (only those given)."""
    out = {k: str(q.get(k)) for k in (*CHILD_FILTERS, "sort") if q.get(k)}
    if q.get("overdue") and "overdue_rule" not in out:
        out["overdue"] = "true"
    if q.get("descending"):
        out["descending"] = "true"
    return out


async def _children_page(api: Api, filters: dict[str, str], offset: int, limit: int) -> tuple[int, Any]:
    params = dict(filters)
    if params.get("paired") in ("yes", "no"):
        params["paired"] = "true" if params["paired"] == "yes" else "false"
    params.setdefault("sort", "name")
    return await api.get("/children", offset=offset or None, limit=limit, **params)


def _child_row(c: dict[str, Any], names: dict[str, str], lang: str) -> dict[str, Any]:
    sites = [s for s in (c.get("village_site"), c.get("school_site")) if s]
    return dict(c, site_names=[_site_name(names, s) for s in sites],
                reason_labels=[i18n.label("reason", r, lang) for r in c.get("reasons", [])],
                rule_labels=[_t("rule." + r, lang) for r in c.get("overdue_rules", [])])


ROSTER_HEADER = ("姓名", "性别", "出生日期", "身份证号（已遮蔽）", "户籍村", "所属村站", "所在学校", "年级", "监护类型",
                 "关爱原因", "建档日期", "最近关爱", "结对帮扶", "逾期未完成", "档案状态")


def _roster_rows(items: list[dict[str, Any]], names: dict[str, str]) -> list[list[Any]]:
    zh = "zh"
    rows = []
    for c in items:
        rows.append([
            c.get("name") or "", i18n.label("sex", c.get("sex"), zh) if c.get("sex") else "", c.get("birth_date") or "",
            c.get("resident_id_masked") or "", c.get("household_village") or "",
            _site_name(names, c.get("village_site")), _site_name(names, c.get("school_site")),
            c.get("grade") or "",
            i18n.label("guardianship", c.get("guardianship"), zh) if c.get("guardianship") else "",
            "、".join(i18n.label("reason", r, zh) for r in c.get("reasons", [])), c.get("registered_on") or "",
            c.get("last_contact") or "", "是" if c.get("paired") else "否",
            "、".join(_t("rule." + r, zh) for r in c.get("overdue_rules", [])),
            "在册" if c.get("open") else "已关闭"])
    return rows


# --- a child ---------------------------------------------------------------------------------

_PEOPLE = (("visitor", "tw.f.visitor"), ("teacher", "tw.f.teacher"), ("tutor", "tw.f.tutor"),
           ("counsellor", "tw.f.counsellor"))
_TEXTS = (("findings", "tw.f.findings"), ("summary", "tw.f.summary"), ("record_card", "tw.f.record_card"),
          ("title", "tw.f.title"), ("topic", "tw.f.topic"), ("subject", "tw.f.subject"), ("gifts", "tw.f.gifts"),
          ("description", "tw.f.description"), ("note", "tw.f.note"))


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def details(kind: str, payload: dict[str, Any], names: dict[str, str], lang: str) -> list[str]:
    """What an event says, in words and names: who did it, with whom, what was found (no ids)."""
    out: list[str] = []
    for key, label_key in _PEOPLE:
        if payload.get(key):
            out.append(f"{_t(label_key, lang)}：{payload[key]}")
    if payload.get("partner_name"):
        out.append(f"{_t('tw.f.partner', lang)}：{i18n.label('partner', payload.get('partner_kind'), lang)} · "
                   f"{payload['partner_name']}")
    if kind == "ParentCallMade":
        out.append(f"{_t('tw.f.parent', lang)}：{payload.get('parent', '')} · "
                   f"{i18n.label('channel', payload.get('channel', 'phone'), lang)}")
        if payload.get("minutes"):
            out.append(_t("tw.minutes", lang, n=payload["minutes"]))
    guardian = payload.get("guardian")
    if isinstance(guardian, dict):
        out.append(f"{_t('tw.f.guardian', lang)}：{i18n.label('guardianship', guardian.get('type'), lang)} · "
                   f"{guardian.get('name') or ''} {guardian.get('relation') or ''}".rstrip())
    if "amount_fen" in payload:
        out.append(f"{_t('tw.f.amount', lang)}：{payload['amount_fen'] / 100:.2f} {_t('form.yuan', lang)} · "
                   f"{i18n.label('aid_source', payload.get('source'), lang)}")
    if payload.get("occasion"):
        out.append(f"{_t('tw.f.occasion', lang)}：{i18n.label('occasion', payload['occasion'], lang)}")
    for key in ("village_site", "school_site"):
        if payload.get(key):
            out.append(f"{_t('tw.f.' + key, lang)}：{_site_name(names, payload[key])}")
    if kind == "ArchiveUpdated":
        changed = [k for k, v in payload.items() if v is not None and k not in ("child_id", "village_site",
                                                                                  "school_site", "guardian")]
        if changed:
            out.append("、".join(_t("tw.f." + k, lang) if ("tw.f." + k) in i18n._T else k for k in changed))
    for key, label_key in _TEXTS:
        if isinstance(payload.get(key), str) and payload[key]:
            out.append(f"{_t(label_key, lang)}：{_short(payload[key])}")
    if isinstance(payload.get("reason"), str) and kind != "EventCorrected":
        out.append(f"{_t('tw.f.reason', lang)}：{i18n.label('closing', payload['reason'], lang)}")
    children = payload.get("child_ids")
    if isinstance(children, list) and len(children) > 1:
        out.append(_t("tw.children_n", lang, n=len(children)))
    return out


def timeline_lines(items: list[dict[str, Any]], names: dict[str, str], lang: str) -> list[dict[str, Any]]:
    """Timeline lines with names and words: each correction says what it corrects and why, each
    corrected line stays (struck through) and carries the correction's reason."""
    by_id = {t["event_id"]: t for t in items}
    out = []
    for t in items:
        payload = t.get("payload") or {}
        line = dict(t, site_name=_site_name(names, t.get("site_id")), when=_local(t["occurred_at"]),
                    what=i18n.label("event", t["type"], lang), details=details(t["type"], payload, names, lang),
                    note="", struck=bool(t.get("retracted") or t.get("corrected_by")))
        if t["type"] == "EventCorrected":
            target = by_id.get(payload.get("corrected_event_id") or t.get("corrects") or "")
            day = target["occurred_at"][:10] if target else ""
            what = i18n.label("event", target["type"], lang) if target else ""
            key = "tw.correction" if payload.get("replacement") else "tw.retraction"
            line["details"] = [_t(key, lang, day=day, what=what),
                               _t("tw.correction_reason", lang, reason=payload.get("reason", ""))]
            replacement = payload.get("replacement")
            if isinstance(replacement, dict):
                line["details"] += details(str(replacement.get("type", "")), replacement, names, lang)
        elif t.get("corrected_by"):
            fix = by_id.get(t["corrected_by"]) or {}
            reason = (fix.get("payload") or {}).get("reason", "")
            key = "tw.retracted_because" if t.get("retracted") else "tw.corrected_because"
            line["note"] = _t(key, lang, reason=reason)
        out.append(line)
    return out


def _local(when: str) -> str:
    """An instant as the reporting day's clock shows it (China Standard Time), to the minute."""
    return dt.datetime.fromisoformat(when).astimezone(CST).strftime("%Y-%m-%d %H:%M")


def _end_of_day(day: str) -> str:
    return f"{day}T23:59:59.999999+08:00"


# --- quarantine ------------------------------------------------------------------------------

_EXPLAIN: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"^subject .* does not name a site"), "tw.q.no_site", "tw.q.todo.check"),
    (re.compile(r"^event is (?P<size>\d+) bytes, the limit is (?P<limit>\d+)"), "tw.q.too_large", "tw.q.todo.fix_site"),
    (re.compile(r"^invalid event: malformed (?P<kind>\w+)"), "tw.q.malformed", "tw.q.todo.fix_site"),
    (re.compile(r"^forged site: the event says site_id '(?P<claimed>[^']*)'"), "tw.q.wrong_site", "tw.q.todo.check"),
    (re.compile(r"^not sent by a site"), "tw.q.reflected", "tw.q.todo.check"),
    (re.compile(r"^site (?P<site>\S+) is not registered at the center"), "tw.q.site_unknown", "tw.q.todo.register"),
    (re.compile(r"^site (?P<site>\S+) is disabled at the center"), "tw.q.site_disabled", "tw.q.todo.register"),
    (re.compile(r"^event_id \S+ is already stored with different content"), "tw.q.same_id", "tw.q.todo.fix_site"),
    (re.compile(r"^site_seq (?P<seq>\d+) of site \S+ is already used"), "tw.q.seq_taken", "tw.q.todo.fix_site"),
    (re.compile(r"^not authorized: .*is not registered at the center"), "tw.q.not_registered", "tw.q.todo.retry"),
    (re.compile(r"^not authorized: .*does not hold child"), "tw.q.not_holder", "tw.q.todo.fix_site"),
    (re.compile(r"^not authorized: .*is already registered"), "tw.q.already_registered", "tw.q.todo.fix_site"),
    (re.compile(r"^not authorized: .*not in this site's scope"), "tw.q.outside_scope", "tw.q.todo.fix_site"),
    (re.compile(r"^not authorized: .*is not an active"), "tw.q.not_active_site", "tw.q.todo.register"),
    (re.compile(r"^not authorized"), "tw.q.unauthorized", "tw.q.todo.check"),
    (re.compile(r"^the event store refused it: (?P<detail>.*)"), "tw.q.store_refused", "tw.q.todo.retry"),
    (re.compile(r"^delivered (?P<n>\d+) times without being committed"), "tw.q.dead_letter", "tw.q.todo.retry"),
    (re.compile(r"^invalid event: (?P<detail>.*)", re.S), "tw.q.invalid", "tw.q.todo.fix_site"),
]


def explain(reason: str, lang: str) -> tuple[str, str]:
    """A refusal's reason text (service/ingest.py, store/postgres.py, service/authority.py) as
    what was wrong and what to do, in the page's language."""
    for pattern, key, todo in _EXPLAIN:
        m = pattern.search(reason)
        if m:
            values = {k: v for k, v in m.groupdict().items()}
            if "detail" in values and key == "tw.q.invalid":
                values["detail"] = i18n.problem_text(_invalid_detail(values["detail"]), lang)
            return _t(key, lang, **values), _t(todo, lang)
    return _t("tw.q.other", lang), _t("tw.q.todo.check", lang)


def _invalid_detail(detail: str) -> str:
    """The validation problem of an 'invalid event' reason, without the path it was found at."""
    m = re.search(r"(Expected .*|Invalid .*|check digit .*|required field .*|unknown field.*|is .*future.*)", detail)
    return _short(m.group(1) if m else detail, 120)


# --- read log --------------------------------------------------------------------------------


def route_label(route: str, lang: str) -> str:
    if "/as-of" in route:
        return _t("tw.route.asof", lang)
    if "/timeline" in route:
        return _t("tw.route.timeline", lang)
    if "/follow-ups" in route or "followups" in route:
        return _t("tw.route.followups", lang)
    if route.startswith("GET /children/") or route.startswith("GET /child/"):
        return _t("tw.route.archive", lang)
    return _t("tw.route.station", lang) if "station" in route or "agent" in route else route


def _day_start(day: str) -> str:
    return f"{day}T00:00:00+08:00"


def _next_day_start(day: str) -> str:
    return _day_start((dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat())


def _ago(when: str | None, lang: str, now: dt.datetime) -> str:
    if not when:
        return _t("tw.never", lang)
    delta = now - dt.datetime.fromisoformat(when)
    if delta < dt.timedelta(hours=1):
        return _t("tw.today", lang)
    if delta < dt.timedelta(days=1):
        return _t("tw.hours_ago", lang, n=int(delta.total_seconds() // 3600))
    return _t("tw.days_ago", lang, n=delta.days)


def township_routes() -> list[HTTPRouteHandler]:
    """The route handlers of these pages (mounted by service.dashboard.dashboard_routes)."""

    @get(f"{PREFIX}/children", include_in_schema=False, exclude_from_auth=True)
    async def children(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        lang = lang_of(request)
        q = request.query_params
        filters = _child_query(q)
        raw_page = q.get("page") or "1"
        if not raw_page.isdigit() or not 1 <= int(raw_page) <= 20000:
            return _bad_input(request, me, "page", raw_page, "tw.want_page")
        number = int(raw_page)
        async with Api(request, token) as api:
            names = await _site_names(api)
            status, doc = await _children_page(api, filters, (number - 1) * PAGE_SIZE, PAGE_SIZE)
        refused = _api_refused(request, me, status, doc)
        if refused is not None:
            return refused
        doc = doc if status == 200 else {}
        total = int(doc.get("total") or 0)
        pages = max(1, -(-total // PAGE_SIZE))
        items = [_child_row(c, names, lang) for c in doc.get("items", [])]
        base = {k: v for k, v in filters.items()}
        if q.get("paired"):
            base["paired"] = str(q.get("paired"))
        if q.get("overdue"):
            base["overdue"] = "1"
        query = urlencode(base)
        sites = sorted(names.items(), key=lambda kv: kv[1])
        return page(request, "dash/children.html", items=obj(items), total=total, number=number, pages=pages,
                    query=query, f=obj({k: q.get(k) or "" for k in (*CHILD_FILTERS, "sort", "descending",
                                                                       "overdue")}),
                    sites=sites, bands=GRADE_BANDS, sorts=SORTS, rules=RULES,
                    prev_href=f"?{urlencode({**base, 'page': number - 1})}" if number > 1 else "",
                    next_href=f"?{urlencode({**base, 'page': number + 1})}" if number < pages else "",
                    **_ctx(me))

    @get([f"{PREFIX}/children/roster.xlsx", f"{PREFIX}/children/roster.csv"], include_in_schema=False,
         exclude_from_auth=True)
    async def roster(request: Request[Any, Any, Any]) -> Response[Any]:
        token, me = await signed_in(request)
        fmt = request.url.path.rsplit(".", 1)[1]
        filters = _child_query(request.query_params)
        items: list[dict[str, Any]] = []
        async with Api(request, token) as api:
            names = await _site_names(api)
            offset = 0
            while True:
                status, doc = await _children_page(api, filters, offset, 200)
                refused = _api_refused(request, me, status, doc)
                if refused is not None:
                    return refused
                if status != 200:
                    break
                items += doc.get("items", [])
                if doc.get("next_offset") is None:
                    break
                offset = int(doc["next_offset"])
        rows = _roster_rows(items, names)
        stamp = dt.datetime.now(CST).strftime("%Y%m%d-%H%M")
        disposition = f'attachment; filename="roster-{stamp}.{fmt}"'
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(ROSTER_HEADER)
            writer.writerows(rows)
            return Response(("\ufeff" + buf.getvalue()).encode("utf-8"), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": disposition, "Cache-Control": "no-store"})
        from openpyxl import Workbook
        from openpyxl.styles import Font

        wb = Workbook()
        ws = wb.worksheets[0]  # a new workbook has one sheet; .active may be a chartsheet or none to the type checker
        ws.title = "儿童花名册"
        ws.append(list(ROSTER_HEADER))
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in rows:
            ws.append(row)
        out = io.BytesIO()
        wb.save(out)
        return Response(out.getvalue(), headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
                        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")

    @get(f"{PREFIX}/child/{{child_id:str}}", include_in_schema=False, exclude_from_auth=True)
    async def child(request: Request[Any, Any, Any], child_id: FromPath[str]) -> Response[str]:
        token, me = await signed_in(request)
        lang = lang_of(request)
        as_of = request.query_params.get("as_of") or ""
        clock = request.query_params.get("clock") or "occurred"
        if as_of and not _is_day(as_of):
            return _bad_input(request, me, "as_of", as_of, "dash.want_day")
        if clock not in ("occurred", "committed"):
            return _bad_input(request, me, "clock", clock, "tw.want_clock")
        async with Api(request, token) as api:
            names = await _site_names(api)
            if as_of:
                status, view = await api.get(f"/children/{quote(child_id)}/as-of", **{clock: _end_of_day(as_of)})
            else:
                status, view = await api.get(f"/children/{quote(child_id)}")
            t_status, timeline = await api.get(f"/children/{quote(child_id)}/timeline")
        refused = _api_refused(request, me, status, view)
        if refused is not None:
            return refused
        if status != 200:
            return page(request, "dash/message.html", status_code=status if status in (403, 404) else 502,
                        message=(view or {}).get("message", _t("child.not_found", lang)), **_ctx(me))
        items = timeline.get("items", []) if t_status == 200 else []
        if as_of:
            column = "occurred_at" if clock == "occurred" else "committed_at"
            items = [t for t in items if local_day(dt.datetime.fromisoformat(t[column])).isoformat() <= as_of]
        a = view["archive"]
        conflicts = [c for c in a.get("conflicts", []) if not c.get("resolved_by")]
        return page(request, "dash/child.html", a=obj(a), timeline=obj(timeline_lines(items, names, lang)),
                    resident_id=a.get("resident_id"), as_of=as_of, clock=clock,
                    site_names=[_site_name(names, s) for s in a.get("sites", [])],
                    registered_by=_site_name(names, a.get("registered_by")),
                    conflicts=obj(conflicts), can_as_of=me.get("role") in ("township", "auditor"),
                    today=dt.datetime.now(CST).date().isoformat(), **_ctx(me))

    @get(f"{PREFIX}/sites", include_in_schema=False, exclude_from_auth=True)
    async def sites(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        lang = lang_of(request)
        async with Api(request, token) as api:
            _, doc = await api.get("/sites")
            _, activity = await api.get("/sites/activity", days=90)
        rows = (doc or {}).get("items", [])
        since = dt.date.fromisoformat((activity or {}).get("since") or dt.date.today().isoformat())
        counts = {a["site_id"]: {d["day"]: d["events"] for d in a["days"]} for a in (activity or {}).get("items", [])}
        now = dt.datetime.now(dt.UTC)
        for s in rows:
            per_day = counts.get(s["site_id"], {})
            days = [(since + dt.timedelta(days=i)).isoformat() for i in range(90)]
            s["chart"] = day_columns([(d, float(per_day.get(d, 0))) for d in days],
                                     title=_t("tw.history_title", lang, site=s["name"]))
            s["ago"] = _ago(s.get("last_contact"), lang, now)
            s["last_contact_local"] = _local(s["last_contact"]) if s.get("last_contact") else None
            s["reported_local"] = _local(s["reported_at"]) if s.get("reported_at") else ""
            s["contacts_90"] = sum(per_day.values())
        # Silent longest first: never in contact, then the oldest last contact.
        rows.sort(key=lambda s: (s.get("last_contact") is not None, s.get("last_contact") or ""))
        return page(request, "dash/sites.html", sites=obj(rows), **_ctx(me))

    @get(f"{PREFIX}/quarantine", include_in_schema=False, exclude_from_auth=True)
    async def quarantine(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        lang = lang_of(request)
        async with Api(request, token) as api:
            names = await _site_names(api)
            status, doc = await api.get("/quarantine", include_replayed="true", limit=200)
        refused = _api_refused(request, me, status, doc)
        if refused is not None:
            return refused
        items = (doc or {}).get("items", []) if status == 200 else []
        for q in items:
            q["what"], q["todo"] = explain(q.get("reason", ""), lang)
            q["site_name"] = _site_name(names, q.get("site_id")) or _t("tw.q_unknown_site", lang)
            q["when"] = dt.datetime.fromisoformat(q["received_at"]).astimezone(CST).strftime("%Y-%m-%d %H:%M")
        items.sort(key=lambda q: (q["status"] != "held", -int(q["id"])))
        done = request.query_params.get("done")
        done_text = _t(f"tw.q_done.{done}", lang) if done in ("stored", "duplicate", "refused", "dismissed") else ""
        return page(request, "dash/quarantine.html", items=obj(items), done=done_text,
                    is_admin=me.get("role") == "admin", **_ctx(me))

    async def _quarantine_action(request: Request[Any, Any, Any], row_id: int, action: str) -> Response[str]:
        token, me, form = await signed_form(request)
        async with Api(request, token) as api:
            if action == "replay":
                status, out = await api.post(f"/quarantine/{row_id}/replay", {})
            else:
                status, out = await api.post(f"/quarantine/{row_id}/dismiss", {"note": str(form.get("note", ""))})
        if status != 200:
            return page(request, "dash/message.html", status_code=status, message=(out or {}).get("message", ""),
                        **_ctx(me))
        done = out.get("outcome", "stored") if action == "replay" else "dismissed"
        return Response("", status_code=303, headers={"Location": f"{PREFIX}/quarantine?done={done}"})

    @post(f"{PREFIX}/quarantine/{{row_id:int}}/replay", include_in_schema=False, exclude_from_auth=True,
          status_code=200)
    async def replay(request: Request[Any, Any, Any], row_id: FromPath[int]) -> Response[str]:
        return await _quarantine_action(request, row_id, "replay")

    @post(f"{PREFIX}/quarantine/{{row_id:int}}/dismiss", include_in_schema=False, exclude_from_auth=True,
          status_code=200)
    async def dismiss(request: Request[Any, Any, Any], row_id: FromPath[int]) -> Response[str]:
        return await _quarantine_action(request, row_id, "dismiss")

    async def _reads(request: Request[Any, Any, Any], api: Api, me: dict[str, Any], limit: int,
                     cursor: str | None) -> tuple[Response[str] | None, dict[str, Any], list[dict[str, Any]]]:
        """The read log's filters from the query, the choices when a name fits several children, and
        a page of the API's read log; or a 400 page."""
        q = request.query_params
        f = {k: str(q.get(k) or "") for k in ("user", "child", "child_id", "site_id", "from", "to")}
        for key in ("from", "to"):
            if f[key] and not _is_day(f[key]):
                return _bad_input(request, me, key, f[key], "dash.want_day"), f, []
        f["choices"] = []  # type: ignore[assignment]
        if f["child"] and not f["child_id"]:
            status, doc = await api.get("/children", name=f["child"], limit=50)
            refused = _api_refused(request, me, status, doc)
            if refused is not None:
                return refused, f, []
            found = (doc or {}).get("items", []) if status == 200 else []
            if len(found) == 1:
                f["child_id"] = found[0]["child_id"]
            else:
                f["choices"] = found  # type: ignore[assignment]
                if not found:
                    f["nochild"] = "1"
                return None, f, []
        params = {"username": f["user"], "child_id": f["child_id"], "site_id": f["site_id"],
                  "since": _day_start(f["from"]) if f["from"] else None,
                  "until": _next_day_start(f["to"]) if f["to"] else None, "cursor": cursor, "limit": limit}
        status, doc = await api.get("/audit/reads", **params)
        refused = _api_refused(request, me, status, doc)
        if refused is not None:
            return refused, f, []
        if status != 200:
            return page(request, "dash/message.html", status_code=status, message=(doc or {}).get("message", ""),
                        **_ctx(me)), f, []
        f["next_cursor"] = doc.get("next_cursor") or ""
        return None, f, doc.get("items", [])

    @get(f"{PREFIX}/reads", include_in_schema=False, exclude_from_auth=True)
    async def reads(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        lang = lang_of(request)
        async with Api(request, token) as api:
            names = await _site_names(api)
            refused, f, items = await _reads(request, api, me, 100, request.query_params.get("cursor"))
        if refused is not None:
            return refused
        for r in items:
            r["when"] = dt.datetime.fromisoformat(r["read_at"]).astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
            r["what"] = route_label(r["route"], lang)
            r["role_label"] = _t("role." + r["role"], lang)
            r["outcome_label"] = _t("tw.outcome." + r["outcome"], lang)
            r["day"] = r["when"][:10]
        query = urlencode({k: v for k, v in f.items() if k in ("user", "child", "child_id", "site_id", "from", "to")
                           and v})
        return page(request, "dash/reads.html", items=obj(items), f=obj(f), query=query,
                    sites=sorted(names.items(), key=lambda kv: kv[1]), **_ctx(me))

    @get(f"{PREFIX}/reads.csv", include_in_schema=False, exclude_from_auth=True)
    async def reads_csv(request: Request[Any, Any, Any]) -> Response[Any]:
        token, me = await signed_in(request)
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        async with Api(request, token) as api:
            for _ in range(500):  # at most 100 000 rows in one file
                refused, f, items = await _reads(request, api, me, 200, cursor)
                if refused is not None:
                    return refused
                rows += items
                cursor = f.get("next_cursor") or None
                if not cursor:
                    break
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["编号", "查阅时间（北京时间）", "查阅人", "角色", "儿童编号", "儿童姓名", "查看内容", "接口",
                         "查询参数", "结果"])
        for r in rows:
            when = dt.datetime.fromisoformat(r["read_at"]).astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow([r["id"], when, r["username"], _t("role." + r["role"], "zh"), r["child_id"],
                             r.get("child_name") or "", route_label(r["route"], "zh"), r["route"], r["query"],
                             _t("tw.outcome." + r["outcome"], "zh")])
        stamp = dt.datetime.now(CST).strftime("%Y%m%d-%H%M")
        return Response(("\ufeff" + buf.getvalue()).encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="read-log-{stamp}.csv"',
                                 "Cache-Control": "no-store"})

    @get(f"{PREFIX}/chains", include_in_schema=False, exclude_from_auth=True)
    async def chains(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        rows = []
        async with Api(request, token) as api:
            _, doc = await api.get("/sites")
            for s in (doc or {}).get("items", []):
                status, report = await api.get(f"/audit/chains/{quote(s['site_id'])}")
                at = dt.datetime.now(CST).strftime("%Y-%m-%d %H:%M:%S")
                if status != 200:
                    report = {"verified": 0, "ok": False, "problems": [(report or {}).get("message", str(status))]}
                rows.append(dict(report, site_id=s["site_id"], name=s["name"], kind=s["kind"], at=at))
        bad = sum(1 for r in rows if not r["ok"])
        return page(request, "dash/chains.html", rows=obj(rows), bad=bad, **_ctx(me))

    @get(f"{PREFIX}/asof", include_in_schema=False, exclude_from_auth=True)
    async def asof(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await signed_in(request)
        q = request.query_params
        day = q.get("day") or ""
        clock = q.get("clock") or "committed"
        if day and not _is_day(day):
            return _bad_input(request, me, "day", day, "dash.want_day")
        if clock not in ("occurred", "committed"):
            return _bad_input(request, me, "clock", clock, "tw.want_clock")
        period = q.get("period") or (day[:4] if day else "")
        scope = me.get("township") or ""
        rollup = None
        if day:
            async with Api(request, token) as api:
                status, rollup = await api.get("/rollups/as-of", scope=scope, period=period,
                                               **{clock: _end_of_day(day)})
            refused = _api_refused(request, me, status, rollup)
            if refused is not None:
                return refused
            if status != 200:
                return page(request, "dash/message.html", status_code=status,
                            message=(rollup or {}).get("message", ""), **_ctx(me))
        # Every figure as it stood, named by the one catalogue (projections/figures.py) the live
        # summary, the exports and the API use; freshness is not kept in the log, so none here.
        figures = [f for f in labelled(msgspec.convert(rollup, Rollup), lang_of(request))
                   if not f.key.startswith("freshness.")] if rollup else []
        return page(request, "dash/asof.html", rollup=obj(rollup), figures=figures, day=day, clock=clock,
                    period=period, scope=scope, today=dt.datetime.now(CST).date().isoformat(), **_ctx(me))

    return [children, roster, child, sites, quarantine, replay, dismiss, reads, reads_csv, chains, asof]
