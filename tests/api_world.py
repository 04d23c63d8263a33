"""A small made-up township for the API tests: sites, children, one user per role, tokens.

Events enter through the center's own ingest function (`service.ingest.commit_in`), so the
fan-out scope the API's queries are scoped by is written exactly as in production.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events import catalogue as c
from events.envelope import DecodedEvent, encode_event
from events.samples import SampleSite, sample_registration
from events.types import GuardianshipType
from events.wire import up_subject
from projections.runner import Runner
from runtime.settings import Settings
from service.api import auth
from service.api.app import create_app
from service.api.config import ApiSettings
from service.ingest import Inbound, commit_in, triage
from service.sites import register_site

TOWNSHIP = "gx-lp.xy"
OTHER_TOWNSHIP = "gx-lp.zz"
V1, V2, S1, OFFICE = f"{TOWNSHIP}.v01", f"{TOWNSHIP}.v02", f"{TOWNSHIP}.s01", f"{TOWNSHIP}.office"
ZV1, ZOFFICE = f"{OTHER_TOWNSHIP}.v01", f"{OTHER_TOWNSHIP}.office"
PASSWORD = "correct horse battery"
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)

# role name in tests -> (api role, site or township)
USERS: dict[str, tuple[str, str | None]] = {
    "station1": ("station", V1),
    "station2": ("station", V2),
    "school": ("school", S1),
    "township": ("township", OFFICE),
    "auditor": ("auditor", TOWNSHIP),
    "admin": ("admin", None),
    "other_township": ("township", ZOFFICE),
}


async def ingest(pool: asyncpg.Pool, events: list[DecodedEvent]) -> None:
    """Store events through the center's ingest path (triage + commit_in), as if from NATS."""
    items = [triage(Inbound(subject=up_subject(d.event.site_id), data=encode_event(d.event))) for d in events]
    async with pool.acquire() as conn, conn.transaction():
        out = await commit_in(conn, items)
    assert len(out.stored) + out.duplicates == len(events), out
    await Runner(pool).catch_up()  # the read models, as the center's runner keeps them


async def project(pool: asyncpg.Pool) -> None:
    """Bring the read models up to the store (what the projections runner does continuously)."""
    await Runner(pool).catch_up()


@dataclass
class World:
    pool: asyncpg.Pool
    tokens: dict[str, str] = field(default_factory=dict)
    writers: dict[str, SampleSite] = field(default_factory=dict)
    child_v1: str = ""  # village v01, school s01
    child_v2: str = ""  # village v02
    child_z: str = ""  # the other township
    resident_v1: str = ""
    registration_v1: DecodedEvent | None = None

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def writer(self, site: str) -> SampleSite:
        return self.writers.setdefault(site, SampleSite(site, actor="staff-" + site.rsplit(".", 1)[1]))

    async def record(self, site: str, care: c.CareEventBase, occurred_at: dt.datetime = T0,
                     based_on: dict[str, str] | None = None) -> DecodedEvent:
        d = self.writer(site).write(care, occurred_at, based_on)
        await ingest(self.pool, [d])
        return d


async def build_world(pool: asyncpg.Pool, seed: int = 7) -> World:
    rng = random.Random(seed)
    w = World(pool)
    for site, kind in ((V1, "village"), (V2, "village"), (S1, "school"), (OFFICE, "township"), (ZV1, "village"),
                       (ZOFFICE, "township")):
        await register_site(pool, site, kind, f"site {site}")
    for name, (role, where) in USERS.items():
        site = where if role in ("station", "school", "township") else None
        township = where if role == "auditor" else None
        await auth.add_user(pool, name, role, PASSWORD, site_id=site, township=township)
        w.tokens[name] = (await auth.issue_token(pool, name, hours=1)).token
    r1 = sample_registration(rng, village_site=V1, school_site=S1)
    r1 = c.ChildRegistered(**{**_fields(r1), "guardian": c.Guardian(type=GuardianshipType.GRANDPARENTS, name="石外婆",
                                                                     relation="外婆")})
    r2 = sample_registration(rng, village_site=V2)
    rz = sample_registration(rng, village_site=ZV1)
    w.registration_v1 = await w.record(V1, r1, T0)
    await w.record(V2, r2, T0)
    await w.record(ZV1, rz, T0)
    w.child_v1, w.child_v2, w.child_z = r1.child_id, r2.child_id, rz.child_id
    w.resident_v1 = r1.resident_id or ""
    await w.record(V1, c.HomeVisitMade(child_id=r1.child_id, visitor="石老师", findings="学习有进步"),
                   T0 + dt.timedelta(days=3))
    await w.record(V2, c.HomeVisitMade(child_id=r2.child_id, visitor="云老师"), T0 + dt.timedelta(days=4))
    return w


def _fields(s: c.CareEventBase) -> dict[str, object]:
    return {f: getattr(s, f) for f in s.__struct_fields__}


@contextlib.asynccontextmanager
async def open_api(database_url: str, nats_url: str, pool: asyncpg.Pool, *, connect_nats: bool = False,
                   **api: object) -> AsyncIterator[tuple[AsyncTestClient[Litestar], World]]:
    """The API on a fresh database with the made-up township in it, and a test client."""
    settings = Settings(database_url=database_url, nats_url=nats_url)
    app = create_app(settings, ApiSettings(connect_nats=connect_nats, **api))  # type: ignore[arg-type]
    world = await build_world(pool)
    async with AsyncTestClient(app) as client:
        yield client, world
