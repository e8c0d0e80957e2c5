"""GCRA in Redis, shared by every app instance.

Each check is one EVALSHA of the GCRA script (atomic: the decision and the
remaining count come from the same operation). Checks issued in the same event
loop turn are coalesced into one pipelined write on a single connection
(`resp.RespClient`), with one timer per batch: under load a batch holds about
ten checks, so the client-side cost of a check is a fraction of a lone call's.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from smilingsteps.platform.ratelimit.gcra import GCRA_LUA, Decision
from smilingsteps.platform.ratelimit.policies import Policy
from smilingsteps.platform.ratelimit.resp import RespClient, RespConnectionError, RespError

SCRIPT_SHA = hashlib.sha1(GCRA_LUA.encode(), usedforsecurity=False).hexdigest()
_EVALSHA = (b"EVALSHA", SCRIPT_SHA.encode(), b"1")


class BackendError(Exception):
    """Redis could not answer in time; the caller falls back."""


@dataclass(slots=True)
class _Check:
    command: tuple[bytes | str | int, ...]
    future: asyncio.Future[Decision] = field(repr=False)


class RedisBackend:
    def __init__(self, url: str, *, timeout_s: float, max_batch: int = 256) -> None:
        self.client = RespClient(url, connect_timeout_s=timeout_s)
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self._pending: list[_Check] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def hit(self, key: str, policy: Policy, now_us: int | None) -> Decision:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = -1 if now_us is None else now_us
        check = _Check((*_EVALSHA, key, policy.interval_us, policy.window_us, now), loop.create_future())
        self._pending.append(check)
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await check.future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Check]) -> None:
        try:
            replies = await self._evaluate(batch)
        except (RespConnectionError, RespError, OSError, TimeoutError) as exc:
            error = BackendError(f"redis: {type(exc).__name__}")
            for check in batch:
                if not check.future.done():
                    check.future.set_exception(error)
            return
        for check, reply in zip(batch, replies, strict=True):
            if not check.future.done():
                check.future.set_result(Decision(bool(reply[0]), reply[1], reply[2], reply[3]))

    async def _evaluate(self, batch: list[_Check]) -> list[list[int]]:
        replies = await self.client.execute([check.command for check in batch], timeout_s=self.timeout_s)
        if any(isinstance(reply, RespError) and str(reply).startswith("NOSCRIPT") for reply in replies):
            # First use on this server (or after a flush/restart): load once, run again.
            loaded = await self.client.execute([("SCRIPT", "LOAD", GCRA_LUA)], timeout_s=self.timeout_s)
            if isinstance(loaded[0], RespError):
                raise loaded[0]
            replies = await self.client.execute([check.command for check in batch], timeout_s=self.timeout_s)
        for reply in replies:
            if isinstance(reply, RespError):
                raise reply
        return replies

    async def ping(self) -> float:
        """Round-trip time in milliseconds; raises BackendError."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            reply = await self.client.execute([("PING",)], timeout_s=self.timeout_s * 4)
        except (RespConnectionError, OSError, TimeoutError) as exc:
            raise BackendError(f"redis: {type(exc).__name__}") from exc
        if isinstance(reply[0], RespError):
            raise BackendError(f"redis: {reply[0]}")
        return round((loop.time() - started) * 1000, 2)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.close()
