"""The TCP proxy that plays a village's line: cut means clients lose the server, restore means
they get it back."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import nats
import pytest

from testbed.proxy import LineShape, TcpProxy


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


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("shape", [None, LineShape(bandwidth=2_000_000, rtt=0.02, buffer=4096)])
async def test_the_line_counts_bytes_each_way_and_keeps_them_in_order(shape: LineShape | None) -> None:
    """What the link benchmark measures: every byte a client sends is counted up, every byte it
    receives counted down; a shaped line (bandwidth, round trip, a small buffer the sender waits
    on) delivers the same bytes in the same order."""
    server, port = await _echo_server()
    proxy = await TcpProxy("127.0.0.1", port, shape=shape).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = bytes(range(256)) * 200  # 51,200 bytes: many segments, more than the buffer
        writer.write(payload)
        await writer.drain()
        got = await reader.readexactly(len(payload))
        assert got == payload
        assert (proxy.bytes_up, proxy.bytes_down, proxy.connections) == (len(payload), len(payload), 1)
        writer.close()
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()
