"""Payment attempts and the raw M-Pesa callbacks received.

One row per attempt to pay for a booking. Money is never counted twice because the
database refuses it: `checkout_request_id` and `mpesa_receipt` are unique, and a
partial unique index allows one live (initiated or pending) attempt per booking.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from smilingsteps.payments.states import LIVE_VALUES, FailureReason, PaymentStatus
from smilingsteps.platform.models import Base, EnumText, UtcDateTime, new_id, one_of

_LIVE = "status IN ({})".format(", ".join(f"'{value}'" for value in LIVE_VALUES))


class PaymentAttempt(Base):
    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    booking_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("bookings.id", ondelete="RESTRICT"))
    client_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="RESTRICT"))
    amount_kes: Mapped[int] = mapped_column(Integer)
    # The paying number as Daraja wants it: 2547XXXXXXXX or 2541XXXXXXXX.
    phone: Mapped[str] = mapped_column(String(12))
    status: Mapped[PaymentStatus] = mapped_column(EnumText(PaymentStatus, 20))
    reason: Mapped[FailureReason | None] = mapped_column(EnumText(FailureReason, 32), default=None)
    # SHA-256 of the per-attempt callback token (the token itself is only in the callback URL).
    callback_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    merchant_request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    checkout_request_id: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    mpesa_receipt: Mapped[str | None] = mapped_column(String(32), default=None, unique=True)
    result_code: Mapped[int | None] = mapped_column(Integer, default=None)
    result_desc: Mapped[str | None] = mapped_column(String(300), default=None)
    # When M-Pesa says the money moved (the callback's TransactionDate, read in Nairobi time).
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # The booking's hold before this attempt extended it: where it goes back to if the payment fails.
    hold_expires_before: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    pushed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # When reconciliation may next ask Daraja about this attempt.
    next_check_at: Mapped[datetime] = mapped_column(UtcDateTime)
    checks: Mapped[int] = mapped_column(Integer, default=0)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    refund_kes: Mapped[int] = mapped_column(Integer, default=0)
    refund_receipt: Mapped[str | None] = mapped_column(String(32), default=None, unique=True)
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    refunded_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("amount_kes > 0", name="amount_positive"),
        CheckConstraint("refund_kes >= 0 AND refund_kes <= amount_kes", name="refund_within_amount"),
        one_of("status", PaymentStatus, name="status_known"),
        one_of("reason", FailureReason, name="reason_known"),
        Index("ix_payments_booking", "booking_id", "created_at"),
        Index("ix_payments_client", "client_id", "created_at"),
        Index("ix_payments_status_check", "status", "next_check_at"),
        Index("ix_payments_created", "created_at"),
        Index(
            "uq_payments_live_booking",
            "booking_id",
            unique=True,
            postgresql_where=text(_LIVE),
            sqlite_where=text(_LIVE),
        ),
    )


class CallbackOutcome:
    """What a received callback did (a closed vocabulary, stored as text)."""

    APPLIED = "applied"
    AWAITING_CHECK = "awaiting_check"
    REPLAY = "replay"
    UNKNOWN_TOKEN = "unknown_token"  # noqa: S105 (an outcome, not a secret)
    FINISHED = "finished"
    MALFORMED = "malformed"
    MISMATCH = "mismatch"
    FORBIDDEN_SOURCE = "forbidden_source"


class MpesaCallback(Base):
    """Every callback as received (size-limited), kept for disputes and for the audit trail."""

    __tablename__ = "mpesa_callbacks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("payments.id", ondelete="SET NULL"), default=None, index=True
    )
    checkout_request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    result_code: Mapped[int | None] = mapped_column(Integer, default=None)
    outcome: Mapped[str] = mapped_column(String(20))
    source_ip: Mapped[str | None] = mapped_column(String(45), default=None)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
