"""The email outbox: one row per message, written in the transaction that causes it."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from smilingsteps.platform.models import Base, EnumText, UtcDateTime, new_id, one_of


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SENDING = "sending"  # claimed by a sender until `claimed_until`
    SENT = "sent"  # accepted by the mail server (or written to the file outbox)
    FAILED = "failed"  # permanent refusal or out of attempts; an operator may retry it


class OutboxMessage(Base):
    """A rendered email waiting to be sent, being sent, or its record once done.

    The bodies can hold single-use links, so they are cleared once the message
    is sent; the metadata stays for support and audit.
    """

    __tablename__ = "email_outbox"
    __table_args__ = (
        one_of("status", OutboxStatus, name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        # The sender's query: pending rows that are due, and claims whose lease ran out.
        Index("ix_email_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    to_address: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(998))
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    # `<outbox id@sender domain>`: the same on every attempt, so a resend after a
    # crash between the server's accept and our update is recognisable.
    message_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[OutboxStatus] = mapped_column(EnumText(OutboxStatus, 16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
