"""Projections benchmark.

1. Rebuild of all projections from zero (`projections.rebuild.rebuild`: ordered read, fold,
   COPY into the shadow schema, swap) over N events of a made-up township, in events/s, beside a
   raw ordered keyset scan of the same events with JSON decoding of each payload, in the same
   run (the ceiling for anything that must read the whole log).
2. Peak RSS of the same rebuild as the operator runs it, in a process of its own.

Projection lag under load is the lag suite's (`bench/lag.py`): the projector in the process of
its own that `center run` gives it, over the same made-up county.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import time
from collections.abc import Iterator

import asyncpg
import msgspec

from bench.report import Figure, figure
from bench.servers import fresh_database
from events import catalogue as c
from events.envelope import DecodedEvent
from events.samples import SampleSite, sample_registration
from events.types import (
    ActivityKind,
    AidSource,
    CaseKind,
    GuardianshipType,
    Occasion,
    PartnerKind,
    StatusLevel,
)
from projections.rebuild import PARALLEL_FROM, rebuild
from runtime.db import create_pool
from store.postgres import EventStore

START = dt.datetime(2024, 9, 1, 8, 0, tzinfo=dt.UTC)


class World:
    """A made-up county: townships of 8 villages and 3 schools, children registered at a
    village, then the whole mix of care work, corrections and concurrent updates."""

    def __init__(self, children: int, seed: int = 7, townships: int = 4) -> None:
        self.rng = random.Random(seed)
        self.villages = [SampleSite(f"bench.t{t}.v{v:02d}") for t in range(townships) for v in range(8)]
        self.schools = [SampleSite(f"bench.t{t}.s{s:02d}") for t in range(townships) for s in range(3)]
        self.n_children = children
        self.kids: list[tuple[str, SampleSite, SampleSite]] = []
        self.last_reg: dict[str, str] = {}
        self.recent: list[DecodedEvent] = []

    def _when(self) -> dt.datetime:
        return START + dt.timedelta(minutes=self.rng.randrange(0, 60 * 24 * 700))

    def registrations(self) -> Iterator[DecodedEvent]:
        for i in range(self.n_children):
            t = i % (len(self.villages) // 8)
            village = self.villages[t * 8 + self.rng.randrange(8)]
            school = self.schools[t * 3 + self.rng.randrange(3)]
            cid = f"c-{self.rng.getrandbits(128):032x}"
            reg = sample_registration(self.rng, cid, village_site=village.site_id, school_site=school.site_id)
            d = village.write(reg, START + dt.timedelta(days=self.rng.randrange(0, 30)))
            self.kids.append((cid, village, school))
            self.last_reg[cid] = d.event.event_id
            yield d

    def work(self, n: int) -> Iterator[DecodedEvent]:
        rng = self.rng
        kinds = ["visit", "call", "talk", "letter", "status", "guardian", "aid", "condolence", "activity",
                 "tutoring", "pairing", "case", "correction"]
        weights = [25, 20, 20, 5, 5, 3, 3, 1, 1, 3, 2, 1, 1]
        for _ in range(n):
            cid, village, school = rng.choice(self.kids)
            kind = rng.choices(kinds, weights)[0]
            when = self._when()
            based_on = None
            care: c.CareEventBase
            site = village
            if kind == "visit":
                care = c.HomeVisitMade(child_id=cid, visitor="石晓", findings="家访：学习有进步，祖母身体尚可。")
            elif kind == "call":
                site = school
                care = c.ParentCallMade(child_id=cid, parent="母亲", minutes=12, summary="亲情电话")
            elif kind == "talk":
                site = school
                care = c.TalkHeld(child_id=cid, teacher="云安", record_card="谈心记录：情绪稳定，想念父母。")
            elif kind == "letter":
                site = school
                care = c.LetterWritten(child_id=cid, summary="给妈妈的一封信")
            elif kind == "status":
                site = school
                care = c.StatusAssessed(child_id=cid, study=rng.choice(list(StatusLevel)),
                                        psychology=rng.choice(list(StatusLevel)))
            elif kind == "guardian":
                site = rng.choice((village, school))  # two sites, the same base: now and then a conflict
                care = c.GuardianChanged(child_id=cid, guardian=c.Guardian(type=rng.choice(list(GuardianshipType))))
                based_on = {"guardian": self.last_reg[cid]}
            elif kind == "aid":
                care = c.AidGiven(child_id=cid, amount_fen=rng.choice((20_000, 50_000)),
                                  source=rng.choice(list(AidSource)))
            elif kind == "condolence":
                peers = [k[0] for k in rng.sample(self.kids, k=min(10, len(self.kids)))]
                care = c.CondolenceVisitMade(child_ids_list=sorted({cid, *peers}), occasion=Occasion.SPRING_FESTIVAL,
                                             money_fen_each=10_000)
            elif kind == "activity":
                site = school
                peers = [k[0] for k in rng.sample(self.kids, k=min(20, len(self.kids)))]
                care = c.ActivityHeld(activity_id=f"a-{rng.getrandbits(128):032x}", kind=ActivityKind.CHILDRENS_HOME,
                                      title="周末读书会", child_ids_list=sorted({cid, *peers}), participants_total=30)
            elif kind == "tutoring":
                site = school
                peers = [k[0] for k in rng.sample(self.kids, k=min(4, len(self.kids)))]
                care = c.TutoringGiven(child_ids_list=sorted({cid, *peers}), tutor="柏宁", subject="数学", minutes=40)
            elif kind == "pairing":
                care = c.PairingStarted(pairing_id=f"p-{rng.getrandbits(128):032x}", child_id=cid,
                                        partner_kind=rng.choice(list(PartnerKind)), partner_name="夏朵朵")
            elif kind == "case":
                care = c.RightsCaseOpened(case_id=f"rc-{rng.getrandbits(128):032x}", child_id=cid,
                                          kind=CaseKind.GUARDIANSHIP)
            else:
                if not self.recent:
                    continue
                target = rng.choice(self.recent)
                site = next(s for s in (*self.villages, *self.schools) if s.site_id == target.event.site_id)
                care = c.EventCorrected(corrected_event_id=target.event.event_id, reason="填错",
                                        child_ids_list=list(target.event.children))
            d = site.write(care, when, based_on)
            if kind in ("visit", "call", "talk") and rng.random() < 0.05:
                self.recent.append(d)
                if len(self.recent) > 1000:
                    self.recent.pop(0)
            yield d


async def _append_all(store: EventStore, events: Iterator[DecodedEvent], batch: int = 5000) -> int:
    n, buf = 0, []
    for d in events:
        buf.append(d)
        if len(buf) >= batch:
            await store.append(buf)
            n, buf = n + len(buf), []
    if buf:
        await store.append(buf)
        n += len(buf)
    return n


async def load_world(pool: asyncpg.Pool, n: int) -> tuple[World, int]:
    """A made-up county of about n events (a child per hundred events) appended to the store."""
    world = World(children=max(200, n // 100))
    store = EventStore(pool)
    stored = await _append_all(store, world.registrations())
    stored += await _append_all(store, world.work(n - stored))
    return world, stored


async def raw_scan(conn: asyncpg.Connection) -> tuple[float, int]:
    """The ceiling: every event in the global order, keyset pages of 5000, payload JSON-decoded."""
    decode = msgspec.json.Decoder()
    t = time.perf_counter()
    tx, pos, n = 0, 0, 0
    while True:
        rows = await conn.fetch(
            """SELECT tx_id, position, event_id, type, site_id, site_seq, actor, occurred_at, recorded_at,
                      children, based_on, payload
                 FROM events WHERE (tx_id, position) > ($1, $2) ORDER BY tx_id, position LIMIT 5000""", tx, pos)
        if not rows:
            break
        for r in rows:
            decode.decode(r["payload"])
        n += len(rows)
        tx, pos = rows[-1]["tx_id"], rows[-1]["position"]
    return n / (time.perf_counter() - t), n


def _p(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


EVENTS_ENV = "SHOUWANG_BENCH_PROJECTION_EVENTS"  # an intermediate size, e.g. 200000 (default 1M, 20k quick)


async def run(admin_url: str, quick: bool) -> list[Figure]:
    n = int(os.environ.get(EVENTS_ENV) or (20_000 if quick else 1_000_000))
    figures: list[Figure] = []
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, max_size=6)
        try:
            _, stored = await load_world(pool, n)
            async with pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE events")
            # Each rebuild between two raw scans, beside their mean: the machine is shared and
            # its speed drifts within a run.
            for workers in (1, 2) if stored >= PARALLEL_FROM else (1,):  # fewer: one process anyway
                async with pool.acquire() as conn:
                    before, scanned = await raw_scan(conn)
                assert scanned == stored
                report = await rebuild(pool, page=5000, database_url=url, workers=workers)
                assert report.events == stored
                async with pool.acquire() as conn:
                    after, _ = await raw_scan(conn)
                how = "" if workers == 1 else f", derive and write in {workers} processes"
                figures.append(figure(
                    f"projections rebuild from zero ({stored:,} events, {report.children:,} archives{how})",
                    report.events_per_second, "events/s", "raw ordered keyset scan with JSON decode",
                    (before + after) / 2))
            # Memory of the same rebuild as the operator runs it, in a process of its own.
            from bench.memory import peak_rss_mib

            peak = await peak_rss_mib(["shouwang", "projections", "rebuild", "all", "--database-url", url])
            figures.append(figure(f"projections rebuild peak RSS ({stored:,} events, own process)", peak, "MiB",
                                  note="`shouwang projections rebuild all`; the memory suite has its growth with "
                                       "the log"))
        finally:
            await pool.close()
    return figures
