"""Every therapists query. "Listed" means: a therapist account, approved, active, with a profile."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import time
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Date,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    delete,
    exists,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts.models import User
from smilingsteps.platform.cache import BoundedLru
from smilingsteps.platform.db import execute_core
from smilingsteps.therapists.models import (
    LISTED,
    AvailabilityException,
    AvailabilityRule,
    TherapistLanguage,
    TherapistProfile,
    TherapistSpecialty,
    bookable_columns,
)
from smilingsteps.therapists.schemas import Bookable, Therapist
from smilingsteps.therapists.slots import DateException, WeeklyRule


def _listed() -> Select[User, TherapistProfile]:
    return select(User, TherapistProfile).join(TherapistProfile, TherapistProfile.user_id == User.id).where(*LISTED)


async def _with_tags(session: AsyncSession, rows: Sequence[tuple[User, TherapistProfile]]) -> list[Therapist]:
    ids = [user.id for user, _ in rows]
    specialties: dict[uuid.UUID, list[str]] = {i: [] for i in ids}
    languages: dict[uuid.UUID, list[str]] = {i: [] for i in ids}
    if ids:
        for row in await session.execute(
            select(TherapistSpecialty.therapist_id, TherapistSpecialty.specialty)
            .where(TherapistSpecialty.therapist_id.in_(ids))
            .order_by(TherapistSpecialty.specialty)
        ):
            specialties[row.therapist_id].append(row.specialty)
        for row in await session.execute(
            select(TherapistLanguage.therapist_id, TherapistLanguage.language)
            .where(TherapistLanguage.therapist_id.in_(ids))
            .order_by(TherapistLanguage.language)
        ):
            languages[row.therapist_id].append(row.language)
    return [Therapist(user, profile, specialties[user.id], languages[user.id]) for user, profile in rows]


async def listed_therapist(session: AsyncSession, therapist_id: uuid.UUID) -> Therapist | None:
    row = (await session.execute(_listed().where(User.id == therapist_id))).first()
    if row is None:
        return None
    return (await _with_tags(session, [(row.User, row.TherapistProfile)]))[0]


async def bookable(session: AsyncSession, therapist_id: uuid.UUID) -> Bookable | None:
    """A listed therapist's booking terms, in one query of plain columns."""
    row = (await execute_core(session, _BOOKABLE, {"therapist_id": therapist_id})).first()
    return None if row is None else Bookable.from_row(row._mapping)


async def own_profile(session: AsyncSession, user_id: uuid.UUID) -> Therapist | None:
    row = (
        await session.execute(
            select(User, TherapistProfile)
            .join(TherapistProfile, TherapistProfile.user_id == User.id)
            .where(User.id == user_id)
        )
    ).first()
    if row is None:
        return None
    return (await _with_tags(session, [(row.User, row.TherapistProfile)]))[0]


async def search(
    session: AsyncSession,
    *,
    specialty: str | None,
    language: str | None,
    min_price: int | None,
    max_price: int | None,
    after: tuple[str, uuid.UUID] | None,
    limit: int,
) -> list[Therapist]:
    """Listed therapists matching every filter, ordered by (full name, id) after the cursor."""
    statement = _listed()
    if specialty:
        statement = statement.where(
            exists().where(TherapistSpecialty.therapist_id == User.id, TherapistSpecialty.specialty == specialty)
        )
    if language:
        statement = statement.where(
            exists().where(TherapistLanguage.therapist_id == User.id, TherapistLanguage.language == language)
        )
    if min_price is not None:
        statement = statement.where(TherapistProfile.price_kes >= min_price)
    if max_price is not None:
        statement = statement.where(TherapistProfile.price_kes <= max_price)
    if after is not None:
        name, last_id = after
        statement = statement.where((User.full_name > name) | ((User.full_name == name) & (User.id > last_id)))
    rows = (await session.execute(statement.order_by(User.full_name, User.id).limit(limit))).all()
    return await _with_tags(session, [(row.User, row.TherapistProfile) for row in rows])


async def save_tags(
    session: AsyncSession, therapist_id: uuid.UUID, specialties: Sequence[str], languages: Sequence[str]
) -> None:
    await session.execute(delete(TherapistSpecialty).where(TherapistSpecialty.therapist_id == therapist_id))
    await session.execute(delete(TherapistLanguage).where(TherapistLanguage.therapist_id == therapist_id))
    session.add_all(TherapistSpecialty(therapist_id=therapist_id, specialty=s) for s in specialties)
    session.add_all(TherapistLanguage(therapist_id=therapist_id, language=lang) for lang in languages)


def _availability_statement() -> CompoundSelect[Any]:
    rules = select(
        literal("rule").label("source"),
        AvailabilityRule.weekday.label("weekday"),
        cast(null(), Date).label("day"),
        cast(null(), String).label("kind"),
        AvailabilityRule.start.label("start"),
        AvailabilityRule.end.label("end"),
    ).where(AvailabilityRule.therapist_id == bindparam("therapist_id"))
    exceptions = select(
        literal("exception").label("source"),
        cast(null(), Integer).label("weekday"),
        AvailabilityException.day.label("day"),
        AvailabilityException.kind.label("kind"),
        AvailabilityException.start.label("start"),
        AvailabilityException.end.label("end"),
    ).where(AvailabilityException.therapist_id == bindparam("therapist_id"))
    return union_all(rules, exceptions)


# Built once: a statement object keeps its cache key, so booking a slot neither rebuilds the
# expression nor recomputes its key (together a sixth of a booking's server time before).
_BOOKABLE = (
    select(*bookable_columns())
    .select_from(User)
    .join(TherapistProfile, TherapistProfile.user_id == User.id)
    .where(User.id == bindparam("therapist_id"), *LISTED)
)
_AVAILABILITY = _availability_statement()


# (therapist id, availability_version) -> that version's rules and exceptions.
_AVAILABILITY_CACHE: BoundedLru[tuple[uuid.UUID, int], tuple[tuple[WeeklyRule, ...], tuple[DateException, ...]]]
_AVAILABILITY_CACHE = BoundedLru(4096)


async def availability(
    session: AsyncSession, therapist_id: uuid.UUID, version: int | None = None
) -> tuple[list[WeeklyRule], list[DateException]]:
    """The weekly rules and the dated exceptions, as plain values.

    With the `version` read from the profile in this transaction, a process-wide cache answers
    without a query: every change bumps the version in its own transaction, so (therapist,
    version) always names the same rules and a stale copy is never served, whichever instance
    made the change. Without it, or on a miss, one round trip (UNION ALL).
    """
    key = None if version is None else (therapist_id, version)
    cached = None if key is None else _AVAILABILITY_CACHE.get(key)
    if cached is not None:
        return list(cached[0]), list(cached[1])
    rules: list[WeeklyRule] = []
    exceptions: list[DateException] = []
    result = await execute_core(session, _AVAILABILITY, {"therapist_id": therapist_id})
    for row in result:
        if row.source == "rule":
            rules.append(WeeklyRule(weekday=row.weekday, start=row.start, end=row.end))
        else:
            exceptions.append(DateException(day=row.day, kind=row.kind, start=row.start, end=row.end))
    rules.sort(key=lambda r: (r.weekday, r.start))
    exceptions.sort(key=lambda e: (e.day, e.start or time.min))
    if key is not None:
        _AVAILABILITY_CACHE.put(key, (tuple(rules), tuple(exceptions)))
    return rules, exceptions


async def replace_availability(
    session: AsyncSession,
    therapist_id: uuid.UUID,
    rules: Sequence[AvailabilityRule],
    exceptions: Sequence[AvailabilityException],
) -> None:
    """Replace the therapist's rules and exceptions and bump the profile's availability_version."""
    await session.execute(delete(AvailabilityRule).where(AvailabilityRule.therapist_id == therapist_id))
    await session.execute(delete(AvailabilityException).where(AvailabilityException.therapist_id == therapist_id))
    await session.execute(
        update(TherapistProfile)
        .where(TherapistProfile.user_id == therapist_id)
        .values(availability_version=TherapistProfile.availability_version + 1)
        .execution_options(synchronize_session=False)
    )
    session.add_all(rules)
    session.add_all(exceptions)
    await session.flush()
