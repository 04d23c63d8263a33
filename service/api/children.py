"""Children: search, the archive, the timeline and the archive as of a past time.

Each read of one child is logged (:mod:`service.api.audit`) and scoped in its statement
(:mod:`service.api.scoping`): a child outside the caller's scope is a 404, like a child that
does not exist. Resident ID numbers are masked in lists, and in an archive for roles that do
not serve the child (the auditor).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter, QueryParameter

from events.ids import mask_resident_id
from events.localtime import local_today
from events.types import GuardianshipType, Reason
from projections import archive as pa
from projections import followups as pf
from projections.source import Row
from service.api import archives
from service.api.auth import Caller
from service.api.errors import ApiError, bad, broken_rule, not_found
from service.api.rollups import RuleInputsCache, rule_figures
from service.api.scoping import (
    LISTERS,
    READERS,
    ChildCursor,
    ChildIdPath,
    Params,
    SiteFilter,
    allow,
    caller_of,
    sees_whole_resident_id,
)

_builtins = msgspec.to_builtins


class ChildSummary(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a search result (resident ID masked)."""

    child_id: str
    name: str | None = None
    sex: str | None = None
    birth_date: dt.date | None = None
    resident_id_masked: str | None = None
    household_village: str | None = None
    village_site: str | None = None
    school_site: str | None = None
    guardianship: str | None = None
    open: bool = False
    merged_into: str | None = None
    last_visit: dt.date | None = None
    grade: int | None = None
    reasons: list[str] = []
    registered_on: dt.date | None = None
    closed_on: dt.date | None = None
    last_contact: dt.date | None = None  # the latest visit, call, letter or talk
    paired: bool = False  # has a pairing (结对帮扶) that has not ended
    overdue_rules: list[str] = []  # the follow-up rules overdue today


class ChildPage(msgspec.Struct, frozen=True):
    """A page of children: by child id with `next_cursor`, or, with `sort`, by that key with
    `offset` paging and `total` (how many children match the filters)."""

    items: list[ChildSummary]
    next_cursor: str | None = None
    total: int | None = None
    next_offset: int | None = None


class GradeBand(enum.StrEnum):
    """School grades: 1-3, 4-6 (primary), 7-9 (junior middle), or no grade recorded."""

    LOWER = "1-3"
    UPPER = "4-6"
    JUNIOR = "7-9"
    NONE = "none"


class ArchiveState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ChildSort(enum.StrEnum):
    NAME = "name"
    SITE = "site"
    REGISTERED = "registered"
    LAST_CONTACT = "last_contact"


_BANDS = {GradeBand.LOWER: range(1, 4), GradeBand.UPPER: range(4, 7), GradeBand.JUNIOR: range(7, 10)}


class MonthWork(msgspec.Struct, frozen=True, kw_only=True):
    """Contacts with one child in one calendar month ("YYYY-MM"), after corrections: the read
    model's MonthWork as the API answers it, an object (the read model keeps a compact array)."""

    month: str
    visits: int = 0
    calls: int = 0
    letters: int = 0
    talks: int = 0


class ChildArchive(pa.ChildArchive, frozen=True, kw_only=True):
    # The read model's archive as the API answers it: every field the same but `months`, whose
    # items are objects, so the answer is what the OpenAPI document says (component ChildArchive).
    months: list[MonthWork] = []  # type: ignore[assignment]  # noqa: RUF012 (a msgspec field: copied per instance)


def archive_out(a: pa.ChildArchive) -> ChildArchive:
    fields = msgspec.structs.asdict(a)
    fields["months"] = [MonthWork(month=m.month, visits=m.visits, calls=m.calls, letters=m.letters, talks=m.talks)
                        for m in a.months]
    return ChildArchive(**fields)


class ArchiveView(msgspec.Struct, frozen=True):
    """A child's merged archive; `as_of` says which past moment it shows, if any."""

    archive: ChildArchive
    resident_id_masked: bool
    as_of: str | None = None
    as_of_time: dt.datetime | None = None


class TimelineLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the growth record: what happened, when, who recorded it where, and the
    payload as recorded (resident ID masked for roles that do not need it)."""

    event_id: str
    type: str
    occurred_at: dt.datetime
    committed_at: dt.datetime
    recorded_at: int
    site_id: str
    site_seq: int
    actor: str
    children: list[str]
    payload: dict[str, Any]
    corrects: str | None = None
    corrected_by: str | None = None
    retracted: bool = False


class TimelineView(msgspec.Struct, frozen=True):
    child_id: str
    items: list[TimelineLine]


def last_contact(a: pa.ChildArchive) -> dt.date | None:
    days = [d for d in (a.last_visit, a.last_call, a.last_letter, a.last_talk) if d is not None]
    return max(days) if days else None


def summary(a: pa.ChildArchive, overdue_rules: list[str] | None = None) -> ChildSummary:
    return ChildSummary(
        child_id=a.child_id, name=a.name, sex=a.sex, birth_date=a.birth_date,
        resident_id_masked=mask_resident_id(a.resident_id), household_village=a.household_village,
        village_site=a.village_site, school_site=a.school_site,
        guardianship=str(a.guardian.type) if a.guardian is not None else None, open=a.open,
        merged_into=a.merged_into, last_visit=a.last_visit, grade=a.grade, reasons=list(a.reasons),
        registered_on=a.registered_on, closed_on=a.closed_on, last_contact=last_contact(a),
        paired=bool(a.current_pairings), overdue_rules=overdue_rules or [],
    )


class ArchiveFilter(msgspec.Struct, frozen=True):
    """The filters of the children list judged on the archive itself (after the SQL ones)."""

    guardianship: GuardianshipType | None = None
    reason: Reason | None = None
    grade_band: GradeBand | None = None
    overdue: bool = False
    overdue_rule: str | None = None
    paired: bool | None = None

    def keep(self, a: pa.ChildArchive, late: Mapping[str, list[str]]) -> list[str] | None:
        """The child's overdue rules (of `late`: child -> the ids of the rules it is overdue for) if
        it passes every filter, else None."""
        if self.guardianship is not None and (a.guardian is None or a.guardian.type != self.guardianship):
            return None
        if self.reason is not None and self.reason not in a.reasons:
            return None
        if self.grade_band is not None:
            if self.grade_band is GradeBand.NONE:
                if a.grade is not None:
                    return None
            elif a.grade is None or a.grade not in _BANDS[self.grade_band]:
                return None
        if self.paired is not None and bool(a.current_pairings) != self.paired:
            return None
        rules = late.get(a.child_id, [])
        if self.overdue and not rules:
            return None
        if self.overdue_rule is not None and self.overdue_rule not in rules:
            return None
        return rules


def rule_scope(caller: Caller, site_id: str | None) -> str | None:
    """The scope the children list judges overdue rules in: the site filtered on, else the caller's
    own (a station's or school's site, township staff's and auditors' township, the county's
    region); None for a caller who reads no child."""
    if site_id is not None:
        return site_id
    if caller.role in ("station", "school"):
        return caller.site_id
    if caller.role in ("township", "auditor"):
        return caller.township
    if caller.role == "county":
        return caller.region
    return None


async def overdue_rules(pool: asyncpg.Pool, cache: RuleInputsCache | None, scope: str | None, today: dt.date
                        ) -> dict[str, list[str]]:
    """Child -> the ids of the child rules it is overdue for on `today`, under the township's rules
    in force in `scope` (projections.rule_queries.rule_figures_live, as GET /rules and GET
    /sites/{id}/overdue judge)."""
    if scope is None:
        return {}
    out: dict[str, list[str]] = {}
    for f in await rule_figures(pool, cache, scope, pf.month_of(today), today):
        if f.target == "child":
            for o in f.overdue:
                out.setdefault(o.subject, []).append(f.rule_id)
    return {k: sorted(v) for k, v in out.items()}


def _sort_key(sort: ChildSort) -> Any:
    if sort is ChildSort.NAME:
        return lambda s: (s.name or "", s.child_id)
    if sort is ChildSort.SITE:
        return lambda s: (s.village_site or s.school_site or "", s.name or "", s.child_id)
    if sort is ChildSort.REGISTERED:
        return lambda s: (s.registered_on or dt.date.min, s.child_id)
    return lambda s: (s.last_contact or dt.date.min, s.child_id)


def masked_archive(caller: Caller, a: pa.ChildArchive) -> ArchiveView:
    if sees_whole_resident_id(caller):
        return ArchiveView(archive=archive_out(a), resident_id_masked=False)
    return ArchiveView(archive=archive_out(msgspec.structs.replace(a, resident_id=mask_resident_id(a.resident_id))),
                       resident_id_masked=True)


def _mask_payload(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (mask_resident_id(v) if k == "resident_id" and isinstance(v, str) else _mask_payload(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_payload(v) for v in value]
    return value


def query_text(request: Request[Any, Any, Any]) -> str:
    return request.url.query or ""


def _aware(name: str, value: dt.datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise bad(name, value.isoformat(), "give a time zone, e.g. 2026-06-30T23:59:59+08:00")


def route_of(request: Request[Any, Any, Any]) -> str:
    """The route as a template ("GET /children/{child_id}"), for the read log."""
    template = request.scope.get("path_template") or request.url.path
    return f"{request.method} {template}"


# Rules between parameters that JSON Schema cannot state (the routes' 422 answers, docs/API.md).
CURSOR_NOT_SORTED = "cursor pages the list by child id: not with sort (page a sorted list with offset)"
OFFSET_SORTED = "offset pages a sorted list: only with sort (page the list by child id with cursor)"
ONE_CLOCK = "give exactly one of committed or occurred"


class ChildrenController(Controller):
    path = "/children"
    tags = ["children"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    # The search is a masked list (the county's too); one child's records are for READERS only.
    guards = [allow(*LISTERS)]  # noqa: RUF012 (as above)

    @get("/", summary="Search children in your scope", opt={"rules": [CURSOR_NOT_SORTED, OFFSET_SORTED]},
         description="Filters combine with AND. Resident ID numbers are masked here for every role; search by the "
                     "whole number to find one child. Without `sort`: ordered by child id, paged with next_cursor. "
                     "With `sort`: ordered by that key, paged with offset (next_offset), and `total` counts every "
                     "child that matches. Overdue rules are judged today (China Standard Time).")
    async def search(
        self, request: Request[Any, Any, Any],
        name: Annotated[str | None, Parameter(min_length=1, max_length=40, description="name contains this")] = None,
        resident_id: Annotated[str | None, Parameter(pattern=r"^[0-9]{17}[0-9X]$",
                                                     description="whole resident ID number")] = None,
        site_id: SiteFilter = None,
        guardianship: Annotated[GuardianshipType | None, Parameter(description="guardianship type")] = None,
        reason: Annotated[Reason | None, Parameter(description="counted for this reason")] = None,
        grade_band: Annotated[GradeBand | None, Parameter(description="grades 1-3, 4-6, 7-9, or none recorded")
                              ] = None,
        open_only: Annotated[bool, Parameter(description="only open archives")] = False,
        archive_state: Annotated[ArchiveState | None, QueryParameter(name="state", description="only open or only "
                                                                                       "closed archives")] = None,
        overdue: Annotated[bool, Parameter(description="only children overdue for a follow-up rule today")] = False,
        overdue_rule: Annotated[str | None, Parameter(pattern=r"^[a-z][a-z0-9_]{0,39}$", max_length=40,
                                                      description="only children overdue for this rule (its id, "
                                                                  "GET /rules) today")] = None,
        paired: Annotated[bool | None, Parameter(description="only children with (true) or without (false) a "
                                                             "current pairing")] = None,
        sort: Annotated[ChildSort | None, Parameter(description="order by this key (then offset paging)")] = None,
        descending: Annotated[bool, Parameter(description="with sort: largest first")] = False,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000, description="with sort: skip this many")] = 0,
        cursor: ChildCursor = None,
        limit: Annotated[int, Parameter(ge=1, le=200, description="page size, at most 200")] = 50,
    ) -> ChildPage:
        caller = caller_of(request)
        if cursor is not None and sort is not None:
            raise broken_rule("cursor", cursor, CURSOR_NOT_SORTED)
        if offset and sort is None:
            raise broken_rule("offset", str(offset), OFFSET_SORTED)
        p = Params()
        conds = []
        if name is not None:
            conds.append(f"strpos(a.name, {p.add(name)}) > 0")
        if resident_id is not None:
            conds.append(f"a.resident_id = {p.add(resident_id)}")
        if site_id is not None:
            conds.append(f"a.sites @> ARRAY[{p.add(site_id)}]::text[]")
        if open_only or archive_state is ArchiveState.OPEN:
            conds.append("a.open")
        if archive_state is ArchiveState.CLOSED:
            conds.append("NOT a.open")
        judged = ArchiveFilter(guardianship=guardianship, reason=reason, grade_band=grade_band, overdue=overdue,
                               overdue_rule=overdue_rule, paired=paired)
        today = local_today()
        late = await overdue_rules(request.app.state.pool, request.app.state.get("rule_inputs"),
                                   rule_scope(caller, site_id), today)
        if sort is not None:
            async with request.app.state.pool.acquire() as conn:
                every = await archives.archives_where(conn, caller, p, conds)
            matched = []
            for a in every:
                rules = judged.keep(a, late)
                if rules is not None:
                    matched.append(summary(a, rules))
            matched.sort(key=_sort_key(sort), reverse=descending)
            shown = matched[offset:offset + limit]
            more = offset + limit < len(matched)
            return ChildPage(items=shown, total=len(matched), next_offset=offset + limit if more else None)
        after = p.add(cursor or "")  # "" sorts before every child id
        conds.append(f"a.child_id > {after}")
        at = int(after[1:]) - 1
        items: list[ChildSummary] = []
        next_cursor: str | None = None
        async with request.app.state.pool.acquire() as conn:
            # Guardianship, reason, grade, pairing and overdue are judged on the archive itself;
            # the scope and the other filters are in the statement. Keyset pages until the page is full.
            for _ in range(50):
                page = await archives.archives_where(conn, caller, Params(*p.values), conds, limit)
                for a in page:
                    p.values[at] = a.child_id
                    rules = judged.keep(a, late)
                    if rules is None:
                        continue
                    items.append(summary(a, rules))
                    if len(items) == limit:
                        next_cursor = a.child_id
                        break
                if len(page) < limit or len(items) == limit:
                    break
        return ChildPage(items=items, next_cursor=next_cursor)

    @get("/{child_id:str}", guards=[allow(*READERS)], summary="A child's merged, current archive",
         description="Logged in the read log. 404 when the child is not in your scope. The resident ID number is "
                     "whole for station, school and township staff and masked for auditors.")
    async def archive(self, request: Request[Any, Any, Any], child_id: ChildIdPath
                      ) -> ArchiveView:
        caller = caller_of(request)
        a = await archives.logged_archive(request.app.state.pool, caller, child_id, route_of(request),
                                          query_text(request))
        if a is None:
            raise not_found("child", child_id, "child_id")
        return masked_archive(caller, a)

    @get("/{child_id:str}/timeline", guards=[allow(*READERS)],
         summary="A child's growth record: every event, originals and corrections",
         description="Logged in the read log. Ordered by occurred time. 404 outside your scope.")
    async def timeline(self, request: Request[Any, Any, Any], child_id: ChildIdPath
                       ) -> TimelineView:
        caller = caller_of(request)
        rows = await archives.logged_rows(request.app.state.pool, caller, child_id, route_of(request),
                                          query_text(request))
        if rows is None:
            raise not_found("child", child_id, "child_id")
        return _timeline(caller, child_id, rows,
                         await archives.shown_ids(request.app.state.pool, caller, child_id, rows))

    @get("/{child_id:str}/as-of", guards=[allow("township", "auditor")], opt={"rules": [ONE_CLOCK]},
         summary="A child's archive as it stood at a past time",
         description="Give exactly one of committed (what the center held then) or occurred (the work done by then, "
                     "as known now). Computed from the log up to that point. Logged in the read log.")
    async def as_of(
        self, request: Request[Any, Any, Any], child_id: ChildIdPath,
        committed: Annotated[dt.datetime | None, Parameter(description="as of this committed time")] = None,
        occurred: Annotated[dt.datetime | None, Parameter(description="as of this occurred time")] = None,
    ) -> ArchiveView:
        caller = caller_of(request)
        if (committed is None) == (occurred is None):
            raise ApiError(422, ONE_CLOCK, field="committed", value=request.url.query or "")
        _aware("committed", committed)
        _aware("occurred", occurred)
        rows = await archives.logged_rows(request.app.state.pool, caller, child_id, route_of(request),
                                          query_text(request), committed_before=committed,
                                          occurred_before=occurred)
        a = archives.derive(child_id, rows or [])
        if a is None:
            raise not_found("child", child_id, "child_id")
        view = masked_archive(caller, a)
        return msgspec.structs.replace(view, as_of="committed" if committed else "occurred",
                                       as_of_time=committed or occurred)


def _matches(a: pa.ChildArchive, name: str | None, resident_id: str | None, guardianship: GuardianshipType | None,
             open_only: bool) -> bool:
    if name is not None and (a.name is None or name not in a.name):
        return False
    if resident_id is not None and a.resident_id != resident_id:
        return False
    if guardianship is not None and (a.guardian is None or a.guardian.type != guardianship):
        return False
    return not (open_only and not a.open)


_CHILD_REFS = ("child_id", "kept_child_id", "merged_child_id")


def _scrub(value: Any, shown: set[str]) -> Any:
    """A payload without the children the caller may not be shown: cut from `child_ids`, a
    single reference set to null (a correction's replacement likewise)."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if isinstance(out.get("child_ids"), list):
        out["child_ids"] = [x for x in out["child_ids"] if x in shown]
    for key in _CHILD_REFS:
        if isinstance(out.get(key), str) and out[key] not in shown:
            out[key] = None
    if isinstance(out.get("replacement"), dict):
        out["replacement"] = _scrub(out["replacement"], shown)
    return out


def _timeline(caller: Caller, child_id: str, rows: list[Row], shown: set[str]) -> TimelineView:
    """The timeline lines, each naming only the children in `shown` (archives.shown_ids)."""
    items, by_id = archives.timeline_rows(child_id, rows)
    whole = sees_whole_resident_id(caller)
    lines = []
    for it in items:
        r = by_id[it.event_id]
        payload = _scrub(msgspec.json.decode(r.event.payload), shown)
        lines.append(TimelineLine(
            event_id=it.event_id, type=it.type, occurred_at=it.occurred_at, committed_at=r.committed_at,
            recorded_at=it.recorded_at, site_id=it.site_id, site_seq=it.site_seq, actor=it.actor,
            children=[x for x in it.children if x in shown], payload=payload if whole else _mask_payload(payload),
            corrects=it.corrects,
            corrected_by=it.corrected_by, retracted=it.retracted))
    return TimelineView(child_id=child_id, items=lines)
