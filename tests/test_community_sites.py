"""A community (社区) is a kind of site beside villages and schools: it registers the children who
live in it (taking the part a village station takes in their scope), its staff see them and only
them, it records condolence visits the township counts, and it is refused where a school is needed."""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import msgspec

from events import catalogue as c
from events.envelope import encode_event
from events.samples import sample_registration
from events.types import Occasion, SiteKind, scope_role
from events.wire import up_subject
from projections.rollups import Rollup
from service.api import auth
from service.ingest import Inbound, commit_in, triage
from service.sites import register_site
from sync_agent.forms import forms_for
from tests.api_world import PASSWORD, S1, T0, TOWNSHIP, V1, open_api, project

C1 = f"{TOWNSHIP}.c01"


def test_a_community_records_a_village_stations_work() -> None:
    """Its station pages offer registration, visits, condolence visits, meetings and rights cases, not a school's
    letters; in a child's scope it stands where a village station does."""
    forms = set(forms_for(SiteKind.COMMUNITY))
    assert {"ChildRegistered", "HomeVisitMade", "CondolenceVisitMade", "MeetingHeld", "RightsCaseOpened"} <= forms
    assert "LetterWritten" not in forms and "TutoringGiven" not in forms
    assert forms == set(forms_for(SiteKind.VILLAGE))
    assert (scope_role("community"), scope_role("village"), scope_role("school"), scope_role("township")) == (
        "village", "village", "school", None)


async def test_a_community_registers_visits_and_is_counted(database_url: str, nats_url: str,
                                                           pool: asyncpg.Pool) -> None:
    """A child registered at a community naming the township's school is in the community's and the school's
    scope; the community's staff see it and not a village's child; its condolence visit counts for the community
    and the township; a registration naming the community as the school is refused, naming it why."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await register_site(pool, C1, "community", "高山街社区居委会")
        await auth.add_user(pool, "community1", "station", PASSWORD, site_id=C1)
        token = (await auth.issue_token(pool, "community1", hours=1)).token
        rng = random.Random(23)
        kid = sample_registration(rng, village_site=C1, school_site=S1)  # the community names itself, as villages do
        await w.record(C1, kid, T0)
        await w.record(C1, c.CondolenceVisitMade(child_ids_list=[kid.child_id], occasion=Occasion.SPRING_FESTIVAL,
                                                 money_fen_each=5_000), T0 + dt.timedelta(days=1))
        await project(pool)
        mine = {"Authorization": f"Bearer {token}"}
        assert (await client.get(f"/children/{kid.child_id}", headers=mine)).status_code == 200
        assert (await client.get(f"/children/{w.child_v1}", headers=mine)).status_code == 404
        school = (await client.get(f"/children/{kid.child_id}", headers=w.headers("school")))
        assert school.status_code == 200
        town = msgspec.convert((await client.get(f"/rollups?scope={TOWNSHIP}&period=2026-03",
                                                 headers=w.headers("township"))).json(), Rollup)
        assert town.by_site[C1] == 1 and town.by_site[S1] >= 1
        assert (town.condolence_visits, town.condolence_children, town.condolence_amount_fen) == (1, 1, 5_000)
        own = msgspec.convert((await client.get(f"/rollups?scope={C1}&period=2026-03", headers=mine)).json(), Rollup)
        assert (own.children_archived, own.condolence_households) == (1, 1)

        wrong = w.writer(V1).write(sample_registration(rng, village_site=V1, school_site=C1), T0)
        item = triage(Inbound(subject=up_subject(V1), data=encode_event(wrong.event)))
        async with pool.acquire() as conn, conn.transaction():
            out = await commit_in(conn, [item])
        assert out.quarantined == 1 and not out.stored
        [reason] = [r.reason for r in out.refusals[V1]]
        assert "is not an active school site" in reason, reason


def test_a_township_rule_may_name_communities() -> None:
    """A site rule that applies to communities is described in words, as one for village stations is."""
    from events.rules import DEFAULT_RULES, Target
    from projections.rules import applies_text

    rule = next(r for r in DEFAULT_RULES if r.applies.target is Target.SITE)
    ours = msgspec.structs.replace(rule, applies=msgspec.structs.replace(rule.applies,
                                                                          site_kinds=[SiteKind.COMMUNITY]))
    zh, en = applies_text(ours)
    assert "社区" in zh and "community" in en
