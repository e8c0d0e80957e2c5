"""Every therapists query. "Listed" means: a therapist account, approved, active, with a profile."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time
from typing import Any

from sqlalchemy import Date, Integer, Result, Select, String, cast, delete, exists, literal, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts.models import AccountStatus, Role, TherapistStatus, User
from smilingsteps.therapists.models import (
    AvailabilityException,
    AvailabilityRule,
    TherapistLanguage,
    TherapistProfile,
    TherapistSpecialty,
)


@dataclass(frozen=True)
class Therapist:
    user: User
    profile: TherapistProfile
    specialties: list[str]
    languages: list[str]


def _listed() -> Select[User, TherapistProfile]:
    return (
        select(User, TherapistProfile)
        .join(TherapistProfile, TherapistProfile.user_id == User.id)
        .where(
            User.role == Role.THERAPIST.value,
            User.therapist_status == TherapistStatus.APPROVED.value,
            User.status == AccountStatus.ACTIVE.value,
        )
    )


async def _with_tags(session: AsyncSession, rows: Sequence[tuple[User, TherapistProfile]]) -> list[Therapist]:
    ids = [user.id for user, _ in rows]
    specialties: dict[uuid.UUID, list[str]] = {i: [] for i in ids}
    languages: dict[uuid.UUID, list[str]] = {i: [] for i in ids}
    if ids:
        for tid, value in await session.execute(
            select(TherapistSpecialty.therapist_id, TherapistSpecialty.specialty)
            .where(TherapistSpecialty.therapist_id.in_(ids))
            .order_by(TherapistSpecialty.specialty)
        ):
            specialties[tid].append(value)
        for tid, value in await session.execute(
            select(TherapistLanguage.therapist_id, TherapistLanguage.language)
            .where(TherapistLanguage.therapist_id.in_(ids))
            .order_by(TherapistLanguage.language)
        ):
            languages[tid].append(value)
    return [Therapist(user, profile, specialties[user.id], languages[user.id]) for user, profile in rows]


async def listed_therapist(session: AsyncSession, therapist_id: uuid.UUID) -> Therapist | None:
    row = (await session.execute(_listed().where(User.id == therapist_id))).first()
    if row is None:
        return None
    return (await _with_tags(session, [(row[0], row[1])]))[0]


async def listed_without_tags(session: AsyncSession, therapist_id: uuid.UUID) -> Therapist | None:
    """A listed therapist for booking: one query, without the specialties and languages it does not need."""
    row = (await session.execute(_listed().where(User.id == therapist_id))).first()
    return None if row is None else Therapist(row[0], row[1], [], [])


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
    return (await _with_tags(session, [(row[0], row[1])]))[0]


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
    return await _with_tags(session, [(row[0], row[1]) for row in rows])


async def save_tags(
    session: AsyncSession, therapist_id: uuid.UUID, specialties: Sequence[str], languages: Sequence[str]
) -> None:
    await session.execute(delete(TherapistSpecialty).where(TherapistSpecialty.therapist_id == therapist_id))
    await session.execute(delete(TherapistLanguage).where(TherapistLanguage.therapist_id == therapist_id))
    session.add_all(TherapistSpecialty(therapist_id=therapist_id, specialty=s) for s in specialties)
    session.add_all(TherapistLanguage(therapist_id=therapist_id, language=lang) for lang in languages)


async def availability(
    session: AsyncSession, therapist_id: uuid.UUID
) -> tuple[list[AvailabilityRule], list[AvailabilityException]]:
    """The weekly rules and the dated exceptions, read in one round trip (UNION ALL); not attached to the session."""
    rules = select(
        literal("rule").label("source"),
        AvailabilityRule.weekday.label("weekday"),
        cast(null(), Date).label("day"),
        cast(null(), String).label("kind"),
        AvailabilityRule.start.label("start"),
        AvailabilityRule.end.label("end"),
    ).where(AvailabilityRule.therapist_id == therapist_id)
    exceptions = select(
        literal("exception").label("source"),
        cast(null(), Integer).label("weekday"),
        AvailabilityException.day.label("day"),
        AvailabilityException.kind.label("kind"),
        AvailabilityException.start.label("start"),
        AvailabilityException.end.label("end"),
    ).where(AvailabilityException.therapist_id == therapist_id)
    found_rules: list[AvailabilityRule] = []
    found_exceptions: list[AvailabilityException] = []
    result: Result[Any] = await session.execute(union_all(rules, exceptions))
    for row in result:
        if row.source == "rule":
            found_rules.append(
                AvailabilityRule(therapist_id=therapist_id, weekday=row.weekday, start=row.start, end=row.end)
            )
        else:
            found_exceptions.append(
                AvailabilityException(
                    therapist_id=therapist_id, day=row.day, kind=row.kind, start=row.start, end=row.end
                )
            )
    found_rules.sort(key=lambda r: (r.weekday, r.start))
    found_exceptions.sort(key=lambda e: (e.day, e.start or time.min))
    return found_rules, found_exceptions


async def replace_availability(
    session: AsyncSession,
    therapist_id: uuid.UUID,
    rules: Sequence[AvailabilityRule],
    exceptions: Sequence[AvailabilityException],
) -> None:
    await session.execute(delete(AvailabilityRule).where(AvailabilityRule.therapist_id == therapist_id))
    await session.execute(delete(AvailabilityException).where(AvailabilityException.therapist_id == therapist_id))
    session.add_all(rules)
    session.add_all(exceptions)
    await session.flush()
