"""Reading bookings for an answer: each with both parties' display names.

Part of the bookings service (split from `service.py`, which holds the lifecycle): a
participant's own bookings, and an administrator's search of all bookings, paged by cursor.
Names come from the accounts service, never from the users table directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import service as accounts
from smilingsteps.bookings import repository
from smilingsteps.bookings.models import Booking, BookingStatus
from smilingsteps.bookings.schemas import BookingView
from smilingsteps.bookings.service import booking_of
from smilingsteps.platform.errors import ValidationFailedError

MAX_PAGE = 100
DEFAULT_PAGE = 50

# A page cursor, shaped like the directory's: the last booking's id, a dot, and its sort key (its
# start, in microseconds since 1970 UTC). Sixteen digits reach the year 2286, so every string of
# this shape is a valid position and the pattern in the API schema is the whole rule.
CURSOR_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[0-9]{1,16}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


async def named(session: AsyncSession, bookings: Sequence[Booking]) -> list[BookingView]:
    """The bookings with their therapist's and client's display names, in one read of the accounts."""
    if not bookings:
        return []
    people = list(dict.fromkeys(i for b in bookings for i in (b.therapist_id, b.client_id)))
    names = dict(zip(people, [c.full_name for c in await accounts.contacts(session, *people)], strict=True))
    return [BookingView(b, therapist_name=names[b.therapist_id], client_name=names[b.client_id]) for b in bookings]


async def one(session: AsyncSession, user_id: uuid.UUID, booking_id: uuid.UUID) -> BookingView:
    """The caller's own booking (as client or therapist) with both names; anyone else's is 'not found'."""
    return (await named(session, [await booking_of(session, user_id, booking_id)]))[0]


async def mine(
    session: AsyncSession, user_id: uuid.UUID, *, status: BookingStatus | None, limit: int, offset: int
) -> list[BookingView]:
    """The caller's bookings as client or therapist, latest start first."""
    found = await repository.bookings_of(session, user_id, status=status, limit=limit, offset=offset)
    return await named(session, found)


def encode_cursor(booking: Booking) -> str:
    return f"{booking.id}.{(booking.starts_at - _EPOCH) // _MICROSECOND}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (starts_at, id) position a cursor stands for; one not of CURSOR_PATTERN's shape is refused."""
    booking_id, _, micros = cursor.partition(".")
    try:
        return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(booking_id)
    except (ValueError, OverflowError):
        raise ValidationFailedError(
            "The cursor is not one this API gave out.",
            errors=[{"field": "cursor", "location": "query", "message": "is not a valid cursor"}],
        ) from None


async def search(
    session: AsyncSession,
    *,
    status: BookingStatus | None = None,
    therapist_id: uuid.UUID | None = None,
    client_id: uuid.UUID | None = None,
    starts_from: datetime | None = None,
    starts_before: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[BookingView], str | None]:
    """Every booking matching all the given filters, latest start first, for administrators; and the next cursor.

    `starts_from` is inclusive, `starts_before` exclusive; a window that is empty by construction is a 422.
    """
    if starts_from is not None and starts_before is not None and starts_from >= starts_before:
        raise ValidationFailedError(
            "`from` is not before `to`.",
            errors=[{"field": "to", "location": "query", "message": "must be later than from"}],
        )
    found = await repository.search(
        session,
        status=status,
        therapist_id=therapist_id,
        client_id=client_id,
        starts_from=starts_from,
        starts_before=starts_before,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit + 1,  # one more than asked tells whether another page follows
    )
    page = list(found[:limit])
    next_cursor = encode_cursor(page[-1]) if len(found) > limit else None
    return await named(session, page), next_cursor
