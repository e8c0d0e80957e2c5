"""Every payments query. Attempts are read for their client, or by token hash for callbacks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CursorResult,
    Executable,
    Uuid,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from smilingsteps.payments.models import CallbackOutcome, MpesaCallback, PaymentAttempt
from smilingsteps.payments.states import AWAITING_ANSWER, LIVE, PaymentStatus
from smilingsteps.platform.db import take_write_turn
from smilingsteps.platform.models import UtcDateTime, table_of


async def lock(session: AsyncSession, payment_id: uuid.UUID) -> PaymentAttempt | None:
    """The attempt, locked until this transaction ends, read fresh (SQLite: as the single writer)."""
    await take_write_turn(session, table="payments", key=None)
    statement = (
        select(PaymentAttempt)
        .where(PaymentAttempt.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


@dataclass(frozen=True)
class CallbackTarget:
    """What a callback is checked against, read without the ORM (every callback, replays included, reads it)."""

    id: uuid.UUID
    booking_id: uuid.UUID
    status: PaymentStatus
    result_code: int | None
    checkout_request_id: str | None
    callback_token_hash: str


_ATTEMPTS = table_of(PaymentAttempt)
_CALLBACK_TARGET = select(*(_ATTEMPTS.c[name] for name in CallbackTarget.__dataclass_fields__)).where(
    _ATTEMPTS.c.callback_token_hash == bindparam("token_hash")
)
_INSERT_CALLBACK = insert(table_of(MpesaCallback))


Runner = AsyncSession | AsyncConnection


async def _core(runner: Runner, statement: Executable, values: dict[str, Any]) -> CursorResult[Any]:
    """A prebuilt statement on a session's connection, or on a bare connection (the callbacks' fast path)."""
    connection = await runner.connection() if isinstance(runner, AsyncSession) else runner
    return await connection.execute(statement, values)


async def callback_target(runner: Runner, token_hash: str) -> CallbackTarget | None:
    """The attempt whose callback token hashes to `token_hash` (prebuilt Core: bench/payment_callbacks.py)."""
    row = (await _core(runner, _CALLBACK_TARGET, {"token_hash": token_hash})).first()
    if row is None:
        return None
    values = {name: row._mapping[name] for name in CallbackTarget.__dataclass_fields__}
    values["status"] = PaymentStatus(values["status"])
    return CallbackTarget(**values)


async def live_for_booking(session: AsyncSession, booking_id: uuid.UUID) -> PaymentAttempt | None:
    statement = select(PaymentAttempt).where(
        PaymentAttempt.booking_id == booking_id, PaymentAttempt.status.in_([status.value for status in LIVE])
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def latest_for_booking(session: AsyncSession, booking_id: uuid.UUID) -> PaymentAttempt | None:
    """The newest attempt; of two begun in the same instant the one still open (attempts follow each other)."""
    statement = (
        select(PaymentAttempt)
        .where(PaymentAttempt.booking_id == booking_id)
        .order_by(PaymentAttempt.created_at.desc(), PaymentAttempt.settled_at.desc().nulls_first())
        .limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def paid_for_booking(session: AsyncSession, booking_id: uuid.UUID) -> PaymentAttempt | None:
    """The booking's succeeded attempt (at most one confirms a booking)."""
    statement = (
        select(PaymentAttempt)
        .where(PaymentAttempt.booking_id == booking_id, PaymentAttempt.status == PaymentStatus.SUCCEEDED)
        .order_by(PaymentAttempt.created_at.desc())
        .limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def of_client(session: AsyncSession, payment_id: uuid.UUID, client_id: uuid.UUID) -> PaymentAttempt | None:
    statement = select(PaymentAttempt).where(PaymentAttempt.id == payment_id, PaymentAttempt.client_id == client_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def receipt_recorded(session: AsyncSession, receipt: str, *, other_than: uuid.UUID) -> bool:
    """Whether `receipt` is already some other attempt's payment or refund receipt."""
    statement = select(func.count()).where(
        PaymentAttempt.id != other_than,
        (PaymentAttempt.mpesa_receipt == receipt) | (PaymentAttempt.refund_receipt == receipt),
    )
    return bool((await session.execute(statement)).scalar_one())


async def checkout_recorded(session: AsyncSession, checkout_request_id: str, *, other_than: uuid.UUID) -> bool:
    statement = select(func.count()).where(
        PaymentAttempt.id != other_than, PaymentAttempt.checkout_request_id == checkout_request_id
    )
    return bool((await session.execute(statement)).scalar_one())


async def claim_due_checks(
    session: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
) -> list[uuid.UUID]:
    """Attempts whose next check is due, claimed (their next check moved to `lease_until`): the live ones,
    and timed-out ones that heard a success since (money that came late is still confirmed).

    PostgreSQL: FOR UPDATE SKIP LOCKED, so several workers take disjoint sets; SQLite: the single writer.
    """
    late_success = and_(PaymentAttempt.status == PaymentStatus.TIMED_OUT, PaymentAttempt.result_code == 0)
    due = and_(
        or_(PaymentAttempt.status.in_([status.value for status in LIVE]), late_success),
        PaymentAttempt.next_check_at <= now,
    )
    # The pass runs every few seconds and usually finds nothing: look before becoming SQLite's writer.
    if (await session.execute(select(PaymentAttempt.id).where(due).limit(1))).first() is None:
        return []
    await take_write_turn(session, table="payments", key=None)
    statement = (
        select(PaymentAttempt)
        .where(due)
        .order_by(PaymentAttempt.next_check_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = list((await session.execute(statement)).scalars())
    for attempt in claimed:
        attempt.next_check_at = lease_until
    return [attempt.id for attempt in claimed]


async def add_callback(runner: Runner, **values: object) -> None:
    """Store one received callback (a Core INSERT: every callback writes one)."""
    await _core(runner, _INSERT_CALLBACK, {"id": uuid.uuid4(), **values})


_other = aliased(PaymentAttempt)
_HEAR_SUCCESS = (
    update(_ATTEMPTS)
    .where(
        _ATTEMPTS.c.id == bindparam("b_payment_id"),
        _ATTEMPTS.c.status.in_([literal(status.value) for status in AWAITING_ANSWER]),
        _ATTEMPTS.c.result_code.is_(None),
        or_(_ATTEMPTS.c.checkout_request_id.is_(None), _ATTEMPTS.c.checkout_request_id == bindparam("b_checkout")),
        _ATTEMPTS.c.amount_kes == bindparam("b_amount"),
        _ATTEMPTS.c.phone == bindparam("b_phone"),
        ~exists().where(
            _other.id != _ATTEMPTS.c.id,
            or_(
                _other.checkout_request_id == bindparam("b_checkout"),
                _other.mpesa_receipt == bindparam("b_receipt"),
                _other.refund_receipt == bindparam("b_receipt"),
            ),
        ),
    )
    .values(
        checkout_request_id=func.coalesce(_ATTEMPTS.c.checkout_request_id, bindparam("b_checkout")),
        merchant_request_id=func.coalesce(_ATTEMPTS.c.merchant_request_id, bindparam("b_merchant")),
        result_code=0,
        result_desc=bindparam("b_result_desc"),
        mpesa_receipt=bindparam("b_receipt"),
        paid_at=bindparam("b_paid_at", type_=UtcDateTime),
        next_check_at=bindparam("b_now", type_=UtcDateTime),
        updated_at=bindparam("b_now", type_=UtcDateTime),
    )
)


_CALLBACKS = table_of(MpesaCallback)
_HEARD = _HEAR_SUCCESS.returning(_ATTEMPTS.c.id).cte("heard")
# The success recorded and the callback stored in one statement: atomic without a transaction around it.
_HEAR_AND_STORE = (
    insert(_CALLBACKS)
    .from_select(
        ["id", "payment_id", "checkout_request_id", "result_code", "outcome", "source_ip", "payload", "received_at"],
        select(
            bindparam("c_id", type_=Uuid),
            _HEARD.c.id,
            bindparam("b_checkout"),
            literal(0),
            literal(CallbackOutcome.AWAITING_CHECK),
            bindparam("c_source_ip"),
            bindparam("c_payload"),
            bindparam("b_now", type_=UtcDateTime),
        ).select_from(_HEARD),
    )
    .returning(_CALLBACKS.c.id)
)


async def hear_success(
    runner: Runner, payment_id: uuid.UUID, *, source_ip: str | None, payload: str, **values: object
) -> bool:
    """Record a success callback on its attempt, and store the callback, in one statement, if it matches the
    attempt and nothing else claims its ids: still waiting, no answer heard yet, the same CheckoutRequestID (or
    none yet), amount and phone, and a CheckoutRequestID and receipt no other attempt holds. False (nothing
    written) when it did not: decide again."""
    # Bound names differ from the columns' (SQLAlchemy reserves those in an UPDATE's SET).
    parameters = {f"b_{name}": value for name, value in values.items()}
    parameters.update(
        {"b_payment_id": payment_id, "c_id": uuid.uuid4(), "c_source_ip": source_ip, "c_payload": payload}
    )
    result = await _core(runner, _HEAR_AND_STORE, parameters)
    return result.first() is not None


async def search(
    session: AsyncSession,
    *,
    status: PaymentStatus | None,
    booking_id: uuid.UUID | None,
    client_id: uuid.UUID | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[PaymentAttempt], int]:
    """Attempts for administrators, newest first, with the total matching."""
    conditions = []
    if status is not None:
        conditions.append(PaymentAttempt.status == status)
    if booking_id is not None:
        conditions.append(PaymentAttempt.booking_id == booking_id)
    if client_id is not None:
        conditions.append(PaymentAttempt.client_id == client_id)
    if created_from is not None:
        conditions.append(PaymentAttempt.created_at >= created_from)
    if created_to is not None:
        conditions.append(PaymentAttempt.created_at < created_to)
    total = (await session.execute(select(func.count()).select_from(PaymentAttempt).where(*conditions))).scalar_one()
    rows = await session.execute(
        select(PaymentAttempt)
        .where(*conditions)
        .order_by(PaymentAttempt.created_at.desc(), PaymentAttempt.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.scalars().all(), int(total)


async def callbacks_of(session: AsyncSession, payment_id: uuid.UUID) -> Sequence[MpesaCallback]:
    statement = select(MpesaCallback).where(MpesaCallback.payment_id == payment_id).order_by(MpesaCallback.received_at)
    return (await session.execute(statement)).scalars().all()
