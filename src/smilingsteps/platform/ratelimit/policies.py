"""Rate-limit policies: one per endpoint class, overridable from the environment.

A quota of q per window w is enforced with GCRA: a client may spend the whole
quota at once and then regains one request every w/q seconds. There is no
window edge, so no fixed-window double burst.

What counts: every request of a class counts against its quota, except in the
classes listed in FAILURES_ONLY, where a request that succeeds (2xx/3xx) is given
back once its answer is known: the auth class limits guessing (wrong passwords,
codes and tokens), not people signing in. The email class covers the requests that
send an email (registration, password-reset requests, verification resends), so
mail cannot be used to flood someone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POLICY_KEY = "x-rate-limit-policy"
EXEMPT = "exempt"
DEFAULT_POLICY = "api"
DEFAULT_RATES: Mapping[str, str] = {
    "auth": "5/15m",
    "email": "5/1h",
    "api": "100/15m",
    "payments": "10/1h",
    "video": "30/1m",
    "uploads": "20/1h",
    "admin": "50/15m",
}
MAX_WINDOW_S = 366 * 86400
# Classes that count only failed requests (a success is given back).
FAILURES_ONLY = frozenset({"auth"})
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*")


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    quota: int
    window_s: int
    failures_only: bool = False

    def share(self, instances: int) -> Policy:
        """This instance's part of the quota when instances cannot count together (Redis down): at least one."""
        return Policy(self.name, max(1, self.quota // instances), self.window_s, self.failures_only)

    @property
    def interval_us(self) -> int:
        """GCRA emission interval: one request regained every window/quota."""
        return self.window_s * 1_000_000 // self.quota

    @property
    def window_us(self) -> int:
        return self.interval_us * self.quota

    @property
    def header(self) -> str:
        return f'"{self.name}";q={self.quota};w={self.window_s}'


def parse_rate(text: str) -> tuple[int, int]:
    """'5/15m' -> (5, 900). Units: s, m/min, h/hour, d/day; the count before the unit is optional."""
    match = _RATE.fullmatch(text.lower())
    if match is None or match.group(3) not in _UNITS:
        raise ValueError(f"{text!r} is not a rate like 5/15m, 100/1h or 30/min")
    quota, count, unit = int(match.group(1)), int(match.group(2) or 1), _UNITS[match.group(3)]
    if quota < 1 or count < 1:
        raise ValueError(f"{text!r} must allow at least one request per window of at least one {match.group(3)}")
    window = count * unit
    # GCRA counts in whole microseconds (in Python and in Redis's Lua numbers): one request
    # must be at least a microsecond apart, and the window must stay far below 2^53 µs.
    if window > MAX_WINDOW_S:
        raise ValueError(f"{text!r}: the window must be at most 366 days")
    if quota > window * 1_000_000:
        raise ValueError(
            f"{text!r} allows more than one request per microsecond, which the limiter cannot count; "
            f"at most {window * 1_000_000} per {window} s (or set RATE_LIMITS_ENABLED=false for fuzzing)"
        )
    return quota, window


def build_policies(rates: Mapping[str, str]) -> dict[str, Policy]:
    return {name: Policy(name, *parse_rate(rate), failures_only=name in FAILURES_ONLY) for name, rate in rates.items()}


def rate_limited(policy: str) -> dict[str, Any]:
    """The one place a route declares its class: `@router.post(..., openapi_extra=rate_limited("auth"))`.

    It also shows in the OpenAPI document, so clients can see which quota applies.
    """
    if policy != EXEMPT and policy not in DEFAULT_RATES:
        raise ValueError(f"unknown rate-limit policy {policy!r}")
    return {POLICY_KEY: policy}
