"""A TCP relay in front of the broker that can act at one exact AMQP method.

The client's bytes are read frame by frame (AMQP 0-9-1: type, channel, size, payload, 0xCE);
when a method frame of the watched class and method passes for the first time, ``on_method``
runs *before* the frame is forwarded, so a test can have the broker close the connection
while the client waits for that method's answer. Everything else is relayed untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable

QUEUE_DECLARE = (50, 10)  # Queue.Declare
_PROTOCOL_HEADER_BYTES = 8
_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_FRAME = 1


class AmqpProxy:
    """Relays 127.0.0.1:<port> to the broker; runs ``on_method`` once at ``method``."""

    def __init__(
        self,
        *,
        broker_host: str,
        broker_port: int,
        method: tuple[int, int],
        on_method: Callable[[], Awaitable[None]],
    ) -> None:
        self._broker = (broker_host, broker_port)
        self._method = method
        self._on_method = on_method
        self._fired = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.fired = asyncio.Event()

    async def __aenter__(self) -> AmqpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        broker_in, broker_out = await asyncio.open_connection(*self._broker)
        upstream = asyncio.create_task(self._client_to_broker(client_in, broker_out))
        downstream = asyncio.create_task(self._relay(broker_in, client_out))
        self._tasks |= {upstream, downstream}
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            for writer in (client_out, broker_out):
                writer.close()
            self._tasks -= {upstream, downstream}

    @staticmethod
    async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _client_to_broker(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            writer.write(await reader.readexactly(_PROTOCOL_HEADER_BYTES))
            while True:
                header = await reader.readexactly(_FRAME_HEADER.size)
                kind, _channel, size = _FRAME_HEADER.unpack(header)
                rest = await reader.readexactly(size + 1)
                watched = kind == _METHOD_FRAME and size >= 4 and not self._fired
                if watched and struct.unpack(">HH", rest[:4]) == self._method:
                    self._fired = True
                    await self._on_method()
                    self.fired.set()
                writer.write(header + rest)
                await writer.drain()
