"""Therapists HTTP: the directory, slots, and a therapist's own profile and availability."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from smilingsteps.accounts.auth import CurrentUser
from smilingsteps.platform.dependencies import DbSession, Now, SettingsDep
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.platform.schemas import TimeZoneName, UtcDatetime
from smilingsteps.therapists import service
from smilingsteps.therapists.repository import Therapist
from smilingsteps.therapists.schemas import (
    AvailabilityIn,
    AvailabilityOut,
    ProfileIn,
    ProfileOut,
    SlotOut,
    TherapistPage,
)
from smilingsteps.therapists.slots import local_label
from smilingsteps.therapists.vocabulary import Language, Specialty


def profile_out(therapist: Therapist) -> ProfileOut:
    user, profile = therapist.user, therapist.profile
    return ProfileOut(
        id=user.id,
        full_name=user.full_name,
        bio=profile.bio,
        specialties=therapist.specialties,
        languages=therapist.languages,
        years_of_practice=profile.years_of_practice,
        license_number=profile.license_number,
        price_kes=profile.price_kes,
        session_minutes=profile.session_minutes,
        buffer_minutes=profile.buffer_minutes,
        timezone=profile.timezone,
        approved=service.is_listed_status(user.role, user.therapist_status),
    )


def build_router() -> APIRouter:
    router = APIRouter(prefix="/therapists", route_class=ApiRoute, tags=["therapists"])

    @router.get("")
    async def directory(
        *,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        specialty: Specialty | None = None,
        language: Language | None = None,
        min_price: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        max_price: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        available_by: Annotated[date | None, Query(description="only therapists with a free slot by this day")] = None,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
        limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 20,
    ) -> TherapistPage:
        found, next_cursor = await service.directory(
            session,
            settings,
            specialty=specialty,
            language=language,
            min_price=min_price,
            max_price=max_price,
            available_by=available_by,
            cursor=cursor,
            limit=limit,
            now=now,
        )
        return TherapistPage(items=[profile_out(t) for t in found], next_cursor=next_cursor)

    @router.get("/me")
    async def my_profile(*, user: CurrentUser, session: DbSession) -> ProfileOut:
        return profile_out(await service.own_profile(session, user.user_id))

    @router.put("/me")
    async def save_my_profile(*, body: ProfileIn, user: CurrentUser, session: DbSession, now: Now) -> ProfileOut:
        return profile_out(await service.save_profile(session, user.user_id, user.role, body, now=now))

    @router.get("/me/availability")
    async def my_availability(*, user: CurrentUser, session: DbSession) -> AvailabilityOut:
        zone, rules, exceptions = await service.availability(session, user.user_id)
        return AvailabilityOut(timezone=zone, rules=rules, exceptions=exceptions)

    @router.put("/me/availability")
    async def set_my_availability(*, body: AvailabilityIn, user: CurrentUser, session: DbSession) -> AvailabilityOut:
        await service.set_availability(session, user.user_id, body)
        zone, rules, exceptions = await service.availability(session, user.user_id)
        return AvailabilityOut(timezone=zone, rules=rules, exceptions=exceptions)

    @router.get("/{therapist_id}")
    async def one(*, therapist_id: uuid.UUID, session: DbSession) -> ProfileOut:
        return profile_out(await service.listed(session, therapist_id))

    @router.get("/{therapist_id}/slots")
    async def slots(
        *,
        therapist_id: uuid.UUID,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        start: Annotated[UtcDatetime, Query(alias="from")],
        to: UtcDatetime,
        tz: Annotated[TimeZoneName, Query()] = "Africa/Nairobi",
    ) -> list[SlotOut]:
        zone = ZoneInfo(tz)
        schedule, starts = await service.free_slots(session, settings, therapist_id, start, to, now=now)
        length = schedule.policy.session_minutes
        return [
            SlotOut(start=s, end=s + timedelta(minutes=length), local_start=local_label(s, zone), timezone=tz)
            for s in starts
        ]

    return router
