"""The contract every log of sealed events keeps (store/contract.py): one suite, run on the
center's PostgreSQL store (down each of its two append paths) and on a site's SQLite log."""

from __future__ import annotations

import dataclasses
import inspect
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import asyncpg
import msgspec
import pytest

from events.catalogue import HomeVisitMade
from events.envelope import GENESIS_HASH, DecodedEvent, decode_event, encode_event
from events.samples import SampleSite
from store import postgres as store_module
from store.contract import Appended, ChainCheck, EventLog, LoggedEvent
from store.postgres import EventStore
from sync_agent.locallog import LocalLog

SITE = "gx-lp.xy.v01"
OTHER_SITE = "gx-lp.xy.s01"
CHILD = "c-" + "a" * 32


class SiteLog:
    """A site's SQLite log behind the contract's async operations (the log itself is synchronous)."""

    def __init__(self, log: LocalLog) -> None:
        self.log = log

    async def append(self, batch: Sequence[DecodedEvent]) -> Appended:
        return self.log.append(batch)

    async def read_site(self, site_id: str, from_seq: int = 1, limit: int = 1000) -> Sequence[LoggedEvent]:
        return self.log.read_site(site_id, from_seq, limit)

    async def verify_chain(self, site_id: str) -> ChainCheck:
        return self.log.verify_chain(site_id)


# Damage a stored row behind the log's back: (site_seq, "edit" or "remove").
Tamper = Callable[[int, str], Awaitable[None]]


@dataclasses.dataclass
class Backend:
    name: str
    log: EventLog  # mypy checks here that both logs have the contract's operations
    tamper: Tamper


def _sqlite_backend(path: Path) -> tuple[Backend, LocalLog]:
    site_log = LocalLog(path, SITE)

    async def tamper(site_seq: int, how: str) -> None:
        with sqlite3.connect(path) as conn:
            if how == "remove":
                conn.execute("DELETE FROM log WHERE site_seq = ?", (site_seq,))
                return
            (body,) = conn.execute("SELECT body FROM log WHERE site_seq = ?", (site_seq,)).fetchone()
            doc = msgspec.json.decode(body)
            doc["payload"]["findings"] = "改过"
            conn.execute("UPDATE log SET body = ? WHERE site_seq = ?", (msgspec.json.encode(doc), site_seq))

    return Backend("sqlite", SiteLog(site_log), tamper), site_log


def _postgres_backend(name: str, pool: asyncpg.Pool) -> Backend:
    async def tamper(site_seq: int, how: str) -> None:
        async with pool.acquire() as conn:
            if how == "remove":
                await conn.execute("DELETE FROM events WHERE site_id = $1 AND site_seq = $2", SITE, site_seq)
            else:
                await conn.execute(
                    """UPDATE events SET payload = jsonb_set(payload, '{findings}', '"改过"')
                       WHERE site_id = $1 AND site_seq = $2""", SITE, site_seq)

    return Backend(name, EventStore(pool), tamper)


@pytest.fixture(params=["postgres-call", "postgres-copy", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """Each log under the contract: the center's store with every batch sent down the one-call
    path (shouwang_append) or down the COPY path, and a site's SQLite log."""
    if request.param == "sqlite":
        b, site_log = _sqlite_backend(tmp_path / "site.sqlite")
        yield b
        site_log.close()
        return
    monkeypatch.setattr(store_module, "CALL_THRESHOLD", 10**6 if request.param == "postgres-call" else 0)
    yield _postgres_backend(request.param, request.getfixturevalue("pool"))


def visits(writer: SampleSite, n: int) -> list[DecodedEvent]:
    return [writer.write(HomeVisitMade(child_id=CHILD, visitor="石晓", findings=f"第{i}次")) for i in range(n)]


def forged(d: DecodedEvent) -> DecodedEvent:
    """The same event id and sequence number with other content (so another hash)."""
    doc = msgspec.json.decode(encode_event(d.event))
    doc["payload"]["findings"] = "篡改"
    return decode_event(msgspec.json.encode(doc))


def ids(events: Sequence[DecodedEvent]) -> list[str]:
    return [d.event.event_id for d in events]


async def read_everything(log: EventLog, page: int) -> list[LoggedEvent]:
    """The site's whole log, read `page` events at a time by site_seq."""
    out: list[LoggedEvent] = []
    while batch := await log.read_site(SITE, out[-1].event.site_seq + 1 if out else 1, page):
        out += batch
    return out


def test_both_logs_conform_to_the_protocol(backend: Backend) -> None:
    """Each log is an EventLog, and every operation of the contract is a coroutine on it."""
    assert isinstance(backend.log, EventLog)
    for name in ("append", "read_site", "verify_chain"):
        assert inspect.iscoroutinefunction(getattr(backend.log, name)), name


async def test_appending_the_same_events_again_changes_nothing(backend: Backend) -> None:
    """(a) A whole batch appended again is reported as duplicates and the log reads back as before."""
    batch = visits(SampleSite(SITE), 5)
    first = await backend.log.append(batch)
    assert list(first.stored) == ids(batch) and not first.duplicates and not first.refused
    before = [(s.event.event_id, s.hash) for s in await backend.log.read_site(SITE)]
    again = await backend.log.append(batch)
    assert not again.stored and not again.refused and list(again.duplicates) == ids(batch)
    assert [(s.event.event_id, s.hash) for s in await backend.log.read_site(SITE)] == before
    assert before == [(d.event.event_id, d.hash) for d in batch]


async def test_same_id_with_other_content_is_refused_and_the_stored_event_kept(backend: Backend) -> None:
    """(a) A resend with one event's content changed: the rest are duplicates, that one refused, the original kept."""
    batch = visits(SampleSite(SITE), 3)
    await backend.log.append(batch)
    result = await backend.log.append([batch[0], forged(batch[1]), batch[2]])
    assert not result.stored
    assert list(result.duplicates) == [batch[0].event.event_id, batch[2].event.event_id]
    assert [r.event_id for r in result.refused] == [batch[1].event.event_id]
    assert "different content" in result.refused[0].reason
    [kept] = await backend.log.read_site(SITE, 2, 1)
    assert (kept.event.event_id, kept.hash) == (batch[1].event.event_id, batch[1].hash)
    assert msgspec.json.decode(kept.event.payload)["findings"] == "第1次"


async def test_a_second_event_for_a_taken_site_seq_is_refused(backend: Backend) -> None:
    """(b) A different event claiming a site_seq that is taken is refused, naming the event that holds it."""
    [first] = visits(SampleSite(SITE), 1)
    [rival] = visits(SampleSite(SITE), 1)  # another event sealed as the site's site_seq 1
    await backend.log.append([first])
    result = await backend.log.append([rival])
    assert not result.stored and not result.duplicates
    assert [r.event_id for r in result.refused] == [rival.event.event_id]
    assert f"already used by event {first.event.event_id}" in result.refused[0].reason
    assert [s.event.event_id for s in await backend.log.read_site(SITE)] == [first.event.event_id]


async def test_a_sites_sequence_reads_back_gapless_and_each_event_once(backend: Backend) -> None:
    """(b) Events appended in batches, one repeated inside a batch, read back as site_seq 1..n, each event once."""
    batch = visits(SampleSite(SITE), 6)
    result = await backend.log.append([batch[0], batch[1], batch[0]])
    assert list(result.stored) == ids(batch[:2]) and list(result.duplicates) == [batch[0].event.event_id]
    await backend.log.append(batch[2:3])
    await backend.log.append(batch[3:])
    read = await backend.log.read_site(SITE)
    assert [s.event.site_seq for s in read] == [1, 2, 3, 4, 5, 6]
    assert [s.event.event_id for s in read] == ids(batch)
    assert await backend.log.read_site(OTHER_SITE) == []


async def test_paged_reads_return_every_event_once_in_one_stable_order(backend: Backend) -> None:
    """(c) After overlapping resends, reads in pages of any size return each event once, by site_seq, every time."""
    batch = visits(SampleSite(SITE), 25)
    for start in range(0, 25, 7):  # each batch resends the previous batch's last event
        await backend.log.append(batch[max(0, start - 1):start + 7])
    for page in (1, 4, 25, 1000):
        read = await read_everything(backend.log, page)
        assert [s.event.event_id for s in read] == ids(batch), page
        assert [s.hash for s in read] == [d.hash for d in batch]
    assert [s.event.site_seq for s in await backend.log.read_site(SITE, 10, 3)] == [10, 11, 12]


async def test_the_chain_of_an_honest_log_verifies(backend: Backend) -> None:
    """(d) An empty log and a log of appended events both verify, counting every event."""
    empty = await backend.log.verify_chain(SITE)
    assert empty.ok and empty.verified == 0 and not empty.problems
    await backend.log.append(visits(SampleSite(SITE), 5))
    report = await backend.log.verify_chain(SITE)
    assert report.ok and report.verified == 5 and not report.problems
    [first] = await backend.log.read_site(SITE, 1, 1)
    assert first.event.prev_hash == GENESIS_HASH


@pytest.mark.parametrize(("how", "words"), [("edit", "does not match"), ("remove", "missing")])
async def test_a_tampered_row_breaks_the_chain(backend: Backend, how: str, words: str) -> None:
    """(d) A row edited or removed behind the log's back fails the chain check at that site_seq."""
    await backend.log.append(visits(SampleSite(SITE), 5))
    await backend.tamper(3, how)
    report = await backend.log.verify_chain(SITE)
    assert not report.ok
    assert any("site_seq 3" in p and words in p for p in report.problems), report.problems
