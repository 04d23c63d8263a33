"""The township's decisions on the dashboard: conflicts, duplicate archives and merges.

Each page reads through the center's API with the signed-in person's token (as every dashboard
page, service.dashboard) and shows what a supervisor needs to decide without ids: the child's
name and sites (names from the sites registry), the field in words, what each side says, who
recorded it where and when (China Standard Time), and what it replaced; two archives side by
side. Every decision is a form (same origin and the session's CSRF token, else 403 and nothing
changes) that the API records as an event of the township office's site: `ConflictResolved`
(with a note), `ArchivesMerged` (the chosen archive kept), `DuplicateDismissed` ("not the same
child"), `ArchivesUnmerged`. Auditors see the same pages without the forms.

Registered by :func:`service.dashboard.dashboard_routes` (``decision_routes()``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from events.catalogue import ARCHIVE_FIELDS
from events.localtime import REPORTING_TZ
from service import dashboard as d
from web import i18n, lang_of, obj, page

PREFIX = d.PREFIX


def local_time(value: str | None) -> str:
    """An instant from the API as China Standard Time, to the minute."""
    if not value:
        return ""
    return dt.datetime.fromisoformat(value).astimezone(REPORTING_TZ).strftime("%Y-%m-%d %H:%M")


def field_label(field: str, lang: str) -> str:
    """An archive field (events.catalogue.ARCHIVE_FIELDS) in words."""
    return i18n.text(f"field.{field}", lang) if field in ARCHIVE_FIELDS else field


def _guardian(g: dict[str, Any], lang: str) -> str:
    who = " ".join(x for x in (g.get("relation"), g.get("name")) if x)
    parts = [who or i18n.text("dec.no_name", lang), i18n.label("guardianship", g.get("type"), lang)]
    if g.get("phone"):
        parts.append(i18n.text("dec.phone", lang, phone=g["phone"]))
    return " · ".join(parts)


def _parent(p: dict[str, Any], lang: str) -> str:
    parts = [f"{p.get('relation', '')}：{p.get('work_place', '')}" if lang == "zh"
             else f"{p.get('relation', '')}: {p.get('work_place', '')}"]
    if p.get("phone"):
        parts.append(i18n.text("dec.phone", lang, phone=p["phone"]))
    if p.get("calls_per_month") is not None:
        parts.append(i18n.text("dec.calls_per_month", lang, n=p["calls_per_month"]))
    return " · ".join(parts)


def describe(field: str, value: Any, lang: str, sites: dict[str, str]) -> str:
    """What an update of `field` says, as a person reads it (a resident ID comes masked)."""
    if value is None or value == [] or value == "":
        return i18n.text("dec.empty", lang)
    if field == "guardian" and isinstance(value, dict):
        return _guardian(value, lang)
    if field == "parents" and isinstance(value, list):
        return "；".join(_parent(p, lang) for p in value) if lang == "zh" else "; ".join(
            _parent(p, lang) for p in value)
    if field.startswith("status."):
        return i18n.label("level", value, lang)
    if field == "sex":
        return i18n.label("sex", value, lang)
    if field == "reasons" and isinstance(value, list):
        return ("、" if lang == "zh" else ", ").join(i18n.label("reason", r, lang) for r in value)
    if field == "individual_plan":
        return i18n.text("yes" if value else "no", lang)
    if field == "grade":
        return i18n.text("dec.not_in_school", lang) if value == 0 else i18n.text("dec.grade", lang, n=value)
    if field in ("village_site", "school_site"):
        return sites.get(str(value), i18n.text("dec.unknown_site", lang))
    return str(value)


def _site(ref: dict[str, Any] | None, lang: str) -> str:
    if not ref:
        return ""
    return str(ref.get("name") or i18n.text("dec.unknown_site", lang))


def _who(u: dict[str, Any] | None, lang: str) -> dict[str, str] | None:
    """Who recorded an update, where and when, in words."""
    if not u:
        return None
    return {"actor": str(u.get("actor", "")), "site": _site(u.get("site"), lang),
            "when": local_time(u.get("committed_at")), "occurred": local_time(u.get("occurred_at")),
            "what": i18n.label("event", u.get("event_type"), lang)}


async def _site_names(api: d.Api) -> dict[str, str]:
    status, doc = await api.get("/sites")
    return {s["site_id"]: s["name"] for s in (doc or {}).get("items", [])} if status == 200 else {}


def _conflict(c: dict[str, Any], lang: str, sites: dict[str, str]) -> dict[str, Any]:
    field = c["field"]
    sides = []
    for s in c.get("sides", []):
        sides.append({"event_id": s["update"]["event_id"], "text": describe(field, s.get("value"), lang, sites),
                      "shown": s.get("shown", False), "who": _who(s["update"], lang),
                      "base": describe(field, s.get("base_value"), lang, sites) if s.get("base") else None,
                      "base_who": _who(s.get("base"), lang)})
    r = c.get("resolution")
    resolution = None
    if r:
        kept = next((s for s in sides if s["event_id"] == r["chosen_event_id"]), None)
        resolution = {"kept": kept["text"] if kept else "", "others": [s["text"] for s in sides if s is not kept],
                      "who": _who({**r, "event_type": "ConflictResolved"}, lang), "note": r.get("note") or ""}
    return {"child_id": c["child_id"], "child": c.get("child_name") or i18n.text("dec.no_name", lang),
            "sites": "、".join(_site(x, lang) for x in c.get("child_sites", [])) if lang == "zh" else ", ".join(
                _site(x, lang) for x in c.get("child_sites", [])),
            "field": field, "field_label": field_label(field, lang), "sides": sides, "resolution": resolution}


def _archive(a: dict[str, Any], lang: str) -> dict[str, Any]:
    g = a.get("guardian")
    school = " ".join(str(x) for x in (
        a.get("school"), i18n.text("dec.grade", lang, n=a["grade"]) if a.get("grade") else None,
        a.get("class_name")) if x)
    reg = a.get("registered_by")
    return {"child_id": a["child_id"], "name": a.get("name") or i18n.text("dec.no_name", lang),
            "registered": " · ".join(x for x in (_site(reg, lang) if reg else "", a.get("registered_on") or "") if x),
            "sex": i18n.label("sex", a.get("sex"), lang) if a.get("sex") else "",
            "birth_date": a.get("birth_date") or "", "resident_id": a.get("resident_id_masked") or "",
            "guardian": _guardian(g, lang) if g else i18n.text("dec.empty", lang),
            "village": a.get("household_village") or "", "school": school,
            "sites": ("、" if lang == "zh" else ", ").join(_site(x, lang) for x in a.get("sites", [])),
            "events": a.get("events", 0), "last_contact": a.get("last_contact") or i18n.text("dec.never", lang),
            "open": a.get("open", False)}


def _merge(m: dict[str, Any], lang: str) -> dict[str, Any]:
    return {"id": m["merge_event_id"], "kept": m["kept"]["name"] or i18n.text("dec.no_name", lang),
            "kept_id": m["kept"]["child_id"], "merged": m["merged"]["name"] or i18n.text("dec.no_name", lang),
            "merged_id": m["merged"]["child_id"], "who": _who(m["merge"], lang), "note": m.get("note") or "",
            "undone": m.get("undone", False), "undo": _who(m.get("undo"), lang), "undo_note": m.get("undo_note") or ""}


async def _post(request: Request[Any, Any, Any], api_path: str, body_of: Any, back: str) -> Response[str]:
    """Check the form (origin, CSRF), post its body to the API (an event of the township's site),
    then back to the page; the API's refusal is shown as a message page."""
    token, me, form = await d.signed_form(request)
    body = body_of(form)
    if body is None:
        return page(request, "dash/message.html", status_code=400,
                    message=i18n.text("dec.bad_form", lang_of(request)), **d._ctx(me))
    async with d.Api(request, token) as api:
        status, out = await api.post(api_path, body)
    if status != 201:
        return page(request, "dash/message.html", status_code=status, message=(out or {}).get("message", ""),
                    **d._ctx(me))
    return Response("", status_code=303, headers={"Location": back})


def _note(form: Any) -> str | None:
    note = str(form.get("note", "")).strip()
    return note[:200] or None


def decision_routes() -> list[HTTPRouteHandler]:
    """The dashboard's conflict, duplicate and merge pages and their forms (under /ui)."""

    @get(f"{PREFIX}/conflicts", include_in_schema=False, exclude_from_auth=True)
    async def conflicts(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await d.signed_in(request)
        lang = lang_of(request)
        async with d.Api(request, token) as api:
            status, doc = await api.get("/conflicts", limit=200)
            refused = d._api_refused(request, me, status, doc)
            if refused is not None:
                return refused
            r_status, done_doc = await api.get("/conflicts", limit=200, resolved="true")
            sites = await _site_names(api)
        items = [_conflict(c, lang, sites) for c in (doc or {}).get("items", [])] if status == 200 else []
        resolved = [_conflict(c, lang, sites) for c in (done_doc or {}).get("items", [])] if r_status == 200 else []
        resolved.sort(key=lambda c: c["resolution"]["who"]["when"] if c["resolution"] else "", reverse=True)
        return page(request, "dash/conflicts.html", items=obj(items), resolved=obj(resolved),
                    done=request.query_params.get("done"), can_decide=me.get("role") == "township", **d._ctx(me))

    @post(f"{PREFIX}/conflicts", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def resolve(request: Request[Any, Any, Any]) -> Response[str]:
        def body(form: Any) -> dict[str, Any]:
            return {"child_id": str(form.get("child_id", "")), "field": str(form.get("field", "")),
                    "chosen_event_id": str(form.get("chosen_event_id", "")), "note": _note(form)}
        return await _post(request, "/conflicts/resolve", body, f"{PREFIX}/conflicts?done=1")

    @get(f"{PREFIX}/duplicates", include_in_schema=False, exclude_from_auth=True)
    async def duplicates(request: Request[Any, Any, Any]) -> Response[str]:
        token, me = await d.signed_in(request)
        lang = lang_of(request)
        async with d.Api(request, token) as api:
            status, doc = await api.get("/duplicates")
            refused = d._api_refused(request, me, status, doc)
            if refused is not None:
                return refused
            m_status, merges_doc = await api.get("/merges")
        pairs = []
        for p in (doc or {}).get("items", []) if status == 200 else []:
            if len(p.get("archives", [])) < 2:
                continue
            pairs.append({"child_ids": p["child_ids"], "reason": i18n.text(f"dec.reason.{p['reason']}", lang),
                          "archives": [_archive(a, lang) for a in p["archives"]]})
        merges = [_merge(m, lang) for m in (merges_doc or {}).get("items", [])] if m_status == 200 else []
        return page(request, "dash/duplicates.html", pairs=obj(pairs), merges=obj(merges),
                    done=request.query_params.get("done"), can_decide=me.get("role") == "township", **d._ctx(me))

    @post(f"{PREFIX}/duplicates", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def merge(request: Request[Any, Any, Any]) -> Response[str]:
        def body(form: Any) -> dict[str, Any] | None:
            pair = str(form.get("pair", "")).split()
            kept = str(form.get("kept_child_id", ""))
            if len(pair) != 2 or kept not in pair:
                # the form of before (kept and merged named): still accepted
                merged = str(form.get("merged_child_id", ""))
                return {"kept_child_id": kept, "merged_child_id": merged, "note": _note(form)} if merged else None
            return {"kept_child_id": kept, "merged_child_id": pair[1] if kept == pair[0] else pair[0],
                    "note": _note(form)}
        return await _post(request, "/merges", body, f"{PREFIX}/duplicates?done=1")

    @post(f"{PREFIX}/duplicates/dismiss", include_in_schema=False, exclude_from_auth=True, status_code=200)
    async def dismiss(request: Request[Any, Any, Any]) -> Response[str]:
        def body(form: Any) -> dict[str, Any] | None:
            pair = str(form.get("pair", "")).split()
            return {"child_ids": pair, "note": _note(form)} if len(pair) == 2 else None
        return await _post(request, "/duplicates/dismiss", body, f"{PREFIX}/duplicates?done=dismissed")

    @post(f"{PREFIX}/merges/{{merge_event_id:str}}/undo", include_in_schema=False, exclude_from_auth=True,
          status_code=200)
    async def undo(request: Request[Any, Any, Any], merge_event_id: FromPath[str]) -> Response[str]:
        def body(form: Any) -> dict[str, Any]:
            return {"note": _note(form)}
        return await _post(request, f"/merges/{quote(merge_event_id)}/undo", body,
                           f"{PREFIX}/duplicates?done=undone#merges")

    return [conflicts, resolve, duplicates, merge, dismiss, undo]
