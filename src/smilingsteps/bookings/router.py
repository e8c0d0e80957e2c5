"""Bookings HTTP: parse, authorise, one service call, shape the answer.

Also the public directory and free slots under /therapists: both depend on bookings.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts.auth import AdminUser, CurrentUser, Principal, VerifiedUser
from smilingsteps.bookings import listing, notes, service
from smilingsteps.bookings.models import Booking, BookingStatus
from smilingsteps.bookings.schemas import BookingIn, BookingOut, CancelIn, NoteIn, NoteOut, OutcomeIn, RescheduleIn
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.dependencies import Client, DbSession, EncryptorDep, Now, SettingsDep
from smilingsteps.platform.openapi import problems
from smilingsteps.platform.ratelimit.policies import rate_limited
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.platform.schemas import CalendarDay, TimeZoneName, UtcDatetime
from smilingsteps.therapists import service as therapists
from smilingsteps.therapists.schemas import ProfileOut, SlotOut, TherapistPage
from smilingsteps.therapists.slots import local_label
from smilingsteps.therapists.vocabulary import Language, Specialty

ADMIN = rate_limited("admin")


def _actor(user: Principal, client: ClientInfo) -> service.Actor:
    return service.Actor(user_id=user.user_id, role=user.role, audit=client.audit(user.user_id))


async def _answer(session: AsyncSession, booking: Booking) -> BookingOut:
    """A changed booking as the answer, with both parties' names."""
    return BookingOut.of((await listing.named(session, [booking]))[0])


def _finding_routes(router: APIRouter) -> None:
    """The public directory and a therapist's free slots: what can be booked (so bookings serves them)."""

    @router.get("/therapists", tags=["therapists"])
    async def directory(
        *,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        specialty: Specialty | None = None,
        language: Language | None = None,
        min_price: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        max_price: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        available_by: Annotated[
            CalendarDay | None, Query(description="only therapists with a free slot by this day")
        ] = None,
        cursor: Annotated[str | None, Query(max_length=400, pattern=therapists.CURSOR_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=therapists.MAX_PAGE)] = 20,
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
        return TherapistPage(items=[ProfileOut.of(t) for t in found], next_cursor=next_cursor)

    @router.get("/therapists/{therapist_id}/slots", tags=["therapists"])
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


def build_router() -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["bookings"])
    _finding_routes(router)

    @router.post("/bookings", status_code=status.HTTP_201_CREATED, responses=problems(404, 409))
    async def create(
        *, body: BookingIn, user: VerifiedUser, session: DbSession, settings: SettingsDep, now: Now, client: Client
    ) -> BookingOut:
        held = await service.create_hold(
            session,
            settings,
            _actor(user, client),
            body.therapist_id,
            body.starts_at,
            client_timezone=body.timezone,
            now=now,
        )
        return BookingOut.of(held)

    @router.get("/bookings")
    async def list_mine(
        *,
        user: CurrentUser,
        session: DbSession,
        status_: Annotated[BookingStatus | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> list[BookingOut]:
        found = await listing.mine(session, user.user_id, status=status_, limit=limit, offset=offset)
        return [BookingOut.of(b) for b in found]

    @router.get("/bookings/{booking_id}")
    async def get_one(*, booking_id: uuid.UUID, user: CurrentUser, session: DbSession) -> BookingOut:
        return BookingOut.of(await listing.one(session, user.user_id, booking_id))

    @router.post("/bookings/{booking_id}/cancel", responses=problems(409))
    async def cancel(
        *,
        booking_id: uuid.UUID,
        body: CancelIn,
        user: CurrentUser,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        client: Client,
    ) -> BookingOut:
        booking = await service.cancel(session, settings, _actor(user, client), booking_id, reason=body.reason, now=now)
        return await _answer(session, booking)

    @router.post("/bookings/{booking_id}/reschedule", responses=problems(409))
    async def reschedule(
        *,
        booking_id: uuid.UUID,
        body: RescheduleIn,
        user: CurrentUser,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        client: Client,
    ) -> BookingOut:
        booking = await service.reschedule(session, settings, _actor(user, client), booking_id, body.starts_at, now=now)
        return await _answer(session, booking)

    @router.post("/bookings/{booking_id}/outcome", responses=problems(409))
    async def outcome(
        *, booking_id: uuid.UUID, body: OutcomeIn, user: CurrentUser, session: DbSession, now: Now, client: Client
    ) -> BookingOut:
        booking = await service.record_outcome(session, _actor(user, client), booking_id, body.outcome, now=now)
        return await _answer(session, booking)

    @router.put("/bookings/{booking_id}/notes", status_code=status.HTTP_204_NO_CONTENT)
    async def write_note(
        *,
        booking_id: uuid.UUID,
        body: NoteIn,
        user: CurrentUser,
        session: DbSession,
        encryptor: EncryptorDep,
        now: Now,
        client: Client,
    ) -> None:
        await notes.write_note(session, encryptor, _actor(user, client), booking_id, body.text, now=now)

    @router.get("/bookings/{booking_id}/notes")
    async def read_note(
        *,
        booking_id: uuid.UUID,
        user: CurrentUser,
        session: DbSession,
        encryptor: EncryptorDep,
        now: Now,
        client: Client,
    ) -> NoteOut:
        text, updated = await notes.read_note(session, encryptor, _actor(user, client), booking_id, now=now)
        return NoteOut(text=text, updated_at=updated)

    @router.post("/admin/bookings/{booking_id}/confirm", openapi_extra=ADMIN, responses=problems(409))
    async def admin_confirm(
        *, booking_id: uuid.UUID, admin: AdminUser, session: DbSession, settings: SettingsDep, now: Now, client: Client
    ) -> BookingOut:
        """Confirm without payment (support cases, tests); the payment flow confirms on its own."""
        booking = await service.confirm(session, settings, booking_id, now=now, audit=client.audit(admin.user_id))
        return await _answer(session, booking)

    return router
