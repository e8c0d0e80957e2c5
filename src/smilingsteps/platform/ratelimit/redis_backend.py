"""GCRA in Redis, shared by every app instance.

Each check is one EVALSHA of the GCRA script (atomic: the decision and the
remaining count come from the same operation). Checks issued in the same event
loop turn are coalesced into one pipelined write on a single connection
(`resp.RespClient`), with one timer per batch: under load a batch holds about
ten checks, so the client-side cost of a check is a fraction of a lone call's.

How long a check waits measures Redis, not this process: the deadline
(RATE_LIMIT_REDIS_TIMEOUT_MS) runs from the write and a reply the operating system
already holds counts as on time (`resp.answered_within`), however late a busy event
loop reads it. A batch still unanswered at the deadline is not yet a failure: a PING on
a separate connection asks whether Redis is alive. If it is, the batch gets
`OVERDUE_GRACE` deadlines more (a slow reply from a live server is still the shared,
exact count); if it is not, the batch fails as `down` and the limiter opens its breaker.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from smilingsteps.platform.ratelimit.gcra import GCRA_LUA, REFUND_LUA, Decision
from smilingsteps.platform.ratelimit.policies import Policy
from smilingsteps.platform.ratelimit.resp import RespClient, RespConnectionError, RespError, answered_within

SCRIPTS = (GCRA_LUA, REFUND_LUA)
_HIT = (b"EVALSHA", hashlib.sha1(GCRA_LUA.encode(), usedforsecurity=False).hexdigest().encode(), b"1")
_REFUND = (b"EVALSHA", hashlib.sha1(REFUND_LUA.encode(), usedforsecurity=False).hexdigest().encode(), b"1")
# Deadlines an overdue batch may still take once a PING showed Redis alive (1 s at the default 50 ms).
OVERDUE_GRACE = 20


class BackendError(Exception):
    """Redis gave no usable answer; the caller falls back.

    `down` is set when Redis is known to be unreachable (the connection failed, or it did
    not answer a PING either); otherwise Redis is alive and only this answer failed.
    """

    def __init__(self, message: str, *, down: bool) -> None:
        super().__init__(message)
        self.down = down


@dataclass(slots=True)
class _Check:
    command: tuple[bytes | str | int, ...]
    future: asyncio.Future[Decision] = field(repr=False)


class RedisBackend:
    def __init__(self, url: str, *, timeout_s: float, max_batch: int = 256) -> None:
        self.client = RespClient(url, connect_timeout_s=timeout_s)
        # Its own connection, so a PING never queues behind an overdue batch.
        self.prober = RespClient(url, connect_timeout_s=timeout_s)
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self.overdue = 0  # batches that missed the deadline (the PING then decided)
        self._pending: list[_Check] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe: asyncio.Future[bool] | None = None

    async def hit(self, key: str, policy: Policy, now_us: int | None) -> Decision:
        """Count one request against `key` and decide; BackendError when Redis cannot say."""
        return await self._queue(_HIT, key, policy, now_us)

    async def refund(self, key: str, policy: Policy, now_us: int | None) -> Decision:
        """Give one request back to `key` (see `gcra.gcra_refund`)."""
        return await self._queue(_REFUND, key, policy, now_us)

    async def _queue(self, script: tuple[bytes, ...], key: str, policy: Policy, now_us: int | None) -> Decision:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = -1 if now_us is None else now_us
        check = _Check((*script, key, policy.interval_us, policy.window_us, now), loop.create_future())
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
            replies = await self._evaluate([check.command for check in batch])
        except BackendError as error:
            for check in batch:
                if not check.future.done():
                    check.future.set_exception(error)
            return
        for check, reply in zip(batch, replies, strict=True):
            if not check.future.done():
                check.future.set_result(Decision(bool(reply[0]), reply[1], reply[2], reply[3]))

    async def _evaluate(self, commands: list[tuple[bytes | str | int, ...]]) -> list[list[int]]:
        replies = await self._replies(commands)
        if any(isinstance(reply, RespError) and str(reply).startswith("NOSCRIPT") for reply in replies):
            # First use on this server (or after a flush/restart): load the scripts once, run again.
            loaded = await self._replies([("SCRIPT", "LOAD", script) for script in SCRIPTS])
            for reply in loaded:
                if isinstance(reply, RespError):
                    raise BackendError(f"redis: {reply}", down=False)
            replies = await self._replies(commands)
        for reply in replies:
            if isinstance(reply, RespError):
                raise BackendError(f"redis: {reply}", down=False)
        return replies

    async def _replies(self, commands: list[tuple[bytes | str | int, ...]]) -> list[Any]:
        """The replies to `commands`, waiting past the deadline only while Redis answers a PING."""
        try:
            future = await self.client.submit(commands)
            if await answered_within(future, self.timeout_s):
                return future.result()
            self.overdue += 1
            alive = await self.alive()
            if alive and await answered_within(future, self.timeout_s * OVERDUE_GRACE):
                return future.result()
        except (RespConnectionError, OSError) as exc:
            raise BackendError(f"redis: {type(exc).__name__}", down=True) from exc
        self.client.reset()
        raise BackendError("redis: no reply in time", down=not alive)

    async def alive(self) -> bool:
        """One PING on the probe connection within the deadline; concurrent askers share it."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._ping_once())
        return await asyncio.shield(self._probe)

    async def _ping_once(self) -> bool:
        try:
            reply = await self.prober.execute([("PING",)], timeout_s=self.timeout_s)
        except (RespConnectionError, OSError, TimeoutError):
            return False
        return not isinstance(reply[0], RespError)

    async def ping(self) -> float:
        """Round-trip time in milliseconds (readiness); raises BackendError."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            reply = await self.prober.execute([("PING",)], timeout_s=self.timeout_s * 4)
        except (RespConnectionError, OSError, TimeoutError) as exc:
            raise BackendError(f"redis: {type(exc).__name__}", down=True) from exc
        if isinstance(reply[0], RespError):
            raise BackendError(f"redis: {reply[0]}", down=False)
        return round((loop.time() - started) * 1000, 2)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
        await self.client.close()
        await self.prober.close()
