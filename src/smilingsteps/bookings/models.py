"""Bookings, their reminders and the therapist's private notes.

No double booking is enforced by the database: on PostgreSQL two exclusion
constraints (migration 0005) refuse overlapping active bookings of one
therapist (`starts_at`..`blocks_until`, buffer included) and of one client
(`starts_at`..`ends_at`); on SQLite the single writer plus the same checks in
the service, made after taking the write lock.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from smilingsteps.platform.models import Base, EnumText, UtcDateTime, new_id, one_of


class BookingStatus(StrEnum):
    HELD = "held"
    PENDING_PAYMENT = "pending_payment"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    NO_SHOW_CLIENT = "no_show_client"
    NO_SHOW_THERAPIST = "no_show_therapist"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# The states that occupy a slot; the exclusion constraints use the same list.
ACTIVE_STATUSES = (BookingStatus.HELD, BookingStatus.PENDING_PAYMENT, BookingStatus.CONFIRMED)
ACTIVE_VALUES = tuple(status.value for status in ACTIVE_STATUSES)
# How a confirmed session ended, as its therapist records it.
OUTCOMES = (BookingStatus.COMPLETED, BookingStatus.NO_SHOW_CLIENT, BookingStatus.NO_SHOW_THERAPIST)


class Booking(Base):
    __tablename__ = "bookings"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    therapist_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="RESTRICT"))
    client_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="RESTRICT"))
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # ends_at plus the therapist's buffer: what the slot keeps busy.
    blocks_until: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[BookingStatus] = mapped_column(EnumText(BookingStatus, 20))
    hold_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    price_kes: Mapped[int] = mapped_column(Integer)
    client_timezone: Mapped[str] = mapped_column(String(64))
    therapist_timezone: Mapped[str] = mapped_column(String(64))
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    cancelled_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    cancel_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    refund_due_kes: Mapped[int] = mapped_column(Integer, default=0)
    # What the client paid through the platform (a confirmed payment): the most a cancellation refunds.
    paid_kes: Mapped[int] = mapped_column(Integer, default=0)
    reschedule_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint("blocks_until >= ends_at", name="blocks_after_end"),
        CheckConstraint("refund_due_kes >= 0", name="refund_not_negative"),
        CheckConstraint("paid_kes >= 0 AND refund_due_kes <= paid_kes", name="refund_within_paid"),
        one_of("status", BookingStatus, name="status_known"),
        Index("ix_bookings_therapist_time", "therapist_id", "starts_at"),
        Index("ix_bookings_client_time", "client_id", "starts_at"),
        Index("ix_bookings_status_hold", "status", "hold_expires_at"),
    )

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class ReminderKind(StrEnum):
    DAY_BEFORE = "24h"
    HOUR_BEFORE = "1h"


class BookingReminder(Base):
    """A reminder email due at `due_at`; deleted when the booking moves or ends, sent once."""

    __tablename__ = "booking_reminders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    booking_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("bookings.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (Index("ix_booking_reminders_due", "sent_at", "due_at"),)


class SessionNote(Base):
    """The therapist's private note on one booking, encrypted with the application's data keys."""

    __tablename__ = "session_notes"

    booking_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("bookings.id", ondelete="CASCADE"), primary_key=True)
    therapist_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
