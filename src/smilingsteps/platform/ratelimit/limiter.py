"""The limiter: policies, hashed keys, and the Redis -> memory fallback.

With Redis configured every instance counts in it, so a quota holds across the
fleet. A check that gets no usable answer from Redis (see `redis_backend`: a slow
reply from a live server is still waited for) is decided in this instance's memory
against its share of the quota (quota ÷ RATE_LIMIT_INSTANCES, at least one), so the
fleet together stays near the quota and no class ever fails open.

The breaker: after a failure Redis is confirmed down (the connection failed, or it
did not answer a PING either) or BREAKER_FAILURES checks in a row failed, the
limiter stops asking Redis and counts in memory (`degraded`): logged once,
shown in /health/ready, counted in /metrics. Every `probe_interval_s` one check
tries Redis again, and the first success switches back.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from smilingsteps.platform.errors import RateLimitedError
from smilingsteps.platform.ratelimit.gcra import Decision
from smilingsteps.platform.ratelimit.memory import MemoryBackend
from smilingsteps.platform.ratelimit.policies import Policy
from smilingsteps.platform.ratelimit.redis_backend import BackendError, RedisBackend

log = structlog.get_logger("smilingsteps.ratelimit")
Clock = Callable[[], float]
BREAKER_FAILURES = 3  # failures in a row (Redis alive but not answering) that open the breaker


def hashed(identity: str) -> str:
    """Keys never hold raw emails or IPs."""
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision and the policy it was made under (the instance's share while Redis is down)."""

    policy: Policy
    decision: Decision

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


def rate_limit_headers(policy: Policy, decision: Decision) -> list[tuple[str, str]]:
    """IETF RateLimit-Policy / RateLimit fields and the legacy X-RateLimit-* trio."""
    reset = decision.retry_after_s if not decision.allowed else decision.reset_s
    headers = [
        ("RateLimit-Policy", policy.header),
        ("RateLimit", f'"{policy.name}";r={decision.remaining};t={reset}'),
        ("X-RateLimit-Limit", str(policy.quota)),
        ("X-RateLimit-Remaining", str(decision.remaining)),
        ("X-RateLimit-Reset", str(reset)),
    ]
    if not decision.allowed:
        headers.append(("Retry-After", str(decision.retry_after_s)))
    return headers


class RateLimiter:
    def __init__(
        self,
        policies: Mapping[str, Policy],
        *,
        redis: RedisBackend | None = None,
        prefix: str = "ss",
        clock: Clock | None = None,
        probe_interval_s: float = 2.0,
        instances: int = 1,
        enabled: bool = True,
    ) -> None:
        self.policies = dict(policies)
        # What each instance enforces alone when Redis cannot count for all of them.
        self.shares = {name: policy.share(instances) for name, policy in self.policies.items()}
        self.redis = redis
        self.memory = MemoryBackend()
        self.prefix = prefix
        self.clock = clock
        self.probe_interval_s = probe_interval_s
        self.enabled = enabled
        self.degraded = False
        self._next_probe = 0.0
        self._failures_in_a_row = 0
        self.counts: Counter[tuple[str, str]] = Counter()  # (policy, allowed|limited) for metrics
        self.fallbacks = 0  # times the breaker opened
        self.fallback_checks = 0  # checks decided in memory although Redis is configured

    @property
    def backend(self) -> str:
        if self.redis is None:
            return "memory"
        return "memory (redis unavailable)" if self.degraded else "redis"

    def key(self, policy: str, identity: str) -> str:
        return f"{self.prefix}:rl:{policy}:{hashed(identity)}"

    def _now_us(self) -> int:
        return int((self.clock or time.time)() * 1_000_000)

    async def check(self, policy_name: str, identity: str) -> Verdict:
        """Count one request of `identity` against `policy_name` and decide."""
        verdict = await self._decide(self.key(policy_name, identity), policy_name, refund=False)
        self.counts[(policy_name, "allowed" if verdict.allowed else "limited")] += 1
        return verdict

    async def refund(self, policy_name: str, identity: str) -> Verdict:
        """Give back one request `check` counted (it succeeded, in a class that counts failures only)."""
        return await self._decide(self.key(policy_name, identity), policy_name, refund=True)

    async def _decide(self, key: str, name: str, *, refund: bool) -> Verdict:
        if self.redis is None:
            return self._in_memory(key, self.policies[name], refund=refund)
        if not self.degraded or self._probe_due():
            policy = self.policies[name]
            now = None if self.clock is None else self._now_us()
            try:
                decision = await (self.redis.refund if refund else self.redis.hit)(key, policy, now)
            except BackendError as exc:
                self._failed(exc)
            else:
                self._succeeded()
                return Verdict(policy, decision)
        self.fallback_checks += 1
        return self._in_memory(key, self.shares[name], refund=refund)

    def _in_memory(self, key: str, policy: Policy, *, refund: bool) -> Verdict:
        backend = self.memory.refund if refund else self.memory.hit
        return Verdict(policy, backend(key, policy, self._now_us()))

    def _probe_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.probe_interval_s
        return True

    def _succeeded(self) -> None:
        self._failures_in_a_row = 0
        if self.degraded:
            self.degraded = False
            log.warning("rate_limit_backend_restored", backend="redis")

    def _failed(self, exc: BackendError) -> None:
        self._failures_in_a_row += 1
        self._next_probe = time.monotonic() + self.probe_interval_s
        if self.degraded or not (exc.down or self._failures_in_a_row >= BREAKER_FAILURES):
            return
        self.degraded = True
        self.fallbacks += 1
        log.error(
            "rate_limit_backend_degraded",
            backend="redis",
            fallback="memory",
            error=str(exc),
            confirmed_down=exc.down,
            failures_in_a_row=self._failures_in_a_row,
        )

    async def enforce(self, policy_name: str, identity: str) -> Verdict:
        """`check`, raising the 429 problem when over the limit (for keys only a service knows, like an email)."""
        if not self.enabled:
            return Verdict(self.policies[policy_name], Decision(True, self.policies[policy_name].quota, 0, 0))
        verdict = await self.check(policy_name, identity)
        if not verdict.allowed:
            raise self.rejection(identity, verdict)
        return verdict

    def rejection(self, identity: str, verdict: Verdict) -> RateLimitedError:
        policy, decision = verdict.policy, verdict.decision
        log.warning("rate_limited", policy=policy.name, key=hashed(identity), retry_after_s=decision.retry_after_s)
        return RateLimitedError(
            f"Too many requests for the '{policy.name}' policy ({policy.quota} per {policy.window_s} s); "
            f"retry in {decision.retry_after_s} s.",
            headers=dict(rate_limit_headers(policy, decision)),
            extra={"policy": policy.name},
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
