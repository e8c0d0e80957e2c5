"""Therapists rules: profiles, weekly availability, the public directory and free slots."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts.models import Role
from smilingsteps.config import Settings
from smilingsteps.platform.errors import ForbiddenError, NotFoundError, ValidationFailedError
from smilingsteps.therapists import repository
from smilingsteps.therapists.errors import NoProfileError
from smilingsteps.therapists.models import AvailabilityException, AvailabilityRule, ExceptionKind, TherapistProfile
from smilingsteps.therapists.schemas import AvailabilityIn, Bookable, ExceptionIn, ProfileIn, RuleIn, Therapist
from smilingsteps.therapists.slots import DateException, SlotPolicy, WeeklyRule

MAX_PAGE = 50


@dataclass(frozen=True)
class Schedule:
    """Everything slot computation needs about one therapist."""

    therapist: Bookable
    tz: ZoneInfo
    rules: list[WeeklyRule]
    exceptions: list[DateException]
    policy: SlotPolicy


def slot_policy(settings: Settings, therapist: Bookable) -> SlotPolicy:
    return SlotPolicy(
        session_minutes=therapist.session_minutes,
        buffer_minutes=therapist.buffer_minutes,
        min_notice=timedelta(hours=settings.BOOKING_MIN_NOTICE_HOURS),
        horizon=timedelta(days=settings.BOOKING_HORIZON_DAYS),
    )


# ---- the therapist's own profile and availability -------------------------------------


async def save_profile(
    session: AsyncSession, user_id: uuid.UUID, role: Role, data: ProfileIn, *, now: datetime
) -> Therapist:
    """Create or replace the caller's profile; only therapist accounts have one."""
    if role is not Role.THERAPIST:
        raise ForbiddenError("Only therapist accounts have a therapist profile.")
    profile = await session.get(TherapistProfile, user_id)
    if profile is None:
        profile = TherapistProfile(user_id=user_id, created_at=now)
        session.add(profile)
    profile.bio = data.bio
    profile.years_of_practice = data.years_of_practice
    profile.license_number = data.license_number
    profile.price_kes = data.price_kes
    profile.session_minutes = data.session_minutes
    profile.buffer_minutes = data.buffer_minutes
    profile.timezone = data.timezone
    profile.updated_at = now
    await session.flush()
    await repository.save_tags(session, user_id, [s.value for s in data.specialties], [v.value for v in data.languages])
    await session.flush()
    found = await repository.own_profile(session, user_id)
    assert found is not None
    return found


async def own_profile(session: AsyncSession, user_id: uuid.UUID) -> Therapist:
    found = await repository.own_profile(session, user_id)
    if found is None:
        raise NoProfileError()
    return found


async def profile_for_review(session: AsyncSession, user_id: uuid.UUID) -> Therapist | None:
    """A therapist's profile whatever the account's review status (for administrators); None before one is written."""
    return await repository.own_profile(session, user_id)


async def set_availability(session: AsyncSession, user_id: uuid.UUID, data: AvailabilityIn) -> None:
    """Replace the caller's weekly rules and dated exceptions (times local to the profile's zone)."""
    if await session.get(TherapistProfile, user_id) is None:
        raise NoProfileError()
    rules = [AvailabilityRule(therapist_id=user_id, weekday=r.weekday, start=r.start, end=r.end) for r in data.rules]
    exceptions = [
        AvailabilityException(therapist_id=user_id, day=e.day, kind=e.kind, start=e.start, end=e.end)
        for e in data.exceptions
    ]
    await repository.replace_availability(session, user_id, rules, exceptions)


async def availability(session: AsyncSession, user_id: uuid.UUID) -> tuple[str, list[RuleIn], list[ExceptionIn]]:
    profile = await session.get(TherapistProfile, user_id)
    if profile is None:
        raise NoProfileError()
    rules, exceptions = await repository.availability(session, user_id)
    return (
        profile.timezone,
        [RuleIn(weekday=r.weekday, start=r.start, end=r.end) for r in rules],
        [ExceptionIn(day=e.day, kind=ExceptionKind(e.kind), start=e.start, end=e.end) for e in exceptions],
    )


# ---- the public directory ----------------------------------------------------------------


async def listed(session: AsyncSession, therapist_id: uuid.UUID) -> Therapist:
    """An approved, active therapist with a profile; anyone else is 'not found'."""
    found = await repository.listed_therapist(session, therapist_id)
    if found is None:
        raise NotFoundError("No such therapist.")
    return found


# A page cursor: the last therapist's id, a dot, and their name in unpadded base64url. Every string
# of this shape is a valid position (a name that is not UTF-8 is read with replacement characters),
# so the pattern in the API schema is the whole rule.
CURSOR_PATTERN = (
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
)


def encode_cursor(therapist: Therapist) -> str:
    name = base64.urlsafe_b64encode(therapist.user.full_name.encode()).decode().rstrip("=")
    return f"{therapist.user.id}.{name}"


def decode_cursor(cursor: str) -> tuple[str, uuid.UUID]:
    """The (name, id) position a cursor stands for; one not of CURSOR_PATTERN's shape is refused."""
    therapist_id, _, name = cursor.partition(".")
    try:
        position = uuid.UUID(therapist_id)
        raw = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4))
    except (binascii.Error, ValueError):
        raise ValidationFailedError(
            "The cursor is not one this API gave out.",
            errors=[{"field": "cursor", "location": "query", "message": "is not a valid cursor"}],
        ) from None
    # NUL cannot be stored or compared in PostgreSQL text; no name holds one.
    return raw.decode(errors="replace").replace("\x00", "\ufffd"), position


# Decides whether a candidate belongs on the page (say, "has a free slot by Friday").
Keep = Callable[[Therapist], Awaitable[bool]]


async def directory(
    session: AsyncSession,
    *,
    specialty: str | None,
    language: str | None,
    min_price: int | None,
    max_price: int | None,
    cursor: str | None,
    limit: int,
    keep: Keep | None = None,
) -> tuple[list[Therapist], str | None]:
    """A page of listed therapists by name, each one `keep` accepts (all when None)."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValidationFailedError(
            "min_price is above max_price.",
            errors=[{"field": "min_price", "location": "query", "message": "must not exceed max_price"}],
        )
    after = decode_cursor(cursor) if cursor else None
    page: list[Therapist] = []
    # With a filter, candidates are checked in batches until the page is full.
    batch = limit if keep is None else max(limit * 2, 20)
    while len(page) < limit:
        candidates = await repository.search(
            session,
            specialty=specialty,
            language=language,
            min_price=min_price,
            max_price=max_price,
            after=after,
            limit=batch,
        )
        for therapist in candidates:
            if keep is None or await keep(therapist):
                page.append(therapist)
                if len(page) == limit:
                    break
        if len(candidates) < batch:
            return page, None
        last = page[-1] if len(page) == limit else candidates[-1]
        after = (last.user.full_name, last.user.id)
    return page, encode_cursor(page[-1])


# ---- schedules (what booking and slot computation read) --------------------------


async def schedule_for(session: AsyncSession, settings: Settings, therapist: Bookable) -> Schedule:
    """The schedule of a therapist whose booking terms the caller has already read."""
    rules, exceptions = await repository.availability(session, therapist.id, therapist.availability_version)
    return Schedule(
        therapist=therapist,
        tz=ZoneInfo(therapist.timezone),
        rules=rules,
        exceptions=exceptions,
        policy=slot_policy(settings, therapist),
    )


async def schedule_of(session: AsyncSession, settings: Settings, therapist_id: uuid.UUID) -> Schedule:
    """The schedule of a listed therapist (404 for anyone else)."""
    therapist = await repository.bookable(session, therapist_id)
    if therapist is None:
        raise NotFoundError("No such therapist.")
    return await schedule_for(session, settings, therapist)
