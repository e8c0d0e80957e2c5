"""A minimal pipelining Redis client for the rate limiter's hot path.

One connection per process, commands written in batches and replies parsed by
hiredis, one timer per batch. The general-purpose client (redis-py) spent most
of a check's time on per-reply timeouts, connection pooling and packing; this
does only what the limiter needs: EVALSHA, SCRIPT LOAD, PING, AUTH, SELECT.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

Arg = bytes | str | int


class RespError(Exception):
    """An error reply from Redis (e.g. NOSCRIPT)."""


class RespConnectionError(ConnectionError):
    """The connection is closed, broken or could not be opened."""


def encode(command: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass
class _Batch:
    expected: int
    future: asyncio.Future[list[Any]]
    replies: list[Any] = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=RespError)
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[_Batch] = deque()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting:
            reply = self.reader.gets()
            if reply is False:
                return
            batch = self.waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                self.waiting.popleft()
                if not batch.future.done():
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RespConnectionError(f"redis connection lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        self.closed = True
        while self.waiting:
            batch = self.waiting.popleft()
            if not batch.future.done():
                batch.future.set_exception(error)
                # An abandoned (overdue) batch has nobody awaiting it: mark the error as seen,
                # so asyncio does not log "exception never retrieved"; awaiters still get it.
                batch.future.exception()
        if self.transport is not None:
            self.transport.abort()


async def answered_within(future: asyncio.Future[Any], timeout_s: float) -> bool:
    """Whether `future` (a reply) is done within `timeout_s`, as Redis's answer time and not the loop's.

    The deadline is kept on the event loop's clock, which a busy loop reads late: the
    timer and the socket's readiness then come due in the same turn, and the reply, though
    it arrived in time, is still unread. So when the deadline passes the loop first polls
    its sockets (two turns: what was queued before a poll runs before that poll's reads),
    and only a reply the operating system does not hold yet counts as late.
    """
    if not future.done():
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(future)
        except TimeoutError:
            for _ in range(2):
                await asyncio.sleep(0)
    return future.done()


class RespClient:
    """`execute(commands)` sends them in one write and returns their replies in order."""

    def __init__(self, url: str, *, connect_timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("the rate limiter's Redis URL must be redis:// or rediss://")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.db = int(parts.path.lstrip("/") or 0)
        self.ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self.connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=self.ssl)
                    await self._handshake(protocol)
            except (OSError, TimeoutError) as exc:
                raise RespConnectionError(f"cannot connect to redis: {type(exc).__name__}") from exc
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        commands: list[list[Arg]] = []
        if self.password is not None:
            commands.append(["AUTH", self.username, self.password] if self.username else ["AUTH", self.password])
        if self.db:
            commands.append(["SELECT", self.db])
        if commands:
            for reply in await self._send(protocol, commands):
                if isinstance(reply, RespError):
                    raise RespConnectionError(f"redis handshake refused: {reply}")

    @staticmethod
    def _send(protocol: _Protocol, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if protocol.closed or protocol.transport is None:
            future.set_exception(RespConnectionError("redis connection closed"))
            return future
        protocol.waiting.append(_Batch(len(commands), future))
        protocol.transport.write(b"".join(encode(command) for command in commands))
        return future

    async def submit(self, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]]:
        """Write `commands` in one go (connecting first if needed); the future holds their replies in order.

        Error replies come back as RespError values, not raised.
        """
        return self._send(await self._connection(), commands)

    def reset(self) -> None:
        """Drop the connection: after an overdue batch the reply stream is out of step with the requests."""
        if self._protocol is not None:
            self._protocol.fail(RespConnectionError("redis reply overdue"))
            self._protocol = None

    async def execute(self, commands: Sequence[Sequence[Arg]], *, timeout_s: float) -> list[Any]:
        """Replies in order, or TimeoutError when Redis has not answered within `timeout_s` (see `answered_within`)."""
        future = await self.submit(commands)
        if not await answered_within(future, timeout_s):
            self.reset()
            raise TimeoutError("redis did not answer in time")
        return future.result()

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.fail(RespConnectionError("client closed"))
            self._protocol = None
