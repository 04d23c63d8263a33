"""The TCP proxy that plays a village's line: cut means clients lose the server, restore means
they get it back."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import nats
import pytest

from testbed.proxy import TcpProxy


async def test_cut_and_restore_a_nats_line(nats_url: str) -> None:
    """Through the proxy a client publishes; a cut disconnects it and refuses new connections;
    after restore it reconnects by itself and publishes again."""
    u = urlparse(nats_url)
    proxy = await TcpProxy(u.hostname or "127.0.0.1", u.port or 4222).start()
    events: list[str] = []

    async def on_disconnect() -> None:
        events.append("disconnected")

    async def on_reconnect() -> None:
        events.append("reconnected")

    nc = await nats.connect(proxy.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1,
                            disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    try:
        await nc.publish("proxy.test", b"1")
        await nc.flush(timeout=2)
        await proxy.cut()
        for _ in range(100):
            if "disconnected" in events:
                break
            await asyncio.sleep(0.05)
        assert "disconnected" in events
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.restore()
        for _ in range(200):
            if "reconnected" in events:
                break
            await asyncio.sleep(0.05)
        assert events[-1] == "reconnected"
        await nc.publish("proxy.test", b"2")
        await nc.flush(timeout=2)
    finally:
        await nc.close()
        await proxy.close()


async def test_a_cut_line_keeps_its_port(nats_url: str) -> None:
    """While the line is cut its port stays taken (connections refused, nobody else can bind it),
    so restore() always gets it back (the chaos harness once lost it to another program)."""
    import socket

    u = urlparse(nats_url)
    proxy = await TcpProxy(u.hostname or "127.0.0.1", u.port or 4222).start()
    try:
        await proxy.cut()
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", proxy.port))
        finally:
            other.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.restore()
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.close()
    finally:
        await proxy.close()
