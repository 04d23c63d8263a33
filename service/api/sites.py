"""Sites: the registry and each site's sync state (last contact, watermark, holes the center is
asking it to resend, data freshness, quarantine count). Admins register and disable sites."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter

from events.localtime import local_today
from events.types import SiteId, SiteKind
from service.api.errors import ApiError
from service.api.scoping import Params, SiteIdPath, allow, caller_of, site_visible
from service.sites import SiteError, disable_site, register_site
from store.postgres import holes_of


class SiteView(msgspec.Struct, frozen=True):
    """A registered site and how its sync stands."""

    site_id: str
    kind: str
    name: str
    township: str | None
    active: bool
    registered_at: dt.datetime
    disabled_at: dt.datetime | None
    last_contact: dt.datetime | None  # the last commit of one of its events at the center
    watermark: int  # every site_seq up to here is at the center
    max_seq: int
    holes: list[list[int]]  # [lo, hi] ranges the center is asking the site to resend
    pending_resend: int  # how many events those holes hold
    events_stored: int
    newest_occurred_at: dt.datetime | None
    stale_seconds: float | None  # since last contact
    quarantine_held: int
    not_understood: int
    # What the site's agent last reported of its backlog (own events it holds unreceipted) and
    # when: the center cannot see a station's backlog otherwise.
    reported_pending: int | None = None
    reported_at: dt.datetime | None = None


class SiteList(msgspec.Struct, frozen=True):
    items: list[SiteView]


class DayCount(msgspec.Struct, frozen=True):
    day: dt.date  # a reporting day (China Standard Time)
    events: int  # events of the site the center committed that day


class SiteActivity(msgspec.Struct, frozen=True):
    """How often a site reached the center: its events committed per day (days with none omitted)."""

    site_id: str
    days: list[DayCount]


class ActivityList(msgspec.Struct, frozen=True):
    since: dt.date
    until: dt.date
    items: list[SiteActivity]


class NewSite(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    site_id: Annotated[SiteId, msgspec.Meta(examples=["gx-lp.xy.v03"])]
    kind: SiteKind
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=60, examples=["云岭村儿童之家"])]
    township: Annotated[str, msgspec.Meta(max_length=60, examples=["云岭镇"])] | None = None


class SiteCredentials(msgspec.Struct, frozen=True):
    """What the site's agent needs to connect to NATS (shown once)."""

    site_id: str
    user: str
    password: str
    inbox_prefix: str
    durable: str


CST = dt.timezone(dt.timedelta(hours=8))  # the reporting day's zone (events.localtime)

_SQL = """SELECT s.site_id, s.kind, s.name, s.township, s.active, s.registered_at, s.disabled_at,
                 s.not_understood, s.reported_pending, s.reported_at, p.last_committed_at,
                 coalesce(p.watermark, 0) AS watermark,
                 coalesce(p.max_seq, 0) AS max_seq, coalesce(p.pending, '{}') AS pending,
                 coalesce(p.events_stored, 0) AS events_stored, p.newest_occurred_at,
                 extract(epoch FROM now() - p.last_committed_at)::float8 AS stale,
                 (SELECT count(*) FROM quarantine q WHERE q.site_id = s.site_id AND q.status = 'held') AS held
          FROM sites s LEFT JOIN site_progress p USING (site_id)"""


def _view(row: Any) -> SiteView:
    holes = holes_of(int(row["watermark"]), list(row["pending"]))
    return SiteView(
        site_id=row["site_id"], kind=row["kind"], name=row["name"], township=row["township"], active=row["active"],
        registered_at=row["registered_at"], disabled_at=row["disabled_at"], last_contact=row["last_committed_at"],
        watermark=row["watermark"], max_seq=row["max_seq"], holes=[[lo, hi] for lo, hi in holes],
        pending_resend=sum(hi - lo + 1 for lo, hi in holes), events_stored=row["events_stored"],
        newest_occurred_at=row["newest_occurred_at"], stale_seconds=row["stale"], quarantine_held=row["held"],
        not_understood=row["not_understood"], reported_pending=row["reported_pending"],
        reported_at=row["reported_at"],
    )


class SitesController(Controller):
    path = "/sites"
    tags = ["sites"]  # noqa: RUF012 (litestar reads controller options from class attributes)

    @get("/", summary="Sites you may see, with their sync state",
         description="Station and school staff see their own site, township staff and auditors the sites of their "
                     "township, admins every site.")
    async def list_sites(self, request: Request[Any, Any, Any]) -> SiteList:
        caller = caller_of(request)
        p = Params()
        async with request.app.state.pool.acquire() as conn:
            rows = await conn.fetch(f"{_SQL} WHERE {site_visible(caller, p, 's.site_id')} ORDER BY s.site_id",
                                    *p.values)
        return SiteList(items=[_view(r) for r in rows])

    @get("/activity", summary="Each site's contacts with the center, day by day",
         description="For every site you may see: how many of its events the center committed on each day "
                     "(China Standard Time) of the last `days` days, today included.")
    async def activity(
        self, request: Request[Any, Any, Any],
        days: Annotated[int, Parameter(ge=1, le=366, description="how many days back, today included")] = 90,
    ) -> ActivityList:
        caller = caller_of(request)
        until = local_today()
        since = until - dt.timedelta(days=days - 1)
        q = Params()
        visible = site_visible(caller, q, "s.site_id")
        async with request.app.state.pool.acquire() as conn:
            ids = [r["site_id"] for r in await conn.fetch(
                f"SELECT s.site_id FROM sites s WHERE {visible} ORDER BY s.site_id", *q.values)]
            start = q.add(dt.datetime.combine(since, dt.time(), tzinfo=CST))
            rows = await conn.fetch(
                f"""SELECT e.site_id, (e.committed_at AT TIME ZONE INTERVAL '+08:00')::date AS day, count(*) AS n
                    FROM events e JOIN sites s USING (site_id)
                    WHERE e.committed_at >= {start} AND {visible}
                    GROUP BY 1, 2 ORDER BY 1, 2""", *q.values)
        by_site: dict[str, list[DayCount]] = {i: [] for i in ids}
        for r in rows:
            by_site.setdefault(r["site_id"], []).append(DayCount(day=r["day"], events=int(r["n"])))
        return ActivityList(since=since, until=until,
                            items=[SiteActivity(site_id=k, days=v) for k, v in by_site.items()])

    @get("/{site_id:str}", summary="One site and its sync state")
    async def get_site(self, request: Request[Any, Any, Any], site_id: SiteIdPath
                       ) -> SiteView:
        caller = caller_of(request)
        p = Params(site_id)
        async with request.app.state.pool.acquire() as conn:
            row = await conn.fetchrow(f"{_SQL} WHERE s.site_id = $1 AND {site_visible(caller, p, 's.site_id')}",
                                      *p.values)
        if row is None:
            raise ApiError(404, f"site {site_id} was not found", field="site_id", value=site_id)
        return _view(row)

    @post("/", guards=[allow("admin")], status_code=201, summary="Register a site (or re-enable it)",
          description="Returns the NATS credentials of its agent, shown once.")
    async def register(self, request: Request[Any, Any, Any], data: JSONBody[NewSite]) -> SiteCredentials:
        try:
            creds = await register_site(request.app.state.pool, data.site_id, data.kind.value, data.name,
                                        data.township)
        except SiteError as err:
            raise ApiError(409, str(err), field="kind", value=data.kind.value) from None
        return SiteCredentials(**msgspec.structs.asdict(creds))

    @post("/{site_id:str}/disable", guards=[allow("admin")], status_code=200,
          summary="Disable a site: its events go to quarantine from now on")
    async def disable(self, request: Request[Any, Any, Any], site_id: SiteIdPath
                      ) -> SiteView:
        try:
            await disable_site(request.app.state.pool, site_id)
        except SiteError as err:
            raise ApiError(404, str(err), field="site_id", value=site_id) from None
        async with request.app.state.pool.acquire() as conn:
            row = await conn.fetchrow(f"{_SQL} WHERE s.site_id = $1", site_id)
        return _view(row)
