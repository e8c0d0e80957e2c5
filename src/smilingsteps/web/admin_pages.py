"""Administration in the browser, for administrators signed in with two steps (as the API
demands): therapists waiting for review with their full profile, approval or rejection with
a reason; people, found and suspended or reactivated; every booking, filtered, with the
confirmation of a payment made outside the platform; the audit log, filtered."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.models import AccountStatus, Role, TherapistStatus, User
from smilingsteps.admin import service as admin
from smilingsteps.audit import service as audit
from smilingsteps.audit.schemas import AuditLogQuery
from smilingsteps.bookings import listing
from smilingsteps.bookings import service as bookings
from smilingsteps.bookings.models import BookingStatus
from smilingsteps.platform.dependencies import Client, DbSession, Now, SettingsDep
from smilingsteps.platform.errors import AppError, ForbiddenError, NotFoundError
from smilingsteps.platform.i18n import gettext_in
from smilingsteps.platform.ratelimit.policies import rate_limited
from smilingsteps.platform.security_events import security_event
from smilingsteps.web.booking_pages import status_words
from smilingsteps.web.forms import N_, FormErrors, explain, text
from smilingsteps.web.routing import (
    PagesDep,
    attempt,
    kit_of,
    page_router,
    posted,
    see_other,
    undoable,
    with_notice,
)
from smilingsteps.web.viewer import Viewer, ViewerDep, require_role

ADMIN = rate_limited("admin")
PAGE = 50


def require_admin(request: Request, viewer: Viewer) -> User:
    """An administrator whose session was signed in with two steps; otherwise the page says how to get there."""
    user = require_role(request, viewer, Role.ADMIN)
    if viewer.principal is None or not viewer.principal.mfa:
        security_event(request, "mfa_required", user_id=user.id)
        raise ForbiddenError("Administrators must sign in with two-step verification.")
    return user


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFoundError(f"No such {what}.") from None


def build_pages() -> APIRouter:
    router = page_router()
    _therapists(router)
    _people(router)
    _bookings(router)
    _audit(router)
    return router


def _therapists(router: APIRouter) -> None:
    @router.get("/admin")
    async def overview(*, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession) -> Response:
        require_admin(request, viewer)
        pending, total = await accounts.search_users(
            session,
            query=None,
            role=Role.THERAPIST,
            status=None,
            therapist_status=TherapistStatus.PENDING,
            limit=PAGE,
            offset=0,
        )
        return pages.page(request, viewer, "admin.html", pending=pending, total=total)

    @router.get("/admin/therapists/{user_id}")
    async def application(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, user_id: str
    ) -> Response:
        require_admin(request, viewer)
        found = await admin.therapist_application(session, _uuid(user_id, "therapist"))
        return pages.page(request, viewer, "admin_therapist.html", application=found, errors=FormErrors())

    @router.post("/admin/therapists/{user_id}/review", openapi_extra=ADMIN)
    async def review(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        now: Now,
        client: Client,
        user_id: str,
    ) -> Response:
        user = require_admin(request, viewer)
        target = _uuid(user_id, "therapist")
        data = await posted(request, viewer)
        gettext = gettext_in(viewer.language)
        decisions = {"approve": TherapistStatus.APPROVED, "reject": TherapistStatus.REJECTED}
        decision = decisions.get(text(data, "decision"))
        reason = text(data, "reason").strip()[:500] or None
        errors = FormErrors()
        if decision is None:
            errors.general.append(gettext(N_("Choose to approve or to reject.")))
        elif decision is TherapistStatus.REJECTED and reason is None:
            errors.add("reason", gettext(N_("Say why, so the therapist knows what to change.")))
        if errors:
            found = await admin.therapist_application(session, target)
            return pages.page(request, viewer, "admin_therapist.html", application=found, errors=errors, status=422)
        assert decision is not None
        await admin.review_therapist(
            session, kit_of(request), user.id, target, decision, reason=reason, now=now, client=client
        )
        return see_other(with_notice("/admin", "approved" if decision is TherapistStatus.APPROVED else "rejected"))


class PeopleQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: Annotated[str | None, Field(max_length=100)] = None
    role: Role | None = None
    status: AccountStatus | None = None
    page: Annotated[int, Field(ge=0, le=10_000)] = 0


def _people(router: APIRouter) -> None:
    @router.get("/admin/users")
    async def people(*, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession) -> Response:
        require_admin(request, viewer)
        raw = {key: value for key, value in request.query_params.items() if value.strip()}
        errors = FormErrors()
        try:
            query = PeopleQuery.model_validate(raw)
        except ValidationError as exc:
            errors, query = explain(exc, gettext_in(viewer.language)), PeopleQuery()
        found, total = await accounts.search_users(
            session,
            query=query.q,
            role=query.role,
            status=query.status,
            therapist_status=None,
            limit=PAGE,
            offset=query.page * PAGE,
        )
        filters = {key: value for key, value in raw.items() if key != "page"}
        return pages.page(
            request,
            viewer,
            "admin_users.html",
            people=found,
            total=total,
            filters=filters,
            errors=errors,
            page=query.page,
            more=(query.page + 1) * PAGE < total,
        )

    @router.get("/admin/users/{user_id}")
    async def person(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, user_id: str
    ) -> Response:
        require_admin(request, viewer)
        found = await accounts.find_user(session, _uuid(user_id, "account"))
        if found is None:
            raise NotFoundError("No such account.")
        return pages.page(request, viewer, "admin_user.html", person=found)

    @router.post("/admin/users/{user_id}/status", openapi_extra=ADMIN)
    async def set_status(
        *, request: Request, viewer: ViewerDep, session: DbSession, now: Now, client: Client, user_id: str
    ) -> Response:
        user = require_admin(request, viewer)
        target = _uuid(user_id, "account")
        data = await posted(request, viewer)
        wanted = {"suspend": AccountStatus.SUSPENDED, "reactivate": AccountStatus.ACTIVE}.get(text(data, "action"))
        if wanted is None:
            return see_other(f"/admin/users/{target}")
        change = admin.set_account_status(
            session,
            kit_of(request),
            user.id,
            target,
            wanted,
            reason=text(data, "reason").strip()[:500] or None,
            now=now,
            client=client,
        )
        try:
            await undoable(session, change)
        except AppError as error:
            if error.status != 403:
                raise
            return see_other(with_notice(f"/admin/users/{target}", "not-yourself"))
        return see_other(with_notice(f"/admin/users/{target}", "status-changed"))


class BookingQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: BookingStatus | None = None
    from_day: date | None = Field(default=None, alias="from")
    to_day: date | None = Field(default=None, alias="to")
    cursor: Annotated[str | None, Field(max_length=60, pattern=listing.CURSOR_PATTERN)] = None


def _day_start(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _bookings(router: APIRouter) -> None:
    @router.get("/admin/bookings")
    async def all_bookings(*, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession) -> Response:
        require_admin(request, viewer)
        gettext = gettext_in(viewer.language)
        raw = {key: value for key, value in request.query_params.items() if value.strip()}
        errors = FormErrors()
        try:
            query = BookingQuery.model_validate(raw)
        except ValidationError as exc:
            errors, query = explain(exc, gettext), BookingQuery()
        zone = viewer.timezone
        found: list[Any] = []
        next_cursor = None
        try:
            found, next_cursor = await listing.search(
                session,
                status=query.status,
                starts_from=_day_start(query.from_day, zone) if query.from_day else None,
                starts_before=_day_start(query.to_day + timedelta(days=1), zone) if query.to_day else None,
                cursor=query.cursor,
                limit=PAGE,
            )
        except AppError as error:
            if error.status >= 500:
                raise
            errors.add("to", gettext(N_("The end date must not be before the start date.")))
        words = status_words(viewer.language)
        filters = {key: value for key, value in raw.items() if key != "cursor"}
        return pages.page(
            request,
            viewer,
            "admin_bookings.html",
            found=found,
            next_cursor=next_cursor,
            filters=filters,
            errors=errors,
            words=words,
            statuses=[(s.value, words[s]) for s in BookingStatus],
            zone=zone,
            status=422 if errors else 200,
        )

    @router.post("/admin/bookings/{booking_id}/confirm", openapi_extra=ADMIN)
    async def confirm(
        *,
        request: Request,
        viewer: ViewerDep,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        client: Client,
        booking_id: str,
    ) -> Response:
        user = require_admin(request, viewer)
        wanted = _uuid(booking_id, "booking")
        await posted(request, viewer)
        work = bookings.confirm(session, settings, wanted, now=now, audit=client.audit(user.id))
        if isinstance(await attempt(session, work), AppError):
            return see_other(with_notice("/admin/bookings", "cannot-confirm"))
        return see_other(with_notice("/admin/bookings", "booking-confirmed"))


def _audit(router: APIRouter) -> None:
    @router.get("/admin/audit-log")
    async def audit_log(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        before_seq: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        require_admin(request, viewer)
        raw = {key: value for key, value in request.query_params.items() if value.strip() and key != "before_seq"}
        errors = FormErrors()
        try:
            query = AuditLogQuery.model_validate({**raw, "limit": PAGE})
        except ValidationError as exc:
            errors, query = explain(exc, gettext_in(viewer.language)), AuditLogQuery(limit=PAGE)
        events = await audit.list_events(session, query.filters(), limit=PAGE, before_seq=before_seq)
        older = events[-1].seq if len(events) == PAGE else None
        return pages.page(
            request,
            viewer,
            "admin_audit.html",
            events=events,
            filters=raw,
            errors=errors,
            older=older,
            status=422 if errors else 200,
        )
