"""Bookings: free slots, holds, the booking lifecycle and its policies, reminders, private notes.

Payments and video will use bookings through its service (`confirm`, `cancel`, …);
bookings never imports them.
"""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="bookings",
    depends_on=("accounts", "audit", "notifications", "therapists"),
    models="smilingsteps.bookings.models",
    router="smilingsteps.bookings.router:build_router",
    jobs="smilingsteps.bookings.jobs:jobs",
)
