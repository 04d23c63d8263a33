"""A TCP proxy on 127.0.0.1 whose line can be cut and restored: "the line to the village went
down". Used by the demo (one station offline for weeks), the fault-injection harness, tests and
the link benchmark (bench/link.py).

While cut, open connections are reset and new ones are refused at once, as a dead line looks
to a NATS client; restoring lets clients reconnect.

It counts the bytes that cross it each way (``bytes_up``: client to server, as the station's
mobile contract counts what it sends; ``bytes_down``: server to client, what it receives), and
can play a weak line (:class:`LineShape`): a bandwidth per direction shared by every connection
through the proxy (one village line), a round-trip time, and a small buffer, so a sender that
outruns the line waits as it would behind a real modem. Bytes queued on the line when it is cut
are lost, as they would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import time

from testbed.embedded import free_port

_SEGMENT = 1400  # bytes a shaped line delivers at a time (about one TCP segment)


@dataclasses.dataclass(frozen=True, slots=True)
class LineShape:
    """A weak line: ``bandwidth`` in bits per second each way, ``rtt`` the round trip in seconds
    (half of it each way), ``buffer`` the bytes the line holds before the sender must wait."""

    bandwidth: int
    rtt: float
    buffer: int = 16 * 1024

    @property
    def bytes_per_second(self) -> float:
        return self.bandwidth / 8


class _Line:
    """One direction of a shaped line: when the next byte may start, and what it holds."""

    def __init__(self, shape: LineShape) -> None:
        self.shape = shape
        self.free_at = 0.0  # time.monotonic() at which the line finishes what it was given
        self.held = 0
        self.room = asyncio.Condition()

    def schedule(self, size: int) -> float:
        """When a piece of `size` bytes given now arrives at the far end."""
        now = time.monotonic()
        self.free_at = max(self.free_at, now) + size / self.shape.bytes_per_second
        return self.free_at + self.shape.rtt / 2


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int | None = None,
                 shape: LineShape | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port or free_port()
        self.shape = shape
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._hold: socket.socket | None = None
        self._lines = (_Line(shape), _Line(shape)) if shape is not None else None
        self.cut_count = 0
        self.bytes_up = 0  # client -> server, counted as the client sends them
        self.bytes_down = 0  # server -> client, counted as the client receives them
        self.connections = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def start(self) -> TcpProxy:
        self._release()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        """Drop every connection and stop listening (clients see resets and refusals)."""
        if self._server is None:
            return
        self.cut_count += 1
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        # Keep the port while the line is down: bound but not listening, so connections are
        # refused, and no other program's outgoing connection can take it as its local port
        # (then restore() could not listen on it again).
        hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            hold.bind(("127.0.0.1", self.port))
        except OSError:
            hold.close()
        else:
            self._hold = hold
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        for t in list(self._links):
            t.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        if self._lines is not None:  # what the line held is gone with it
            for line in self._lines:
                line.free_at, line.held = 0.0, 0

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()
        self._release()

    async def cut_every(self, low: float, high: float, rng: random.Random, down: float = 0.0) -> None:
        """Cut the line every `low`..`high` seconds (uniform), down for `down` seconds each time,
        until cancelled: a village line that drops now and then."""
        while True:
            await asyncio.sleep(rng.uniform(low, high))
            await self.cut()
            if down > 0:
                await asyncio.sleep(down)
            await self.restore()

    def _release(self) -> None:
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            if self._lines is None:
                await asyncio.gather(self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False))
            else:
                up, down = self._lines
                await asyncio.gather(self._shaped(reader, up_writer, up, True),
                                     self._shaped(up_reader, writer, down, False))
        except asyncio.CancelledError:
            pass
        finally:
            self._links.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.transport.abort()

    def _count(self, upward: bool, size: int) -> None:
        if upward:
            self.bytes_up += size
        else:
            self.bytes_down += size

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upward: bool) -> None:
        try:
            while data := await reader.read(65536):
                self._count(upward, len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _shaped(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: _Line,
                      upward: bool) -> None:
        """Carry bytes at the line's pace: each piece leaves when the line is free, arrives half a
        round trip later; while the line holds `buffer` bytes, the sender is not read from."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, piece = item
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not upward:
                    self._count(False, len(piece))
                writer.write(piece)
                await writer.drain()
                async with line.room:
                    line.held -= len(piece)
                    line.room.notify_all()

        carrier = asyncio.create_task(deliver())
        try:
            while data := await reader.read(_SEGMENT * 8):
                if upward:
                    self._count(True, len(data))
                for i in range(0, len(data), _SEGMENT):
                    piece = data[i:i + _SEGMENT]
                    async with line.room:
                        await line.room.wait_for(lambda: line.held < line.shape.buffer)
                        line.held += len(piece)
                    queue.put_nowait((line.schedule(len(piece)), piece))
            queue.put_nowait(None)
            await carrier
        except (ConnectionError, OSError):
            pass
        finally:
            carrier.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await carrier
            with contextlib.suppress(Exception):
                writer.close()


class LineToCluster:
    """A station's line to a NATS cluster: one TcpProxy per server, cut and restored together
    (the station's line is down, whichever server it would reach). `url` lists the proxies,
    separated by commas, as the agent's nats_url lists a cluster's servers."""

    def __init__(self, target_host: str, target_ports: list[int]) -> None:
        self.proxies = [TcpProxy(target_host, port) for port in target_ports]

    @property
    def url(self) -> str:
        return ",".join(p.url for p in self.proxies)

    @property
    def is_up(self) -> bool:
        return all(p.is_up for p in self.proxies)

    @property
    def cut_count(self) -> int:
        return max(p.cut_count for p in self.proxies)

    async def start(self) -> LineToCluster:
        for p in self.proxies:
            await p.start()
        return self

    async def cut(self) -> None:
        await asyncio.gather(*(p.cut() for p in self.proxies))

    async def restore(self) -> None:
        for p in self.proxies:
            await p.restore()

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.proxies), return_exceptions=True)
