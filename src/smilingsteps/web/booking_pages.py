"""Bookings in the browser: a client books a slot (the hold page with its countdown), lists
their sessions, cancels (the refund stated before confirming) and reschedules; a therapist
opens a session, keeps private notes and records how it went. The same bookings services
as the API; someone else's booking is 'not found', as there."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from smilingsteps.accounts.models import Role, User
from smilingsteps.bookings import listing, notes
from smilingsteps.bookings import service as bookings
from smilingsteps.bookings.errors import ClientOverlapError, SlotTakenError
from smilingsteps.bookings.models import ACTIVE_STATUSES, BookingStatus
from smilingsteps.bookings.schemas import BookingIn, BookingView, CancelIn, NoteIn, RescheduleIn
from smilingsteps.config import Settings
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.crypto import Encryptor
from smilingsteps.platform.dependencies import Client, DbSession, EncryptorDep, Now, SettingsDep
from smilingsteps.platform.errors import AppError, BadRequestError, NotFoundError
from smilingsteps.platform.i18n import Language, gettext_in
from smilingsteps.web.forms import N_, FormErrors, text, validate
from smilingsteps.web.payment_views import NO_PANEL, pay_panel
from smilingsteps.web.rendering import Pages
from smilingsteps.web.routing import (
    PagesDep,
    attempt,
    page_router,
    posted,
    see_other,
    undoable,
    with_notice,
)
from smilingsteps.web.viewer import Viewer, ViewerDep, require_role, require_user

RESCHEDULE_DAYS = 14
STATUS_WORDS = {
    BookingStatus.HELD: N_("Held for you: waiting for payment"),
    BookingStatus.PENDING_PAYMENT: N_("Waiting for the M-Pesa payment"),
    BookingStatus.CONFIRMED: N_("Confirmed"),
    BookingStatus.COMPLETED: N_("Completed"),
    BookingStatus.NO_SHOW_CLIENT: N_("Missed by the client"),
    BookingStatus.NO_SHOW_THERAPIST: N_("Missed by the therapist"),
    BookingStatus.CANCELLED: N_("Cancelled"),
    BookingStatus.EXPIRED: N_("Expired: the hold ran out before payment"),
}


def actor_of(user: User, client: ClientInfo) -> bookings.Actor:
    return bookings.Actor(user_id=user.id, role=user.role, audit=client.audit(user.id))


def booking_id_of(raw: str) -> uuid.UUID:
    """A booking id from a URL; anything that is not one is simply not found."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFoundError("No such booking.") from None


@lru_cache(maxsize=len(Language))
def status_words(language: Language) -> dict[BookingStatus, str]:
    """Each status in words, in `language` (shared by every page: callers must not change it)."""
    gettext = gettext_in(language)
    return {status: gettext(words) for status, words in STATUS_WORDS.items()}


def upcoming_and_past(found: list[BookingView], now: datetime) -> tuple[list[BookingView], list[BookingView]]:
    """Sessions still to come (soonest first), and the rest: ended, cancelled or expired (latest first)."""
    upcoming = [v for v in found if v.booking.ends_at > now and v.booking.status in ACTIVE_STATUSES]
    upcoming.sort(key=lambda v: v.booking.starts_at)
    return upcoming, [v for v in found if v not in upcoming]


def zone_for(view: BookingView, viewer: Viewer) -> str:
    """The client sees a booking in the zone they booked it in; the therapist in their own."""
    if view.booking.client_id == viewer.principal_id:
        return view.booking.client_timezone
    return viewer.timezone


def build_pages() -> APIRouter:
    router = page_router()
    _listing(router)
    _booking(router)
    _changing(router)
    _therapist_actions(router)
    return router


def _listing(router: APIRouter) -> None:
    @router.get("/bookings")
    async def my_sessions(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now
    ) -> Response:
        user = require_user(request, viewer)
        found = await listing.mine(session, user.id, status=None, limit=100, offset=0)
        upcoming, past = upcoming_and_past(found, now)
        words = status_words(viewer.language)
        return pages.page(request, viewer, "bookings.html", upcoming=upcoming, past=past, words=words, now=now)

    @router.post("/bookings")
    async def book(
        *, request: Request, viewer: ViewerDep, session: DbSession, settings: SettingsDep, now: Now, client: Client
    ) -> Response:
        user = require_role(request, viewer, Role.CLIENT)
        data = await posted(request, viewer)
        fields = {name: text(data, name) for name in ("therapist_id", "starts_at", "timezone")}
        parsed = validate(BookingIn, fields, gettext_in(viewer.language))
        if isinstance(parsed, FormErrors):
            return see_other(with_notice(f"/therapists/{fields['therapist_id'][:36]}", "slot-invalid"))
        back = f"/therapists/{parsed.therapist_id}?tz={parsed.timezone}"
        if user.email_verified_at is None:
            return see_other(with_notice("/account", "verify-first"))
        hold = bookings.create_hold(
            session,
            settings,
            actor_of(user, client),
            parsed.therapist_id,
            parsed.starts_at,
            client_timezone=parsed.timezone,
            now=now,
        )
        try:
            held = await undoable(session, hold)
        except (ClientOverlapError, SlotTakenError) as refused:
            # The second click of a double submission, or another tab: the booking already made is the answer.
            existing = await _own_active_at(session, user, parsed.therapist_id, parsed.starts_at)
            if existing is not None:
                return see_other(f"/bookings/{existing}")
            return see_other(f"{back}&notice={'overlap' if isinstance(refused, ClientOverlapError) else 'slot-taken'}")
        except AppError as error:
            if error.status >= 500 or error.status == 429:
                raise
            return see_other(f"{back}&notice=slot-invalid")
        return see_other(f"/bookings/{held.booking.id}")


async def _own_active_at(
    session: AsyncSession, user: User, therapist_id: uuid.UUID, starts_at: datetime
) -> uuid.UUID | None:
    found = await listing.mine(session, user.id, status=None, limit=100, offset=0)
    for view in found:
        b = view.booking
        if b.therapist_id == therapist_id and b.starts_at == starts_at and b.status in ACTIVE_STATUSES:
            return b.id
    return None


def _booking(router: APIRouter) -> None:
    @router.get("/bookings/{booking_id}")
    async def booking_page(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        settings: SettingsDep,
        encryptor: EncryptorDep,
        now: Now,
        client: Client,
        booking_id: str,
    ) -> Response:
        user = require_user(request, viewer)
        page = BookingPage(request, viewer, pages, session, settings, encryptor, now, client)
        return await page.render(user, booking_id_of(booking_id))


@dataclass
class BookingPage:
    """A booking's page, as its GET shows it and as a form posted from it comes back with its errors."""

    request: Request
    viewer: Viewer
    pages: Pages
    session: AsyncSession
    settings: Settings
    encryptor: Encryptor
    now: datetime
    client: ClientInfo

    async def render(
        self,
        user: User,
        booking_id: uuid.UUID,
        *,
        pay_errors: FormErrors | None = None,
        phone: str | None = None,
        status: int = 200,
    ) -> Response:
        session, now = self.session, self.now
        view = await listing.one(session, user.id, booking_id)
        booking = view.booking
        is_therapist = booking.therapist_id == user.id
        actor = actor_of(user, self.client)
        terms = None
        if booking.status in ACTIVE_STATUSES and booking.starts_at > now:
            terms = await bookings.cancellation_terms(session, self.settings, actor, booking.id, now=now)
        note = None
        panel = NO_PANEL  # a therapist never sees the client's payment (its receipt, its number)
        if is_therapist:
            note = (await notes.read_note(session, self.encryptor, actor, booking.id, now=now))[0]
        else:
            panel = await pay_panel(session, user.id, booking, account_phone=user.phone, now=now)
        return self.pages.page(
            self.request,
            self.viewer,
            "booking.html",
            view=view,
            booking=booking,
            is_therapist=is_therapist,
            words=status_words(self.viewer.language),
            now=now,
            zone=zone_for(view, self.viewer),
            terms=terms,
            note=note,
            free_hours=self.settings.BOOKING_FREE_CANCELLATION_HOURS,
            errors=FormErrors(),
            pay_errors=pay_errors or FormErrors(),
            phone=panel.phone if phone is None else phone,
            panel=panel,
            can_record=is_therapist and booking.status is BookingStatus.CONFIRMED and now >= booking.ends_at,
            status=status,
        )


def _changing(router: APIRouter) -> None:
    @router.get("/bookings/{booking_id}/cancel")
    async def cancel_form(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        client: Client,
        booking_id: str,
    ) -> Response:
        user = require_user(request, viewer)
        view = await listing.one(session, user.id, booking_id_of(booking_id))
        try:
            terms = await bookings.cancellation_terms(
                session, settings, actor_of(user, client), view.booking.id, now=now
            )
        except AppError as error:
            if error.status >= 500:
                raise
            return see_other(with_notice(f"/bookings/{view.booking.id}", "cannot-cancel"))
        return pages.page(
            request,
            viewer,
            "cancel.html",
            view=view,
            booking=view.booking,
            terms=terms,
            zone=zone_for(view, viewer),
            free_hours=settings.BOOKING_FREE_CANCELLATION_HOURS,
            errors=FormErrors(),
            is_therapist=view.booking.therapist_id == user.id,
        )

    @router.post("/bookings/{booking_id}/cancel")
    async def cancel(
        *,
        request: Request,
        viewer: ViewerDep,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        client: Client,
        booking_id: str,
    ) -> Response:
        user = require_user(request, viewer)
        wanted = booking_id_of(booking_id)
        data = await posted(request, viewer)
        parsed = validate(CancelIn, {"reason": text(data, "reason")[:500] or None}, gettext_in(viewer.language))
        reason = parsed.reason if isinstance(parsed, CancelIn) else None
        work = bookings.cancel(session, settings, actor_of(user, client), wanted, reason=reason, now=now)
        if isinstance(await attempt(session, work), AppError):
            return see_other(with_notice(f"/bookings/{wanted}", "cannot-cancel"))
        return see_other(with_notice(f"/bookings/{wanted}", "cancelled"))

    @router.get("/bookings/{booking_id}/reschedule")
    async def reschedule_form(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        booking_id: str,
    ) -> Response:
        user = require_user(request, viewer)
        view = await listing.one(session, user.id, booking_id_of(booking_id))
        booking = view.booking
        if booking.status is not BookingStatus.CONFIRMED or booking.starts_at <= now:
            return see_other(with_notice(f"/bookings/{booking.id}", "cannot-reschedule"))
        end = now + timedelta(days=RESCHEDULE_DAYS)
        _, starts = await bookings.free_slots(session, settings, booking.therapist_id, now, end, now=now)
        days: dict[date, list[datetime]] = {}
        for start in starts:
            days.setdefault(viewer_day(start, viewer.timezone), []).append(start)
        return pages.page(
            request,
            viewer,
            "reschedule.html",
            view=view,
            booking=booking,
            days=days,
            zone=zone_for(view, viewer),
            slot_days=RESCHEDULE_DAYS,
        )

    @router.post("/bookings/{booking_id}/reschedule")
    async def reschedule(
        *,
        request: Request,
        viewer: ViewerDep,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        client: Client,
        booking_id: str,
    ) -> Response:
        user = require_user(request, viewer)
        wanted = booking_id_of(booking_id)
        data = await posted(request, viewer)
        parsed = validate(RescheduleIn, {"starts_at": text(data, "starts_at")}, gettext_in(viewer.language))
        if isinstance(parsed, FormErrors):
            return see_other(with_notice(f"/bookings/{wanted}/reschedule", "slot-invalid"))
        work = bookings.reschedule(session, settings, actor_of(user, client), wanted, parsed.starts_at, now=now)
        refused = await attempt(session, work)
        if isinstance(refused, AppError):
            notice = "slot-taken" if isinstance(refused, SlotTakenError) else "cannot-reschedule"
            return see_other(with_notice(f"/bookings/{wanted}/reschedule", notice))
        return see_other(with_notice(f"/bookings/{wanted}", "rescheduled"))


def viewer_day(moment: datetime, zone: str) -> date:
    return moment.astimezone(ZoneInfo(zone)).date()


def _therapist_actions(router: APIRouter) -> None:
    @router.post("/bookings/{booking_id}/notes")
    async def save_note(
        *,
        request: Request,
        viewer: ViewerDep,
        session: DbSession,
        encryptor: EncryptorDep,
        now: Now,
        client: Client,
        booking_id: str,
    ) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        wanted = booking_id_of(booking_id)
        data = await posted(request, viewer)
        parsed = validate(NoteIn, {"text": text(data, "text")}, gettext_in(viewer.language))
        if isinstance(parsed, FormErrors):
            return see_other(with_notice(f"/bookings/{wanted}", "note-too-long"))
        await notes.write_note(session, encryptor, actor_of(user, client), wanted, parsed.text, now=now)
        return see_other(with_notice(f"/bookings/{wanted}", "note-saved"))

    @router.post("/bookings/{booking_id}/outcome")
    async def outcome(
        *, request: Request, viewer: ViewerDep, session: DbSession, now: Now, client: Client, booking_id: str
    ) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        wanted = booking_id_of(booking_id)
        data = await posted(request, viewer)
        chosen = {"completed": BookingStatus.COMPLETED, "no_show_client": BookingStatus.NO_SHOW_CLIENT}
        result = chosen.get(text(data, "outcome"))
        if result is None:
            raise BadRequestError("Choose how the session went.")
        recording = bookings.record_outcome(session, actor_of(user, client), wanted, result, now=now)
        if isinstance(await attempt(session, recording), AppError):
            return see_other(with_notice(f"/bookings/{wanted}", "cannot-record"))
        return see_other(with_notice(f"/bookings/{wanted}", "recorded"))
