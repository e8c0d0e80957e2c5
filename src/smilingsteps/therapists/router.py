"""Therapists HTTP: a therapist's own profile and availability, and a listed therapist's profile.

The directory and free slots depend on bookings, so the bookings router serves them.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from smilingsteps.accounts.auth import CurrentUser
from smilingsteps.platform.dependencies import DbSession, Now
from smilingsteps.platform.openapi import problems
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.therapists import service
from smilingsteps.therapists.schemas import (
    AvailabilityIn,
    AvailabilityOut,
    ProfileIn,
    ProfileOut,
)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/therapists", route_class=ApiRoute, tags=["therapists"])

    @router.get("/me", responses=problems(409))
    async def my_profile(*, user: CurrentUser, session: DbSession) -> ProfileOut:
        return ProfileOut.of(await service.own_profile(session, user.user_id))

    @router.put("/me")
    async def save_my_profile(*, body: ProfileIn, user: CurrentUser, session: DbSession, now: Now) -> ProfileOut:
        return ProfileOut.of(await service.save_profile(session, user.user_id, user.role, body, now=now))

    @router.get("/me/availability", responses=problems(409))
    async def my_availability(*, user: CurrentUser, session: DbSession) -> AvailabilityOut:
        zone, rules, exceptions = await service.availability(session, user.user_id)
        return AvailabilityOut(timezone=zone, rules=rules, exceptions=exceptions)

    @router.put("/me/availability", responses=problems(409))
    async def set_my_availability(*, body: AvailabilityIn, user: CurrentUser, session: DbSession) -> AvailabilityOut:
        await service.set_availability(session, user.user_id, body)
        zone, rules, exceptions = await service.availability(session, user.user_id)
        return AvailabilityOut(timezone=zone, rules=rules, exceptions=exceptions)

    @router.get("/{therapist_id}")
    async def one(*, therapist_id: uuid.UUID, session: DbSession) -> ProfileOut:
        return ProfileOut.of(await service.listed(session, therapist_id))

    return router
