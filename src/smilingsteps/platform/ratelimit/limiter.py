"""The limiter: policies, hashed keys, and the Redis -> memory fallback.

When Redis fails or stalls (each check is bounded by the socket timeout), the
limiter counts in this instance's memory instead: protection stays on, only
per instance. The switch is logged once, shown in /health/ready as degraded and
counted; every `probe_interval_s` one check tries Redis again, and the first
success switches back.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping

import structlog

from smilingsteps.platform.errors import RateLimitedError
from smilingsteps.platform.ratelimit.gcra import Decision
from smilingsteps.platform.ratelimit.memory import MemoryBackend
from smilingsteps.platform.ratelimit.policies import Policy
from smilingsteps.platform.ratelimit.redis_backend import BackendError, RedisBackend

log = structlog.get_logger("smilingsteps.ratelimit")
Clock = Callable[[], float]


def hashed(identity: str) -> str:
    """Keys never hold raw emails or IPs."""
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


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
    ) -> None:
        self.policies = dict(policies)
        self.redis = redis
        self.memory = MemoryBackend()
        self.prefix = prefix
        self.clock = clock
        self.probe_interval_s = probe_interval_s
        self.degraded = False
        self._next_probe = 0.0
        self.counts: Counter[tuple[str, str]] = Counter()  # (policy, allowed|limited) for metrics
        self.fallbacks = 0

    @property
    def backend(self) -> str:
        if self.redis is None:
            return "memory"
        return "memory (redis unavailable)" if self.degraded else "redis"

    def key(self, policy: str, identity: str) -> str:
        return f"{self.prefix}:rl:{policy}:{hashed(identity)}"

    def _now_us(self) -> int:
        return int((self.clock or time.time)() * 1_000_000)

    async def check(self, policy_name: str, identity: str) -> Decision:
        """Count one request of `identity` against `policy_name` and decide."""
        policy = self.policies[policy_name]
        key = self.key(policy_name, identity)
        decision = await self._decide(key, policy)
        self.counts[(policy_name, "allowed" if decision.allowed else "limited")] += 1
        return decision

    async def _decide(self, key: str, policy: Policy) -> Decision:
        if self.redis is not None and (not self.degraded or self._probe_due()):
            try:
                decision = await self.redis.hit(key, policy, None if self.clock is None else self._now_us())
            except BackendError as exc:
                self._degrade(exc)
            else:
                if self.degraded:
                    self.degraded = False
                    log.warning("rate_limit_backend_restored", backend="redis")
                return decision
        return self.memory.hit(key, policy, self._now_us())

    def _probe_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.probe_interval_s
        return True

    def _degrade(self, exc: BaseException) -> None:
        self._next_probe = time.monotonic() + self.probe_interval_s
        if not self.degraded:
            self.degraded = True
            self.fallbacks += 1
            log.error("rate_limit_backend_degraded", backend="redis", fallback="memory", error=str(exc))

    async def enforce(self, policy_name: str, identity: str) -> Decision:
        """`check`, raising the 429 problem when over the limit (for service-level keys)."""
        decision = await self.check(policy_name, identity)
        if not decision.allowed:
            raise self.rejection(policy_name, identity, decision)
        return decision

    def rejection(self, policy_name: str, identity: str, decision: Decision) -> RateLimitedError:
        policy = self.policies[policy_name]
        log.warning("rate_limited", policy=policy_name, key=hashed(identity), retry_after_s=decision.retry_after_s)
        return RateLimitedError(
            f"Too many requests for the '{policy_name}' policy ({policy.quota} per {policy.window_s} s); "
            f"retry in {decision.retry_after_s} s.",
            headers=dict(rate_limit_headers(policy, decision)),
            extra={"policy": policy_name},
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
