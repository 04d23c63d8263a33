"""deploy/nats/county-hub.conf and township-leaf.conf run for real, with TLS: a village station
connected to its township's leaf node publishes into the county hub's stream and the center
stores the event, and the township's leaf cannot carry another township's events."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest

from events import wire
from events.catalogue import HomeVisitMade
from events.envelope import Draft, encode_event
from events.types import SiteKind
from events.wire import UP_STREAM, inbox_prefix, up_subject
from service.center import run_center
from service.leafs import leaf_user_entry, leaf_user_name
from service.sites import nats_users_conf, register_site
from store.postgres import EventStore
from sync_agent.agent import Agent
from sync_agent.config import SiteConfig, load_config, log_path, write_config
from sync_agent.locallog import LocalLog
from sync_agent.restore import restore
from testbed.embedded import free_port, nats_bin
from tests.center_kit import wait_for
from tests.factory import SiteWriter

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nats"
TOWNSHIP = "gx-lp.xy"
SITE = f"{TOWNSHIP}.v01"
CENTER_PASSWORD = "center-test-password"
LEAF_PASSWORD = "leaf-test-password"
JS_DOMAIN = wire.JS_DOMAIN


def _cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (its own CA)."""
    crt, key = folder / "test.crt", folder / "test.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def _start(conf: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    port, http = free_port(), free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([nats_bin(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(port), "-m", str(http)],
                                env={**os.environ, **env}, stdout=out, stderr=out)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {log.read_text()[-1500:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz",
                                                                   timeout=1) as resp:
            if resp.status == 200:
                return proc, port, http
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("nats-server did not become ready")


@pytest.fixture
def nats_pair(tmp_path: Path) -> Iterator[dict[str, object]]:
    crt, key = _cert(tmp_path)
    leaf_port = free_port()
    hub_dir, leaf_dir = tmp_path / "hub", tmp_path / "leaf"
    hub_dir.mkdir()
    leaf_dir.mkdir()
    center = (DEPLOY / "center.conf").read_text(encoding="utf-8")
    center = center.replace('store_dir: "/var/lib/shouwang/nats"', f'store_dir: "{tmp_path / "js"}"')
    (hub_dir / "center.conf").write_text(center, encoding="utf-8")
    hub = (DEPLOY / "county-hub.conf").read_text(encoding="utf-8")
    assert hub.count("/etc/shouwang/tls/hub.crt") == 2 and "listen: 0.0.0.0:7422" in hub
    hub = hub.replace("/etc/shouwang/tls/hub.crt", str(crt)).replace("/etc/shouwang/tls/hub.key", str(key))
    hub = hub.replace("listen: 0.0.0.0:7422", f"listen: 127.0.0.1:{leaf_port}")
    (hub_dir / "county-hub.conf").write_text(hub, encoding="utf-8")
    users = nats_users_conf({}).rstrip().rstrip("]") + "  " + leaf_user_entry(TOWNSHIP, LEAF_PASSWORD) + "\n]\n"
    (hub_dir / "users.conf").write_text(users, encoding="utf-8")

    leaf = (DEPLOY / "township-leaf.conf").read_text(encoding="utf-8")
    for path, real in (("/etc/shouwang/tls/leaf.crt", crt), ("/etc/shouwang/tls/leaf.key", key),
                       ("/etc/shouwang/tls/county-ca.crt", crt)):
        assert path in leaf
        leaf = leaf.replace(path, str(real))
    (leaf_dir / "township-leaf.conf").write_text(leaf, encoding="utf-8")
    site_password = "site-test-password"
    (leaf_dir / "users.conf").write_text(nats_users_conf({SITE: site_password}), encoding="utf-8")

    procs = []
    try:
        hub_proc, hub_port, hub_http = _start(hub_dir / "county-hub.conf",
                                              {"SHOUWANG_NATS_CENTER_PASSWORD": CENTER_PASSWORD}, tmp_path / "hub.log")
        procs.append(hub_proc)
        leaf_url = f"tls://{leaf_user_name(TOWNSHIP)}:{LEAF_PASSWORD}@127.0.0.1:{leaf_port}"
        leaf_proc, leaf_client_port, _ = _start(leaf_dir / "township-leaf.conf", {"SHOUWANG_LEAF_URL": leaf_url,
                                                "SHOUWANG_NATS_CENTER_PASSWORD": "unused"}, tmp_path / "leaf.log")
        procs.append(leaf_proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{hub_http}/leafz", timeout=1) as resp:
                if json.loads(resp.read()).get("leafnodes", 0) >= 1:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the township leaf never connected: " + (tmp_path / "leaf.log").read_text()[-1500:])
        tls = ssl.create_default_context(cafile=str(crt))
        yield {"hub": f"tls://127.0.0.1:{hub_port}", "leaf": f"tls://127.0.0.1:{leaf_client_port}", "tls": tls,
               "site_password": site_password, "ca": str(crt)}
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


async def test_station_reaches_the_center_through_its_township_leaf(
        nats_pair: dict[str, object], database_url: str, pool: asyncpg.Pool) -> None:
    """A station's event goes station -> township leaf -> county hub (PubAck from CARE_UP) ->
    PostgreSQL; the leaf refuses to carry another township's subject."""
    await register_site(pool, SITE, "village", "青石村维权站")
    tls = nats_pair["tls"]
    async with run_center(database_url, str(nats_pair["hub"]),
                          nats_options={"user": "center", "password": CENTER_PASSWORD, "tls": tls}):
        nc = await nats.connect(str(nats_pair["leaf"]), user=SITE, password=str(nats_pair["site_password"]), tls=tls,
                                inbox_prefix=inbox_prefix(SITE), max_reconnect_attempts=0, connect_timeout=3)
        try:
            js = nc.jetstream()
            event = SiteWriter(SITE).write(HomeVisitMade(child_id="c-" + "4" * 32, visitor="石晓"))
            ack = await js.publish(up_subject(SITE), encode_event(event.event), stream=UP_STREAM, timeout=5)
            assert ack.stream == UP_STREAM
            store = EventStore(pool)
            await wait_for(lambda: _stored(store, event.event.event_id), what="the event in the store")
            other = SiteWriter("gx-lp.zz.v01").write(HomeVisitMade(child_id="c-" + "4" * 32, visitor="石晓"))
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await js.publish(up_subject("gx-lp.zz.v01"), encode_event(other.event), timeout=1)
        finally:
            await nc.close()


async def _stored(store: EventStore, event_id: str) -> bool:
    return await store.get(event_id) is not None


async def test_agent_behind_its_township_leaf_is_receipted(
        nats_pair: dict[str, object], database_url: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """The whole agent, connected to its township's leaf node over TLS with the county's CA:
    its events reach the store and the receipts come back through the leaf (the care.down
    consumer is created and read through the hub's JetStream domain); a restore of its log on a
    new machine goes through the leaf too (site and leaf permissions allow it)."""
    await register_site(pool, SITE, "village", "青石村维权站")
    creds = tmp_path / "site-creds.json"
    creds.write_text(json.dumps({"user": SITE, "password": nats_pair["site_password"],
                                 "inbox_prefix": inbox_prefix(SITE)}), encoding="utf-8")
    data = tmp_path / "station"
    write_config(data, SiteConfig(site_id=SITE, kind=SiteKind.VILLAGE, name="青石村维权站",
                                  nats_url=str(nats_pair["leaf"]), creds=str(creds), tls_ca=str(nats_pair["ca"]),
                                  js_domain=JS_DOMAIN))
    with LocalLog(log_path(data), SITE) as log:
        log.record([Draft(care=HomeVisitMade(child_id="c-" + "5" * 32, visitor="石晓"),
                          occurred_at=dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)) for _ in range(3)],
                   default_actor="station")
    tls = nats_pair["tls"]
    async with run_center(database_url, str(nats_pair["hub"]),
                          nats_options={"user": "center", "password": CENTER_PASSWORD, "tls": tls}):
        agent = Agent(data)
        await agent.start()
        try:
            synced = await agent.wait_synced(60)
            assert synced, f"{agent.pending()} events not receipted: {agent.log.meta('last_error')}"
        finally:
            await agent.stop()
        # The station's disk dies: a new machine restores its log through the same leaf.
        new = tmp_path / "new-station"
        write_config(new, load_config(data))
        report = await restore(new)
        assert (report.events, report.head_seq) == (3, 3)
    assert int(await pool.fetchval("SELECT count(*) FROM events WHERE site_id = $1", SITE)) == 3
