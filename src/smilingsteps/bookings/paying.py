"""Paying for a booking, as the payments domain needs it: the booking locked, its hold while a
payment is open, and its hold given back when the payment fails (rules in `service`'s docstring).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.bookings import repository
from smilingsteps.bookings.errors import BookingStateError
from smilingsteps.bookings.models import Booking, BookingStatus
from smilingsteps.platform.errors import NotFoundError


@dataclass(frozen=True)
class Payment:
    """A confirmed payment, as the payments domain tells `confirm` about it."""

    amount_kes: int
    receipt: str | None


async def payable(session: AsyncSession, client_id: uuid.UUID, booking_id: uuid.UUID, *, now: datetime) -> Booking:
    """The client's own booking, locked, if it can be paid now: held (unexpired) or already pending payment.

    404 for anyone else's booking; 409 when it is paid, expired or cancelled.
    """
    booking = await repository.lock_booking(session, booking_id)
    if booking is None or booking.client_id != client_id:
        raise NotFoundError("No such booking.")
    if booking.status == BookingStatus.PENDING_PAYMENT:
        return booking
    if booking.status == BookingStatus.HELD and booking.hold_expires_at is not None and booking.hold_expires_at > now:
        return booking
    if booking.status == BookingStatus.CONFIRMED:
        raise BookingStateError("This booking is already confirmed: there is nothing to pay.")
    if booking.status == BookingStatus.HELD:
        raise BookingStateError("The hold on this time ran out before payment. Book the session again.")
    raise BookingStateError(f"A {booking.status.replace('_', ' ')} booking cannot be paid.")


async def lock_for_payment(session: AsyncSession, booking_id: uuid.UUID) -> None:
    """Lock the booking for the rest of the transaction: a payment settles it, and locks it before its own row."""
    await repository.lock_booking(session, booking_id)


def await_payment(booking: Booking, *, until: datetime, now: datetime) -> None:
    """A payment is open on `booking` (from `payable`): it keeps its slot, at least until `until`."""
    booking.status = BookingStatus.PENDING_PAYMENT
    booking.hold_expires_at = max(booking.hold_expires_at or until, until)
    booking.updated_at = now


async def payment_failed(
    session: AsyncSession, booking_id: uuid.UUID, *, hold_until: datetime | None, now: datetime
) -> Booking | None:
    """The open payment ended without money: the booking's hold goes back to `hold_until`.

    Within it the client may pay again; past it the booking expires now and frees its slot.
    A booking no longer waiting for payment (cancelled, confirmed) is left as it is.
    """
    booking = await repository.lock_booking(session, booking_id)
    if booking is None or booking.status != BookingStatus.PENDING_PAYMENT:
        return booking
    if hold_until is not None and hold_until > now:
        booking.status = BookingStatus.HELD
        booking.hold_expires_at = hold_until
    else:
        booking.status = BookingStatus.EXPIRED
        booking.hold_expires_at = hold_until or now
    booking.updated_at = now
    return booking
