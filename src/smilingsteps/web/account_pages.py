"""Pages every signed-in person has: account settings (name, phone, time zone, language),
password change, two-step verification (QR code, recovery codes) and signed-in devices."""

from __future__ import annotations

import base64
import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from smilingsteps.accounts import mfa
from smilingsteps.accounts import service as accounts
from smilingsteps.accounts import sessions as signed_in
from smilingsteps.accounts.auth import CookieNames
from smilingsteps.accounts.models import User
from smilingsteps.accounts.schemas import AccountUpdateIn, MfaDisableIn, PasswordChangeIn, TotpConfirmIn
from smilingsteps.platform.dependencies import Client, DbSession, Now, RuntimeDep
from smilingsteps.platform.errors import AppError, NotFoundError
from smilingsteps.platform.i18n import LANGUAGE_NAMES, Language, gettext_in
from smilingsteps.platform.ratelimit.policies import rate_limited
from smilingsteps.platform.timezones import sorted_zone_names
from smilingsteps.web.forms import FormErrors, from_app_error, text, validate
from smilingsteps.web.rendering import Pages
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
from smilingsteps.web.viewer import LANGUAGE_COOKIE, Viewer, ViewerDep, remember, require_user

AUTH = rate_limited("auth")
EMAIL = rate_limited("email")


def _settings_page(
    request: Request,
    viewer: Viewer,
    pages: Pages,
    user: User,
    *,
    values: dict[str, str],
    errors: FormErrors,
    status: int,
) -> Response:
    return pages.page(
        request,
        viewer,
        "account.html",
        account=user,
        values=values,
        errors=errors,
        status=status,
        zones=[(name, name) for name in sorted_zone_names()],
        language_choices=[(item.value, LANGUAGE_NAMES[item]) for item in Language],
    )


def _current_values(user: User) -> dict[str, str]:
    return {"full_name": user.full_name, "phone": user.phone, "timezone": user.timezone, "language": user.language}


def build_pages() -> APIRouter:
    router = page_router()
    _settings(router)
    _password(router)
    _two_step(router)
    _two_step_on(router)
    _devices(router)
    return router


def _settings(router: APIRouter) -> None:
    @router.get("/account")
    async def account(*, request: Request, viewer: ViewerDep, pages: PagesDep) -> Response:
        user = require_user(request, viewer)
        return _settings_page(
            request, viewer, pages, user, values=_current_values(user), errors=FormErrors(), status=200
        )

    @router.post("/account")
    async def save_account(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now, client: Client
    ) -> Response:
        user = require_user(request, viewer)
        data = await posted(request, viewer)
        fields = {name: text(data, name) for name in ("full_name", "phone", "timezone", "language")}
        parsed = validate(AccountUpdateIn, fields, gettext_in(viewer.language))
        if isinstance(parsed, FormErrors):
            return _settings_page(request, viewer, pages, user, values=fields, errors=parsed, status=422)
        updated = await accounts.update_account(session, user.id, parsed, now=now, client=client)
        response = see_other(with_notice("/account", "saved"))
        remember(response, kit_of(request), LANGUAGE_COOKIE, updated.language.value)
        return response

    @router.post("/account/verify-email/resend", openapi_extra=EMAIL)
    async def resend(
        *, request: Request, viewer: ViewerDep, session: DbSession, runtime: RuntimeDep, now: Now
    ) -> Response:
        user = require_user(request, viewer)
        await posted(request, viewer)
        await runtime.limiter.enforce("email", f"to:{user.email}")
        await accounts.resend_verification(session, kit_of(request), user.id, now=now)
        return see_other(with_notice("/account", "verification-sent"))


def _password(router: APIRouter) -> None:
    @router.get("/account/password")
    async def password_form(*, request: Request, viewer: ViewerDep, pages: PagesDep) -> Response:
        require_user(request, viewer)
        return pages.page(request, viewer, "password.html", errors=FormErrors())

    @router.post("/account/password", openapi_extra=AUTH)
    async def change_password(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        runtime: RuntimeDep,
        now: Now,
        client: Client,
    ) -> Response:
        user = require_user(request, viewer)
        assert viewer.principal is not None
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        fields = {"current_password": text(data, "current_password"), "new_password": text(data, "new_password")}
        parsed = validate(PasswordChangeIn, fields, _)
        if isinstance(parsed, PasswordChangeIn):
            change = accounts.change_password(
                session,
                runtime.db,
                kit_of(request),
                user.id,
                viewer.principal.session_id,
                current=parsed.current_password,
                new=parsed.new_password,
                now=now,
                client=client,
            )
            refused = await attempt(session, change)
            if isinstance(refused, AppError):
                errors = from_app_error(refused, _)
                return pages.page(request, viewer, "password.html", errors=errors, status=refused.status)
            return see_other(with_notice("/account", "password-changed"))
        return pages.page(request, viewer, "password.html", errors=parsed, status=422)


def _qr_data_uri(svg: str) -> str:
    """The QR code as an image URL: an inline <svg> could carry style attributes the CSP refuses."""
    if "xmlns=" not in svg.split(">", 1)[0]:
        # An SVG loaded as an image is drawn only with its namespace (inline SVG in HTML needs none).
        svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _two_step(router: APIRouter) -> None:
    @router.get("/account/mfa")
    async def two_step(*, request: Request, viewer: ViewerDep, pages: PagesDep) -> Response:
        user = require_user(request, viewer)
        return pages.page(request, viewer, "mfa.html", account=user, setup=None, errors=FormErrors())

    @router.post("/account/mfa/setup")
    async def start(*, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now) -> Response:
        user = require_user(request, viewer)
        await posted(request, viewer)
        try:
            setup = await undoable(session, mfa.start_totp_enrolment(session, kit_of(request), user.id, now=now))
        except AppError:
            return see_other("/account/mfa")  # already on (another tab): the page shows it
        return _setup_page(
            request,
            viewer,
            pages,
            user,
            secret=setup.secret,
            image=_qr_data_uri(setup.svg),
            errors=FormErrors(),
            status=200,
        )

    @router.post("/account/mfa/confirm", openapi_extra=AUTH)
    async def confirm(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now, client: Client
    ) -> Response:
        user = require_user(request, viewer)
        assert viewer.principal is not None
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        parsed = validate(TotpConfirmIn, {"code": text(data, "code").replace(" ", "")}, _)
        secret, image = text(data, "secret")[:64], text(data, "qr")[:20000]
        if isinstance(parsed, FormErrors):
            return _setup_page(request, viewer, pages, user, secret=secret, image=image, errors=parsed, status=422)
        kit = kit_of(request)
        enrol = mfa.confirm_totp_enrolment(
            session, kit, user.id, viewer.principal.session_id, parsed.code, now=now, client=client
        )
        codes = await attempt(session, enrol)
        if isinstance(codes, AppError):
            errors = from_app_error(codes, _)
            return _setup_page(
                request, viewer, pages, user, secret=secret, image=image, errors=errors, status=codes.status
            )
        response = pages.page(request, viewer, "recovery_codes.html", codes=codes, enabled_now=True)
        # The access cookie still says "no second factor": dropping it makes the next page refresh the
        # session in-process, and the new token carries what this session now is.
        response.delete_cookie(CookieNames.for_kit(kit).access, path="/", secure=kit.secure_cookies, httponly=True)
        return response


def _two_step_on(router: APIRouter) -> None:
    """While two-step verification is on: new recovery codes, or turning it off (not for admins)."""

    @router.post("/account/mfa/recovery-codes", openapi_extra=AUTH)
    async def new_codes(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        runtime: RuntimeDep,
        now: Now,
        client: Client,
    ) -> Response:
        user = require_user(request, viewer)
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        parsed = validate(TotpConfirmIn, {"code": text(data, "code").replace(" ", "")}, _)
        if isinstance(parsed, TotpConfirmIn):
            work = mfa.regenerate_recovery_codes(
                session, runtime.db, kit_of(request), user.id, parsed.code, now=now, client=client
            )
            codes = await attempt(session, work)
            if isinstance(codes, AppError):
                errors = from_app_error(codes, _)
                return pages.page(request, viewer, "mfa.html", account=user, setup=None, errors=errors, status=422)
            return pages.page(request, viewer, "recovery_codes.html", codes=codes, enabled_now=False)
        return pages.page(request, viewer, "mfa.html", account=user, setup=None, errors=parsed, status=422)

    @router.post("/account/mfa/disable", openapi_extra=AUTH)
    async def disable(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        runtime: RuntimeDep,
        now: Now,
        client: Client,
    ) -> Response:
        user = require_user(request, viewer)
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        fields = {"password": text(data, "password"), "code": text(data, "code").replace(" ", "")}
        parsed = validate(MfaDisableIn, fields, _)
        if isinstance(parsed, MfaDisableIn):
            work = mfa.disable_mfa(
                session,
                runtime.db,
                kit_of(request),
                user.id,
                password=parsed.password,
                code=parsed.code,
                now=now,
                client=client,
            )
            refused = await attempt(session, work)
            if isinstance(refused, AppError):
                errors = from_app_error(refused, _)
                return pages.page(request, viewer, "mfa.html", account=user, setup=None, errors=errors, status=422)
            return see_other(with_notice("/account/mfa", "mfa-disabled"))
        return pages.page(request, viewer, "mfa.html", account=user, setup=None, errors=parsed, status=422)


def _setup_page(
    request: Request,
    viewer: Viewer,
    pages: Pages,
    user: User,
    *,
    secret: str,
    image: str,
    errors: FormErrors,
    status: int,
) -> Response:
    setup = {"secret": secret, "qr": image if image.startswith("data:image/svg+xml;base64,") else ""}
    return pages.page(request, viewer, "mfa.html", account=user, setup=setup, errors=errors, status=status)


def _devices(router: APIRouter) -> None:
    @router.get("/account/sessions")
    async def devices(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now
    ) -> Response:
        user = require_user(request, viewer)
        assert viewer.principal is not None
        found = await signed_in.list_sessions(session, user.id, now=now)
        return pages.page(request, viewer, "sessions.html", devices=found, current=viewer.principal.session_id)

    @router.post("/account/sessions/{session_id}/revoke")
    async def revoke(
        *, request: Request, viewer: ViewerDep, session: DbSession, now: Now, client: Client, session_id: str
    ) -> Response:
        user = require_user(request, viewer)
        await posted(request, viewer)
        try:
            target = uuid.UUID(session_id)
        except ValueError:
            raise NotFoundError("No such active session.") from None
        await signed_in.revoke_session(session, kit_of(request), user.id, target, now=now, client=client)
        current = viewer.principal is not None and viewer.principal.session_id == target
        return see_other(
            with_notice("/", "signed-out") if current else with_notice("/account/sessions", "session-revoked")
        )
