"""GCRA, policy parsing, headers and the per-connection message limiter."""

from __future__ import annotations

import pytest

from smilingsteps.platform.ratelimit.gcra import gcra, gcra_refund
from smilingsteps.platform.ratelimit.limiter import rate_limit_headers
from smilingsteps.platform.ratelimit.memory import MemoryBackend
from smilingsteps.platform.ratelimit.messages import MessageLimiter, MessageRejectedError
from smilingsteps.platform.ratelimit.policies import Policy, parse_rate, rate_limited

AUTH = Policy("auth", 5, 900)
S = 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5/15m", (5, 900)), ("100/15min", (100, 900)), ("10/h", (10, 3600)), ("30/1m", (30, 60)), ("7/2d", (7, 172800))],
)
def test_rates_parse(text: str, expected: tuple[int, int]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["5", "0/1m", "5/0m", "5/15y", "-1/1m", "five/1m", "5/15m;burst=2"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"rate|at least"):
        parse_rate(text)


def test_unknown_policy_cannot_be_declared() -> None:
    with pytest.raises(ValueError, match="unknown"):
        rate_limited("everything")


def test_quota_is_exact_then_regained_one_interval_at_a_time() -> None:
    tat, now = None, 1_000 * S
    remaining = []
    for _ in range(5):
        decision, tat = gcra(tat, now, AUTH)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == [4, 3, 2, 1, 0]
    denied, unchanged = gcra(tat, now, AUTH)
    assert not denied.allowed and unchanged is None
    assert denied.retry_after_us == 180 * S and denied.retry_after_s == 180
    # One interval (900 s / 5) later exactly one more request is allowed.
    almost, _ = gcra(tat, now + 180 * S - 1, AUTH)
    assert not almost.allowed and almost.retry_after_s == 1
    again, tat = gcra(tat, now + 180 * S, AUTH)
    assert again.allowed and again.remaining == 0
    assert not gcra(tat, now + 180 * S, AUTH)[0].allowed


def test_no_double_burst_across_any_boundary() -> None:
    """Whatever the timing, 2q requests never pass within a short span."""
    tat = None
    start = 5_000 * S
    allowed = 0
    for step in range(40):  # 40 requests, one every 10 s over 400 s
        decision, new_tat = gcra(tat, start + step * 10 * S, AUTH)
        if decision.allowed:
            allowed += 1
            tat = new_tat
    assert allowed == 5 + 400 // 180  # the burst, then one per 180 s


def test_full_quota_returns_after_the_window() -> None:
    tat, now = None, 0
    for _ in range(5):
        decision, tat = gcra(tat, now, AUTH)
    assert decision.reset_s == 900
    fresh, _ = gcra(tat, now + 900 * S, AUTH)
    assert fresh.allowed and fresh.remaining == 4


def test_headers_follow_the_ietf_draft_and_legacy_names() -> None:
    memory = MemoryBackend()
    decision = memory.hit("k", AUTH, 0)
    headers = dict(rate_limit_headers(AUTH, decision))
    assert headers["RateLimit-Policy"] == '"auth";q=5;w=900'
    assert headers["RateLimit"] == '"auth";r=4;t=180'
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]) == (
        "5",
        "4",
        "180",
    )
    assert "Retry-After" not in headers
    for _ in range(4):
        memory.hit("k", AUTH, 0)
    denied = dict(rate_limit_headers(AUTH, memory.hit("k", AUTH, 10 * S)))
    assert denied["Retry-After"] == "170" and denied["RateLimit"] == '"auth";r=0;t=170'


def test_memory_backend_is_bounded() -> None:
    memory = MemoryBackend(max_keys=1000)
    for index in range(5000):
        memory.hit(f"k{index}", AUTH, 0)
    assert len(memory) <= 1000


def test_message_limiter_bounds_rate_and_size() -> None:
    now = [0.0]
    limiter = MessageLimiter(per_second=2, burst=3, max_bytes=10, clock=lambda: now[0])
    for _ in range(3):
        limiter.admit("hi")
    with pytest.raises(MessageRejectedError) as too_fast:
        limiter.admit("hi")
    assert too_fast.value.close_code == 1008
    now[0] = 0.5
    limiter.admit(b"ok")
    with pytest.raises(MessageRejectedError) as too_big:
        limiter.admit("x" * 11)
    assert too_big.value.close_code == 1009


def test_a_refund_gives_back_exactly_one_request_and_never_more_than_the_quota() -> None:
    tat, now = None, 1_000 * S
    for _ in range(5):
        _, tat = gcra(tat, now, AUTH)
    assert not gcra(tat, now, AUTH)[0].allowed
    back, tat = gcra_refund(tat, now, AUTH)
    assert back.allowed and back.remaining == 1 and back.reset_us == 720 * S
    again, tat = gcra(tat, now, AUTH)
    assert again.allowed and again.remaining == 0
    for _ in range(10):  # more refunds than requests made: never beyond the full quota
        refunded, tat = gcra_refund(tat, now, AUTH)
    assert refunded.remaining == 5 and tat is None
    assert gcra(None, now, AUTH)[0].remaining == 4


def test_a_refund_after_time_passed_does_not_reach_into_the_past() -> None:
    tat, now = None, 1_000 * S
    _, tat = gcra(tat, now, AUTH)  # one request: tat = now + 180 s
    later = now + 170 * S
    refunded, new_tat = gcra_refund(tat, later, AUTH)
    assert new_tat is None or new_tat >= later
    assert refunded.remaining == 5


def test_memory_backend_refunds_like_the_algorithm() -> None:
    memory, now = MemoryBackend(), 1_000 * S
    for _ in range(5):
        memory.hit("k", AUTH, now)
    assert not memory.hit("k", AUTH, now).allowed
    assert memory.refund("k", AUTH, now).remaining == 1
    assert memory.hit("k", AUTH, now).allowed
    assert memory.refund("absent", AUTH, now).remaining == 5 and "absent" not in memory._tats


@pytest.mark.parametrize(
    ("quota", "instances", "share"), [(50, 2, 25), (5, 2, 2), (5, 10, 1), (100, 1, 100), (7, 3, 2)]
)
def test_each_instance_takes_its_share_of_the_quota_and_at_least_one(quota: int, instances: int, share: int) -> None:
    policy = Policy("api", quota, 900)
    assert policy.share(instances) == Policy("api", share, 900)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1000000000/15m", "more than one request per microsecond"),
        ("2000001/2s", "more than one request per microsecond"),
        ("5/400d", "at most 366 days"),
    ],
)
def test_rates_the_algorithm_cannot_represent_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_rate(text)


def test_the_largest_representable_rate_works_end_to_end() -> None:
    policy = Policy("api", *parse_rate("1000000/1s"))
    assert policy.interval_us == 1
    decision, _ = gcra(None, 5 * S, policy)
    assert decision.allowed and decision.remaining == 999_999
