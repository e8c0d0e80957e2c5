"""Admin HTTP: user management, therapist review, every booking and the audit log.

Every route needs an MFA-signed-in administrator.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.auth import AdminUser, AuthKitDep
from smilingsteps.accounts.models import AccountStatus, Role, TherapistStatus
from smilingsteps.accounts.schemas import UserOut
from smilingsteps.admin import service
from smilingsteps.admin.schemas import TherapistApplicationOut, UserPage, UserUpdateIn
from smilingsteps.audit import service as audit
from smilingsteps.audit.schemas import AuditLogPage, AuditLogQuery
from smilingsteps.bookings import listing as bookings
from smilingsteps.bookings.models import BookingStatus
from smilingsteps.bookings.schemas import BookingOut, BookingPage
from smilingsteps.platform.dependencies import Client, DbSession, Now
from smilingsteps.platform.openapi import problems
from smilingsteps.platform.ratelimit.policies import rate_limited
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.platform.schemas import UtcDatetime

ADMIN = rate_limited("admin")
MAX_PAGE = 100


def build_router() -> APIRouter:
    router = APIRouter(prefix="/admin", route_class=ApiRoute, tags=["admin"])

    @router.get("/users", openapi_extra=ADMIN)
    async def list_users(
        *,
        admin: AdminUser,
        session: DbSession,
        q: Annotated[str | None, Query(max_length=100)] = None,
        role: Role | None = None,
        status: AccountStatus | None = None,
        therapist_status: TherapistStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> UserPage:
        users, total = await accounts.search_users(
            session, query=q, role=role, status=status, therapist_status=therapist_status, limit=limit, offset=offset
        )
        return UserPage(items=[UserOut.of(u) for u in users], total=total, limit=limit, offset=offset)

    @router.get("/users/{user_id}", openapi_extra=ADMIN)
    async def get_user(user_id: uuid.UUID, admin: AdminUser, session: DbSession) -> UserOut:
        return UserOut.of(await accounts.get_user(session, user_id))

    @router.patch("/users/{user_id}", openapi_extra=ADMIN, responses=problems(409))
    async def update_user(
        *,
        user_id: uuid.UUID,
        body: UserUpdateIn,
        admin: AdminUser,
        session: DbSession,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> UserOut:
        if body.status is not None:
            user = await service.set_account_status(
                session,
                kit,
                admin.user_id,
                user_id,
                body.status,
                reason=body.reason,
                now=now,
                client=client,
            )
        else:
            assert body.therapist_status is not None
            user = await service.review_therapist(
                session,
                kit,
                admin.user_id,
                user_id,
                body.therapist_status,
                reason=body.reason,
                now=now,
                client=client,
            )
        return UserOut.of(user)

    @router.get("/therapists/{user_id}", openapi_extra=ADMIN)
    async def therapist_application(
        *, user_id: uuid.UUID, admin: AdminUser, session: DbSession
    ) -> TherapistApplicationOut:
        """A therapist's account, full profile (licence number included) and last review, whatever its status."""
        return TherapistApplicationOut.of(await service.therapist_application(session, user_id))

    @router.get("/bookings", openapi_extra=ADMIN)
    async def list_bookings(
        *,
        admin: AdminUser,
        session: DbSession,
        status: BookingStatus | None = None,
        therapist_id: uuid.UUID | None = None,
        client_id: uuid.UUID | None = None,
        starts_from: Annotated[
            UtcDatetime | None, Query(alias="from", description="sessions starting at or after this moment")
        ] = None,
        to: Annotated[
            UtcDatetime | None, Query(description="sessions starting before this moment; must be later than from")
        ] = None,
        cursor: Annotated[str | None, Query(max_length=60, pattern=bookings.CURSOR_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=bookings.MAX_PAGE)] = bookings.DEFAULT_PAGE,
    ) -> BookingPage:
        """Every booking matching all the given filters, latest start first, with both parties' names."""
        found, next_cursor = await bookings.search(
            session,
            status=status,
            therapist_id=therapist_id,
            client_id=client_id,
            starts_from=starts_from,
            starts_before=to,
            cursor=cursor,
            limit=limit,
        )
        return BookingPage(items=[BookingOut.of(b) for b in found], next_cursor=next_cursor)

    @router.get("/audit-log", openapi_extra=ADMIN)
    async def audit_log(
        *, admin: AdminUser, session: DbSession, query: Annotated[AuditLogQuery, Query()]
    ) -> AuditLogPage:
        events = await audit.list_events(session, query.filters(), limit=query.limit, before_seq=query.before_seq)
        return AuditLogPage.of(events, limit=query.limit)

    return router
