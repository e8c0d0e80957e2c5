"""Paying in the browser: a client pays a held booking with M-Pesa Express from its page, then
follows the payment on its own page (it updates by itself: a small script asks a JSON endpoint,
and without JavaScript the page refreshes) until it is paid or says in plain words why not, with
the form to try again. Administrators list every payment and record the refunds they send.

The same payments service as the API, in-process: `start` in the request's transaction and the
STK push sent after the commit, exactly as the API route does; someone else's payment is 'not
found', as there."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse, Response

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.models import Role
from smilingsteps.bookings import listing
from smilingsteps.payments import service as payments
from smilingsteps.payments.errors import ReceiptTakenError
from smilingsteps.payments.models import PaymentAttempt
from smilingsteps.payments.processing import push_after_commit
from smilingsteps.payments.schemas import RefundIn, StkPushIn
from smilingsteps.payments.states import LIVE, PAID, PaymentStatus
from smilingsteps.platform.dependencies import Client, DbSession, EncryptorDep, Now, RuntimeDep, SettingsDep
from smilingsteps.platform.errors import AppError, NotFoundError
from smilingsteps.platform.i18n import gettext_in
from smilingsteps.platform.ratelimit.policies import rate_limited
from smilingsteps.web.admin_pages import require_admin
from smilingsteps.web.booking_pages import BookingPage, booking_id_of, zone_for
from smilingsteps.web.forms import N_, FormErrors, explain, text, validate
from smilingsteps.web.payment_views import local_phone, payable_now, payment_words, reason_of
from smilingsteps.web.rendering import Pages
from smilingsteps.web.routing import PagesDep, attempt, page_router, posted, see_other, with_notice
from smilingsteps.web.viewer import Viewer, ViewerDep, require_role, require_user

PAYMENTS = rate_limited("payments")
ADMIN = rate_limited("admin")
PAGE = 50
NO_STORE = {"Cache-Control": "no-store"}


def payment_id_of(raw: str) -> uuid.UUID:
    """A payment id from a URL; anything that is not one is simply not found."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFoundError("No such payment.") from None


def build_pages() -> APIRouter:
    router = page_router()
    _paying(router)
    _following(router)
    _administration(router)
    return router


def _phone_errors(phone: str, gettext: Callable[[str], str]) -> FormErrors:
    errors = FormErrors()
    if phone.strip():
        errors.add("phone", gettext(N_("Enter a Kenyan M-Pesa number such as 0712 345 678.")))
    else:
        errors.add("phone", gettext(N_("Enter the M-Pesa number to pay from.")))
    return errors


def _paying(router: APIRouter) -> None:
    @router.post("/bookings/{booking_id}/pay", openapi_extra=PAYMENTS)
    async def pay(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        settings: SettingsDep,
        encryptor: EncryptorDep,
        runtime: RuntimeDep,
        now: Now,
        client: Client,
        booking_id: str,
    ) -> Response:
        user = require_role(request, viewer, Role.CLIENT)
        wanted = booking_id_of(booking_id)
        data = await posted(request, viewer)
        phone = text(data, "phone")[:40]
        parsed = validate(StkPushIn, {"booking_id": str(wanted), "phone": phone}, gettext_in(viewer.language))
        if isinstance(parsed, FormErrors):
            page = BookingPage(request, viewer, pages, session, settings, encryptor, now, client)
            errors = _phone_errors(phone, gettext_in(viewer.language))
            return await page.render(user, wanted, pay_errors=errors, phone=phone, status=422)
        if user.email_verified_at is None:
            return see_other(with_notice("/account", "verify-first"))
        work = payments.start(
            session,
            settings,
            client_id=user.id,
            booking_id=parsed.booking_id,
            phone=parsed.phone,
            now=now,
            audit=client.audit(user.id),
        )
        started = await attempt(session, work)
        if isinstance(started, AppError):
            return see_other(with_notice(f"/bookings/{wanted}", "cannot-pay"))
        push_after_commit(session, runtime, started.push)
        return see_other(f"/payments/{started.attempt.id}")


def _following(router: APIRouter) -> None:
    @router.get("/payments/{payment_id}")
    async def payment_page(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        now: Now,
        payment_id: str,
    ) -> Response:
        user = require_user(request, viewer)
        found = await payments.payment_of(session, user.id, payment_id_of(payment_id))
        view = await listing.one(session, user.id, found.booking_id)
        latest = await payments.latest_for_booking(session, user.id, found.booking_id)
        newer = latest if latest is not None and latest.id != found.id else None
        ended_unpaid = found.status not in (*LIVE, *PAID)
        return pages.page(
            request,
            viewer,
            "payment.html",
            payment=found,
            view=view,
            booking=view.booking,
            zone=zone_for(view, viewer),
            waiting=found.status in LIVE,
            reason=reason_of(found, viewer.language) if ended_unpaid else "",
            newer=newer,
            can_retry=ended_unpaid and newer is None and payable_now(view.booking, now),
            phone=local_phone(found.phone),
            pay_errors=FormErrors(),
        )

    @router.get("/payments/{payment_id}/status")
    async def payment_status(*, request: Request, viewer: ViewerDep, session: DbSession, payment_id: str) -> Response:
        """What the status page's script asks every few seconds: cheap, and the client's own only."""
        user = require_user(request, viewer)
        found = await payments.payment_of(session, user.id, payment_id_of(payment_id))
        return JSONResponse({"status": found.status.value, "done": found.status not in LIVE}, headers=NO_STORE)


class PaymentQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: PaymentStatus | None = None
    booking_id: uuid.UUID | None = None
    from_day: date | None = Field(default=None, alias="from")
    to_day: date | None = Field(default=None, alias="to")
    page: Annotated[int, Field(ge=0, le=10_000)] = 0


def _day_start(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


async def _names(session: AsyncSession, found: list[PaymentAttempt]) -> dict[uuid.UUID, str]:
    people = list(dict.fromkeys(p.client_id for p in found))
    contacts = await accounts.contacts(session, *people) if people else []
    return {person: contact.full_name for person, contact in zip(people, contacts, strict=True)}


def _administration(router: APIRouter) -> None:
    @router.get("/admin/payments", openapi_extra=ADMIN)
    async def all_payments(*, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession) -> Response:
        require_admin(request, viewer)
        gettext = gettext_in(viewer.language)
        raw = {key: value for key, value in request.query_params.items() if value.strip()}
        errors = FormErrors()
        try:
            query = PaymentQuery.model_validate(raw)
        except ValidationError as exc:
            errors, query = explain(exc, gettext), PaymentQuery()
            if "booking_id" in errors.fields:
                errors.fields["booking_id"] = gettext(N_("Enter a booking's whole id: 36 letters, digits and dashes."))
        zone = viewer.timezone
        if query.from_day and query.to_day and query.to_day < query.from_day:
            errors.add("to", gettext(N_("The end date must not be before the start date.")))
        found: list[PaymentAttempt] = []
        total = 0
        if not errors:
            rows, total = await payments.search(
                session,
                status=query.status,
                booking_id=query.booking_id,
                created_from=_day_start(query.from_day, zone) if query.from_day else None,
                created_to=_day_start(query.to_day + timedelta(days=1), zone) if query.to_day else None,
                limit=PAGE,
                offset=query.page * PAGE,
            )
            found = list(rows)
        words = payment_words(viewer.language)
        return pages.page(
            request,
            viewer,
            "admin_payments.html",
            found=found,
            names=await _names(session, found),
            total=total,
            filters={key: value for key, value in raw.items() if key != "page"},
            page=query.page,
            more=(query.page + 1) * PAGE < total,
            errors=errors,
            words=words,
            statuses=[(s.value, words[s]) for s in PaymentStatus],
            zone=zone,
            status=422 if errors else 200,
        )

    @router.get("/admin/payments/{payment_id}", openapi_extra=ADMIN)
    async def one_payment(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, payment_id: str
    ) -> Response:
        require_admin(request, viewer)
        found = await payments.payment_by_id(session, payment_id_of(payment_id))
        return await _admin_payment(
            request, viewer=viewer, pages=pages, session=session, found=found, errors=FormErrors(), receipt=""
        )

    @router.post("/admin/payments/{payment_id}/refund", openapi_extra=ADMIN)
    async def record_refund(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        now: Now,
        client: Client,
        payment_id: str,
    ) -> Response:
        user = require_admin(request, viewer)
        target = payment_id_of(payment_id)
        data = await posted(request, viewer)
        gettext = gettext_in(viewer.language)
        # Receipts are read aloud or copied from an SMS: spaces and small letters are forgiven.
        receipt = "".join(text(data, "receipt").split()).upper()[:40]
        parsed = validate(RefundIn, {"receipt": receipt}, gettext)
        errors = FormErrors()
        if isinstance(parsed, FormErrors):
            if receipt:
                message = N_("Enter the refund's M-Pesa receipt: 10 capital letters and digits, like SGR7T3X9QA.")
            else:
                message = N_("Enter the M-Pesa receipt number of the refund you sent.")
            errors.add("receipt", gettext(message))
        else:
            work = payments.record_refund(session, target, parsed.receipt, now=now, audit=client.audit(user.id))
            done = await attempt(session, work)
            if isinstance(done, ReceiptTakenError):
                errors.add("receipt", gettext(N_("That receipt number is already recorded for a payment or a refund.")))
            elif isinstance(done, AppError):
                errors.add("receipt", gettext(N_("This payment is not waiting for a refund, so none can be recorded.")))
            else:
                return see_other(with_notice(f"/admin/payments/{target}", "refund-recorded"))
        found = await payments.payment_by_id(session, target)
        return await _admin_payment(
            request,
            viewer=viewer,
            pages=pages,
            session=session,
            found=found,
            errors=errors,
            receipt=receipt,
            status=422,
        )


async def _admin_payment(
    request: Request,
    *,
    viewer: Viewer,
    pages: Pages,
    session: AsyncSession,
    found: PaymentAttempt,
    errors: FormErrors,
    receipt: str,
    status: int = 200,
) -> Response:
    names = await _names(session, [found])
    return pages.page(
        request,
        viewer,
        "admin_payment.html",
        payment=found,
        client_name=names[found.client_id],
        words=payment_words(viewer.language),
        reason=reason_of(found, viewer.language) if found.reason else "",
        zone=viewer.timezone,
        errors=errors,
        receipt=receipt,
        status=status,
    )
