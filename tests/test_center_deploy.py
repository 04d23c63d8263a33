"""The NATS config in deploy/nats/, run for real: each site may use only its own subjects."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig
from nats.js.errors import APIError

from events.catalogue import HomeVisitMade
from events.envelope import encode_event
from events.wire import (
    DOWN_STREAM,
    UP_STREAM,
    down_consumer,
    down_subject,
    inbox_prefix,
    restore_page_decoder,
    restore_subject,
    up_subject,
)
from service.center import run_center
from service.sites import register_site, write_users_file
from service.streams import site_consumer_config
from store.postgres import EventStore
from testbed.embedded import free_port, nats_bin
from tests.center_kit import SiteInbox, wait_for
from tests.factory import SiteWriter

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nats"
A, B = "gx-lp.xy.v01", "gx-lp.xy.v02"
CENTER_PASSWORD = "center-test-password"


class Server:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.proc = url, proc


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[Path]:
    """deploy/nats/center.conf copied to a folder where the test writes users.conf, its store_dir
    pointed into the test's folder (nats-server refuses -sd beside a configured store_dir)."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    text = (DEPLOY / "center.conf").read_text(encoding="utf-8")
    assert text.count('store_dir: "/var/lib/shouwang/nats"') == 1
    text = text.replace('store_dir: "/var/lib/shouwang/nats"', f'store_dir: "{tmp_path / "js"}"')
    crt, key = conf_dir / "center.crt", conf_dir / "center.key"  # the sites' TLS; the center connects in clear
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    text = text.replace("/etc/shouwang/tls/center.crt", str(crt)).replace("/etc/shouwang/tls/center.key", str(key))
    (conf_dir / "center.conf").write_text(text, encoding="utf-8")
    yield conf_dir


def start_server(conf_dir: Path, store: Path) -> Server:
    """nats-server with the deploy config; only address, ports and store folder overridden."""
    port, http = free_port(), free_port()
    env = {**os.environ, "SHOUWANG_NATS_CENTER_PASSWORD": CENTER_PASSWORD}
    log = (store.parent / "nats.log").open("ab")
    proc = subprocess.Popen([nats_bin(), "-c", str(conf_dir / "center.conf"), "-a", "127.0.0.1", "-p", str(port),
                             "-m", str(http)], env=env, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {(store.parent / 'nats.log').read_text()[-800:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(
                f"http://127.0.0.1:{http}/healthz?js-enabled-only=true", timeout=1) as resp:
            if resp.status == 200:
                return Server(f"nats://127.0.0.1:{port}", proc)
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("nats-server with the deploy config did not become ready")


@contextlib.asynccontextmanager
async def site_client(url: str, site_id: str, password: str, errors: list[str]) -> AsyncIterator[NATS]:
    async def on_error(err: Exception) -> None:
        errors.append(str(err))

    nc = await nats.connect(url, user=site_id, password=password, inbox_prefix=inbox_prefix(site_id),
                            error_cb=on_error, max_reconnect_attempts=0, connect_timeout=2)
    try:
        yield nc
    finally:
        await nc.close()


async def test_deploy_config_lets_a_site_use_only_its_own_subjects(
        deployed: Path, tmp_path: Path, database_url: str, pool: asyncpg.Pool) -> None:
    """With deploy/nats/center.conf and the users file rendered from the registry, a site can publish its own events
    and read its own care.down, but cannot publish as another site, read another site's care.down, or create or
    use another site's consumer; the center's user can do its work."""
    creds = {s: await register_site(pool, s, "village", s) for s in (A, B)}
    assert await write_users_file(pool, deployed / "users.conf") == 2
    assert (deployed / "users.conf").stat().st_mode & 0o077 == 0
    server = start_server(deployed, tmp_path / "js")
    try:
        async with run_center(database_url, server.url,
                              nats_options={"user": "center", "password": CENTER_PASSWORD}) as center:
            errors: list[str] = []
            async with site_client(server.url, A, creds[A].password, errors) as nc:
                js = nc.jetstream()
                own = SiteWriter(A).write(HomeVisitMade(child_id="c-" + "3" * 32, visitor="石晓"))
                ack = await js.publish(up_subject(A), encode_event(own.event), stream=UP_STREAM)
                assert ack.stream == UP_STREAM

                forged = SiteWriter(B).write(HomeVisitMade(child_id="c-" + "3" * 32, visitor="石晓"))
                with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                    await js.publish(up_subject(B), encode_event(forged.event), timeout=1)
                await wait_for(lambda: _has_error(errors, "publish", up_subject(B)), what="the publish violation")

                # Its own care.down, through its own durable consumer: allowed; the receipt arrives.
                inbox = SiteInbox(js, A)
                receipt = await inbox.wait_receipt(lambda r: r.watermark == 1)
                assert receipt.site_id == A

                # Another site's care.down: not as a subscription, not through a consumer.
                await nc.subscribe(down_subject(B))
                await wait_for(lambda: _has_error(errors, "subscription", down_subject(B)),
                               what="the subscribe violation")
                config_b = site_consumer_config(B)
                with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError)):
                    await js.add_consumer(DOWN_STREAM, config_b, timeout=1)
                stealing = ConsumerConfig(name=down_consumer(A), durable_name=down_consumer(A),
                                          filter_subject=down_subject(B))
                with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError)):
                    await js.add_consumer(DOWN_STREAM, stealing, timeout=1)
                with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                    await nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{DOWN_STREAM}.{down_consumer(B)}", b"1", timeout=1)
                for subject in (f"$JS.API.CONSUMER.CREATE.{DOWN_STREAM}.{down_consumer(B)}",
                                f"$JS.API.CONSUMER.CREATE.{DOWN_STREAM}.{down_consumer(A)}.{down_subject(B)}",
                                f"$JS.API.CONSUMER.MSG.NEXT.{DOWN_STREAM}.{down_consumer(B)}"):
                    assert await _has_error(errors, "publish", subject), subject
                # Its own events back (agent restore): allowed; another site's: refused.
                page = restore_page_decoder.decode(
                    (await nc.request(restore_subject(A), b'{"from_seq": 1}', timeout=5)).data)
                assert page.error is None and len(page.events) == 1 and page.site_id == A
                with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                    await nc.request(restore_subject(B), b'{"from_seq": 1}', timeout=1)
                await wait_for(lambda: _has_error(errors, "publish", restore_subject(B)),
                               what="the restore violation")
                # Nor can it listen on the inbox of another site (fetch replies carry events).
                await nc.subscribe(f"{inbox_prefix(B)}.>")
                await wait_for(lambda: _has_error(errors, "subscription", inbox_prefix(B)),
                               what="the inbox violation")

            await wait_for(lambda: _count(EventStore(pool), 1), what="the site's own event stored")
            assert await EventStore(pool).get(forged.event.event_id) is None
            assert (await EventStore(pool).progress(B)).events_stored == 0
            info = await center.js.consumer_info(DOWN_STREAM, down_consumer(A))
            assert info.config.filter_subject == down_subject(A)
            # Wrong password: refused outright.
            intruder = NATS()
            try:
                with pytest.raises(nats.errors.Error):
                    await intruder.connect(server.url, user=A, password="wrong", max_reconnect_attempts=0,
                                           allow_reconnect=False, connect_timeout=2)
            finally:
                await intruder.close()
    finally:
        server.proc.terminate()
        server.proc.wait(10)


async def _has_error(errors: list[str], kind: str, subject: str) -> bool:
    # nats-py lower-cases the server's error text, subject included
    return any("permissions violation" in e.lower() and kind in e.lower() and subject.lower() in e.lower()
               for e in errors)


async def _count(store: EventStore, n: int) -> bool:
    return await store.count() == n
