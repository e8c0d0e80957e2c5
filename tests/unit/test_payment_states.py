"""The payment state machine and M-Pesa's result codes (payments/states.py)."""

from __future__ import annotations

import itertools

import pytest

from smilingsteps.payments.states import (
    LIVE,
    PAID,
    FailureReason,
    PaymentStatus,
    awaits_answer,
    can_move,
    outcome_of,
    retry_allowed,
)


def test_a_recorded_success_is_never_downgraded() -> None:
    for paid, target in itertools.product(PAID, PaymentStatus):
        if can_move(paid, target):
            assert target in PAID, (paid, target)


def test_money_moves_only_forward_to_a_refund() -> None:
    assert can_move(PaymentStatus.SUCCEEDED, PaymentStatus.REFUND_DUE)
    assert can_move(PaymentStatus.REFUND_DUE, PaymentStatus.REFUNDED)
    assert not can_move(PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)  # an admin records a due refund only
    assert not can_move(PaymentStatus.REFUNDED, PaymentStatus.REFUND_DUE)


@pytest.mark.parametrize("final", [PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.REFUNDED])
def test_final_states_go_nowhere(final: PaymentStatus) -> None:
    assert not any(can_move(final, target) for target in PaymentStatus)
    assert not awaits_answer(final)


def test_a_late_success_is_still_heard_after_a_time_out() -> None:
    assert awaits_answer(PaymentStatus.TIMED_OUT)
    assert can_move(PaymentStatus.TIMED_OUT, PaymentStatus.SUCCEEDED)
    assert not can_move(PaymentStatus.TIMED_OUT, PaymentStatus.FAILED)


def test_an_answer_may_come_before_the_push_is_recorded() -> None:
    for target in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.TIMED_OUT):
        assert can_move(PaymentStatus.INITIATED, target)
        assert can_move(PaymentStatus.PENDING, target)


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        (0, PaymentStatus.SUCCEEDED, None),
        (1, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
        (1001, PaymentStatus.FAILED, FailureReason.ANOTHER_SESSION),
        (1019, PaymentStatus.TIMED_OUT, FailureReason.EXPIRED),
        (1025, PaymentStatus.FAILED, FailureReason.PUSH_ERROR),
        (9999, PaymentStatus.FAILED, FailureReason.PUSH_ERROR),
        (1031, PaymentStatus.CANCELLED, FailureReason.CANCELLED_BY_USER),
        (1032, PaymentStatus.CANCELLED, FailureReason.CANCELLED_BY_USER),
        (1037, PaymentStatus.FAILED, FailureReason.UNREACHABLE),
        (2001, PaymentStatus.FAILED, FailureReason.WRONG_PIN),
        (17, PaymentStatus.FAILED, FailureReason.MPESA_UNAVAILABLE),
        (26, PaymentStatus.FAILED, FailureReason.MPESA_UNAVAILABLE),
        (4242, PaymentStatus.FAILED, FailureReason.OTHER),
        (-1, PaymentStatus.FAILED, FailureReason.OTHER),
    ],
)
def test_result_codes_keep_their_meaning(code: int, status: PaymentStatus, reason: FailureReason | None) -> None:
    outcome = outcome_of(code)
    assert (outcome.status, outcome.reason) == (status, reason)


def test_a_new_attempt_only_after_one_that_took_nothing() -> None:
    assert retry_allowed(None)
    for status in PaymentStatus:
        expected = status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.TIMED_OUT)
        assert retry_allowed(status) is expected, status
    assert not any(retry_allowed(status) for status in LIVE)
