"""The demo's NATS (testbed.embedded.EmbeddedNats with users, as testbed/demo.py starts it) has the
production users and permissions (service.sites.nats_users_conf): a site's user may use only its
own subjects, and a reload adds or drops sites."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from events.wire import UP_STREAM, down_subject, inbox_prefix, up_subject
from service.sites import credentials_for, nats_users_conf
from service.streams import StreamSettings, ensure_streams
from testbed.embedded import EmbeddedNats
from tests.center_kit import wait_for

A, B = "gx-lp.xy.v01", "gx-lp.xy.v02"
PASSWORDS = {A: "password-of-a", B: "password-of-b"}
CENTER_PASSWORD = "center-demo-password"


@pytest.fixture
def demo_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """NATS started as the demo starts it: the center's user only, then every site after a reload."""
    server = EmbeddedNats(tmp_path / "nats", users=nats_users_conf({}, CENTER_PASSWORD)).start()
    try:
        server.set_users(nats_users_conf(PASSWORDS, CENTER_PASSWORD))
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def as_site(server: EmbeddedNats, site_id: str, errors: list[str]) -> AsyncIterator[NATS]:
    """A connection with the site's credentials, as `agent init --creds` gives its agent."""
    creds = credentials_for(site_id, PASSWORDS[site_id])

    async def on_error(err: Exception) -> None:
        errors.append(str(err).lower())

    nc = await nats.connect(server.url, user=creds.user, password=creds.password, inbox_prefix=creds.inbox_prefix,
                            error_cb=on_error, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=2)
    try:
        yield nc
    finally:
        await nc.close()


async def as_center(server: EmbeddedNats) -> NATS:
    return await nats.connect(server.url_for("center", CENTER_PASSWORD), connect_timeout=2,
                              max_reconnect_attempts=0, allow_reconnect=False)


def violated(errors: list[str], kind: str, subject: str) -> bool:
    return any("permissions violation" in e and kind in e and subject.lower() in e for e in errors)


async def test_a_site_cannot_publish_on_another_sites_care_up(demo_nats: EmbeddedNats) -> None:
    """Site A's user gets its own care.up into CARE_UP, but a publish on care.up.<B> is refused and
    never reaches the stream."""
    center = await as_center(demo_nats)
    try:
        js = center.jetstream()
        await ensure_streams(js, StreamSettings())
        errors: list[str] = []
        async with as_site(demo_nats, A, errors) as nc:
            own = await nc.jetstream().publish(up_subject(A), b"{}", stream=UP_STREAM, timeout=5)
            assert own.stream == UP_STREAM
            await nc.publish(up_subject(B), b'{"forged": true}')
            await nc.flush()
            await wait_for(lambda: asyncio.sleep(0, violated(errors, "publish", up_subject(B))),
                           what="the publish violation")
        info = await js.stream_info(UP_STREAM, subjects_filter=">")
        assert info.state.subjects == {up_subject(A): 1}
    finally:
        await center.close()


async def test_a_site_cannot_subscribe_to_another_sites_care_down(demo_nats: EmbeddedNats) -> None:
    """Site A's user may read its own care.down but a subscription to care.down.<B> (or B's inbox) is
    refused and receives nothing the center sends B."""
    center = await as_center(demo_nats)
    try:
        errors: list[str] = []
        async with as_site(demo_nats, A, errors) as nc:
            own = await nc.subscribe(down_subject(A))
            theirs = await nc.subscribe(down_subject(B))
            inbox = await nc.subscribe(f"{inbox_prefix(B)}.>")
            await nc.flush()
            await wait_for(lambda: asyncio.sleep(0, violated(errors, "subscription", down_subject(B))),
                           what="the subscribe violation")
            await wait_for(lambda: asyncio.sleep(0, violated(errors, "subscription", inbox_prefix(B))),
                           what="the inbox violation")
            await center.publish(down_subject(B), b"for B only")
            await center.publish(f"{inbox_prefix(B)}.x", b"for B only")
            await center.publish(down_subject(A), b"for A")
            await center.flush()
            assert (await own.next_msg(timeout=5)).data == b"for A"
            for sub in (theirs, inbox):
                with pytest.raises(nats.errors.TimeoutError):
                    await sub.next_msg(timeout=0.5)
    finally:
        await center.close()


async def test_the_users_file_reloads(demo_nats: EmbeddedNats) -> None:
    """Without a user nobody connects; after a reload a dropped site's user is refused and a new
    password replaces the old one."""
    for options in ({}, {"user": A, "password": "wrong"}):
        await refused(demo_nats, **options)
    demo_nats.set_users(nats_users_conf({A: "a-rotated"}, CENTER_PASSWORD))
    await refused(demo_nats, user=B, password=PASSWORDS[B])
    await refused(demo_nats, user=A, password=PASSWORDS[A])
    nc = await nats.connect(demo_nats.url, user=A, password="a-rotated", connect_timeout=2, max_reconnect_attempts=0,
                            allow_reconnect=False)
    await nc.close()


async def refused(server: EmbeddedNats, **options: str) -> None:
    intruder = NATS()
    try:
        with pytest.raises(nats.errors.Error):
            await intruder.connect(server.url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False,
                                   **options)  # type: ignore[arg-type]
    finally:
        await intruder.close()
