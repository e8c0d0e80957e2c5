"""Bookings: request and response bodies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import Field

from smilingsteps.bookings.models import OUTCOMES, Booking, BookingStatus
from smilingsteps.platform.schemas import Multiline, OneOf, RequestModel, ResponseModel, TimeZoneName, UtcDatetime


class BookingIn(RequestModel):
    therapist_id: uuid.UUID
    starts_at: UtcDatetime = Field(description="a slot start from GET /therapists/{id}/slots, with its offset")
    timezone: TimeZoneName = Field(default="Africa/Nairobi", description="the client's zone, for emails")


class CancelIn(RequestModel):
    reason: Annotated[str, Field(max_length=500)] | None = None


class RescheduleIn(RequestModel):
    starts_at: UtcDatetime


class OutcomeIn(RequestModel):
    outcome: Annotated[BookingStatus, OneOf(*OUTCOMES)]


class NoteIn(RequestModel):
    text: Annotated[str, Multiline(), Field(max_length=20_000)]


class NoteOut(ResponseModel):
    text: str
    updated_at: datetime | None


@dataclass(frozen=True)
class BookingView:
    """A booking with both parties' display names, as the service returns it for an answer."""

    booking: Booking
    therapist_name: str
    client_name: str


class BookingOut(ResponseModel):
    id: uuid.UUID
    therapist_id: uuid.UUID
    client_id: uuid.UUID
    therapist_name: str = Field(description="the therapist's display name: who the client meets")
    client_name: str = Field(description="the client's display name: who the therapist meets")
    starts_at: datetime
    ends_at: datetime
    status: BookingStatus
    hold_expires_at: datetime | None
    price_kes: int
    refund_due_kes: int = Field(
        description=(
            "KES due back to the client after a cancellation: what was actually paid, when the cancellation "
            "policy refunds it; 0 when nothing is refunded or nothing was paid"
        )
    )
    paid_kes: int = Field(
        description=(
            "KES the client paid through the platform (a confirmed M-Pesa payment); 0 when nothing was "
            "(an administrator may confirm a booking paid outside the platform)"
        )
    )
    client_timezone: str
    therapist_timezone: str
    reschedule_count: int
    cancelled_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, view: BookingView) -> BookingOut:
        names = {"therapist_name": view.therapist_name, "client_name": view.client_name}
        columns = {name: getattr(view.booking, name) for name in cls.model_fields if name not in names}
        return cls.model_validate({**columns, **names})


class BookingPage(ResponseModel):
    items: list[BookingOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")
