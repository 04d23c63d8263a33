"""The child's page at the station and its paper archive: everything the site knows of one child,
grouped by the `section` trait of each event type (events.traits), and the print views the work
is inspected on: the child's archive (一人一档), the contact card (联系卡) and the station's roster
(花名册) as a print view and as XLSX.

Everything here is built offline from the local log with the center's own reducer
(sync_agent/view.py `child_record`), so the page shows what the center would show for the same
events. Events are shown with their details in words and names (people from the events' fields,
sites by name: this station's from site.json, other sites by the school or village the events
name, never a bare id); a corrected entry stays, struck through, with its correction's reason.

**Who sees the whole resident ID.** A station account with role ``director`` (the village's
child director or the school's head of the left-behind pupils' working group, who answers for
the archives and fills in official forms) sees the whole 身份证号 on the child's page and in
every print view and export; role ``staff`` sees it masked (`events.ids.mask_resident_id`)
everywhere, XLSX included. A token caller has its user's role.

**Every view is a read.** The child's page, the printed archive and the contact card write one
row to the station's read log (sync_agent/readlog.py) before anything is shown; the roster (print
view or XLSX) writes one row per child listed. If the read log cannot be written nothing is
shown (503).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from events import catalogue as c
from events.ids import mask_resident_id
from events.localtime import REPORTING_TZ
from events.traits import Section, traits_of
from projections.archive import ChildArchive, Entry
from sync_agent.accounts import Identity
from sync_agent.config import SiteConfig
from sync_agent.door import identity_of
from sync_agent.forms import FORMS
from sync_agent.locallog import LocalLog
from sync_agent.readlog import ReadLog, ReadLogError
from sync_agent.view import ChildRecord, child_record, station_archives
from web import i18n, lang_of, obj, page

FULL_ID_ROLES = frozenset({"director"})  # roles that see the whole resident ID (see the module's text)

# The order of the sections on the page and on paper (every `Section` of events.traits).
SECTION_ORDER: tuple[Section, ...] = (
    Section.STATUS, Section.GUARDIAN, Section.PAIRINGS, Section.CONTACTS, Section.SUPPORT, Section.AID,
    Section.ACTIVITIES, Section.INCIDENTS, Section.RIGHTS_CASES, Section.MOVES, Section.IDENTITY, Section.MERGES,
    Section.CONFLICTS, Section.CORRECTIONS,
)

# Payload fields that are ids or are shown another way: never printed as a detail.
_SKIP = frozenset({"child_id", "child_ids_list", "pairing_id", "case_id", "activity_id", "kept_child_id",
                   "merged_child_id", "merge_event_id", "corrected_event_id", "chosen_event_id", "replacement",
                   "replacement_occurred_at"})
# Free text written by the person who did the work: shown whole, as paragraphs (findings of a
# visit, the talk's record card...), never cut short.
TEXT_FIELDS = ("findings", "record_card", "summary", "description", "note")
_SITE_FIELDS = frozenset({"village_site", "school_site", "to_village_site", "to_school_site"})
_MONEY_FIELDS = frozenset({"amount_fen", "money_fen_each"})
# Enumerations: the field -> the kind of label (web.i18n.ENUM_LABELS, else this page's cp.e.* keys).
_ENUM_FIELDS = {"sex": "sex", "reasons": "reason", "partner_kind": "partner", "channel": "channel",
                "direction": "direction", "source": "aid_source", "occasion": "occasion", "severity": "severity",
                "outcome": "outcome", "study": "level", "life": "level", "psychology": "level", "safety": "level",
                "health": "level"}
_KIND_OF = {"MeetingHeld": "meeting", "AidGiven": "aid_kind", "ActivityHeld": "activity",
            "SafetyIncidentReported": "incident", "RightsCaseOpened": "case"}


def detail_fields() -> dict[str, set[str]]:
    """Every payload field a detail line may name, by event type (tests check each has a label)."""
    return {name: {f.name for f in msgspec.structs.fields(cls)} - _SKIP for name, cls in c.EVENT_TYPES.items()}


def enum_label(kind: str, value: object, lang: str) -> str:
    """An enumeration value in words: the shared labels first, then this page's own."""
    if str(value) in i18n.ENUM_LABELS.get(kind, {}):
        return i18n.label(kind, value, lang)
    key = f"cp.e.{kind}.{value}"
    return i18n.text(key, lang) if key in i18n._T else str(value)


def local_time(t: dt.datetime) -> str:
    """An instant on China Standard Time, to the minute."""
    return t.astimezone(REPORTING_TZ).strftime("%Y-%m-%d %H:%M")


class Shown:
    """How one reader sees a child: the language, the site names and whether the whole resident ID."""

    def __init__(self, lang: str, sites: dict[str, str], full_id: bool) -> None:
        self.lang = lang
        self.sites = sites
        self.full_id = full_id

    def t(self, key: str, **values: object) -> str:
        return i18n.text(key, self.lang, **values)

    def site(self, site_id: str | None) -> str:
        if not site_id:
            return ""
        return self.sites.get(site_id) or self.t("cp.site.other", code=site_id.rsplit(".", 1)[-1])

    def resident_id(self, value: str | None) -> str:
        return (value if self.full_id else mask_resident_id(value)) or ""

    def guardian(self, g: c.Guardian | None) -> str:
        if g is None:
            return ""
        parts = [enum_label("guardianship", g.type, self.lang), " ".join(x for x in (g.name, g.relation) if x),
                 g.phone or ""]
        return " · ".join(p for p in parts if p)

    def parent(self, p: c.ParentContact) -> str:
        parts = [p.relation, p.work_place, p.phone or ""]
        if p.calls_per_month is not None:
            parts.append(self.t("cp.calls_per_month", n=p.calls_per_month))
        return " · ".join(x for x in parts if x)

    def value(self, event_type: str, field: str, value: Any) -> str:
        """One payload field's value in words."""
        if field == "kind":
            return enum_label(_KIND_OF.get(event_type, "kind"), value, self.lang)
        if field == "reason" and event_type == "ArchiveClosed":
            return enum_label("closing", value, self.lang)
        if field in _ENUM_FIELDS:
            kind = _ENUM_FIELDS[field]
            if isinstance(value, list):
                return "、".join(enum_label(kind, v, self.lang) for v in value)
            return enum_label(kind, value, self.lang)
        if field in _SITE_FIELDS:
            return self.site(value)
        if field in _MONEY_FIELDS:
            return f"{value / 100:.2f} {self.t('form.yuan')}"
        if field == "minutes":
            return self.t("tw.minutes", n=value)
        if field == "resident_id":
            return self.resident_id(value)
        if field == "guardian":
            return self.guardian(value)
        if field == "parents":
            return "；".join(self.parent(p) for p in value)
        if field == "field":
            key = f"field.{value}"
            return self.t(key) if key in i18n._T else str(value)
        if field == "grade":
            return self.t("tw.grade_n", n=value) if value else self.t("dec.not_in_school")
        if isinstance(value, bool):
            return self.t("yes") if value else self.t("no")
        return str(value)

    def details(self, care: c.CareEventBase) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(short details, long texts) of a payload, each as (label, words); ids and empty fields left out."""
        kind = type(care).__name__
        short: list[tuple[str, str]] = []
        texts: list[tuple[str, str]] = []
        for f in msgspec.structs.fields(type(care)):
            name = f.name
            if name in _SKIP:
                continue
            value = getattr(care, name)
            if value is None or value == "" or value == [] or (isinstance(value, int) and not isinstance(
                    value, bool) and value == 0 and name != "grade"):
                continue
            if name == "guardian_met" and value is True:
                continue  # the default: only a visit that missed the guardian says so
            label = self.t(f"cp.f.{name}")
            if name in TEXT_FIELDS and isinstance(value, str):
                texts.append((label, value))
            else:
                short.append((label, self.value(kind, name, value)))
        children = care.child_ids()
        if len(children) > 1 and kind not in ("ArchivesMerged", "ArchivesUnmerged", "DuplicateDismissed"):
            short.append((self.t("cp.f.children"), self.t("tw.children_n", n=len(children))))
        return short, texts


def site_names(config: SiteConfig, entries: list[Entry]) -> dict[str, str]:
    """Site id -> name, from what the station knows: its own name, the schools and villages its
    events name beside a site (a registration's school and school site, a transfer's...)."""
    names = {config.site_id: config.name}
    for e in entries:
        care = e.care
        if isinstance(care, c.ChildRegistered):
            if care.school_site and care.school:
                names.setdefault(care.school_site, care.school)
            if care.village_site:
                names.setdefault(care.village_site, i18n.text("cp.site.village", v=care.household_village))
        elif isinstance(care, c.ChildTransferred) and care.to_school_site and care.school:
            names.setdefault(care.to_school_site, care.school)
    return names


def correctable(e: Entry, site_id: str) -> bool:
    """Whether the station may correct or retract the entry at ``/correct/<id>``
    (sync_agent/record_pages.py): its own entries of a type it has a form for, not a correction."""
    return e.site_id == site_id and e.type != "EventCorrected" and e.type in FORMS


def _line(e: Entry, rec: ChildRecord, by_id: dict[str, Entry], s: Shown, site_id: str) -> dict[str, Any]:
    """One event as the page shows it: when, what, details, who, where; a corrected one struck
    through with the correction's reason and what it should have said; the station's own entries
    with the link that corrects or retracts them."""
    short, texts = s.details(e.care)
    line: dict[str, Any] = {
        "event_id": e.event_id, "type": e.type, "what": enum_label("event", e.type, s.lang),
        "when": local_time(e.occurred_at), "details": short, "texts": texts, "actor": e.actor,
        "site": s.site(e.site_id), "struck": False, "note": "", "fixed": None,
        "section": str(traits_of(e.type).section),
        "correct": f"/correct/{e.event_id}" if correctable(e, site_id) else None}
    if isinstance(e.care, c.EventCorrected):
        target = by_id.get(e.care.corrected_event_id)
        day = local_time(target.occurred_at)[:10] if target else ""
        what = enum_label("event", target.type, s.lang) if target else ""
        key = "tw.correction" if e.care.replacement is not None else "tw.retraction"
        line["details"] = [(s.t("cp.f.corrects"), s.t(key, day=day, what=what)),
                           (s.t("cp.f.reason"), e.care.reason)]
        line["texts"] = []
        return line
    fix = rec.corrections.get(e.event_id)
    if fix is not None:
        correction = by_id.get(fix[0])
        reason = correction.care.reason if correction and isinstance(correction.care, c.EventCorrected) else ""
        line["struck"] = True
        line["note"] = s.t("tw.retracted_because" if fix[1] else "tw.corrected_because", reason=reason)
        if correction is not None and isinstance(correction.care, c.EventCorrected) and \
                correction.care.replacement is not None:
            fixed_short, fixed_texts = s.details(correction.care.replacement)
            when = correction.care.replacement_occurred_at or e.occurred_at
            line["fixed"] = {"when": local_time(when), "details": fixed_short, "texts": fixed_texts}
    return line


def _pairings(rec: ChildRecord, s: Shown) -> list[dict[str, Any]]:
    started = {e.care.pairing_id: e.care for e in rec.entries if isinstance(e.care, c.PairingStarted)}
    ended = {e.care.pairing_id: e.care for e in rec.entries if isinstance(e.care, c.PairingEnded)}
    out = []
    for p in rec.archive.pairings:
        start, end = started.get(p.pairing_id), ended.get(p.pairing_id)
        out.append({"kind": enum_label("partner", p.partner_kind, s.lang), "name": p.partner_name,
                    "phone": (start.partner_phone if start else None) or "", "since": p.started_on.isoformat(),
                    "ended": p.ended_on.isoformat() if p.ended_on else "",
                    "end_reason": (end.reason if end else None) or "", "site": s.site(p.site_id)})
    return out


def _cases(rec: ChildRecord, s: Shown) -> list[dict[str, Any]]:
    opened = {e.care.case_id: e.care for e in rec.entries if isinstance(e.care, c.RightsCaseOpened)}
    closed = {e.care.case_id: e.care for e in rec.entries if isinstance(e.care, c.RightsCaseClosed)}
    out = []
    for case in rec.archive.rights_cases:
        o, cl = opened.get(case.case_id), closed.get(case.case_id)
        state = s.t("cp.case.open") if case.closed_on is None else s.t(
            "cp.case.closed", outcome=enum_label("outcome", case.outcome, s.lang), day=case.closed_on.isoformat())
        out.append({"kind": enum_label("case", case.kind, s.lang), "opened": case.opened_on.isoformat(),
                    "state": state, "open": case.closed_on is None,
                    "summary": (o.summary if o else "") or "", "closing_summary": (cl.summary if cl else "") or ""})
    return out


def child_context(rec: ChildRecord, config: SiteConfig, who: Identity, lang: str, *, links: bool = False
                  ) -> dict[str, Any]:
    """What the child's page and its print views show (names and words; the resident ID as the role
    may see it); `links`: the station's own entries link to their correction (the page, not paper)."""
    s = Shown(lang, site_names(config, rec.entries), who.role in FULL_ID_ROLES)
    a = rec.archive
    by_id = {e.event_id: e for e in rec.entries}
    lines = [_line(e, rec, by_id, s, config.site_id) for e in rec.entries]
    sections = {str(k): [ln for ln in lines if ln["section"] == str(k)] for k in SECTION_ORDER}
    conflicts = [{"field": s.value("ConflictResolved", "field", x.field), "n": len(x.heads)}
                 for x in a.open_conflicts]
    return {
        "a": obj(msgspec.to_builtins(a)),
        "resident_id": s.resident_id(a.resident_id),
        "full_id": s.full_id,
        "guardian": s.guardian(a.guardian),
        "guardian_phone": (a.guardian.phone if a.guardian and a.guardian.phone else a.guardian_phone) or "",
        "parents": [{"relation": p.relation, "work_place": p.work_place, "phone": p.phone or "",
                     "calls": p.calls_per_month} for p in a.parents],
        "reasons": [enum_label("reason", r, lang) for r in a.reasons],
        "status": [(area, enum_label("level", a.status.get(area), lang) if a.status.get(area) else "—")
                   for area in c.STATUS_AREAS],
        "site_names": [s.site(x) for x in a.sites],
        "registered_by": s.site(a.registered_by),
        "closing_reason": enum_label("closing", a.closing_reason, lang) if a.closing_reason else "",
        "pairings": _pairings(rec, s),
        "cases": _cases(rec, s),
        "sections": [(str(k), sections[str(k)]) for k in SECTION_ORDER],
        "timeline": lines,
        "conflicts": conflicts,
        "counts": {str(k): len(sections[str(k)]) for k in SECTION_ORDER},
        "correct_links": links,
    }


# --- the roster (花名册) ----------------------------------------------------------------------------

ROSTER_COLUMNS = ("cp.r.no", "child.name", "child.sex", "child.birth_date", "child.resident_id",
                  "child.household_village", "child.school", "child.grade", "child.class_name", "child.guardianship",
                  "child.guardian", "cp.guardian_phone", "child.parents", "child.reasons", "child.pairings",
                  "tw.registered_on", "tw.state")


def roster_rows(archives: list[ChildArchive], s: Shown) -> list[list[Any]]:
    """One row per child, in ROSTER_COLUMNS' order (the resident ID as the reader's role may see it)."""
    rows = []
    for n, a in enumerate(archives, 1):
        g = a.guardian
        rows.append([
            n, a.name or "", enum_label("sex", a.sex, s.lang) if a.sex else "",
            a.birth_date.isoformat() if a.birth_date else "", s.resident_id(a.resident_id), a.household_village or "",
            a.school or "", a.grade if a.grade else "", a.class_name or "",
            enum_label("guardianship", g.type, s.lang) if g else "",
            " ".join(x for x in ((g.name, g.relation) if g else ()) if x),
            (g.phone if g and g.phone else a.guardian_phone) or "",
            "；".join(s.parent(p) for p in a.parents),
            "、".join(enum_label("reason", r, s.lang) for r in a.reasons),
            "；".join(f"{enum_label('partner', p.partner_kind, s.lang)} {p.partner_name}" for p in a.current_pairings),
            a.registered_on.isoformat() if a.registered_on else "",
            s.t("tw.state.open") if a.open else s.t("tw.state.closed"),
        ])
    return rows


def _roster_archives(log: LocalLog) -> list[ChildArchive]:
    """The station's children (open ones first, by name), as the children list shows them."""
    return sorted(station_archives(log).listed(), key=lambda a: (not a.open, a.name or "", a.child_id))


# --- the routes ----------------------------------------------------------------------------------


def child_routes(log: LocalLog, config: SiteConfig, *, reads: ReadLog, on_read: Callable[[], None],
                 common: Callable[[Request[Any, Any, Any]], dict[str, Any]]) -> list[HTTPRouteHandler]:
    """The child's page, its printed archive and contact card, and the roster (print and XLSX)."""

    def now_text() -> str:
        return dt.datetime.now(REPORTING_TZ).strftime("%Y-%m-%d %H:%M")

    async def read_child(request: Request[Any, Any, Any], child_id: str, route: str
                         ) -> tuple[ChildRecord | None, dict[str, Any], Response[str] | None]:
        """Load the child, write the read down, and say what to answer if not the page."""
        events = await asyncio.to_thread(log.child_events, child_id)
        rec = await asyncio.to_thread(child_record, child_id, events) if events else None
        ctx = await asyncio.to_thread(common, request)
        who = identity_of(request)
        shown = rec is not None and rec.archive.registered
        try:  # written down before anything is shown
            await asyncio.to_thread(reads.record, who.name, who.role, child_id, route, shown)
        except ReadLogError as err:
            return None, ctx, page(request, "station/message.html", status_code=503, message=str(err), **ctx)
        on_read()
        if rec is None or not rec.archive.registered:
            return None, ctx, page(request, "station/message.html", status_code=404, message=i18n.text(
                "child.not_found", lang_of(request)), **ctx)
        return rec, ctx, None

    @get("/child/{child_id:str}", include_in_schema=False)
    async def child(request: Request[Any, Any, Any], child_id: FromPath[str]) -> Response[str]:
        rec, ctx, answer = await read_child(request, child_id, "GET /child/{id}")
        if answer is not None or rec is None:
            return answer  # type: ignore[return-value]
        view = child_context(rec, config, identity_of(request), lang_of(request), links=True)
        return page(request, "station/child.html", **view, **ctx)

    @get("/child/{child_id:str}/print", include_in_schema=False)
    async def print_archive(request: Request[Any, Any, Any], child_id: FromPath[str]) -> Response[str]:
        rec, ctx, answer = await read_child(request, child_id, "GET /child/{id}/print")
        if answer is not None or rec is None:
            return answer  # type: ignore[return-value]
        view = child_context(rec, config, identity_of(request), lang_of(request))
        return page(request, "station/print_archive.html", printed_at=now_text(), **view, **ctx)

    @get("/child/{child_id:str}/card", include_in_schema=False)
    async def print_card(request: Request[Any, Any, Any], child_id: FromPath[str]) -> Response[str]:
        rec, ctx, answer = await read_child(request, child_id, "GET /child/{id}/card")
        if answer is not None or rec is None:
            return answer  # type: ignore[return-value]
        view = child_context(rec, config, identity_of(request), lang_of(request))
        return page(request, "station/print_card.html", printed_at=now_text(), **view, **ctx)

    async def roster_read(request: Request[Any, Any, Any], route: str, lang: str
                          ) -> tuple[list[list[Any]], Shown, dict[str, Any], Response[str] | None]:
        who = identity_of(request)
        archives = await asyncio.to_thread(_roster_archives, log)
        ctx = await asyncio.to_thread(common, request)
        s = Shown(lang, {config.site_id: config.name}, who.role in FULL_ID_ROLES)

        def write() -> None:  # one read per child listed, before the list is shown
            for a in archives:
                reads.record(who.name, who.role, a.child_id, route, True)

        try:
            await asyncio.to_thread(write)
        except ReadLogError as err:
            return [], s, ctx, page(request, "station/message.html", status_code=503, message=str(err), **ctx)
        if archives:
            on_read()
        return roster_rows(archives, s), s, ctx, None

    def headers(s: Shown) -> list[str]:
        out = [s.t(k) for k in ROSTER_COLUMNS]
        if not s.full_id:
            out[ROSTER_COLUMNS.index("child.resident_id")] = s.t("cp.r.resident_id_masked")
        return out

    @get("/print/roster", include_in_schema=False)
    async def roster_print(request: Request[Any, Any, Any]) -> Response[str]:
        rows, s, ctx, answer = await roster_read(request, "GET /print/roster", lang_of(request))
        if answer is not None:
            return answer
        return page(request, "station/roster_print.html", columns=headers(s), rows=rows, printed_at=now_text(),
                    full_id=s.full_id, **ctx)

    @get("/print/roster.xlsx", include_in_schema=False)
    async def roster_xlsx(request: Request[Any, Any, Any]) -> Response[Any]:
        # The XLSX goes on to the township's and the county's forms: Chinese headers and words always.
        rows, s, _, answer = await roster_read(request, "GET /print/roster.xlsx", "zh")
        if answer is not None:
            return answer
        data = await asyncio.to_thread(_xlsx, headers(s), rows, config.name, now_text())
        day = dt.datetime.now(REPORTING_TZ).strftime("%Y%m%d")
        name = f"roster-{config.site_id}-{day}.xlsx"
        return Response(data, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "Cache-Control": "no-store"})

    return [child, print_archive, print_card, roster_print, roster_xlsx]


def _xlsx(header: list[str], rows: list[list[Any]], site_name: str, printed_at: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.worksheets[0]  # a new workbook has one sheet; .active may be a chartsheet or none to the type checker
    assert ws is not None
    ws.title = "花名册"
    ws.append(list(header))
    for cell in ws[1]:
        cell.font = Font(bold=True)
        cell.alignment = Alignment(wrap_text=True, vertical="center")
    for row in rows:
        ws.append(row)
    ws.freeze_panes = "B2"
    widths = [6, 10, 6, 12, 22, 10, 14, 6, 8, 14, 14, 16, 30, 18, 18, 12, 8]
    for i, w in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(i)].width = w
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.print_title_rows = "1:1"
    page_head, page_foot = ws.oddHeader, ws.oddFooter
    assert page_head is not None and page_foot is not None  # a new sheet has both
    page_head.center.text = f"{site_name} 留守儿童花名册"
    page_foot.right.text = f"{printed_at} · 第 &P 页 / 共 &N 页"
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
