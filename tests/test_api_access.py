"""Access control of the center's HTTP API: every route with each role, scope isolation between
stations in both directions, resident ID masking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg

from events import catalogue as c
from events.types import PartnerKind
from tests.api_world import OFFICE, S1, T0, TOWNSHIP, USERS, V1, V2, World, open_api

ROLES = tuple(USERS)  # station1, station2, school, township, auditor, admin, other_township

# status per role, in ROLES order
R_V1 = (200, 404, 200, 200, 200, 403, 404)  # reading child_v1 (village v01, school s01)
R_ALL = (200, 200, 200, 200, 200, 403, 200)
ADMIN_ONLY_OK = (403, 403, 403, 403, 403, None, 403)

Route = tuple[str, str, Callable[[World], str], Callable[[World], Any] | None, tuple[int | None, ...]]


def routes() -> list[Route]:
    asof = "committed=2030-01-01T00:00:00Z"
    return [
        ("GET", "archive", lambda w: f"/children/{w.child_v1}", None, R_V1),
        ("GET", "timeline", lambda w: f"/children/{w.child_v1}/timeline", None, R_V1),
        ("GET", "as-of", lambda w: f"/children/{w.child_v1}/as-of?{asof}", None,
         (403, 403, 403, 200, 200, 403, 404)),
        ("GET", "follow-ups", lambda w: f"/children/{w.child_v1}/followups?period=2026-03", None, R_V1),
        ("GET", "search", lambda w: "/children", None, R_ALL),
        ("GET", "overdue", lambda w: f"/sites/{V1}/overdue?today=2026-06-01", None,
         (200, 404, 404, 200, 200, 403, 404)),
        ("GET", "rollup site", lambda w: f"/rollups?scope={V1}&period=2026", None, (200, 404, 404, 200, 200, 403, 404)),
        ("GET", "rollup school", lambda w: f"/rollups?scope={S1}&period=2026-S1", None,
         (404, 404, 200, 200, 200, 403, 404)),
        ("GET", "rollup township", lambda w: f"/rollups?scope={TOWNSHIP}&start=2026-01-01&end=2026-06-30", None,
         (404, 404, 404, 200, 200, 403, 404)),
        ("GET", "export xlsx", lambda w: f"/exports/summary.xlsx?scope={TOWNSHIP}&period=2026", None,
         (404, 404, 404, 200, 200, 403, 404)),
        ("GET", "export csv", lambda w: f"/exports/summary.csv?scope={V2}&period=2026", None,
         (404, 200, 404, 200, 200, 403, 404)),
        ("GET", "export json", lambda w: f"/exports/summary.json?scope={TOWNSHIP}&period=2026-03", None,
         (404, 404, 404, 200, 200, 403, 404)),
        ("GET", "sites", lambda w: "/sites", None, (200, 200, 200, 200, 200, 200, 200)),
        ("GET", "site", lambda w: f"/sites/{V1}", None, (200, 404, 404, 200, 200, 200, 404)),
        ("POST", "register site", lambda w: "/sites",
         lambda w: {"site_id": f"{TOWNSHIP}.v50", "kind": "village", "name": "新站"},
         (403, 403, 403, 403, 403, 201, 403)),
        ("POST", "disable site", lambda w: f"/sites/{TOWNSHIP}.v99/disable", None, (403, 403, 403, 403, 403, 200, 403)),
        ("GET", "conflicts", lambda w: "/conflicts", None, R_ALL),
        ("POST", "resolve", lambda w: "/conflicts/resolve",
         lambda w: {"child_id": w.child_v1, "field": "guardian", "chosen_event_id": w.registration_v1.event.event_id},
         (403, 403, 403, 409, 403, 403, 404)),
        ("GET", "duplicates", lambda w: "/duplicates", None, (403, 403, 403, 200, 200, 403, 200)),
        ("POST", "merge", lambda w: "/merges",
         lambda w: {"kept_child_id": w.child_v1, "merged_child_id": "c-" + "0" * 32},
         (403, 403, 403, 404, 403, 403, 404)),
        ("POST", "unmerge", lambda w: "/merges/01937a0c-3f2b-7c8d-9e0f-112233445566/undo", lambda w: {},
         (403, 403, 403, 404, 403, 403, 404)),
        ("POST", "correct", lambda w: f"/children/{w.child_v1}/corrections",
         lambda w: {"corrected_event_id": "01937a0c-3f2b-7c8d-9e0f-112233445566", "reason": "录入错误"},
         (403, 403, 403, 404, 403, 403, 404)),
        ("GET", "quarantine", lambda w: "/quarantine", None, (403, 403, 403, 200, 403, 200, 200)),
        ("GET", "quarantine row", lambda w: "/quarantine/1", None, (403, 403, 403, 404, 403, 404, 404)),
        ("POST", "replay", lambda w: "/quarantine/1/replay", None, (403, 403, 403, 403, 403, 404, 403)),
        ("GET", "read log", lambda w: "/audit/reads", None, (403, 403, 403, 403, 200, 403, 403)),
        ("GET", "chain", lambda w: f"/audit/chains/{V1}", None, (403, 403, 403, 200, 200, 200, 404)),
        ("GET", "users", lambda w: "/users", None, (403, 403, 403, 403, 403, 200, 403)),
        ("POST", "add user", lambda w: "/users",
         lambda w: {"username": "new.v01", "role": "station", "password": "long enough pw", "site_id": V1},
         (403, 403, 403, 403, 403, 201, 403)),
        ("POST", "disable user", lambda w: "/users/spare/disable", None, (403, 403, 403, 403, 403, 200, 403)),
        ("GET", "me", lambda w: "/auth/me", None, (200,) * 7),
    ]


async def test_every_route_with_each_role(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Each route answers each role as the role table says: allowed, refused (403), or another
    site's child / site / township not found (404)."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        from service.api import auth
        from service.sites import register_site

        await register_site(pool, f"{TOWNSHIP}.v99", "village", "spare")
        await auth.add_user(pool, "spare", "station", "long enough pw", site_id=V1)
        wrong: list[str] = []
        for method, name, path, body, expected in routes():
            for role, want in zip(ROLES, expected, strict=True):
                if want is None:
                    continue
                r = await client.request(method, path(w), headers=w.headers(role),
                                         json=body(w) if body is not None else None)
                if r.status_code != want:
                    wrong.append(f"{name} as {role}: {r.status_code} (wanted {want}) {r.text[:160]}")
                if r.status_code >= 400:
                    assert set(r.json()) >= {"status", "code", "message"}, r.text
        assert not wrong, "\n".join(wrong)


async def test_two_stations_are_isolated_both_ways(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Station 1 never sees station 2's child and station 2 never sees station 1's, in reads,
    searches, site lists and overdue lists; each sees its own."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        for me, mine, theirs, my_site, their_site in (("station1", w.child_v1, w.child_v2, V1, V2),
                                                      ("station2", w.child_v2, w.child_v1, V2, V1)):
            h = w.headers(me)
            for suffix in ("", "/timeline", "/followups?period=2026-03"):
                assert (await client.get(f"/children/{mine}{suffix}", headers=h)).status_code == 200
                assert (await client.get(f"/children/{theirs}{suffix}", headers=h)).status_code == 404
            listed = [c["child_id"] for c in (await client.get("/children", headers=h)).json()["items"]]
            assert listed == [mine]
            by_site = await client.get(f"/children?site_id={their_site}", headers=h)
            assert by_site.json()["items"] == []
            sites = [s["site_id"] for s in (await client.get("/sites", headers=h)).json()["items"]]
            assert sites == [my_site]
            assert (await client.get(f"/sites/{their_site}/overdue", headers=h)).status_code == 404
            conflicts = (await client.get(f"/conflicts?site_id={their_site}", headers=h)).json()
            assert conflicts["items"] == []


async def test_township_sees_its_township_only(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Township staff list every child of their township's sites and none of another township's."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        mine = {c["child_id"] for c in (await client.get("/children", headers=w.headers("township"))).json()["items"]}
        assert mine == {w.child_v1, w.child_v2}
        other = {c["child_id"] for c in
                 (await client.get("/children", headers=w.headers("other_township"))).json()["items"]}
        assert other == {w.child_z}
        r = await client.get(f"/children/{w.child_z}", headers=w.headers("township"))
        assert r.status_code == 404


async def test_resident_id_masked_in_lists_and_for_auditors(database_url: str, nats_url: str,
                                                           pool: asyncpg.Pool) -> None:
    """Lists never show a whole resident ID; the archive shows it whole to staff and masked to auditors,
    and the timeline payload follows the same rule."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        whole = w.resident_v1
        for role in ("station1", "township", "auditor"):
            page = (await client.get("/children", headers=w.headers(role))).text
            assert whole not in page
        staff = (await client.get(f"/children/{w.child_v1}", headers=w.headers("station1"))).json()
        assert staff["archive"]["resident_id"] == whole and staff["resident_id_masked"] is False
        audit = (await client.get(f"/children/{w.child_v1}", headers=w.headers("auditor"))).json()
        assert audit["archive"]["resident_id"] != whole and audit["resident_id_masked"] is True
        assert audit["archive"]["resident_id"][-2:] == whole[-2:]
        tl_staff = (await client.get(f"/children/{w.child_v1}/timeline", headers=w.headers("township"))).text
        tl_audit = (await client.get(f"/children/{w.child_v1}/timeline", headers=w.headers("auditor"))).text
        assert whole in tl_staff and whole not in tl_audit
        found = await client.get(f"/children?resident_id={whole}", headers=w.headers("township"))
        assert [c["child_id"] for c in found.json()["items"]] == [w.child_v1]


async def test_as_of_shows_the_past(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """As of an occurred time before a visit the archive has no last visit; as of a committed time
    before the child was stored it is not found."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("auditor")
        before_visit = (await client.get(f"/children/{w.child_v1}/as-of?occurred=2026-03-03T00:00:00Z",
                                         headers=h)).json()
        assert before_visit["archive"]["last_visit"] is None and before_visit["as_of"] == "occurred"
        now = (await client.get(f"/children/{w.child_v1}/as-of?occurred=2026-04-01T00:00:00Z", headers=h)).json()
        assert now["archive"]["last_visit"] == "2026-03-05"
        r = await client.get(f"/children/{w.child_v1}/as-of?committed=2020-01-01T00:00:00Z", headers=h)
        assert r.status_code == 404
        both = await client.get(f"/children/{w.child_v1}/as-of?committed=2030-01-01T00:00:00Z"
                                f"&occurred=2030-01-01T00:00:00Z", headers=h)
        assert both.status_code == 422 and both.json()["field"] == "committed"  # a rule between the two


async def test_sites_show_sync_state(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A site's entry carries its watermark, last contact, holes and quarantine count."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        s = (await client.get(f"/sites/{V1}", headers=w.headers("township"))).json()
        assert s["watermark"] == 2 and s["max_seq"] == 2 and s["holes"] == [] and s["quarantine_held"] == 0
        assert s["last_contact"] is not None and s["events_stored"] == 2
        assert dt.datetime.fromisoformat(s["newest_occurred_at"]).date() == dt.date(2026, 3, 5)
        office = (await client.get(f"/sites/{OFFICE}", headers=w.headers("admin"))).json()
        assert office["last_contact"] is None and office["watermark"] == 0


async def test_search_filters(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Search filters by name, guardianship type, site and overdue follow-ups, within the caller's scope."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("township")

        async def ids(query: str) -> set[str]:
            r = await client.get(f"/children?{query}", headers=h)
            assert r.status_code == 200, r.text
            return {c["child_id"] for c in r.json()["items"]}

        one = (await client.get(f"/children/{w.child_v2}", headers=h)).json()["archive"]
        assert await ids(f"name={one['name']}") >= {w.child_v2}
        assert await ids("name=不存在的名字") == set()
        grand = {w.child_v1} | ({w.child_v2} if one["guardian"]["type"] == "grandparents" else set())
        assert await ids("guardianship=grandparents") == grand
        assert await ids(f"site_id={V2}") == {w.child_v2}
        # Overdue under the default rules, judged today: child v2, once it has a proxy parent (its
        # last visit was in March); child v1 for the class teacher's talk if it is a pupil (it is
        # held by school s01 and nobody talked with it).
        await w.record(V2, c.PairingStarted(pairing_id="p-" + "e" * 32, child_id=w.child_v2,
                                            partner_kind=PartnerKind.PROXY_PARENT, partner_name="云晓"), T0)
        v1 = (await client.get(f"/children/{w.child_v1}", headers=h)).json()["archive"]
        pupil = v1["grade"] is not None and 1 <= v1["grade"] <= 12
        assert await ids("overdue=true") == ({w.child_v1} if pupil else set()) | {w.child_v2}
        assert await ids("overdue_rule=proxy_visit") == {w.child_v2}
        assert await ids("overdue_rule=teacher_talk") == ({w.child_v1} if pupil else set())
        assert await ids("open_only=true&site_id=" + S1) == {w.child_v1}


async def test_role_guards_run_in_place_in_the_same_order(database_url: str, nats_url: str,
                                                          pool: asyncpg.Pool) -> None:
    """Every handler whose guards are all role guards runs them without litestar's copy of the
    handler (service.api.scoping.RoleGuardsInPlace), routes registered later too; layered guards
    still refuse at the first that fails (its roles named); a handler with another guard keeps
    litestar's own way."""
    from litestar import get
    from litestar.handlers.base import BaseRouteHandler

    from service.api.scoping import allow

    seen: list[str] = []

    async def other_guard(connection: Any, handler: BaseRouteHandler) -> None:
        seen.append(handler.handler_name)

    @get("/test/layered", guards=[allow("township", "auditor"), allow("auditor")], include_in_schema=False)
    async def layered() -> dict[str, str]:
        return {"status": "ok"}

    @get("/test/other", guards=[allow("township"), other_guard], include_in_schema=False)
    async def other() -> dict[str, str]:
        return {"status": "ok"}

    async with open_api(database_url, nats_url, pool) as (client, w):
        app = client.app
        app.register(layered)
        app.register(other)
        guarded = [h for r in app.routes for h in getattr(r, "route_handlers", ()) if h.resolve_guards()]
        plain = BaseRouteHandler.authorize_connection
        in_place = [h.handler_name for h in guarded if type(h).authorize_connection is not plain]
        assert len(guarded) > 40
        assert sorted(in_place) == sorted(h.handler_name for h in guarded if not h.handler_name.endswith("other"))
        r = await client.get("/test/layered", headers=w.headers("station1"))
        assert r.status_code == 403 and "township, auditor" in r.json()["message"], r.text
        r = await client.get("/test/layered", headers=w.headers("township"))
        assert r.status_code == 403 and r.json()["message"].endswith("it is for: auditor"), r.text
        assert (await client.get("/test/layered", headers=w.headers("auditor"))).status_code == 200
        assert (await client.get("/test/layered")).status_code == 401
        assert (await client.get("/test/other", headers=w.headers("auditor"))).status_code == 403
        assert not seen
        assert (await client.get("/test/other", headers=w.headers("township"))).status_code == 200
        assert len(seen) == 1
