"""Rate limits that stay exact under load: two real app processes share one Redis, and a
burst against both lets exactly the quota through while Redis is healthy (however busy the
instances); with Redis stopped each instance enforces its share. And one limiter's view of a
slow, silent or dead Redis: which checks wait, which fall back, when the breaker opens."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis

from smilingsteps.platform.logging import captured_events
from smilingsteps.platform.ratelimit.limiter import RateLimiter
from smilingsteps.platform.ratelimit.policies import build_policies
from smilingsteps.platform.ratelimit.redis_backend import RedisBackend
from tests.support.postgres import free_port
from tests.support.processes import clean_env, stop_server, wait_for_line
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

BUSY_SERVER = Path(__file__).resolve().parent.parent / "support" / "busy_server.py"
QUOTA = 50
BURST = 200
REPEATS = 10


@contextmanager
def two_instances(tmp_path: Path, redis_url: str, prefix: str, **extra: str) -> Iterator[list[int]]:
    env = {
        "APP_ENV": "test",
        "SECRET_KEY": "s" * 48,
        "LOG_FORMAT": "json",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_API": f"{QUOTA}/1h",
        "RATE_LIMIT_INSTANCES": "2",
        "SHUTDOWN_READINESS_DELAY": "0",
        **extra,
    }
    ports = [free_port(), free_port()]
    servers: list[subprocess.Popen[str]] = []
    try:
        for index, port in enumerate(ports):
            home = tmp_path / f"instance{index}"
            home.mkdir()
            server = subprocess.Popen(
                [sys.executable, str(BUSY_SERVER), str(port)],
                env=clean_env(home, DATABASE_URL=f"sqlite+aiosqlite:///{home / 'db.sqlite'}", **env),
                cwd=home,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            servers.append(server)
            wait_for_line(server, "Application startup complete", [])
            # Keep reading its log (a request line each): a full pipe would block the server.
            threading.Thread(target=server.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        yield ports
    finally:
        codes = [stop_server(server) for server in servers]  # every one, even if the first fails
    assert codes == [0] * len(servers)


async def burst(ports: list[int]) -> list[int]:
    """BURST requests at once, half to each instance, each on its own connection."""
    limits = httpx.Limits(max_connections=BURST // 2, max_keepalive_connections=BURST // 2)
    async with (
        httpx.AsyncClient(timeout=60, limits=limits) as first,
        httpx.AsyncClient(timeout=60, limits=limits) as second,
    ):
        clients = (first, second)
        responses = await asyncio.gather(
            *(clients[i % 2].get(f"http://127.0.0.1:{ports[i % 2]}/api/v1/_test/busy") for i in range(BURST))
        )
    return [response.status_code for response in responses]


async def forget_counts(redis_url: str, prefix: str) -> None:
    direct = aioredis.Redis.from_url(redis_url)
    try:
        async for key in direct.scan_iter(match=f"{prefix}:*"):
            await direct.delete(key)
    finally:
        await direct.aclose()


async def test_a_burst_on_two_busy_instances_lets_exactly_the_quota_through(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    passed = []
    with two_instances(tmp_path, redis_url, redis_prefix) as ports:
        for _ in range(REPEATS):
            statuses = await burst(ports)
            assert set(statuses) <= {200, 429}, statuses
            passed.append(statuses.count(200))
            await forget_counts(redis_url, redis_prefix)
        async with httpx.AsyncClient() as client:
            metrics = [(await client.get(f"http://127.0.0.1:{port}/metrics")).text for port in ports]
    assert passed == [QUOTA] * REPEATS
    # Not one check was decided outside Redis, and Redis was never declared down.
    for text in metrics:
        assert "smilingsteps_rate_limit_fallback_checks_total 0.0" in text
        assert "smilingsteps_rate_limit_fallbacks_total 0.0" in text


async def test_with_redis_stopped_each_instance_keeps_to_its_share(tmp_path: Path) -> None:
    server = RedisServer()
    server.start()
    try:
        with two_instances(tmp_path, server.url, "down") as ports:
            server.stop()
            statuses = await burst(ports)
            async with httpx.AsyncClient() as client:
                ready = [(await client.get(f"http://127.0.0.1:{port}/health/ready")).json() for port in ports]
    finally:
        server.close()
    assert set(statuses) <= {200, 429}, statuses  # no 5xx, no hang
    # Each instance allows QUOTA / RATE_LIMIT_INSTANCES while Redis is down: the quota in total.
    assert statuses.count(200) <= QUOTA
    assert statuses.count(200) == QUOTA  # and no honest request is refused beyond that
    assert [check["checks"]["rate_limiter"]["status"] for check in ready] == ["degraded", "degraded"]
    assert json.dumps(ready).count('"redis"') == 2


# ---- one instance's view: slow, silent and dead Redis -------------------------------------


@asynccontextmanager
async def proxied_limiter(redis_url: str, prefix: str, timeout_s: float) -> AsyncIterator[tuple[RateLimiter, TcpProxy]]:
    """A limiter whose Redis connections pass through a proxy the test can slow down or silence."""
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    backend = RedisBackend(f"redis://127.0.0.1:{proxy.port}{target.path}", timeout_s=timeout_s)
    limiter = RateLimiter(build_policies({"api": "10/1h"}), redis=backend, prefix=prefix, instances=2)
    try:
        yield limiter, proxy
    finally:
        await limiter.close()
        await proxy.cut()


async def test_a_slow_reply_from_a_live_redis_is_waited_for(redis_url: str, redis_prefix: str) -> None:
    async with proxied_limiter(redis_url, redis_prefix, timeout_s=0.05) as (limiter, proxy):
        assert (await limiter.check("api", "ip:a")).decision.remaining == 9
        proxy.hold_open(0.3)  # six deadlines late; a PING on a new connection answers at once
        slow = await limiter.check("api", "ip:a")
        assert limiter.redis is not None and limiter.redis.overdue == 1
    assert slow.policy.quota == 10 and slow.decision.remaining == 8  # Redis's shared count, not memory's
    assert limiter.fallback_checks == 0 and not limiter.degraded


async def test_a_silent_connection_costs_one_check_then_redis_counts_again(redis_url: str, redis_prefix: str) -> None:
    async with proxied_limiter(redis_url, redis_prefix, timeout_s=0.02) as (limiter, proxy):
        await limiter.check("api", "ip:b")
        proxy.hold_open(None)  # the connection stays open but no reply ever comes back
        lost = await limiter.check("api", "ip:b")
        assert lost.policy.quota == 5 and lost.allowed  # decided in memory, against this instance's share
        assert limiter.fallback_checks == 1 and not limiter.degraded  # Redis answers PINGs: one failure only
        again = await limiter.check("api", "ip:b")  # on a new connection
    # Redis counted the lost check too (only its reply was lost): never fewer counted than made.
    assert again.policy.quota == 10 and again.decision.remaining == 7
    assert not limiter.degraded


async def test_three_failures_in_a_row_open_the_breaker_then_a_success_closes_it(
    redis_url: str, redis_prefix: str
) -> None:
    """Redis alive but failing one key (an error reply each time): not down, so the breaker waits for three."""
    async with proxied_limiter(redis_url, redis_prefix, timeout_s=0.05) as (limiter, _):
        limiter.probe_interval_s = 0  # every check may try Redis again while degraded
        broken = limiter.key("api", "ip:broken")
        direct = aioredis.Redis.from_url(redis_url)
        await direct.rpush(broken, "not a time")  # GET on a list: the script fails with WRONGTYPE
        with captured_events() as events:
            degraded = []
            for _ in range(3):
                verdict = await limiter.check("api", "ip:broken")
                assert verdict.allowed and verdict.policy.quota == 5  # the share, in memory
                degraded.append(limiter.degraded)
            await direct.delete(broken)
            await direct.aclose()
            back = await limiter.check("api", "ip:broken")
    assert degraded == [False, False, True]
    assert [e["event"] for e in events if e["event"].startswith("rate_limit_backend")] == [
        "rate_limit_backend_degraded",
        "rate_limit_backend_restored",
    ]
    assert back.policy.quota == 10 and not limiter.degraded and limiter.fallbacks == 1
