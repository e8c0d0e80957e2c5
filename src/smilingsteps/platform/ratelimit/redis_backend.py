"""GCRA in Redis, shared by every app instance.

Each check is one EVALSHA of the GCRA script (atomic: the decision and the
remaining count come from the same operation). Checks issued in the same event
loop turn are coalesced into one pipelined round trip: under load that spreads
the client-side cost of redis-py (packing, pooling, parsing) over many checks,
which is where nearly all the time of a lone EVALSHA goes.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from smilingsteps.platform.ratelimit.gcra import GCRA_LUA, Decision
from smilingsteps.platform.ratelimit.policies import Policy

SCRIPT_SHA = hashlib.sha1(GCRA_LUA.encode(), usedforsecurity=False).hexdigest()


class BackendError(Exception):
    """Redis could not answer in time; the caller falls back."""


@dataclass(slots=True)
class _Check:
    key: str
    args: tuple[int, int, int]
    future: asyncio.Future[Decision] = field(repr=False)


class RedisBackend:
    def __init__(self, url: str, *, timeout_s: float, max_batch: int = 256) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
            max_connections=64,
        )
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self._pending: list[_Check] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def hit(self, key: str, policy: Policy, now_us: int | None) -> Decision:
        loop = asyncio.get_running_loop()
        check = _Check(
            key, (policy.interval_us, policy.window_us, -1 if now_us is None else now_us), loop.create_future()
        )
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
            async with asyncio.timeout(self.timeout_s):
                results = await self._evaluate(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            error = BackendError(f"redis: {type(exc).__name__}")
            for check in batch:
                if not check.future.done():
                    check.future.set_exception(error)
            return
        for check, result in zip(batch, results, strict=True):
            if not check.future.done():
                allowed, remaining, reset_us, retry_us = (int(value) for value in result)
                check.future.set_result(Decision(bool(allowed), remaining, reset_us, retry_us))

    async def _evaluate(self, batch: list[_Check], *, may_load: bool = True) -> list[list[int]]:
        pipe = self.client.pipeline(transaction=False)
        for check in batch:
            pipe.evalsha(SCRIPT_SHA, 1, check.key, *check.args)
        results = await pipe.execute(raise_on_error=False)
        if may_load and any(isinstance(result, NoScriptError) for result in results):
            # First use on this server (or after a flush/restart): load once, run again.
            await self.client.script_load(GCRA_LUA)
            return await self._evaluate(batch, may_load=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def ping(self) -> float:
        """Round-trip time in milliseconds; raises BackendError."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendError(f"redis: {type(exc).__name__}") from exc
        return round((loop.time() - started) * 1000, 2)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.aclose()
