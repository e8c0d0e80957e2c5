"""Payment rules: one attempt at a time per booking, callbacks that cannot be forged or replayed,
success only when Daraja confirms it, and money that is never lost nor counted twice.

- Starting (`start`): the client's booking must be payable (held and unexpired, or already
  waiting for a payment). If an attempt is live (initiated or pending) the client gets that
  attempt back: no second prompt, no second charge. Otherwise a new attempt for the booking's
  price; the booking moves to `pending_payment` and keeps its slot until the payment's deadline
  (MPESA_PAYMENT_TIMEOUT_SECONDS). The STK push itself is sent after the commit (`processing`).
- The callback URL holds a per-attempt token: 32 random bytes, stored only as its SHA-256,
  compared in constant time. A callback is stored as received (at most CALLBACK_MAX_BYTES) with
  what it did. Unknown tokens, malformed bodies and callbacks whose CheckoutRequestID, amount or
  phone differ from the attempt change nothing and are written to the audit log as security
  events.
- A failure callback (insufficient funds, cancelled, wrong PIN…) settles the attempt at once
  and gives the booking its old hold back (`bookings.payment_failed`). A success callback is
  recorded (receipt, amount, time) and then checked with an STK query: only Daraja's own
  ResultCode 0 marks the attempt `succeeded`, which confirms the booking in the same transaction.
- Replays: once an attempt has heard its answer, the same callback again changes nothing;
  `CheckoutRequestID` and `MpesaReceiptNumber` are unique in the database besides.
- Reconciliation: an attempt with no definitive answer MPESA_CHECK_AFTER_SECONDS after it began
  is asked about with an STK query (still processing → ask again later); after
  MPESA_PAYMENT_TIMEOUT_SECONDS it is `timed_out` and the booking's hold goes back. A success
  that arrives after that is still verified and kept: the booking is confirmed if it still can
  be, and otherwise the money becomes `refund_due`.
- A recorded success is never downgraded. A cancellation refunds only what was taken
  (`bookings.paid_kes`): the payments domain hears of it (`refund_on_cancellation`) and marks the
  payment `refund_due`; an administrator sends the money and records the refund's receipt.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.audit.service import AuditContext, record
from smilingsteps.bookings import paying
from smilingsteps.bookings import service as bookings
from smilingsteps.bookings.errors import BookingStateError
from smilingsteps.bookings.models import Booking
from smilingsteps.bookings.policy import Cancellation
from smilingsteps.config import Settings
from smilingsteps.payments import repository
from smilingsteps.payments.errors import PaymentStateError, ReceiptTakenError
from smilingsteps.payments.models import PaymentAttempt
from smilingsteps.payments.mpesa import protocol
from smilingsteps.payments.mpesa.client import StkQueryAnswer
from smilingsteps.payments.states import (
    SUCCESS,
    FailureReason,
    Outcome,
    PaymentStatus,
    awaits_answer,
    can_move,
    outcome_of,
)
from smilingsteps.platform.context import SYSTEM
from smilingsteps.platform.errors import NotFoundError

log = structlog.get_logger("smilingsteps.payments")
CALLBACK_PATH = "/api/v1/payments/mpesa/callback/"
# How long a worker holds a claimed check before another may take it (it died mid-query).
CHECK_LEASE = timedelta(seconds=60)
# Between two queries of an attempt M-Pesa is still processing.
RECHECK_AFTER = timedelta(seconds=30)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class PushOrder:
    """An STK push to send once the attempt is committed (the token exists only here and in the URL)."""

    payment_id: uuid.UUID
    amount_kes: int
    phone: str
    account_reference: str
    callback_url: str


@dataclass(frozen=True)
class Started:
    attempt: PaymentAttempt
    push: PushOrder | None  # None: the booking's live attempt, already pushed


# ---- starting a payment --------------------------------------------------------------------


async def start(
    session: AsyncSession,
    settings: Settings,
    *,
    client_id: uuid.UUID,
    booking_id: uuid.UUID,
    phone: str,
    now: datetime,
    audit: AuditContext,
) -> Started:
    """The booking's live attempt, or a new one whose STK push the caller sends after the commit."""
    booking = await paying.payable(session, client_id, booking_id, now=now)
    live = await repository.live_for_booking(session, booking.id)
    if live is not None:
        return Started(live, None)
    token = secrets.token_urlsafe(32)
    attempt = PaymentAttempt(
        id=uuid.uuid4(),
        booking_id=booking.id,
        client_id=client_id,
        amount_kes=booking.price_kes,
        phone=phone,
        status=PaymentStatus.INITIATED,
        callback_token_hash=token_hash(token),
        hold_expires_before=booking.hold_expires_at,
        next_check_at=now + timedelta(seconds=settings.MPESA_CHECK_AFTER_SECONDS),
        checks=0,
        refund_kes=0,
        created_at=now,
        updated_at=now,
    )
    paying.await_payment(booking, until=now + timedelta(seconds=settings.MPESA_PAYMENT_TIMEOUT_SECONDS), now=now)
    session.add(attempt)
    await session.flush()
    await audit_payment(
        session,
        attempt,
        "payment.initiated",
        now=now,
        context=audit,
        booking_id=str(booking.id),
        amount_kes=attempt.amount_kes,
    )
    order = PushOrder(
        payment_id=attempt.id,
        amount_kes=attempt.amount_kes,
        phone=phone,
        account_reference=protocol.account_reference(str(booking.id)),
        callback_url=f"{settings.mpesa_callback_base_url}{CALLBACK_PATH}{token}",
    )
    return Started(attempt, order)


async def record_push(
    session: AsyncSession,
    settings: Settings,
    payment_id: uuid.UUID,
    *,
    now: datetime,
    merchant_request_id: str | None = None,
    checkout_request_id: str | None = None,
    refused: str | None = None,
    unanswered: str | None = None,
) -> PaymentAttempt | None:
    """What Daraja said to the push: accepted (ids), refused (nothing started), or no usable answer."""
    attempt = await lock_with_booking(session, payment_id)
    if attempt is None:
        return None
    if checkout_request_id is not None:
        if attempt.checkout_request_id is None:
            attempt.merchant_request_id = merchant_request_id
            attempt.checkout_request_id = checkout_request_id
        attempt.pushed_at = now
        if attempt.status is PaymentStatus.INITIATED:
            attempt.status = PaymentStatus.PENDING
    elif refused is not None and attempt.status is PaymentStatus.INITIATED:
        await settle(session, attempt, Outcome(PaymentStatus.FAILED, FailureReason.REFUSED), refused, now=now)
    elif unanswered is not None:
        # Whether a prompt went out is unknown: a callback may still come (its token finds the
        # attempt); reconciliation times it out otherwise. Never a second push meanwhile.
        attempt.result_desc = unanswered[:300]
    attempt.updated_at = now
    return attempt


# ---- reading ---------------------------------------------------------------------------------


async def payment_of(session: AsyncSession, client_id: uuid.UUID, payment_id: uuid.UUID) -> PaymentAttempt:
    """The client's own attempt; anyone else's is 'not found'."""
    attempt = await repository.of_client(session, payment_id, client_id)
    if attempt is None:
        raise NotFoundError("No such payment.")
    return attempt


async def latest_for_booking(
    session: AsyncSession, client_id: uuid.UUID, booking_id: uuid.UUID
) -> PaymentAttempt | None:
    """The newest attempt to pay the client's booking (None when there is none, or it is not theirs)."""
    attempt = await repository.latest_for_booking(session, booking_id)
    return attempt if attempt is not None and attempt.client_id == client_id else None


async def search(
    session: AsyncSession,
    *,
    status: PaymentStatus | None = None,
    booking_id: uuid.UUID | None = None,
    client_id: uuid.UUID | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[PaymentAttempt], int]:
    return await repository.search(
        session,
        status=status,
        booking_id=booking_id,
        client_id=client_id,
        created_from=created_from,
        created_to=created_to,
        limit=limit,
        offset=offset,
    )


async def payment_by_id(session: AsyncSession, payment_id: uuid.UUID) -> PaymentAttempt:
    """Any attempt (administrators)."""
    attempt = await session.get(PaymentAttempt, payment_id)
    if attempt is None:
        raise NotFoundError("No such payment.")
    return attempt


# ---- settling ----------------------------------------------------------------------------------


async def lock_with_booking(
    session: AsyncSession, payment_id: uuid.UUID, booking_id: uuid.UUID | None = None
) -> PaymentAttempt | None:
    """The attempt locked, its booking locked first: every path takes them in that order (no deadlock)."""
    if booking_id is None:
        current = await session.get(PaymentAttempt, payment_id)
        if current is None:
            return None
        booking_id = current.booking_id
    await paying.lock_for_payment(session, booking_id)
    return await repository.lock(session, payment_id)


async def settle(
    session: AsyncSession, attempt: PaymentAttempt, outcome: Outcome, description: str | None, *, now: datetime
) -> None:
    """An unpaid ending (failed, cancelled, timed out): the booking's old hold comes back."""
    if not can_move(attempt.status, outcome.status):
        return
    attempt.status = outcome.status
    attempt.reason = outcome.reason
    attempt.result_desc = (description or attempt.result_desc or "")[:300] or None
    attempt.settled_at = now
    attempt.updated_at = now
    await paying.payment_failed(session, attempt.booking_id, hold_until=attempt.hold_expires_before, now=now)
    await audit_payment(
        session,
        attempt,
        f"payment.{outcome.status.value}",
        now=now,
        context=SYSTEM,
        reason=outcome.reason.value if outcome.reason else None,
        mpesa_result=attempt.result_code,
    )


async def _succeed(session: AsyncSession, settings: Settings, attempt: PaymentAttempt, *, now: datetime) -> None:
    """Daraja confirmed the money: succeeded, and the booking confirmed in this transaction (or money due back)."""
    if not can_move(attempt.status, PaymentStatus.SUCCEEDED):
        return
    attempt.status = PaymentStatus.SUCCEEDED
    attempt.reason = None
    attempt.result_code = 0
    attempt.settled_at = now
    attempt.updated_at = now
    paid = paying.Payment(amount_kes=attempt.amount_kes, receipt=attempt.mpesa_receipt)
    try:
        async with session.begin_nested():
            await bookings.confirm(session, settings, attempt.booking_id, now=now, audit=SYSTEM, paid=paid)
    except BookingStateError as exc:
        # The money came after the booking ended (cancelled, or expired after a timed-out payment).
        await _owe_back(session, attempt, attempt.amount_kes, why=exc.detail, now=now)
    # Audited last: writing to the audit log serialises writers until the commit, so nothing slow
    # (the confirmation's emails) happens after it.
    await audit_payment(
        session,
        attempt,
        "payment.succeeded",
        now=now,
        context=SYSTEM,
        booking_id=str(attempt.booking_id),
        amount_kes=attempt.amount_kes,
    )


async def _owe_back(session: AsyncSession, attempt: PaymentAttempt, amount: int, *, why: str, now: datetime) -> None:
    attempt.status = PaymentStatus.REFUND_DUE
    attempt.refund_kes = amount
    attempt.updated_at = now
    log.warning("payment_refund_due", payment_id=str(attempt.id), amount_kes=amount, why=why)
    await audit_payment(
        session, attempt, "payment.refund_due", now=now, context=SYSTEM, refund_kes=amount, why=why[:200]
    )


async def apply_answer(
    session: AsyncSession, settings: Settings, payment_id: uuid.UUID, answer: StkQueryAnswer, *, now: datetime
) -> PaymentAttempt | None:
    """Daraja's STK query answer for an attempt: the truth about it (never a downgrade of a success)."""
    attempt = await lock_with_booking(session, payment_id)
    if attempt is None or not awaits_answer(attempt.status):
        return attempt
    attempt.checks += 1
    attempt.updated_at = now
    if answer.still_processing or answer.result_code is None:
        # Still processing, or Daraja gave no usable answer: ask again later, until the deadline; a late
        # success (already timed out) is asked about less and less often, never given up on.
        late = attempt.status is PaymentStatus.TIMED_OUT
        attempt.next_check_at = now + RECHECK_AFTER * (2 ** min(attempt.checks, 10) if late else 1)
        if not late and _past_deadline(attempt, settings, now):
            await settle(session, attempt, Outcome(PaymentStatus.TIMED_OUT, FailureReason.NO_ANSWER), None, now=now)
        return attempt
    if attempt.result_code == 0 and answer.result_code != 0:
        # A success callback that Daraja contradicts was forged (or garbled): the query is the truth.
        await security_event(session, attempt, "payment.callback_contradicted", now=now, result=answer.result_code)
    attempt.result_code = answer.result_code
    outcome = outcome_of(answer.result_code)
    if outcome is SUCCESS:
        await _succeed(session, settings, attempt, now=now)
    elif attempt.status is not PaymentStatus.TIMED_OUT:
        await settle(session, attempt, outcome, answer.result_desc, now=now)
    return attempt


def _past_deadline(attempt: PaymentAttempt, settings: Settings, now: datetime) -> bool:
    return now >= attempt.created_at + timedelta(seconds=settings.MPESA_PAYMENT_TIMEOUT_SECONDS)


async def give_up_unpushed(session: AsyncSession, payment_id: uuid.UUID, *, now: datetime) -> None:
    """An attempt with no CheckoutRequestID to ask about, at its check time: timed out (a callback may still come)."""
    attempt = await lock_with_booking(session, payment_id)
    if attempt is None or attempt.status not in (PaymentStatus.INITIATED, PaymentStatus.PENDING):
        return
    if attempt.checkout_request_id is not None:
        return
    # Never pushed (the process died) or no usable answer to the push: after the check delay,
    # any prompt on the phone has expired, so the client may try again.
    await settle(
        session, attempt, Outcome(PaymentStatus.TIMED_OUT, FailureReason.NO_ANSWER), attempt.result_desc, now=now
    )


async def audit_payment(
    session: AsyncSession,
    attempt: PaymentAttempt,
    action: str,
    *,
    now: datetime,
    context: AuditContext = SYSTEM,
    **details: object,
) -> None:
    """One audit row about `attempt` (details that are None are left out)."""
    await record(
        session,
        action=action,
        context=context,
        now=now,
        target_type="payment",
        target_id=str(attempt.id),
        details={key: value for key, value in details.items() if value is not None},
    )


async def security_event(
    session: AsyncSession,
    attempt: PaymentAttempt,
    action: str,
    *,
    now: datetime,
    audit: AuditContext = SYSTEM,
    **details: object,
) -> None:
    log.warning("payment_security_event", action=action, payment_id=str(attempt.id), **details)
    await audit_payment(session, attempt, action, now=now, context=audit, **details)


# ---- refunds -------------------------------------------------------------------------------------


async def refund_on_cancellation(
    session: AsyncSession, booking: Booking, cancellation: Cancellation, now: datetime, audit: AuditContext
) -> None:
    """The bookings domain's cancellation hook: money the policy gives back becomes due on its payment."""
    if cancellation.refund_kes <= 0:
        return
    attempt = await repository.paid_for_booking(session, booking.id)
    if attempt is None:
        return
    attempt = await repository.lock(session, attempt.id)
    if attempt is None or attempt.status is not PaymentStatus.SUCCEEDED:
        return
    await _owe_back(
        session, attempt, min(cancellation.refund_kes, attempt.amount_kes), why="booking cancelled", now=now
    )


async def record_refund(
    session: AsyncSession, payment_id: uuid.UUID, receipt: str, *, now: datetime, audit: AuditContext
) -> PaymentAttempt:
    """An administrator sent the money back: refund_due → refunded, with the refund's M-Pesa receipt."""
    attempt = await repository.lock(session, payment_id)
    if attempt is None:
        raise NotFoundError("No such payment.")
    if attempt.status is PaymentStatus.REFUNDED and attempt.refund_receipt == receipt:
        return attempt  # the same form sent twice
    if attempt.status is not PaymentStatus.REFUND_DUE:
        raise PaymentStateError(f"A {attempt.status.value.replace('_', ' ')} payment has no refund to record.")
    if await repository.receipt_recorded(session, receipt, other_than=attempt.id) or receipt == attempt.mpesa_receipt:
        raise ReceiptTakenError()
    attempt.status = PaymentStatus.REFUNDED
    attempt.refund_receipt = receipt
    attempt.refunded_at = now
    attempt.refunded_by = audit.actor_id
    attempt.updated_at = now
    await audit_payment(
        session, attempt, "payment.refunded", now=now, context=audit, refund_kes=attempt.refund_kes, receipt=receipt
    )
    return attempt
