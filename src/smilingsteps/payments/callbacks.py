"""Safaricom's callbacks: stored as received, checked against their attempt, applied once.

The rules are `service`'s (its docstring): the token finds the attempt; a replay changes nothing; a
failure settles the attempt at once; a success is recorded and left for the STK query that confirms
it (`apply_answer`, from the checks job); anything that does not match is a security event.
On PostgreSQL replays and matching successes take a fast path with prebuilt Core statements and no
lock (`receive_callback_fast`, bench/payment_callbacks.py); everything else is decided under the
booking's and the attempt's locks (`receive_callback`).
"""

from __future__ import annotations

import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from smilingsteps.audit.service import AuditContext, record
from smilingsteps.config import Settings
from smilingsteps.payments import repository, service
from smilingsteps.payments.models import CallbackOutcome, PaymentAttempt
from smilingsteps.payments.mpesa import protocol
from smilingsteps.payments.service import token_hash
from smilingsteps.payments.states import PaymentStatus, awaits_answer, outcome_of
from smilingsteps.platform.db import Database

log = structlog.get_logger("smilingsteps.payments")
CALLBACK_MAX_BYTES = 16 * 1024


def stored_payload(body: bytes) -> str:
    """The callback as received, as text any database keeps: bad UTF-8 replaced, NUL escaped (PostgreSQL refuses it)."""
    return body[:CALLBACK_MAX_BYTES].decode("utf-8", errors="replace").replace("\x00", "\\u0000")


@dataclass(frozen=True)
class CallbackResult:
    outcome: str
    payment_id: uuid.UUID | None
    verify: bool = False  # a success to confirm with an STK query


def _decode(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def receive_callback(
    session: AsyncSession,
    settings: Settings,
    *,
    token: str,
    body: bytes,
    source_ip: str | None,
    now: datetime,
    audit: AuditContext,
    audit_unknown: bool = True,
) -> CallbackResult:
    """Store and apply one callback; whatever it holds, it is acknowledged (Safaricom only needs to know we have it).

    A callback the attempt has already heard (a replay) is stored and changes nothing, without a
    lock: it is decided from the attempt as committed, which only ever moves away from waiting.
    Anything else is decided again under the booking's and the attempt's locks.
    """
    digest = token_hash(token)
    found = await repository.callback_target(session, digest)
    if found is None or not hmac.compare_digest(found.callback_token_hash, digest):
        # Nothing is stored for a token no attempt has (anyone can send these); the audit row is
        # written when the caller's throttle allows it, so a flood cannot turn into a write flood.
        log.warning("payment_callback_unknown_token", source_ip=source_ip, bytes=len(body))
        if audit_unknown:
            await record(
                session, action="payment.callback_forged", context=audit, now=now, details={"bytes": len(body)}
            )
        return CallbackResult(CallbackOutcome.UNKNOWN_TOKEN, None)
    try:
        callback = protocol.parse_callback(_decode(body))
    except protocol.MalformedCallbackError as exc:
        attempt = await service.lock_with_booking(session, found.id, found.booking_id)
        assert attempt is not None
        await _store(
            session,
            attempt.id,
            callback=None,
            outcome=CallbackOutcome.MALFORMED,
            body=body,
            source_ip=source_ip,
            now=now,
        )
        await service.security_event(
            session, attempt, "payment.callback_malformed", now=now, problem=str(exc), audit=audit
        )
        return CallbackResult(CallbackOutcome.MALFORMED, attempt.id)
    heard = _already_heard(found, callback)
    if heard is not None:
        await _store(session, found.id, callback=callback, outcome=heard, body=body, source_ip=source_ip, now=now)
        return CallbackResult(heard, found.id)
    attempt = await service.lock_with_booking(session, found.id, found.booking_id)
    assert attempt is not None
    outcome = await _apply_callback(session, settings, attempt, callback, now=now, audit=audit)
    await _store(session, attempt.id, callback=callback, outcome=outcome, body=body, source_ip=source_ip, now=now)
    return CallbackResult(outcome, attempt.id, verify=outcome == CallbackOutcome.AWAITING_CHECK)


async def receive_callback_fast(
    db: Database, *, token: str, body: bytes, source_ip: str | None, now: datetime
) -> CallbackResult | None:
    """PostgreSQL's hot path (bench/payment_callbacks.py): a replay, or the first success matching its attempt,
    decided and stored with prebuilt Core statements in autocommit, no ORM session and no lock.

    Every write is one atomic statement: a replay's row, or the success recorded on its attempt together
    with the callback's row (a conditional UPDATE re-checking everything `_hear_success` checks, inside the
    INSERT). None for anything else (unknown token, malformed, a failure, a mismatch), which
    `receive_callback` then decides under lock, as it does on SQLite.
    """
    try:
        callback = protocol.parse_callback(_decode(body))
    except protocol.MalformedCallbackError:
        return None
    digest = token_hash(token)
    payload = stored_payload(body)
    try:
        async with db.core_autocommit() as connection:
            found = await repository.callback_target(connection, digest)
            if found is None or not hmac.compare_digest(found.callback_token_hash, digest):
                return None
            heard = _already_heard(found, callback)
            if heard is None:
                if await _heard_success(connection, found.id, callback, source_ip=source_ip, payload=payload, now=now):
                    return CallbackResult(CallbackOutcome.AWAITING_CHECK, found.id, verify=True)
                # Most often a copy that arrived while the first was being recorded: its statement waited
                # for that one's commit and no longer matched. Read the attempt as it is now.
                again = await repository.callback_target(connection, digest)
                heard = None if again is None else _already_heard(again, callback)
            if heard is None:
                return None
            await repository.add_callback(
                connection,
                payment_id=found.id,
                checkout_request_id=callback.checkout_request_id,
                result_code=callback.result_code,
                outcome=heard,
                source_ip=source_ip,
                payload=payload,
                received_at=now,
            )
    except IntegrityError:
        return None  # another attempt took the ids at this instant: a mismatch, recorded under lock
    return CallbackResult(heard, found.id)


async def _heard_success(
    connection: AsyncConnection,
    payment_id: uuid.UUID,
    callback: protocol.StkCallback,
    *,
    source_ip: str | None,
    payload: str,
    now: datetime,
) -> bool:
    amount = callback.amount
    if not callback.succeeded or amount is None or amount != amount.to_integral_value():
        return False
    return await repository.hear_success(
        connection,
        payment_id,
        source_ip=source_ip,
        payload=payload,
        checkout=callback.checkout_request_id,
        merchant=callback.merchant_request_id,
        amount=int(amount),
        phone=callback.phone,
        receipt=callback.receipt,
        result_desc=callback.result_desc or None,
        paid_at=_paid_at(callback, now),
        now=now,
    )


def _paid_at(callback: protocol.StkCallback, now: datetime) -> datetime:
    """When M-Pesa says the money moved (TransactionDate, Nairobi time); when it was heard if it does not say."""
    if callback.transaction_date is None:
        return now
    try:
        return protocol.from_nairobi_timestamp(callback.transaction_date)
    except ValueError:
        return now


def _already_heard(found: repository.CallbackTarget, callback: protocol.StkCallback) -> str | None:
    """REPLAY or FINISHED when the attempt, as committed, has already heard this answer; None to decide under lock."""
    if found.checkout_request_id is not None and callback.checkout_request_id != found.checkout_request_id:
        return None  # a mismatch: recorded as a security event, under lock
    if found.result_code is not None and found.result_code == callback.result_code:
        return CallbackOutcome.REPLAY
    if not awaits_answer(found.status):
        return CallbackOutcome.FINISHED
    return None


async def _apply_callback(
    session: AsyncSession,
    settings: Settings,
    attempt: PaymentAttempt,
    callback: protocol.StkCallback,
    *,
    now: datetime,
    audit: AuditContext,
) -> str:
    if attempt.checkout_request_id is not None and callback.checkout_request_id != attempt.checkout_request_id:
        await service.security_event(
            session, attempt, "payment.callback_mismatch", now=now, field="CheckoutRequestID", audit=audit
        )
        return CallbackOutcome.MISMATCH
    if attempt.checkout_request_id is None and await repository.checkout_recorded(
        session, callback.checkout_request_id, other_than=attempt.id
    ):
        await service.security_event(
            session, attempt, "payment.callback_mismatch", now=now, field="CheckoutRequestID", audit=audit
        )
        return CallbackOutcome.MISMATCH
    if not awaits_answer(attempt.status):
        return CallbackOutcome.REPLAY if attempt.result_code == callback.result_code else CallbackOutcome.FINISHED
    if attempt.result_code is not None and attempt.result_code == callback.result_code:
        return CallbackOutcome.REPLAY  # a success already heard, waiting for its check
    if callback.succeeded:
        return await _hear_success(session, attempt, callback, now=now, audit=audit)
    if attempt.status is PaymentStatus.TIMED_OUT:
        return CallbackOutcome.FINISHED  # a late "no" changes nothing: nothing was taken
    attempt.checkout_request_id = attempt.checkout_request_id or callback.checkout_request_id
    attempt.merchant_request_id = attempt.merchant_request_id or callback.merchant_request_id
    attempt.result_code = callback.result_code
    await service.settle(session, attempt, outcome_of(callback.result_code), callback.result_desc, now=now)
    return CallbackOutcome.APPLIED


async def _hear_success(
    session: AsyncSession,
    attempt: PaymentAttempt,
    callback: protocol.StkCallback,
    *,
    now: datetime,
    audit: AuditContext,
) -> str:
    """A success callback that matches the attempt is recorded; the STK query decides (`apply_answer`)."""
    mismatch = None
    if callback.amount != attempt.amount_kes:
        mismatch = "Amount"
    elif callback.phone != attempt.phone:
        mismatch = "PhoneNumber"
    elif callback.receipt and await repository.receipt_recorded(session, callback.receipt, other_than=attempt.id):
        mismatch = "MpesaReceiptNumber"
    if mismatch is not None:
        await service.security_event(
            session, attempt, "payment.callback_mismatch", now=now, field=mismatch, audit=audit
        )
        return CallbackOutcome.MISMATCH
    attempt.checkout_request_id = attempt.checkout_request_id or callback.checkout_request_id
    attempt.merchant_request_id = attempt.merchant_request_id or callback.merchant_request_id
    attempt.result_code = 0
    attempt.result_desc = callback.result_desc or None
    attempt.mpesa_receipt = callback.receipt
    attempt.next_check_at = now  # the STK query that confirms it is due at once (the checks job)
    attempt.paid_at = _paid_at(callback, now)
    attempt.updated_at = now
    return CallbackOutcome.AWAITING_CHECK


async def _store(
    session: AsyncSession,
    payment_id: uuid.UUID | None,
    *,
    callback: protocol.StkCallback | None,
    outcome: str,
    body: bytes,
    source_ip: str | None,
    now: datetime,
) -> None:
    await repository.add_callback(
        session,
        payment_id=payment_id,
        checkout_request_id=None if callback is None else callback.checkout_request_id,
        result_code=None if callback is None else callback.result_code,
        outcome=outcome,
        source_ip=source_ip,
        payload=stored_payload(body),
        received_at=now,
    )
