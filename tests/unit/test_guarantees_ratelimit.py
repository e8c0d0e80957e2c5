"""The rate limiter's decisions in full: GCRA known answers (allowed, remaining, reset and
retry-after, refunds), the per-identity keys, the counters behind /metrics, the Redis breaker
(when it opens, how often it probes, what it logs) and the fallback to this instance's share.
Written from the survivors of a mutation run over platform/ratelimit (bench/mutation.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from smilingsteps.platform.errors import RateLimitedError
from smilingsteps.platform.logging import captured_events
from smilingsteps.platform.ratelimit import limiter as limiter_module
from smilingsteps.platform.ratelimit.gcra import Decision, gcra, gcra_refund
from smilingsteps.platform.ratelimit.limiter import RateLimiter, Verdict
from smilingsteps.platform.ratelimit.memory import MemoryBackend
from smilingsteps.platform.ratelimit.policies import Policy
from smilingsteps.platform.ratelimit.redis_backend import BackendError
from tests.support.clock import FakeClock

S = 1_000_000
THREE = Policy("api", 3, 3)  # one request regained a second
NOW = 1_000 * S


# ---- GCRA known answers -----------------------------------------------------------------------


def test_gcra_answers_in_full() -> None:
    expected = [
        (Decision(True, 2, 1 * S, 0), NOW + 1 * S),
        (Decision(True, 1, 2 * S, 0), NOW + 2 * S),
        (Decision(True, 0, 3 * S, 0), NOW + 3 * S),
        (Decision(False, 0, 3 * S, 1 * S), None),  # the quota is back in 3 s, the next request in 1 s
    ]
    tat = None
    for decision, new_tat in expected:
        assert gcra(tat, NOW, THREE) == (decision, new_tat)
        tat = new_tat if new_tat is not None else tat
    assert gcra(tat, NOW + S, THREE) == (Decision(True, 0, 3 * S, 0), NOW + 4 * S)


def test_a_refund_gives_back_one_interval_and_never_more_than_the_quota() -> None:
    assert gcra_refund(None, NOW, THREE) == (Decision(True, 3, 0, 0), None)
    assert gcra_refund(NOW, NOW, THREE) == (Decision(True, 3, 0, 0), None)
    assert gcra_refund(NOW + 3 * S, NOW, THREE) == (Decision(True, 1, 2 * S, 0), NOW + 2 * S)
    # Part of an interval: the remaining count is whole requests, rounded down.
    assert gcra_refund(NOW + 5 * S // 2, NOW, THREE) == (Decision(True, 1, 3 * S // 2, 0), NOW + 3 * S // 2)
    assert gcra_refund(NOW + S // 2, NOW, THREE) == (Decision(True, 3, 0, 0), NOW)


# ---- the limiter --------------------------------------------------------------------------


class FakeRedis:
    """Stands in for RedisBackend: counts in memory, or fails as told; records what it was asked."""

    def __init__(self) -> None:
        self.memory = MemoryBackend()
        self.calls: list[tuple[str, str, int | None]] = []
        self.failure: BackendError | None = None

    async def hit(self, key: str, policy: Policy, now_us: int | None) -> Decision:
        return self._answer("hit", key, policy, now_us)

    async def refund(self, key: str, policy: Policy, now_us: int | None) -> Decision:
        return self._answer("refund", key, policy, now_us)

    def _answer(self, kind: str, key: str, policy: Policy, now_us: int | None) -> Decision:
        self.calls.append((kind, key, now_us))
        if self.failure is not None:
            raise self.failure
        now = now_us if now_us is not None else NOW
        return self.memory.hit(key, policy, now) if kind == "hit" else self.memory.refund(key, policy, now)

    async def close(self) -> None:
        return None


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The limiter's monotonic clock (its breaker timing), moved by hand."""
    now = [100.0]
    monkeypatch.setattr(limiter_module, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time))
    return now


def limiter(redis: FakeRedis | None = None, **options: Any) -> RateLimiter:
    values: dict[str, Any] = {"prefix": "t", "clock": FakeClock(NOW / S), "instances": 1}
    values.update(options)
    return RateLimiter({"api": Policy("api", 4, 4)}, redis=redis, **values)  # type: ignore[arg-type]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_each_identity_has_its_own_key_and_a_refund_gives_back_its_own_request() -> None:
    limits = limiter()

    async def scenario() -> list[bool]:
        answers = [(await limits.check("api", "alice")).allowed for _ in range(5)]
        await limits.refund("api", "alice")
        answers.append((await limits.check("api", "alice")).allowed)
        answers.append((await limits.check("api", "alice")).allowed)
        answers.append((await limits.check("api", "bob")).allowed)
        return answers

    assert run(scenario()) == [True, True, True, True, False, True, False, True]
    assert limits.counts == Counter({("api", "allowed"): 6, ("api", "limited"): 2})


def test_redis_gets_our_clock_only_when_one_is_injected() -> None:
    injected, own = FakeRedis(), FakeRedis()
    run(limiter(injected, clock=FakeClock(1_800_000_000.25)).check("api", "alice"))
    run(limiter(own, clock=None).check("api", "alice"))
    assert injected.calls[0][2] == 1_800_000_000_250_000
    assert own.calls[0][2] is None  # Redis's own TIME: every instance agrees


def test_the_breaker_opens_after_three_failures_in_a_row_and_probes_every_two_seconds(
    monotonic: list[float],
) -> None:
    redis = FakeRedis()
    # The app's default probe interval: no probe_interval_s given.
    limits = RateLimiter({"api": Policy("api", 4, 4)}, redis=redis, prefix="t", clock=FakeClock(NOW / S))  # type: ignore[arg-type]
    slow = BackendError("no answer in time", down=False)

    async def check() -> bool:
        return (await limits.check("api", "alice")).allowed

    async def scenario() -> None:
        redis.failure = slow
        await check()
        await check()
        redis.failure = None
        await check()  # a success between: the count starts again
        redis.failure = slow
        await check()
        await check()
        assert not limits.degraded and limits.fallbacks == 0 and len(redis.calls) == 5
        with captured_events() as events:
            await check()  # the third in a row
        assert limits.degraded is True and limits.fallbacks == 1
        assert [(e["event"], e["level"]) for e in events] == [("rate_limit_backend_degraded", "error")]
        assert {k: events[0][k] for k in ("backend", "fallback", "error", "confirmed_down", "failures_in_a_row")} == {
            "backend": "redis",
            "fallback": "memory",
            "error": "no answer in time",
            "confirmed_down": False,
            "failures_in_a_row": 3,
        }
        asked = len(redis.calls)
        monotonic[0] += 1.999
        await check()
        assert len(redis.calls) == asked  # no probe before two seconds
        monotonic[0] += 0.001
        await check()
        assert len(redis.calls) == asked + 1  # the probe, which fails again
        await check()
        assert len(redis.calls) == asked + 1
        redis.failure = None
        monotonic[0] += 2.0
        with captured_events() as events:
            await check()
        assert limits.degraded is False
        assert [(e["event"], e["level"], e["backend"]) for e in events] == [
            ("rate_limit_backend_restored", "warning", "redis")
        ]
        await check()
        assert len(redis.calls) == asked + 3  # Redis again, every check

    run(scenario())
    assert limits.fallback_checks == 8  # six checks Redis failed, and two while the breaker was open


def test_a_confirmed_outage_opens_the_breaker_at_once(monotonic: list[float]) -> None:
    redis = FakeRedis()
    redis.failure = BackendError("connection refused", down=True)
    limits = limiter(redis)
    run(limits.check("api", "alice"))
    assert limits.degraded is True and limits.fallbacks == 1 and limits.fallback_checks == 1


def test_while_redis_is_down_each_identity_gets_this_instances_share(monotonic: list[float]) -> None:
    redis = FakeRedis()
    redis.failure = BackendError("connection refused", down=True)
    limits = limiter(redis, instances=2)  # a quota of 4 across two instances: 2 here

    async def scenario() -> list[bool]:
        answers = [(await limits.check("api", "alice")).allowed for _ in range(3)]
        answers.append((await limits.check("api", "bob")).allowed)
        verdict = await limits.refund("api", "alice")
        assert verdict.policy == Policy("api", 2, 4)
        answers.append((await limits.check("api", "alice")).allowed)
        answers.append((await limits.check("api", "alice")).allowed)
        return answers

    assert run(scenario()) == [True, True, False, True, True, False]


def test_enforce_refuses_with_the_limit_headers_and_logs_the_wait() -> None:
    limits = limiter()

    async def scenario() -> RateLimitedError:
        for _ in range(4):
            await limits.enforce("api", "to:someone@example.com")
        with pytest.raises(RateLimitedError) as refused:
            await limits.enforce("api", "to:someone@example.com")
        return refused.value

    with captured_events() as events:
        error = run(scenario())
    assert error.headers is not None and error.headers["Retry-After"] == "1"
    assert error.headers["X-RateLimit-Remaining"] == "0"
    [logged] = [e for e in events if e["event"] == "rate_limited"]
    assert logged["retry_after_s"] == 1 and logged["policy"] == "api"
    assert "someone@example.com" not in str(logged)


def test_enforce_with_limits_off_allows_everything_and_counts_nothing() -> None:
    limits = limiter(enabled=False)

    async def scenario() -> list[Verdict]:
        return [await limits.enforce("api", "x") for _ in range(10)]

    verdicts = run(scenario())
    assert set(verdicts) == {Verdict(Policy("api", 4, 4), Decision(True, 4, 0, 0))}
    assert limits.counts == Counter()


def test_a_limiter_built_without_options_limits_alone_with_the_default_prefix() -> None:
    limits = RateLimiter({"api": Policy("api", 4, 4)})
    assert limits.enabled is True and limits.redis is None and limits.degraded is False
    assert limits.key("api", "alice").startswith("ss:rl:api:")
    assert limits.shares == limits.policies  # one instance: its share is the whole quota
    assert limits.probe_interval_s == 2.0
