"""deploy/README.md followed as a new operator would, with the command line only, on servers of
the test's own: an empty PostgreSQL and a NATS started from the shipped config; a center, two
stations and the township office; a pg_dump, more work, a restore from the older dump; then the
figures equal what the stations recorded and the store lacks nothing.

Each step names the runbook's section it follows. What a test machine cannot do as the runbook
says is substituted, and only that: ports (free ones instead of 4222, 8222, 5432, 8800), paths
(this test's folders instead of /etc/shouwang, /var/lib/shouwang), passwords and keys (made here),
`sudo -u postgres` (the superuser over this server's socket), systemd (the same commands run by
hand, SIGHUP for `systemctl reload`, SIGTERM for `systemctl stop`), and the TLS proxy (the API is
read on 127.0.0.1, so the dashboard's Secure cookie is sent by hand).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testbed.embedded import EmbeddedPostgres, free_port, nats_bin, pg_bin
from tests.test_deploy_leaf import _cert
from tests.township_work import MONTH, TownshipWork, as_json, figures

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SHOUWANG = [sys.executable, "-m", "shouwang"]
WITHIN = 180  # seconds any one command may take on a busy machine


def env_file(example: Path, values: dict[str, str]) -> dict[str, str]:
    """An env file as the runbook says to make it: the shipped example with its CHANGE-ME values (and
    this machine's addresses) replaced; every key it sets must be one the example has."""
    env: dict[str, str] = {}
    for line in example.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    assert set(values) <= set(env), f"{example.name} has no {sorted(set(values) - set(env))}"
    env.update(values)
    return env


class Machine:
    """The center's machine and the sites' machines, as far as the commands see them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg: EmbeddedPostgres | None = None
        self.pg_dir = root
        self.nats: subprocess.Popen[bytes] | None = None
        self.center: subprocess.Popen[bytes] | None = None
        self.agents: list[subprocess.Popen[bytes]] = []
        self.center_env: dict[str, str] = {}
        self.owner_env: dict[str, str] = {}
        self.nats_env: dict[str, str] = {}
        self.nats_port = free_port()
        self.nats_http = free_port()
        self.api_port = free_port()

    def run(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            ok: bool = True) -> subprocess.CompletedProcess[str]:
        """A `shouwang` command with an env file's settings (as a systemd unit or `sudo -u shouwang
        env $(cat center.env)` would give them)."""
        done = subprocess.run([*SHOUWANG, *args], env={**os.environ, **(env or {})}, input=stdin,
                              capture_output=True, text=True, timeout=WITHIN, check=False)
        if ok:
            assert done.returncode == 0, f"shouwang {' '.join(args)}: {done.returncode}\n{done.stderr[-3000:]}"
        return done

    def superuser(self, tool: str, *args: str) -> str:
        """A PostgreSQL client program as the superuser on the server's own socket (`sudo -u postgres`)."""
        assert self.pg is not None
        done = subprocess.run([str(pg_bin() / tool), "-h", str(self.pg.data_dir), "-p", str(self.pg.port),
                               "-U", "postgres", *args], capture_output=True, text=True, timeout=WITHIN, check=False)
        assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def sql(self, query: str) -> str:
        return self.superuser("psql", "-d", "shouwang", "-At", "-v", "ON_ERROR_STOP=1", "-c", query).strip()

    def start_nats(self) -> None:
        conf_dir = self.root / "etc" / "nats"
        log = self.root / "nats.log"
        with log.open("ab") as out:
            self.nats = subprocess.Popen([nats_bin(), "-c", str(conf_dir / "center.conf")],
                                         env={**os.environ, **self.nats_env}, stdout=out, stderr=out)
        wait_for(f"http://127.0.0.1:{self.nats_http}/healthz?js-enabled-only=true", lambda _: True,
                 what="NATS ready", log=log)

    def reload_nats(self) -> None:
        """`systemctl reload shouwang-nats` (its ExecReload sends SIGHUP)."""
        assert self.nats is not None
        self.nats.send_signal(signal.SIGHUP)
        time.sleep(0.5)

    def start_center(self) -> None:
        """`systemctl start shouwang-center`: the migrate unit first (as the owner), then `center run`."""
        self.run("db", "migrate", env=self.owner_env)
        # A port of its own at each start (8800 on a real machine): another program on this busy
        # test machine may have taken the last one while the center was stopped.
        self.api_port = free_port()
        self.center_env["SHOUWANG_API_PORT"] = str(self.api_port)
        log = self.root / "center.log"
        with log.open("ab") as out:
            self.center = subprocess.Popen([*SHOUWANG, "center", "run"], env={**os.environ, **self.center_env},
                                           stdout=out, stderr=out)
        wait_for(f"http://127.0.0.1:{self.api_port}/ready", lambda r: r.status == 200, what="the center ready",
                 log=log, proc=self.center)

    def stop_center(self) -> None:
        """`systemctl stop shouwang-center` (SIGTERM, as systemd sends it)."""
        if self.center is not None and self.center.poll() is None:
            self.center.send_signal(signal.SIGTERM)
            try:
                self.center.wait(60)
            except subprocess.TimeoutExpired:
                self.center.kill()
                self.center.wait(10)
        self.center = None

    def serve_agent(self, data: Path) -> None:
        """`systemctl enable --now shouwang-agent@<site>`: `agent serve` as its unit runs it."""
        log = self.root / f"agent-{data.name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([*SHOUWANG, "agent", "serve", "--data", str(data), "--host", "127.0.0.1",
                                     "--port", str(free_port())], stdout=out, stderr=out)
        self.agents.append(proc)

    def stop_all(self) -> None:
        for proc in self.agents:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.stop_center()
        if self.nats is not None and self.nats.poll() is None:
            self.nats.terminate()
            self.nats.wait(20)
        if self.pg is not None:
            self.pg.stop()


def wait_for(url: str, ok: Any, *, what: str, log: Path, proc: subprocess.Popen[bytes] | None = None,
             within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited {proc.returncode}\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if ok(resp):
                return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {within} s\n{log.read_text()[-3000:]}")


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    """What the test starts (PostgreSQL, NATS, the center, the office's agent), stopped at its end
    whatever happened. PostgreSQL's data folder is outside pytest's: the server runs as another
    OS user, and a pytest session started meanwhile makes its folder 0700 again."""
    m = Machine(tmp_path)
    with tempfile.TemporaryDirectory(prefix="shouwang-runbook-") as pg_dir:
        m.pg_dir = Path(pg_dir)
        try:
            yield m
        finally:
            m.stop_all()


def printed_credentials(out: str) -> dict[str, str]:
    """What `center site add` prints for the operator to write into <site>.creds.json."""
    user = re.search(r"^\s*user:\s+(\S+)$", out, re.M)
    password = re.search(r"^\s*password:\s+(\S+)$", out, re.M)
    assert user and password, out
    return {"user": user.group(1), "password": password.group(1)}


def test_a_township_that_follows_the_runbook_gets_a_working_center(machine: Machine, tmp_path: Path) -> None:
    """Install, sites, people, work, a pg_dump, more work, a restore from the older dump and
    `agent sync --once` at each site: every figure through the API and the dashboard equals what
    the stations recorded, and the store holds every site's events, chains whole."""
    work = TownshipWork("gx-lp.rb", seed=2026)
    etc = tmp_path / "etc"
    (etc / "nats").mkdir(parents=True)

    # --- Install the center, step 2: PostgreSQL, pg_hba.conf, the database and the two roles ---
    machine.pg = pg = EmbeddedPostgres(machine.pg_dir / "pg").start()
    hba = (DEPLOY / "postgres" / "pg_hba.conf").read_text(encoding="utf-8")
    # `local all postgres peer` lets the OS user postgres in; here the superuser is whoever runs
    # the test, on this server's socket: the same place, the stand-in for `sudo -u postgres`.
    assert "local   all        postgres                        peer" in hba
    hba = hba.replace("local   all        postgres                        peer",
                      "local   all        postgres                        trust")
    (pg.data_dir / "pg_hba.conf").write_text(hba, encoding="utf-8")
    pg.restart()
    machine.superuser("createdb", "shouwang")
    owner_pw, service_pw, nats_pw = (secrets.token_urlsafe(18) for _ in range(3))
    roles = machine.run("db", "roles", "--database-url",
                        f"postgresql:///shouwang?host={pg.data_dir}&port={pg.port}&user=postgres",
                        env={"SHOUWANG_DB_OWNER_PASSWORD": owner_pw, "SHOUWANG_DB_SERVICE_PASSWORD": service_pw})
    assert "shouwang_owner" in roles.stdout + roles.stderr

    # --- step 3: the settings ----------------------------------------------------------------
    relay_key = subprocess.run(["openssl", "rand", "-hex", "32"], capture_output=True, text=True, check=True,
                               timeout=30).stdout.strip()
    machine.center_env = env_file(DEPLOY / "systemd" / "center.env.example", {
        "SHOUWANG_DATABASE_URL": f"postgresql://shouwang:{service_pw}@127.0.0.1:{pg.port}/shouwang",
        "SHOUWANG_NATS_URL": f"nats://center:{nats_pw}@127.0.0.1:{machine.nats_port}",
        "SHOUWANG_API_PORT": str(machine.api_port),
        "SHOUWANG_RELAY_KEY": relay_key,
        "SHOUWANG_LOG_JSON": "true",
    })
    machine.nats_env = env_file(DEPLOY / "systemd" / "nats.env.example", {"SHOUWANG_NATS_CENTER_PASSWORD": nats_pw})
    machine.owner_env = env_file(DEPLOY / "systemd" / "owner.env.example", {
        "SHOUWANG_DATABASE_OWNER_URL": f"postgresql://shouwang_owner:{owner_pw}@127.0.0.1:{pg.port}/shouwang"})

    # --- step 4: NATS from the shipped center.conf and users.conf -------------------------------
    crt, key = _cert(etc)
    conf = (DEPLOY / "nats" / "center.conf").read_text(encoding="utf-8")
    for shipped, here in (("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{machine.nats_port}"),
                          ("http: 127.0.0.1:8222", f"http: 127.0.0.1:{machine.nats_http}"),
                          ('"/etc/shouwang/tls/center.crt"', f'"{crt}"'),
                          ('"/etc/shouwang/tls/center.key"', f'"{key}"'),
                          ('store_dir: "/var/lib/shouwang/nats"', f'store_dir: "{tmp_path / "js"}"')):
        assert conf.count(shipped) == 1, shipped
        conf = conf.replace(shipped, here)
    (etc / "nats" / "center.conf").write_text(conf, encoding="utf-8")
    users_file = etc / "nats" / "users.conf"
    users_file.write_text((DEPLOY / "nats" / "users.conf").read_text(encoding="utf-8"), encoding="utf-8")
    machine.start_nats()

    # --- steps 5 and 6: the schema (the migrate unit) and the center ------------------------------
    machine.start_center()

    # --- Install a site (the township office, a village station, a school) ---------------------
    stations: dict[str, Path] = {}
    for site, kind, name in ((work.office, "township", "石门乡政府"), (work.village, "village", "青石村维权站"),
                             (work.school, "school", "石门中心小学")):
        added = machine.run("center", "site", "add", site, "--kind", kind, "--name", name, "--users-file",
                            str(users_file), env=machine.center_env)
        creds = tmp_path / f"{site}.creds.json"  # written by hand from what it printed, carried on a USB stick
        creds.write_text(json.dumps(printed_credentials(added.stdout)), encoding="utf-8")
        data = tmp_path / "sites" / site
        machine.run("agent", "init", "--site", site, "--kind", kind, "--name", name, "--data", str(data),
                    "--nats", f"tls://127.0.0.1:{machine.nats_port}", "--creds", str(creds), "--tls-ca", str(crt))
        stations[site] = data
    machine.reload_nats()
    machine.serve_agent(stations[work.office])  # the township office's agent runs all the time

    # --- step 8: people ---------------------------------------------------------------------------
    chief_pw = "Shimen-" + secrets.token_urlsafe(12)
    machine.run("center", "user", "add", "chief", "--role", "township", "--site", work.office,
                env=machine.center_env, stdin=chief_pw + "\n")

    def record(site: str, drafts: list[dict[str, object]]) -> None:
        draft_file = tmp_path / f"{site}-{time.monotonic_ns()}.json"
        draft_file.write_bytes(as_json(drafts))
        machine.run("agent", "record", "--data", str(stations[site]), str(draft_file))

    def sync_all() -> None:
        for site in (work.office, work.school, work.village):  # the office first, as after a restore
            out = machine.run("agent", "sync", "--data", str(stations[site]), "--once", "--timeout", "120").stdout
            assert "in sync" in out

    # --- the stations' work, synced --------------------------------------------------------------
    record(work.school, work.registrations(5) + work.school_work())
    record(work.village, work.village_work())
    sync_all()
    check_figures(machine, work, chief_pw)

    # --- Back up and restore the store: the nightly dump, then a day's work ------------------------
    dump = tmp_path / "shouwang-nightly.dump"
    machine.superuser("pg_dump", "-Fc", "-f", str(dump), "shouwang")
    record(work.school, work.registrations(2) + work.school_work())
    record(work.village, work.village_work())
    day = {site: work.recorded[site] - int(machine.sql(f"SELECT count(*) FROM events WHERE site_id = '{site}'"))
           for site in (work.school, work.village)}
    sync_all()
    check_figures(machine, work, chief_pw)
    office_holds(machine, stations[work.office], work.recorded[work.school] + work.recorded[work.village])

    # The center's disk dies; the dump is restored as the runbook says.
    machine.stop_center()
    machine.superuser("dropdb", "shouwang")
    machine.superuser("createdb", "shouwang")
    machine.superuser("pg_restore", "-d", "shouwang", str(dump))
    lost = int(machine.sql("SELECT count(*) FROM events"))
    assert lost < sum(work.recorded.values())  # the restored store lacks the day's work
    machine.run("db", "roles", "--database-url",
                f"postgresql:///shouwang?host={pg.data_dir}&port={pg.port}&user=postgres",
                env={"SHOUWANG_DB_OWNER_PASSWORD": owner_pw, "SHOUWANG_DB_SERVICE_PASSWORD": service_pw})
    machine.start_center()
    # The office's agent, connected through it all, hears the restarted center's receipts and
    # hands back the sealed copies of the day's events (before any station has resent them).
    wait_rows(machine, "SELECT count(*) FROM relayed_events", sum(day.values()))
    relayed = machine.sql(f"SELECT site_id, count(*) FROM relayed_events WHERE relayed_by = '{work.office}' "
                          "GROUP BY 1 ORDER BY 1")
    assert relayed == "\n".join(f"{site}|{n}" for site, n in sorted(day.items()))
    sync_all()  # `agent sync --once` at the township office, then at each station

    # --- every figure equals its ground truth; nothing is missing from the store ------------------
    check_figures(machine, work, chief_pw)
    for site in (work.village, work.school):
        assert machine.sql(f"SELECT count(*), max(site_seq) FROM events WHERE site_id = '{site}'") == \
            f"{work.recorded[site]}|{work.recorded[site]}"
        assert machine.sql(f"SELECT watermark, max_seq, cardinality(pending) FROM site_progress "
                           f"WHERE site_id = '{site}'") == f"{work.recorded[site]}|{work.recorded[site]}|0"
    verified = machine.run("audit", "verify-chain", "--json", env=machine.center_env)
    assert all(s["ok"] for s in json.loads(verified.stdout)), verified.stdout
    for site, data in stations.items():
        status = json.loads(machine.run("agent", "status", "--data", str(data), "--json").stdout)
        assert (status["synced"], status["pending"], status["refused"]) == (True, 0, 0), (site, status)


def office_holds(machine: Machine, data: Path, n: int) -> None:
    """Until the office's agent has received `n` events of the other sites (`agent status`)."""
    deadline = time.monotonic() + WITHIN
    while (got := json.loads(machine.run("agent", "status", "--data", str(data), "--json").stdout)
           ["received_events"]) < n:
        assert time.monotonic() < deadline, f"the office received {got} of {n} events"
        time.sleep(0.5)


def wait_rows(machine: Machine, query: str, n: int) -> None:
    deadline = time.monotonic() + WITHIN
    while (got := int(machine.sql(query))) != n:
        assert time.monotonic() < deadline, f"{query}: {got}, not {n}"
        time.sleep(0.5)


def leading_number(text: str) -> int:
    """The number a figure's cell starts with ("12 人" -> 12); -1 when there is none."""
    found = re.match(r"\d+", text.strip())
    return int(found.group(0)) if found else -1


def check_figures(machine: Machine, work: TownshipWork, password: str) -> None:
    """The township's figures for MONTH through the API and through the dashboard equal the
    counts of what was recorded (waiting, a bounded time, for the projections to catch up)."""
    api = f"http://127.0.0.1:{machine.api_port}"
    want = work.truth()
    with httpx.Client(base_url=api, timeout=60) as client:
        r = client.post("/auth/token", json={"username": "chief", "password": password})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        deadline = time.monotonic() + WITHIN
        while True:
            r = client.get("/rollups", params={"scope": work.township, "period": MONTH},
                           headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            if figures(r.json()) == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert figures(r.json()) == want
        # The dashboard: log in with its form (its CSRF token and pre-session cookie), then the
        # year-end summary page and its JSON export. Its cookies are Secure (behind the TLS
        # proxy): over this test's plain http they are passed by hand.
        form = client.get("/ui/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf, form.text[:500]
        r = client.post("/ui/login", data={"username": "chief", "password": password, "csrf_token": csrf.group(1)},
                        headers={"Cookie": f"sw_csrf={form.cookies['sw_csrf']}", "Origin": api})
        assert r.status_code == 303, r.text[:500]
        cookie = {"Cookie": f"sw_token={r.cookies['sw_token']}"}
        page = client.get("/ui/summary", params={"period": MONTH}, headers=cookie)
        assert page.status_code == 200
        # its table of figures: each row a value (with its unit) and the figure's key
        shown = {key: value for value, key in re.findall(r'<td class="num">([^<]*)</td><td class="mono">([^<]+)</td>',
                                                        page.text)}
        keys = {"children_archived": "children_archived", "visit": "home_visits", "call": "parent_calls",
                "talk": "talks"}
        on_page = {name: leading_number(shown.get(key, "")) for name, key in keys.items()}
        assert on_page == want, page.text[-3000:]
        export = client.get("/ui/export/json", params={"scope": work.township, "period": MONTH}, headers=cookie)
        assert export.status_code == 200, export.text[:500]
        assert figures(export.json()["rollup"]) == want
