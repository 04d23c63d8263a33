"""HTTP API: archive lookups and rollup queries with 50 concurrent clients, beside a bare
litestar route returning a constant on the same server, in the same run.

The store holds a county: townships of ~10k events each (12 sites, 200 children, a school
year of visits, calls, talks, letters, assessments and aid), 1 township at 10k events and 100
at 1M, so a township's rollup reads the same amount of data at both sizes and its latency
should not grow with the store. Events enter through the center's own ingest function (so the
fan-out scope the API scopes by is real) and the projections runner builds the read models.

The server is `uvicorn` in a child process (one core), the clients are plain keep-alive HTTP/1.1
connections in this one (the other core; see :class:`_Client` for why not httpx). Each figure
is requests per second or a latency percentile, with the constant route's figure of the same run
as its baseline. The constant route and the computed ranges are measured in rounds taken in turn
(:func:`alternating`): measured one after the other, a phase that met more of the shared machine's
other work moved their ratio by half either way.

Also runnable alone: ``python -m bench.api [--quick] [--pg URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from bench.report import Figure, figure
from bench.servers import fresh_database
from events import catalogue as c
from events.samples import SampleSite, sample_registration
from events.types import AidSource, CallChannel, StatusLevel
from events.wire import up_subject
from runtime.db import create_pool
from service.ingest import Accepted, Inbound, commit_in
from testbed.embedded import free_port

CLIENTS = 50
ROUNDS, ROUNDS_QUICK = 5, 3  # rounds in which the constant route and the computed ranges alternate
EVENTS_PER_TOWNSHIP = 10_000
CHILDREN_PER_TOWNSHIP = 200
START = dt.datetime(2025, 9, 1, 8, 0, tzinfo=dt.UTC)
DAYS = 300


class Township:
    def __init__(self, index: int, rng: random.Random, *, region: str | None = None, villages: int = 8,
                 schools: int = 3, children: int = CHILDREN_PER_TOWNSHIP) -> None:
        self.id = f"{region or f'bj-{index // 50:02d}'}.t{index:03d}"
        self.office = SampleSite(f"{self.id}.office", actor="office")
        self.villages = [SampleSite(f"{self.id}.v{i:02d}", actor=f"staff-v{i:02d}") for i in range(1, villages + 1)]
        self.schools = [SampleSite(f"{self.id}.s{i:02d}", actor=f"teacher-s{i:02d}") for i in range(1, schools + 1)]
        self.rng = rng
        self.children_n = children
        self.children: list[str] = []

    @property
    def sites(self) -> list[tuple[SampleSite, str]]:
        return ([(self.office, "township")] + [(v, "village") for v in self.villages]
                + [(s, "school") for s in self.schools])

    def events(self, n: int) -> Iterator[tuple[SampleSite, c.CareEventBase, dt.datetime]]:
        """About `n` events: registrations first, then a school year of work, by occurred time."""
        rng = self.rng
        homes = {}
        for _ in range(self.children_n):
            v, s = rng.choice(self.villages), rng.choice(self.schools)
            reg = sample_registration(rng, village_site=v.site_id, school_site=s.site_id)
            homes[reg.child_id] = (v, s)
            self.children.append(reg.child_id)
            yield v, reg, START + dt.timedelta(hours=rng.randint(0, 24 * 10))
        work = []
        for _ in range(n - self.children_n):
            cid = rng.choice(self.children)
            v, s = homes[cid]
            when = START + dt.timedelta(days=11 + rng.random() * (DAYS - 12))
            kind = rng.random()
            care: c.CareEventBase
            if kind < 0.35:
                site, care = v, c.HomeVisitMade(child_id=cid, visitor="张老师", findings="情况良好")
            elif kind < 0.6:
                site, care = v, c.ParentCallMade(child_id=cid, parent="母亲", channel=CallChannel.VIDEO, minutes=10)
            elif kind < 0.8:
                site, care = s, c.TalkHeld(child_id=cid, teacher="李老师", record_card="谈心记录：学习认真")
            elif kind < 0.9:
                site, care = s, c.LetterWritten(child_id=cid, summary="给爸爸的一封信")
            elif kind < 0.97:
                site, care = s, c.StatusAssessed(child_id=cid, study=rng.choice(list(StatusLevel)))
            else:
                site, care = self.office, c.AidGiven(child_id=cid, amount_fen=rng.randint(1, 50) * 1000,
                                                     source=AidSource.TOWNSHIP)
            work.append((when, site, care))
        work.sort(key=lambda w: w[0])
        for when, site, care in work:
            yield site, care, when


async def populate(url: str, events: int, seed: int = 11, townships: list[Township] | None = None
                   ) -> tuple[list[Township], str]:
    """Fill a database with `events` events in townships of 10k (or in `townships`, shared evenly);
    returns them and a token of the first township's staff."""
    from projections.runner import Runner
    from service.api import auth
    from service.sites import register_site

    rng = random.Random(seed)
    townships = townships or [Township(i, rng) for i in range(max(1, events // EVENTS_PER_TOWNSHIP))]
    pool = await create_pool(url, min_size=1, max_size=4)
    try:
        for t in townships:
            for site, kind in t.sites:
                await register_site(pool, site.site_id, kind, site.site_id)
        batch: list[Accepted] = []

        async def flush() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await commit_in(conn, batch)
            batch.clear()
            for t in townships:  # SampleSite keeps what it wrote; the store has it now
                for site, _ in t.sites:
                    site.written.clear()

        for t in townships:
            per = events // len(townships)
            for site, care, when in t.events(per):
                d = site.write(care, when)
                # Sealed here, so already valid: skip the wire decode and enter commit_in as triaged.
                batch.append(Accepted(Inbound(subject=up_subject(site.site_id), data=b""), site.site_id, d))
                if len(batch) >= 5000:
                    await flush()
        if batch:
            await flush()
        await Runner(pool, batch_size=5000).catch_up()
        # Autovacuum's first pass over a million fresh rows would otherwise run (two cores of CPU)
        # during the measured phases, slowing whatever they read from the database.
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE")
        first = townships[0]
        await auth.add_user(pool, "bench.township", "township", "bench password", site_id=first.office.site_id)
        token = (await auth.issue_token(pool, "bench.township", hours=2)).token
    finally:
        await pool.close()
    return townships, token


@contextlib.contextmanager
def server(url: str) -> Iterator[str]:
    """The API under uvicorn in a child process, with a constant route added; yields its base URL."""
    port = free_port()
    env = {**os.environ, "SHOUWANG_DATABASE_URL": url, "SHOUWANG_API_CONNECT_NATS": "false",
           "SHOUWANG_API_POOL_SIZE": "20", "SHOUWANG_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.api", "--serve", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve(port: int) -> None:
    import uvicorn
    from litestar import get

    from runtime.settings import Settings
    from service.api.app import create_app
    from service.api.config import ApiSettings
    from service.api.scoping import READERS, allow

    @get("/bench/constant", exclude_from_auth=True, include_in_schema=False)
    async def constant() -> dict[str, str]:
        return {"status": "ok"}

    # The same behind the token check and a role guard: what every real route pays before its work.
    @get("/bench/constant-auth", guards=[allow(*READERS)], include_in_schema=False)
    async def constant_auth() -> dict[str, str]:
        return {"status": "ok"}

    app = create_app(Settings.from_env(), ApiSettings.from_env())
    app.register(constant)
    app.register(constant_auth)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=60)


class Load:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.elapsed = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


class _Client:
    """One keep-alive HTTP/1.1 connection sending pre-encoded GETs and reading whole responses
    (status line, headers, a Content-Length body). httpx cost 1.6-4.6 ms of CPU per request at 50
    connections (its pool scans every connection for each request), ten times what the server
    spent on the constant route, so it measured itself; this costs a few tens of microseconds."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    raise ConnectionError("the server closed the connection")
            if length is None:
                raise ConnectionError("a response without Content-Length")
            return status, await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _request(host: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def load(base: str, paths: list[str], headers: dict[str, str], seconds: float, clients: int = CLIENTS,
               offset: int = 0) -> Load:
    """`clients` clients, each on its own connection sending one request at a time for `seconds`,
    paths taken in turn (from the `offset`th). A response other than 200, or a broken connection,
    counts as an error."""
    out = Load()
    url = httpx.URL(base)
    host, port = url.host, url.port or 80
    requests = [_request(f"{host}:{port}", p, headers) for p in paths]
    conns = [_Client(host, port) for _ in range(clients)]
    try:
        for i, c in enumerate(conns):  # warm up connections and caches
            await c.get(requests[(offset + i) % len(requests)])
        stop = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            n, conn = offset + i, conns[i]
            while time.perf_counter() < stop:
                req = requests[n % len(requests)]
                n += clients
                t = time.perf_counter()
                try:
                    status, _ = await conn.get(req)
                except (OSError, asyncio.IncompleteReadError, ValueError):  # counted; more than 1% fails the run
                    out.errors += 1
                    continue
                if status != 200:
                    out.errors += 1
                else:
                    out.latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        out.elapsed = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    return out


async def alternating(base: str, loads: list[tuple[list[str], dict[str, str]]], seconds: float, rounds: int
                      ) -> list[Load]:
    """Each of `loads` (paths, headers) for `seconds` in all, in `rounds` rounds taken in turn, so a
    change in the machine's load (shared, noisy) falls on all of them alike; each round goes on
    along the paths where the last one stopped. The rounds' latencies pooled per load."""
    out = [Load() for _ in loads]
    for _ in range(rounds):
        for m, (paths, headers) in zip(out, loads, strict=True):
            r = await load(base, paths, headers, seconds / rounds, offset=len(m.latencies) + m.errors)
            m.latencies += r.latencies
            m.errors += r.errors
            m.elapsed += r.elapsed
    return out


async def run(admin_url: str, quick: bool, sizes: list[int] | None = None) -> list[Figure]:
    sizes = sizes or ([10_000] if quick else [10_000, 1_000_000])
    seconds = 3.0 if quick else 10.0
    figures: list[Figure] = []
    for n in sizes:
        async with fresh_database(admin_url) as url:
            t = time.perf_counter()
            townships, token = await populate(url, n)
            print(f"[bench] api: {n:,} events in {len(townships)} township(s) loaded and projected in "
                  f"{time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            first = townships[0]
            headers = {"Authorization": f"Bearer {token}"}
            rng = random.Random(5)
            archive_paths = [f"/children/{rng.choice(first.children)}" for _ in range(500)]
            rollup_paths = [f"/rollups?scope={first.id}&period=2026-{m:02d}" for m in (1, 3, 4, 5)]
            # 5,000 different ranges of about 30 days (21 to 40, starting on any of 250 days), each
            # asked once before any is asked again: each one computed afresh.
            cold_paths = [f"/rollups?scope={first.id}&start={START.date() + dt.timedelta(days=i % 250)}"
                          f"&end={START.date() + dt.timedelta(days=i % 250 + 20 + i // 250)}" for i in range(5000)]
            with server(url) as base:
                const_auth = await load(base, ["/bench/constant-auth"], headers, seconds)
                archive = await load(base, archive_paths, headers, seconds)
                rollup = await load(base, rollup_paths, headers, seconds)
                # The constant route, the baseline of every figure, in rounds alternating with the
                # computed ranges: on this shared machine a phase of its own could meet another load.
                const, cold = await alternating(base, [(["/bench/constant"], {}), (cold_paths, headers)],
                                                2 * seconds, ROUNDS_QUICK if quick else ROUNDS)
                # One client: the cost of one request, without queueing behind 49 others.
                const1 = await load(base, ["/bench/constant"], {}, seconds / 2, clients=1)
                archive1 = await load(base, archive_paths[::-1], headers, seconds / 2, clients=1)
                cold1 = await load(base, cold_paths[::-1], headers, seconds / 2, clients=1)
            if any(m.errors > 0.01 * max(1, len(m.latencies)) for m in (const_auth, archive, rollup, cold)):
                raise RuntimeError(f"API errors under load: archive {archive.errors}, rollup {rollup.errors}, "
                                   f"cold rollup {cold.errors}")
            size = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
            base_name = f"constant route, {CLIENTS} clients"
            figures.append(figure(f"api constant route behind the token check p50 @ {size} events",
                                  const_auth.pct(0.5), "ms", base_name + " p50", const.pct(0.5)))
            figures.append(figure(f"api constant route behind the token check p99 @ {size} events",
                                  const_auth.pct(0.99), "ms", base_name + " p99", const.pct(0.99)))
            for name, m in (("archive lookups", archive), ("township rollups (month, cached)", rollup),
                            ("township rollups (30-day range, computed)", cold)):
                figures.append(figure(f"api {name} @ {size} events", m.rate, "req/s", base_name + " req/s",
                                      const.rate))
                figures.append(figure(f"api {name} p50 @ {size} events", m.pct(0.5), "ms", base_name + " p50",
                                      const.pct(0.5)))
                figures.append(figure(f"api {name} p99 @ {size} events", m.pct(0.99), "ms", base_name + " p99",
                                      const.pct(0.99)))
            for name, m in (("archive lookup", archive1), ("township rollup (computed)", cold1)):
                figures.append(figure(f"api {name} p50, 1 client @ {size} events", m.pct(0.5), "ms",
                                      "constant route p50, 1 client", const1.pct(0.5)))
            print(f"[bench] api @ {size}: 1 client p50: constant {const1.pct(0.5):.1f} ms, archive "
                  f"{archive1.pct(0.5):.1f} ms, computed rollup {cold1.pct(0.5):.1f} ms", file=sys.stderr, flush=True)
            print(f"[bench] api @ {size}: constant {const.rate:.0f}/s p50 {const.pct(0.5):.1f} ms; behind the token "
                  f"check {const_auth.rate:.0f}/s p50 {const_auth.pct(0.5):.1f} p99 {const_auth.pct(0.99):.1f} ms; "
                  f"archive "
                  f"{archive.rate:.0f}/s p50 {archive.pct(0.5):.1f} p99 {archive.pct(0.99):.1f} ms; rollup "
                  f"{rollup.rate:.0f}/s p50 {rollup.pct(0.5):.1f} p99 {rollup.pct(0.99):.1f} ms; computed rollup "
                  f"{cold.rate:.0f}/s p50 {cold.pct(0.5):.1f} p99 {cold.pct(0.99):.1f} ms",
                  file=sys.stderr, flush=True)
    return figures


async def _main(argv: list[str]) -> int:
    from bench import report

    parser = argparse.ArgumentParser(prog="python -m bench.api")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pg", help="PostgreSQL admin URL (default: an embedded server)")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], help="event counts, e.g. 1000000")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from bench.servers import postgres_only

    async with postgres_only(args.pg) as pg_url:
        figures = await run(pg_url, args.quick, args.sizes)
    print(report.table(figures))
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        _serve(int(sys.argv[sys.argv.index("--serve") + 1]))
    else:
        sys.exit(asyncio.run(_main(sys.argv[1:])))


