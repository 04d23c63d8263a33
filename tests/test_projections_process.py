"""The projector in a process of its own, as `center run` starts it (`python -m shouwang projections
run`, service/cli_center.py), under a steady stream of appends: it catches up, and its read models
equal a rebuild from zero afterwards. The stream packs many facts onto a few (site, day) keys, so
the daily rows are added to in place (a fact new to its key), recomputed (a fact corrected or
retracted) and both in one batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import sys

import asyncpg

from events import catalogue as c
from events.envelope import DecodedEvent
from events.samples import SampleSite, sample_registration
from projections import tables
from projections.runner import lag
from service.cli_center import PROJECTIONS_ARGV
from store.postgres import EventStore
from tests.test_projections_archive import random_world
from tests.test_projections_runner import dump, shadow_rebuild

T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)


def crowded_days(seed: int, n: int) -> list[DecodedEvent]:
    """n events of two sites about six children on four days: aid, condolences and visits (facts
    that share their daily rows), with corrections of some of them (facts changed or gone)."""
    rng = random.Random(seed)
    sites = [SampleSite("r.u.v01"), SampleSite("r.u.s01")]
    kids = [f"c-{rng.getrandbits(128):032x}" for _ in range(6)]
    out = [sites[0].write(sample_registration(rng, k, village_site=sites[0].site_id), T0) for k in kids]
    for _ in range(n):
        site = rng.choice(sites)
        kid = rng.choice(kids)
        when = T0 + dt.timedelta(days=rng.randrange(4), hours=rng.randrange(20))
        k = rng.randrange(10)
        care: c.CareEventBase
        if k < 4:
            care = c.AidGiven(child_id=kid, amount_fen=rng.choice((100, 2000)), source=c.AidSource.CHARITY)
        elif k < 6:
            care = c.CondolenceVisitMade(child_ids_list=sorted(set(rng.sample(kids, 3))),
                                         occasion=c.Occasion.SPRING_FESTIVAL, money_fen_each=500)
        elif k < 8:
            care = c.HomeVisitMade(child_id=kid, visitor="石晓")
        else:
            target = rng.choice(out[len(kids):] or out)
            repl = (c.AidGiven(child_id=kid, amount_fen=300, source=c.AidSource.CHARITY)
                    if rng.random() < 0.5 else None)
            care = c.EventCorrected(corrected_event_id=target.event.event_id, reason="填错",
                                    child_ids_list=list(target.event.children), replacement=repl)
        out.append(site.write(care, when))
    return out


async def test_projector_process_catches_up_a_steady_stream_and_equals_a_rebuild(
        store: EventStore, pool: asyncpg.Pool, database_url: str) -> None:
    events = [*random_world(8, 150), *crowded_days(8, 400)]
    first, stream = events[:60], events[60:]
    await store.append(first)
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shouwang", *PROJECTIONS_ARGV, env=env,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        rng = random.Random(8)
        while stream:  # a steady stream: small batches, each after a short pause
            k = rng.randint(1, 12)
            batch, stream = stream[:k], stream[k:]
            await store.append(batch)
            await asyncio.sleep(0.01)
            assert proc.returncode is None, "the projector keeps running under the stream"
        for _ in range(6000):  # a guard against a hang, not a time the test asserts
            if (await lag(pool)).events_behind == 0:
                break
            assert proc.returncode is None, "the projector keeps running until it has caught up"
            await asyncio.sleep(0.05)
        status = await lag(pool)
        assert (status.applied + status.skipped, status.events_behind) == (len(events), 0)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0, "SIGTERM stops the projector cleanly"
    live = await dump(pool, tables.SCHEMA)
    async with pool.acquire() as conn:
        shared = await conn.fetchval(
            f"SELECT count(*) FROM {tables.SCHEMA}.daily WHERE facts > 1 AND cardinality(children) > 1")
    assert shared, "some daily rows hold several facts and children: the in-place additions were exercised"
    await shadow_rebuild(pool)
    assert live == await dump(pool, tables.SHADOW)
