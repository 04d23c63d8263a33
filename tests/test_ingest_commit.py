"""Ingest's two entry points, bytes from the wire (`triage` + `commit_in`) and events that are
values (`commit_events`, the API's writes), on real PostgreSQL: the same stored result, the same
refusals and quarantine rows, and refusal kinds (not reason texts) as what code branches on."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import msgspec
import nats
import pytest

from events import catalogue as c
from events.envelope import DecodedEvent, Event, encode_event
from events.samples import SampleSite
from events.wire import up_subject
from service.api.auth import Caller
from service.api.errors import ApiError
from service.api.writes import record
from service.ingest import Inbound, Ingester, Outcome, RefusalKind, Rejected, commit_events, commit_in, triage
from service.sites import disable_site, register_site
from service.streams import StreamSettings
from store.postgres import EventStore

A, B, OFF, OFFICE, UNKNOWN = "gx-lp.xy.v01", "gx-lp.xy.v02", "gx-lp.xy.v09", "gx-lp.xy.office", "gx-lp.xy.v77"
CHILD = "c-" + "0" * 31 + "1"

Commit = Callable[[asyncpg.Connection, str, Event, bool], Awaitable[Outcome]]


async def _wire(conn: asyncpg.Connection, site: str, event: Event, quarantine: bool) -> Outcome:
    return await commit_in(conn, [triage(Inbound(subject=up_subject(site), data=encode_event(event)))],
                           quarantine=quarantine)


async def _typed(conn: asyncpg.Connection, site: str, event: Event, quarantine: bool) -> Outcome:
    return await commit_events(conn, site, [event], quarantine=quarantine)


PATHS: dict[str, Commit] = {"wire": _wire, "typed": _typed}


@contextlib.asynccontextmanager
async def _undone(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction that is rolled back: each path sees the same starting state."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        finally:
            await tx.rollback()


def _visit(site: SampleSite, findings: str = "一切正常") -> DecodedEvent:
    return site.write(c.HomeVisitMade(child_id=CHILD, visitor="石晓", findings=findings))


@pytest.fixture
async def sites(pool: asyncpg.Pool) -> asyncpg.Pool:
    for s in (A, B, OFF):
        await register_site(pool, s, "village", s)
    await register_site(pool, OFFICE, "township", "乡办")
    await disable_site(pool, OFF)
    return pool


async def test_both_paths_store_the_same_event(sites: asyncpg.Pool) -> None:
    """An event stored by one path is a duplicate (same id, same hash) to the other, each way round,
    and both report the same stored DecodedEvent."""
    writer = SampleSite(A)
    first, second = _visit(writer), _visit(writer)
    stored: dict[str, list[DecodedEvent]] = {}
    for name, path in PATHS.items():
        async with _undone(sites) as conn:
            stored[name] = (await path(conn, A, first.event, True)).stored
    assert stored["wire"] == stored["typed"] and [d.hash for d in stored["typed"]] == [first.hash]
    for d, by, again in ((first, _typed, _wire), (second, _wire, _typed)):
        async with sites.acquire() as conn, conn.transaction():
            assert len((await by(conn, A, d.event, True)).stored) == 1
        async with sites.acquire() as conn, conn.transaction():
            out = await again(conn, A, d.event, True)
        assert (out.stored, out.duplicates, out.quarantined) == ([], 1, 0)


def _bad_input(case: str, stored: DecodedEvent) -> tuple[RefusalKind, str, Event]:
    """A bad input by name: the refusal kind both paths give, the site it is sent as, the event.
    `stored` is site A's first event, already in the store (what the store conflicts contradict)."""
    other_content = msgspec.structs.replace(stored.event, payload=msgspec.Raw(msgspec.json.encode(
        {"type": "HomeVisitMade", "child_id": CHILD, "visitor": "别人", "findings": "改过"})))
    huge = msgspec.structs.replace(_visit(SampleSite(A)).event, payload=msgspec.Raw(msgspec.json.encode(
        {"type": "HomeVisitMade", "child_id": CHILD, "visitor": "石晓", "findings": "x" * 70_000})))
    cases = {
        "no site": (RefusalKind.NO_SITE, "not a site", _visit(SampleSite(A)).event),
        "too large": (RefusalKind.TOO_LARGE, A, huge),
        # a child id the envelope's `children` refuses before the payload is looked at
        "bad envelope": (RefusalKind.INVALID, A, SampleSite(A).write(c.HomeVisitMade(child_id="nope",
                                                                                    visitor="石晓")).event),
        "bad payload": (RefusalKind.INVALID, A, SampleSite(A).write(c.HomeVisitMade(child_id=CHILD,
                                                                                   visitor="")).event),
        "another site's event": (RefusalKind.WRONG_SITE, B, _visit(SampleSite(A)).event),
        "unregistered site": (RefusalKind.SITE_UNKNOWN, UNKNOWN, _visit(SampleSite(UNKNOWN)).event),
        "disabled site": (RefusalKind.SITE_DISABLED, OFF, _visit(SampleSite(OFF)).event),
        "stored id, other content": (RefusalKind.STORE_CONFLICT, A, other_content),
        "site_seq taken": (RefusalKind.STORE_CONFLICT, A, _visit(SampleSite(A), "另一次").event),
    }
    return cases[case]


CASES = ["no site", "too large", "bad envelope", "bad payload", "another site's event", "unregistered site",
         "disabled site", "stored id, other content", "site_seq taken"]


@pytest.mark.parametrize("case", CASES)
async def test_both_paths_refuse_bad_input_alike(sites: asyncpg.Pool, case: str) -> None:
    """For each kind of bad input, both paths refuse it with the same kind and reason text, and
    quarantine the same row (subject, site, identity, reason, raw bytes)."""
    stored = _visit(SampleSite(A))
    async with sites.acquire() as conn, conn.transaction():
        assert len((await _wire(conn, A, stored.event, True)).stored) == 1
    kind, site, event = _bad_input(case, stored)
    seen: dict[str, tuple[object, ...]] = {}
    for name, path in PATHS.items():
        async with _undone(sites) as conn:
            out = await path(conn, site, event, False)
        assert out.stored == [] and len(out.rejected) == 1, (name, out)
        r = out.rejected[0]
        assert r.kind is kind, (name, r.kind, r.reason)
        async with _undone(sites) as conn:
            out = await path(conn, site, event, True)
            row = await conn.fetchrow(
                """SELECT subject, site_id, event_id::text, site_seq, reason, raw, msgpack, status FROM quarantine""")
        assert out.quarantined == 1 and row is not None and row["reason"] == r.reason
        refusals = [(x.reason, x.event_id, x.site_seq) for rs in out.refusals.values() for x in rs]
        seen[name] = (r.site_id, r.reason, r.event_id, r.site_seq, tuple(row), refusals)
    assert seen["wire"] == seen["typed"]


async def test_api_write_is_refused_and_stored_as_the_wire_would(sites: asyncpg.Pool) -> None:
    """The API's `record` stores an event the wire path then finds a duplicate of, and refuses a
    write of a disabled office site with the wire's reason text, quarantining nothing."""
    caller = Caller(username="township", role="township", site_id=OFFICE, township="gx-lp.xy", token_id="t")
    care = c.HomeVisitMade(child_id=CHILD, visitor="石晓")
    async with sites.acquire() as conn, conn.transaction():
        rec = await record(conn, caller, care, occurred_at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    stored = await EventStore(sites).get(rec.event_id)
    assert stored is not None
    async with sites.acquire() as conn, conn.transaction():
        out = await _wire(conn, OFFICE, stored.event, True)
    assert (out.stored, out.duplicates, out.quarantined) == ([], 1, 0)

    await disable_site(sites, OFFICE)
    with pytest.raises(ApiError) as refused:
        async with sites.acquire() as conn, conn.transaction():
            await record(conn, caller, care)
    async with _undone(sites) as conn:
        wire = await _wire(conn, OFFICE, SampleSite(OFFICE).write(care).event, False)
    assert wire.rejected[0].kind is RefusalKind.SITE_DISABLED
    assert refused.value.status_code == 409
    assert refused.value.detail == f"the center refused the event: {wire.rejected[0].reason}"
    assert await sites.fetchval("SELECT count(*) FROM quarantine") == 0


@pytest.mark.parametrize("kind", [RefusalKind.INVALID, RefusalKind.STORE_REFUSED])
async def test_split_branches_on_the_refusal_kind_not_its_text(sites: asyncpg.Pool, nats_url: str,
                                                               kind: RefusalKind) -> None:
    """When even quarantining a lone refused event fails, the ingester gives up (raises, leaving it
    to redelivery) only for its own STORE_REFUSED kind; another kind whose text reads the same is
    quarantined with the database's reason."""
    nc = await nats.connect(nats_url)
    try:
        ingester = Ingester(sites, nc, StreamSettings())
        # A NUL cannot be stored in PostgreSQL text: inserting this reason fails with a data error.
        reason = "the event store refused it: looks like ingest's own words\x00"
        item = Rejected(Inbound(subject=up_subject(A), data=b"{}"), A, kind, reason)
        if kind is RefusalKind.STORE_REFUSED:
            with pytest.raises(asyncpg.PostgresError):
                await ingester._commit([item])
            assert await sites.fetchval("SELECT count(*) FROM quarantine") == 0
        else:
            out = await ingester._commit([item])
            assert out.quarantined == 1
            held = await sites.fetchval("SELECT reason FROM quarantine")
            assert held.startswith("the event store refused it: ") and "\x00" not in held
    finally:
        await nc.close()
