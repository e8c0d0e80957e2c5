"""The generic cell rate algorithm, once in Python (memory backend) and once in
Lua (Redis backend); both answer the same `Decision` from the same state."""

from __future__ import annotations

from dataclasses import dataclass

from smilingsteps.platform.ratelimit.policies import Policy


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # further requests allowed right now
    reset_us: int  # until the whole quota is available again
    retry_after_us: int  # until the next request is allowed (0 when allowed)

    @property
    def reset_s(self) -> int:
        return -(-self.reset_us // 1_000_000)

    @property
    def retry_after_s(self) -> int:
        """Whole seconds, rounded up, so a client that waits this long is allowed."""
        return max(1, -(-self.retry_after_us // 1_000_000)) if not self.allowed else 0


def gcra(tat_us: int | None, now_us: int, policy: Policy) -> tuple[Decision, int | None]:
    """Decide one request; returns the decision and the new theoretical arrival time (None: unchanged)."""
    interval, window = policy.interval_us, policy.window_us
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = tat + interval
    allow_at = new_tat - window
    if now_us < allow_at:
        return Decision(False, 0, tat - now_us, allow_at - now_us), None
    return Decision(True, (now_us - allow_at) // interval, new_tat - now_us, 0), new_tat


def gcra_refund(tat_us: int | None, now_us: int, policy: Policy) -> tuple[Decision, int | None]:
    """Give back one request (it turned out not to count); the decision as it stands after, and the new TAT.

    The theoretical arrival time moves back one interval, never before now: a refund
    restores what one request spent and never adds to a full quota.
    """
    if tat_us is None or tat_us <= now_us:
        return Decision(True, policy.quota, 0, 0), None
    new_tat = max(now_us, tat_us - policy.interval_us)
    remaining = min(policy.quota, (now_us + policy.window_us - new_tat) // policy.interval_us)
    return Decision(True, remaining, new_tat - now_us, 0), new_tat


# Both scripts' arguments. ARGV: interval_us, window_us, now_us (negative: use the Redis
# server's clock, shared by every app instance); KEYS[1]: the key's theoretical arrival time.
_LUA_ARGUMENTS = """
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# The same algorithm, atomically in Redis.
GCRA_LUA = (
    _LUA_ARGUMENTS
    + """local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
"""
)

# `gcra_refund` in Redis; KEYS[1] is deleted when nothing is left to give back.
REFUND_LUA = (
    _LUA_ARGUMENTS
    + """local quota = math.floor(window / interval)
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat <= now then
  return {1, quota, 0, 0}
end
local new_tat = math.max(now, tat - interval)
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
return {1, math.min(quota, math.floor((now + window - new_tat) / interval)), new_tat - now, 0}
"""
)
