"""A TCP proxy the tests can cut and restore, to make the database vanish at
the socket level without touching the shared server."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stalled = False
        # Per connection (keyed by the client-side writer): seconds each chunk is held, or None to drop it.
        self._held: dict[asyncio.StreamWriter, float | None] = {}

    async def start(self) -> None:
        self._stalled = False
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop accepting and reset every open connection, as a crashed server would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def stall(self) -> None:
        """Keep every connection open but forward nothing: a hung server, not a dead one."""
        self._stalled = True

    def hold_open(self, seconds: float | None) -> None:
        """Connections open now answer `seconds` late (None: never); new connections are served normally."""
        for writer in list(self._writers):
            self._held[writer] = seconds

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, upstream_writer))
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer),
            self._pipe(upstream_reader, client_writer, held_by=client_writer),
            return_exceptions=True,
        )
        self._writers.difference_update((client_writer, upstream_writer))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held_by: asyncio.StreamWriter | None = None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self._stalled:
                    continue
                if held_by is not None and held_by in self._held:
                    delay = self._held[held_by]
                    if delay is None:
                        continue
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()
