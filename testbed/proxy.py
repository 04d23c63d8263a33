"""A TCP proxy on 127.0.0.1 whose line can be cut and restored: "the line to the village went
down". Used by the demo (one station offline for weeks), the fault-injection harness and tests.

While cut, open connections are reset and new ones are refused at once, as a dead line looks
to a NATS client; restoring lets clients reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from testbed.embedded import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port or free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._hold: socket.socket | None = None
        self.cut_count = 0

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

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()
        self._release()

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
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass
        finally:
            self._links.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
