"""Errors the bookings domain raises."""

from __future__ import annotations

from smilingsteps.platform.errors import ConflictError, ValidationFailedError


class SlotTakenError(ConflictError):
    slug, title = "slot-taken", "Slot no longer free"
    default_detail = "Someone else has just booked this time. Choose another slot."


class ClientOverlapError(ConflictError):
    slug, title = "client-overlap", "You already have a session then"
    default_detail = "You already have a session that overlaps this time."


class SlotNotBookableError(ValidationFailedError):
    slug, title = "slot-not-bookable", "This time cannot be booked"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, errors=[{"field": "starts_at", "location": "body", "message": reason}])


class BookingStateError(ConflictError):
    slug, title = "booking-state", "Not possible in the booking's current state"
