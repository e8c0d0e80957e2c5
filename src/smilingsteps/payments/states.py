"""The payment state machine and what M-Pesa's result codes mean, as pure rules.

No database, no clock, no network: the service asks these functions what may happen
and records it. Each rule is tested in `tests/unit/test_payment_states.py`.

States:

    initiated ──► pending ──► succeeded ──► refund_due ──► refunded
        │            │  └───► failed | cancelled | timed_out
        └────────────┴──────► (the same, when the answer comes before the push is recorded)

- `initiated`: the attempt exists and its STK push is being sent.
- `pending`: Daraja accepted the push; the client has a prompt on their phone.
- `succeeded`: M-Pesa took the money, confirmed by an STK query (a callback alone
  never confirms: a forged one would otherwise buy a session).
- `failed` / `cancelled`: M-Pesa said no (insufficient funds, wrong PIN, cancelled on
  the phone…); final. The client may try again with a new attempt.
- `timed_out`: no definitive answer in time. Not final for money: a success that
  arrives late is still verified and recorded (never lose a payment), it simply can no
  longer be trusted to have kept the booking's slot, so the booking decides.
- `refund_due`: money was taken that the platform owes back (a cancellation the policy
  refunds, or a booking that could no longer be confirmed); an administrator pays it
  and records `refunded` with the refund's M-Pesa receipt.

A recorded success is never downgraded: no rule leads from `succeeded` back to a
failure, whatever a later callback or query says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PaymentStatus(StrEnum):
    INITIATED = "initiated"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    REFUND_DUE = "refund_due"
    REFUNDED = "refunded"


# Waiting for M-Pesa's answer: one such attempt per booking at most (a unique index).
LIVE = (PaymentStatus.INITIATED, PaymentStatus.PENDING)
LIVE_VALUES = tuple(status.value for status in LIVE)
# Money was taken.
PAID = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUND_DUE, PaymentStatus.REFUNDED)
# M-Pesa said no: a new attempt may follow.
UNPAID_ENDINGS = (PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.TIMED_OUT)

_MOVES: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.INITIATED: frozenset(
        {
            PaymentStatus.PENDING,
            PaymentStatus.SUCCEEDED,
            PaymentStatus.FAILED,
            PaymentStatus.CANCELLED,
            PaymentStatus.TIMED_OUT,
        }
    ),
    PaymentStatus.PENDING: frozenset(
        {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.TIMED_OUT}
    ),
    # A late success, verified by an STK query: the money was taken after all.
    PaymentStatus.TIMED_OUT: frozenset({PaymentStatus.SUCCEEDED}),
    PaymentStatus.SUCCEEDED: frozenset({PaymentStatus.REFUND_DUE}),
    PaymentStatus.REFUND_DUE: frozenset({PaymentStatus.REFUNDED}),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.CANCELLED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
}


def can_move(current: PaymentStatus, target: PaymentStatus) -> bool:
    """Whether `current` → `target` is a transition of the machine above."""
    return target in _MOVES[current]


# M-Pesa's answer can still change these (a callback or a query is worth hearing).
AWAITING_ANSWER = (*LIVE, PaymentStatus.TIMED_OUT)


def awaits_answer(status: PaymentStatus) -> bool:
    """Whether M-Pesa's answer can still change this attempt (a callback or a query is worth hearing)."""
    return status in AWAITING_ANSWER


class FailureReason(StrEnum):
    """Why an attempt did not take the money, in words a page can explain."""

    INSUFFICIENT_FUNDS = "insufficient_funds"
    ANOTHER_SESSION = "another_session"
    EXPIRED = "expired"
    PUSH_ERROR = "push_error"
    CANCELLED_BY_USER = "cancelled_by_user"
    UNREACHABLE = "unreachable"
    WRONG_PIN = "wrong_pin"
    MPESA_UNAVAILABLE = "mpesa_unavailable"
    REFUSED = "refused"  # Daraja refused the STK push itself
    NO_ANSWER = "no_answer"  # nothing definitive from M-Pesa in time
    OTHER = "other"


@dataclass(frozen=True)
class Outcome:
    """Where a result code leads: the status and, when unpaid, why."""

    status: PaymentStatus
    reason: FailureReason | None = None


SUCCESS = Outcome(PaymentStatus.SUCCEEDED)
_RESULTS: dict[int, Outcome] = {
    0: SUCCESS,
    1: Outcome(PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
    1001: Outcome(PaymentStatus.FAILED, FailureReason.ANOTHER_SESSION),
    1019: Outcome(PaymentStatus.TIMED_OUT, FailureReason.EXPIRED),
    1025: Outcome(PaymentStatus.FAILED, FailureReason.PUSH_ERROR),
    9999: Outcome(PaymentStatus.FAILED, FailureReason.PUSH_ERROR),
    1031: Outcome(PaymentStatus.CANCELLED, FailureReason.CANCELLED_BY_USER),
    1032: Outcome(PaymentStatus.CANCELLED, FailureReason.CANCELLED_BY_USER),
    1037: Outcome(PaymentStatus.FAILED, FailureReason.UNREACHABLE),
    2001: Outcome(PaymentStatus.FAILED, FailureReason.WRONG_PIN),
    17: Outcome(PaymentStatus.FAILED, FailureReason.MPESA_UNAVAILABLE),
    26: Outcome(PaymentStatus.FAILED, FailureReason.MPESA_UNAVAILABLE),
}


def outcome_of(result_code: int) -> Outcome:
    """What M-Pesa's `ResultCode` means for the attempt; an unknown code is a failure (its description is kept)."""
    return _RESULTS.get(result_code, Outcome(PaymentStatus.FAILED, FailureReason.OTHER))


def retry_allowed(latest: PaymentStatus | None) -> bool:
    """Whether a client may start a new attempt, given the booking's latest one (None: no attempt yet)."""
    return latest is None or latest in UNPAID_ENDINGS
