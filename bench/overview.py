"""The dashboard overview's cost (issue 17: the overdue figures follow the township's rules).

Loads a demo-sized township (testbed.simulation.generate: 200 children, a year of work) into a
fresh database, then makes the API calls the overview makes (service/dashboard.py `overview`:
the sites, the month's rollup and six months of rollups, each site's overdue list) through the
app in-process, as the supervisor, cold (rollup caches emptied) and warm, several rounds; prints
the medians. Run: `python -m bench.overview [admin_database_url]`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import statistics
import sys
import time

import httpx

from bench.servers import fresh_database
from events import encode_event
from events.wire import up_subject
from projections.runner import Runner
from runtime.db import create_pool
from runtime.settings import Settings
from service.api import auth
from service.api.app import create_app
from service.api.config import ApiSettings
from service.ingest import Inbound, commit_in, triage
from service.sites import register_site
from testbed.simulation import generate, seal_all

PASSWORD = "a long made-up passphrase"

logging.getLogger("httpx").setLevel(logging.WARNING)


def _months_back(month: str, n: int) -> str:
    y, m = map(int, month.split("-"))
    k = y * 12 + m - 1 - n
    return f"{k // 12:04d}-{k % 12 + 1:02d}"


async def main(admin_url: str, rounds: int = 5) -> None:
    async with fresh_database(admin_url) as url:
        pool = await create_pool(url, min_size=1, max_size=8)
        scenario = generate(children=200, days=365, seed=7)
        for site in scenario.sites:
            await register_site(pool, site.site_id, site.kind, site.name)
        for events in seal_all(scenario).values():
            items = [triage(Inbound(subject=up_subject(d.event.site_id), data=encode_event(d.event))) for d in events]
            async with pool.acquire() as conn, conn.transaction():
                await commit_in(conn, items)
        await Runner(pool).catch_up()
        office = next(s.site_id for s in scenario.sites if s.kind == "township")
        await auth.add_user(pool, "supervisor", "township", PASSWORD, site_id=office)
        n_events = await pool.fetchval("SELECT count(*) FROM events")
        newest = await pool.fetchval("SELECT max(occurred_at) FROM events")
        await pool.close()
        app = create_app(Settings(database_url=url, nats_url="nats://127.0.0.1:4222"),
                         ApiSettings(connect_nats=False))
        async with app.lifespan():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://center", timeout=600) as c:
                tok = (await c.post("/auth/token", json={"username": "supervisor", "password": PASSWORD})).json()
                c.headers["Authorization"] = f"Bearer {tok['token']}"
                scope = office.rsplit(".", 1)[0]
                month = f"{newest.year:04d}-{newest.month:02d}"
                judge = (dt.date(newest.year, newest.month, 1) - dt.timedelta(days=1)).isoformat()

                async def overview() -> float:
                    t0 = time.perf_counter()
                    sites = (await c.get("/sites")).json()["items"]
                    for p in [month, *(_months_back(month, b) for b in range(5, -1, -1))]:
                        r = await c.get("/rollups", params={"scope": scope, "period": p})
                        assert r.status_code == 200, r.text
                    for s in sites:
                        if s["kind"] != "township":
                            r = await c.get(f"/sites/{s['site_id']}/overdue", params={"today": judge})
                            assert r.status_code == 200, r.text
                    return time.perf_counter() - t0

                cold, warm = [], []
                for _ in range(rounds):
                    app.state.rollup_cache.entries.clear()
                    app.state.scope_archives.entries.clear()
                    if app.state.get("rule_inputs") is not None:  # the rules' inputs (issue 17)
                        app.state.rule_inputs.entries.clear()
                    cold.append(await overview())
                    warm.append(await overview())
        print(f"township {scope}: {len(scenario.sites)} sites, {n_events} events, month {month}")
        print(f"overview API calls, cold (caches emptied): median {statistics.median(cold):.3f}s "
              f"{[round(x, 3) for x in cold]}")
        print(f"overview API calls, warm: median {statistics.median(warm):.3f}s {[round(x, 3) for x in warm]}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/postgres"))
