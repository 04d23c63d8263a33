"""The station's record pages: a form for every kind of work the site records, and corrections of
its own entries, served by `shouwang agent serve` from the local log, offline.

- ``/record``: the forms this kind of site shows (the `station_form` trait, `forms.forms_for`) and
  the site's latest entries, each with "correct or retract".
- ``/record/<EventType>``: one form. A refused submit shows the form again with what was typed and
  each problem beside its field, in Chinese; nothing is written. Registration takes any number of
  parents (rows added and removed with or without JavaScript) and starts from the site's own
  village or school.
- ``/correct/<event id>``: one of this site's own entries: "this was wrong" (``/retract``, with a
  reason) or "it should have said" (``/replace``: the same form, pre-filled with what the entry
  said, and a reason). Both are recorded as `EventCorrected` by this site; the entry itself stays,
  struck through with the reason (guarantee 8: history is never rewritten).

What a form records carries the logged-in person as its actor; every post needs the session's
CSRF token (sync_agent/door.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from events import types as et
from events.envelope import Event, care_of, parse_drafts
from events.ids import new_child_id
from events.validation import Problem, ValidationFailed
from projections.archive import ChildArchive
from sync_agent.config import SiteConfig
from sync_agent.door import form_csrf_ok, identity_of
from sync_agent.forms import (
    CORRECTION_REASON,
    FORMS,
    MAX_PARENTS,
    Form,
    draft_of,
    forms_for,
    local_input,
    multi_names,
    now_local,
    parent_rows,
    problems_by_field,
    values_of,
)
from sync_agent.locallog import LocalLog, LocalLogError
from sync_agent.record import record_json
from sync_agent.view import station_archives
from web import i18n, lang_of, page
from web.security import CSRF_FIELD

Common = Callable[[Request[Any, Any, Any]], dict[str, Any]]
RECENT = 60  # own entries listed on /record
_DONE = ("retracted", "corrected")

# Option lists the web's ENUM_LABELS do not have: their labels are "opt.<kind>.<value>" in web/i18n.py.
_ENUMS: dict[str, type[Any]] = {
    "letter_direction": et.LetterDirection, "closing_reason": et.ClosingReason, "activity_kind": et.ActivityKind,
    "meeting_kind": et.MeetingKind, "incident_kind": et.IncidentKind, "severity": et.Severity,
    "case_kind": et.CaseKind, "case_outcome": et.CaseOutcome,
}
_MULTI = multi_names()
# Problems the shared catalogue (i18n.problem_text) does not put into Chinese yet.
_MORE_ZH: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"matching regex '\^\[a-z0-9-\]\{1,24\}"), "rec.problem.site"),
    (re.compile(r"matching regex '\^c-\[0-9a-f\]\{32\}\$'"), "rec.problem.choose"),
    (re.compile(r"matching regex '\^\[a-z\]\{1,3\}-"), "rec.problem.choose"),
    (re.compile(r"^Expected `bool`"), "rec.problem.choose"),
    (re.compile(r"^Expected `int`, got `str`"), "rec.problem.int"),
]


def choices(kind: str, lang: str) -> list[tuple[str, str]]:
    """The options of a select (value, label in the page's language)."""
    if kind == "yes_no":
        return [("true", i18n.text("opt.yes_no.true", lang)), ("false", i18n.text("opt.yes_no.false", lang))]
    if kind in _ENUMS:
        return [(str(v), i18n.text(f"opt.{kind}.{v}", lang)) for v in _ENUMS[kind]]
    return i18n.options(kind, lang)


def problem_text(message: str, lang: str) -> str:
    if lang != "en":
        for pattern, key in _MORE_ZH:
            if pattern.search(message):
                return i18n.text(key, lang)
    return i18n.problem_text(message, lang)


def _site_defaults(config: SiteConfig) -> dict[str, str]:
    """A new registration starts from the site's own village (a village station) or school."""
    if config.kind == et.SiteKind.SCHOOL:
        return {"school": config.name}
    if config.kind in (et.SiteKind.VILLAGE, et.SiteKind.COMMUNITY):
        name = config.name
        cut = name.rfind("村")
        if cut > 0:
            name = name[:cut + 1]
        for suffix in ("维权站", "儿童之家", "村委会", "社区居委会"):
            name = name.removesuffix(suffix)
        return {"household_village": name}
    return {}


class Lookups(msgspec.Struct):
    """What the pickers offer: the site's children by name, their pairings and rights cases, and the
    sites of the township this site knows of."""

    open_children: list[dict[str, Any]]
    closed_children: list[dict[str, Any]]
    pairings: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    sites: list[dict[str, str]]
    names: dict[str, str]

    def child_of(self, ref: str) -> str | None:
        for row in (*self.pairings, *self.cases):
            if row["value"] == ref:
                return str(row["child_id"])
        return None


def _lookups(log: LocalLog, config: SiteConfig, lang: str) -> Lookups:
    views: list[ChildArchive] = station_archives(log).listed()  # the station's one cache of archives
    archives = sorted((v for v in views if v.registered and v.merged_into is None),
                      key=lambda a: (a.name or "", a.child_id))

    def row(a: ChildArchive) -> dict[str, Any]:
        extra = " ".join(x for x in (f"{a.grade}年级" if a.grade else "", a.class_name or "") if x) if lang == "zh" \
            else " ".join(x for x in (f"grade {a.grade}" if a.grade else "", a.class_name or "") if x)
        return {"child_id": a.child_id, "name": a.name or a.child_id, "extra": extra}

    pairings, cases = [], []
    sites = {config.site_id: config.name}
    for a in archives:
        for p in a.pairings:
            state = "" if p.ended_on is None else " " + i18n.text("rec.ended", lang, day=p.ended_on)
            pairings.append({"value": p.pairing_id, "child_id": a.child_id, "open": p.ended_on is None,
                             "label": f"{a.name} · {i18n.label('partner', p.partner_kind, lang)} · "
                                      f"{p.partner_name}{state}"})
        for rc in a.rights_cases:
            state = "" if rc.closed_on is None else " " + i18n.text("rec.ended", lang, day=rc.closed_on)
            cases.append({"value": rc.case_id, "child_id": a.child_id, "open": rc.closed_on is None,
                          "label": f"{a.name} · {i18n.text(f'opt.case_kind.{rc.kind}', lang)}"
                                   f" · {rc.opened_on}{state}"})
        for s in (*a.sites, a.village_site, a.school_site):
            if s and s.rsplit(".", 1)[0] == config.township:
                sites.setdefault(s, "")
    pairings.sort(key=lambda r: not r["open"])
    cases.sort(key=lambda r: not r["open"])
    site_rows = [{"id": s, "label": (i18n.text("rec.this_site", lang, name=n) if s == config.site_id else s)}
                 for s, n in sorted(sites.items())]
    return Lookups(open_children=[row(a) for a in archives if a.open],
                   closed_children=[row(a) for a in archives if not a.open], pairings=pairings, cases=cases,
                   sites=site_rows, names={a.child_id: a.name or a.child_id for a in archives})


def _form_values(form: FormMultiDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in form:
        values = [v for v in form.getall(key) if isinstance(v, str)]
        out[key] = values if len(values) > 1 or key in _MULTI else (values[0] if values else "")
    out.pop(CSRF_FIELD, None)
    return out


def _one(form: FormMultiDict, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _parents_rows(values: dict[str, Any], *, more: bool = False, drop: int | None = None) -> list[dict[str, str]]:
    """The parents' rows to show: those typed (minus a dropped one), then one empty row when there
    are none or the person asked for another."""
    rows = parent_rows(values)
    if drop is not None and 0 <= drop < len(rows):
        rows.pop(drop)
    if (not rows or more) and len(rows) < MAX_PARENTS:
        rows.append({})
    return rows


def _flat_parents(values: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if not k.startswith("parents.")}
    for i, row in enumerate(rows):
        for k, v in row.items():
            out[f"parents.{i}.{k}"] = v
    return out


class _Own(msgspec.Struct):
    """One of this site's own entries and how it stands after the site's own corrections."""

    event: Event
    care: Any
    correction: Any = None  # the latest EventCorrected of this site about it (care)


def _own_entries(log: LocalLog) -> tuple[dict[str, _Own], list[_Own]]:
    """Every own entry by id, and the corrections in log order."""
    entries: dict[str, _Own] = {}
    corrections: list[_Own] = []
    for e in log.own_events():
        care = care_of(e)
        own = _Own(event=e, care=care)
        entries[e.event_id] = own
        if e.type == "EventCorrected" and care is not None:
            corrections.append(own)
    for corr in corrections:
        target = entries.get(corr.care.corrected_event_id)
        if target is not None:
            target.correction = corr.care  # log order: the latest wins, as its stamp is the highest
    return entries, corrections


def _summary(own: _Own, names: dict[str, str], lang: str) -> dict[str, Any]:
    e = own.event
    corr = own.correction
    what = i18n.label("event", e.type, lang)
    if e.type == "EventCorrected" and own.care is not None:
        what += " · " + (i18n.text("rec.retraction", lang) if own.care.replacement is None
                         else i18n.text("rec.replacement", lang))
    return {
        "event_id": e.event_id, "type": e.type, "what": what, "actor": e.actor,
        "when": local_input(e.occurred_at).replace("T", " "),
        "children": [names.get(c, c) for c in e.children],
        "child_id": e.children[0] if len(e.children) == 1 else None,
        "correctable": e.type != "EventCorrected" and own.care is not None and e.type in FORMS,
        "state": None if corr is None else ("retracted" if corr.replacement is None else "corrected"),
        "reason": None if corr is None else corr.reason,
    }


def record_routes(log: LocalLog, config: SiteConfig, on_recorded: Callable[[], None], *, secret: bytes,
                  common: Common) -> list[HTTPRouteHandler]:
    """The record and correction pages (mounted by sync_agent/pages.py beside the other pages)."""
    mine = forms_for(config.kind)

    async def ctx_of(request: Request[Any, Any, Any]) -> dict[str, Any]:
        ctx = await asyncio.to_thread(common, request)
        ctx["forms"] = [(t, f) for t, f in mine.items() if f.listed]
        ctx["choices"] = choices
        return ctx

    def message(request: Request[Any, Any, Any], ctx: dict[str, Any], status: int, key: str,
                **values: Any) -> Response[str]:
        return page(request, "station/message.html", status_code=status,
                    message=i18n.text(key, lang_of(request), **values), **ctx)

    def show_form(request: Request[Any, Any, Any], ctx: dict[str, Any], form: Form, values: dict[str, Any], *,
                  lookups: Lookups, status: int = 200, errors: dict[str, list[str]] | None = None,
                  general: list[str] | None = None, saved: list[str] | None = None, action: str = "",
                  template: str = "station/record.html", rows: list[dict[str, str]] | None = None,
                  **extra: Any) -> Response[str]:
        rows = rows if rows is not None else _parents_rows(values)
        return page(request, template, status_code=status, form=form, values=_flat_parents(values, rows),
                    parents_rows=rows, max_parents=MAX_PARENTS, errors=errors or {}, general_errors=general or [],
                    parents_error=any(k.startswith("parents") for k in errors or {}),
                    lookups=lookups, children=lookups.open_children, saved=saved or [], action=action,
                    **extra, **ctx)

    def errors_of(problems: list[Problem], form: Form, lang: str) -> tuple[dict[str, list[str]], list[str]]:
        errors = {k: [problem_text(m, lang) for m in ms] for k, ms in problems_by_field(problems).items()}
        known = {f.name for f in form.fields}
        # A pairing or a case names its child: a problem with the child is one with the choice.
        ref_field = next((f.name for f in form.fields if f.kind in ("pairing", "case")), None)
        if ref_field and "child_id" in errors:
            errors.setdefault(ref_field, []).extend(errors.pop("child_id"))
        general = []
        for k, ms in errors.items():
            if k not in known and not k.startswith("parents"):
                general += [f"{k}: {m}" for m in ms]
        return errors, general

    def complete(form: Form, draft: dict[str, Any], lookups: Lookups, lang: str) -> dict[str, list[str]]:
        """Form-level checks the catalogue cannot make (a choice from the lists, something to update)."""
        errors: dict[str, list[str]] = {}
        for f in form.fields:  # a starred field is asked for even where the catalogue has a default
            node: Any = draft
            for part in f.name.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if f.required and f.kind != "bool" and f.name != "occurred_at" and node is None:
                errors[f.name] = [i18n.problem_text("required field is missing", lang)]
            if f.kind in ("pairing", "case") and draft.get(f.name):
                child = lookups.child_of(draft[f.name])
                if child is None:
                    errors[f.name] = [i18n.text("rec.problem.choose", lang)]
                else:
                    draft["child_id"] = child
        if form.type in ("ArchiveUpdated", "StatusAssessed", "ContactCardUpdated"):
            payload = {k: v for k, v in draft.items() if k not in ("type", "child_id", "occurred_at", "note")}
            if not payload:
                first = next(f.name for f in form.fields if f.name not in ("occurred_at", "child_id"))
                errors[first] = [i18n.text("rec.problem.nothing", lang)]
        return errors

    # --- the list of forms and the site's own entries --------------------------------------

    @get("/record", include_in_schema=False)
    async def index(request: Request[Any, Any, Any]) -> Response[str]:
        ctx = await ctx_of(request)
        lang = lang_of(request)

        def load() -> list[dict[str, Any]]:
            entries, _ = _own_entries(log)
            names = _lookups(log, config, lang).names
            latest = sorted(entries.values(), key=lambda o: o.event.site_seq, reverse=True)[:RECENT]
            return [_summary(o, names, lang) for o in latest]

        return page(request, "station/record_index.html", entries=await asyncio.to_thread(load), **ctx)

    # --- one form --------------------------------------------------------------------------

    @get("/record/{event_type:str}", include_in_schema=False)
    async def form_page(request: Request[Any, Any, Any], event_type: FromPath[str]) -> Response[str]:
        ctx = await ctx_of(request)
        form = mine.get(event_type)
        if form is None or not form.listed:
            return message(request, ctx, 404, "rec.not_here", what=event_type)
        lang = lang_of(request)
        values: dict[str, Any] = {"occurred_at": now_local()}
        if event_type == "ChildRegistered":
            values.update(_site_defaults(config))
        child = request.query_params.get("child")
        if child:
            if any(f.kind == "children" for f in form.fields):
                values["child_ids"] = [child]
            else:
                values["child_id"] = child
        saved = [s for s in request.query_params.get("saved", "").split(",") if s]
        lookups = await asyncio.to_thread(_lookups, log, config, lang)
        return show_form(request, ctx, form, values, lookups=lookups, saved=saved)

    @post("/record/{event_type:str}", include_in_schema=False, status_code=200)
    async def form_post(request: Request[Any, Any, Any], event_type: FromPath[str]) -> Response[str]:
        ctx = await ctx_of(request)
        form = mine.get(event_type)
        if form is None or not form.listed:
            return message(request, ctx, 404, "rec.not_here", what=event_type)
        raw = await request.form()
        who = identity_of(request)
        if not form_csrf_ok(secret, who, _one(raw, CSRF_FIELD)):
            return message(request, ctx, 403, "station.csrf_refused")
        lang = lang_of(request)
        posted = _form_values(raw)
        lookups = await asyncio.to_thread(_lookups, log, config, lang)
        more, drop = posted.pop("_more", None), posted.pop("_drop", None)
        if more or drop:  # a row added or removed without JavaScript: the draft again, nothing saved
            rows = _parents_rows(posted, more=bool(more), drop=int(drop) if str(drop).isdigit() else None)
            return show_form(request, ctx, form, posted, lookups=lookups, rows=rows)
        draft = draft_of(form, posted, child_id=new_child_id() if event_type == "ChildRegistered" else None)
        draft.pop("actor", None)  # the logged-in person records it
        for f in form.fields:  # an unticked box is "no", not "as before"
            if f.kind == "bool":
                posted.setdefault(f.name, "")
        extra = complete(form, draft, lookups, lang)
        try:
            problems = _problems(draft)
            if problems or extra:
                raise ValidationFailed(problems)
            done = await asyncio.to_thread(record_json, log, config, msgspec.json.encode(draft), actor=who.name)
        except ValidationFailed as err:
            errors, general = errors_of(err.problems, form, lang)
            _merge(errors, extra)
            return show_form(request, ctx, form, posted, lookups=lookups, status=422, errors=errors, general=general)
        except LocalLogError as err:
            return show_form(request, ctx, form, posted, lookups=lookups, status=503, general=[str(err)])
        on_recorded()
        ids = [r.event_id for r in done]
        target = f"/child/{draft['child_id']}" if event_type == "ChildRegistered" else \
            f"/record/{event_type}?saved={','.join(ids)}"
        return Response("", status_code=303, headers={"Location": target})

    # --- corrections of the site's own entries ------------------------------------------------

    def own_entry(event_id: str) -> tuple[_Own | None, str | None]:
        entries, _ = _own_entries(log)
        own = entries.get(event_id)
        if own is None:
            return None, "rec.not_own"
        if own.event.type == "EventCorrected" or own.care is None or own.event.type not in FORMS:
            return None, "rec.not_correctable"
        return own, None

    @get("/correct/{event_id:str}", include_in_schema=False)
    async def correct_page(request: Request[Any, Any, Any], event_id: FromPath[str]) -> Response[str]:
        ctx = await ctx_of(request)
        lang = lang_of(request)
        own, why = await asyncio.to_thread(own_entry, event_id)
        if own is None:
            return message(request, ctx, 404, why or "rec.not_own")
        lookups = await asyncio.to_thread(_lookups, log, config, lang)
        return correct_view(request, ctx, own, lookups, lang)

    def correct_view(request: Request[Any, Any, Any], ctx: dict[str, Any], own: _Own, lookups: Lookups, lang: str,
                     *, status: int = 200, values: dict[str, Any] | None = None,
                     errors: dict[str, list[str]] | None = None) -> Response[str]:
        form = FORMS[own.event.type]
        shown = _shown(form, own, lookups, lang)
        return page(request, "station/correct.html", status_code=status, entry=_summary(own, lookups.names, lang),
                    shown=shown, form=FORMS["EventCorrected"], values=values or {}, errors=errors or {},
                    general_errors=[], children=[], lookups=lookups, parents_rows=[], max_parents=MAX_PARENTS,
                    saved=[], action=f"/correct/{own.event.event_id}/retract",
                    done=request.query_params.get("done") if request.query_params.get("done") in _DONE else "", **ctx)

    @post("/correct/{event_id:str}/retract", include_in_schema=False, status_code=200)
    async def retract(request: Request[Any, Any, Any], event_id: FromPath[str]) -> Response[str]:
        ctx = await ctx_of(request)
        raw = await request.form()
        who = identity_of(request)
        if not form_csrf_ok(secret, who, _one(raw, CSRF_FIELD)):
            return message(request, ctx, 403, "station.csrf_refused")
        lang = lang_of(request)
        own, why = await asyncio.to_thread(own_entry, event_id)
        if own is None:
            return message(request, ctx, 404, why or "rec.not_own")
        reason = _one(raw, "reason").strip()
        draft = {"type": "EventCorrected", "occurred_at": _now_iso(), "corrected_event_id": event_id,
                 "reason": reason, "child_ids": list(own.event.children)}
        try:
            await asyncio.to_thread(record_json, log, config, msgspec.json.encode(draft), actor=who.name)
        except ValidationFailed as err:
            errors = {k: [problem_text(m, lang) for m in ms] for k, ms in problems_by_field(err.problems).items()}
            lookups = await asyncio.to_thread(_lookups, log, config, lang)
            return correct_view(request, ctx, own, lookups, lang, status=422, values={"reason": reason},
                                errors=errors)
        except LocalLogError as err:
            return page(request, "station/message.html", status_code=503, message=str(err), **ctx)
        on_recorded()
        return Response("", status_code=303, headers={"Location": f"/correct/{event_id}?done=retracted"})

    def replace_form(form: Form) -> Form:
        return Form(form.type, form.zh, form.en, [CORRECTION_REASON, *form.fields], ref=form.ref)

    @get("/correct/{event_id:str}/replace", include_in_schema=False)
    async def replace_page(request: Request[Any, Any, Any], event_id: FromPath[str]) -> Response[str]:
        ctx = await ctx_of(request)
        lang = lang_of(request)
        own, why = await asyncio.to_thread(own_entry, event_id)
        if own is None:
            return message(request, ctx, 404, why or "rec.not_own")
        form = FORMS[own.event.type]
        care, occurred = own.care, own.event.occurred_at
        if own.correction is not None and own.correction.replacement is not None:  # what it says now
            care = own.correction.replacement
            occurred = own.correction.replacement_occurred_at or occurred
        values = values_of(form, _payload(care), occurred)
        lookups = await asyncio.to_thread(_lookups, log, config, lang)
        return show_form(request, ctx, replace_form(form), values, lookups=lookups,
                         action=f"/correct/{event_id}/replace", template="station/replace.html",
                         entry=_summary(own, lookups.names, lang))

    @post("/correct/{event_id:str}/replace", include_in_schema=False, status_code=200)
    async def replace(request: Request[Any, Any, Any], event_id: FromPath[str]) -> Response[str]:
        ctx = await ctx_of(request)
        raw = await request.form()
        who = identity_of(request)
        if not form_csrf_ok(secret, who, _one(raw, CSRF_FIELD)):
            return message(request, ctx, 403, "station.csrf_refused")
        lang = lang_of(request)
        own, why = await asyncio.to_thread(own_entry, event_id)
        if own is None:
            return message(request, ctx, 404, why or "rec.not_own")
        form = FORMS[own.event.type]
        shown = replace_form(form)
        posted = _form_values(raw)
        lookups = await asyncio.to_thread(_lookups, log, config, lang)
        summary = _summary(own, lookups.names, lang)
        more, drop = posted.pop("_more", None), posted.pop("_drop", None)
        if more or drop:
            rows = _parents_rows(posted, more=bool(more), drop=int(drop) if str(drop).isdigit() else None)
            return show_form(request, ctx, shown, posted, lookups=lookups, rows=rows, template="station/replace.html",
                             action=f"/correct/{event_id}/replace", entry=summary)
        for f in form.fields:
            if f.kind == "bool":
                posted.setdefault(f.name, "")
        payload = _payload(own.care)
        # the ids the station made keep their value in the corrected copy (and a registration its child)
        made = ("pairing_id", "case_id", "activity_id", *(("child_id",) if form.type == "ChildRegistered" else ()))
        keep: dict[str, str] = {k: payload[k] for k in made if k in payload}
        replacement = draft_of(form, posted, ids=keep)
        occurred = replacement.pop("occurred_at", None)
        extra = complete(form, replacement, lookups, lang)
        if not occurred:
            extra.setdefault("occurred_at", []).append(i18n.problem_text("required field is missing", lang))
        draft = {"type": "EventCorrected", "occurred_at": _now_iso(), "corrected_event_id": event_id,
                 "reason": str(posted.get("correction_reason") or "").strip(), "child_ids": list(own.event.children),
                 "replacement": replacement}
        if occurred:
            draft["replacement_occurred_at"] = occurred
        try:
            problems = _problems(draft)
            if problems or extra:
                raise ValidationFailed(problems)
            await asyncio.to_thread(record_json, log, config, msgspec.json.encode(draft), actor=who.name)
        except ValidationFailed as err:
            # the correction's own reason is the form's "correction_reason"; the copy's fields are the form's
            inner = [Problem({"reason": "correction_reason", "replacement_occurred_at": "occurred_at"}.get(
                p.field, p.field.removeprefix("replacement.")), p.message, p.value) for p in err.problems]
            errors, general = errors_of(inner, shown, lang)
            _merge(errors, extra)
            return show_form(request, ctx, shown, posted, lookups=lookups, status=422, errors=errors, general=general,
                             template="station/replace.html", action=f"/correct/{event_id}/replace", entry=summary)
        except LocalLogError as err:
            return page(request, "station/message.html", status_code=503, message=str(err), **ctx)
        on_recorded()
        return Response("", status_code=303, headers={"Location": f"/correct/{event_id}?done=corrected"})

    return [index, form_page, form_post, correct_page, retract, replace_page, replace]


def _shown(form: Form, own: _Own, lookups: Lookups, lang: str) -> list[tuple[str, str]]:
    """What an entry said, field by field, as the person reads it (label, value)."""
    values = values_of(form, _payload(own.care), own.event.occurred_at)
    out = []
    for f in form.fields:
        label = f.zh if lang == "zh" else f.en
        if f.kind == "parents":
            rows = parent_rows(values)
            text = "；".join(" ".join(v for v in row.values() if v) for row in rows)
        else:
            v = values.get(f.name)
            if v in (None, "", []):
                continue
            if f.kind in ("child", "closed_child"):
                text = lookups.names.get(str(v), str(v))
            elif f.kind == "children":
                text = "、".join(lookups.names.get(c, c) for c in v)
            elif f.kind in ("select", "tristate"):
                text = dict(choices(f.enum or "", lang)).get(str(v), str(v))
            elif f.kind == "multi":
                text = "、".join(dict(choices(f.enum or "", lang)).get(x, x) for x in v)
            elif f.kind == "bool":
                text = i18n.text("yes" if v == "on" else "no", lang)
            elif f.kind in ("pairing", "case"):
                rows2 = lookups.pairings if f.kind == "pairing" else lookups.cases
                text = next((r["label"] for r in rows2 if r["value"] == v), str(v))
            elif f.kind == "datetime":
                text = str(v).replace("T", " ")
            else:
                text = str(v)
        if text:
            out.append((label, text))
    return out


def _payload(care: Any) -> dict[str, Any]:
    """A payload with every field, defaults included (a box left as it was is still shown ticked)."""
    return {f.encode_name: msgspec.to_builtins(getattr(care, f.name)) for f in msgspec.structs.fields(care)}


def _problems(draft: dict[str, Any]) -> list[Problem]:
    """What validation says of a draft (nothing recorded)."""
    try:
        parse_drafts(msgspec.json.encode(draft))
    except ValidationFailed as err:
        return list(err.problems)
    return []


def _merge(errors: dict[str, list[str]], extra: dict[str, list[str]]) -> None:
    for k, ms in extra.items():
        errors.setdefault(k, []).extend(m for m in ms if m not in errors[k])


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
