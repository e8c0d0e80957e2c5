"""Pages to get in: sign up, verify the email address, sign in (with the MFA step), reset a
forgotten password, sign out. Each calls the same accounts services the API does.

Refusals answer with the status the API would give (401 for a wrong password, 429 while
locked…), with the form again and the reason on it: the rate limiter gives successes
back in the `auth` class, so a failure must not look like one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from starlette.responses import Response

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts import sessions, signin
from smilingsteps.accounts.auth import clear_session_cookies, set_session_cookies
from smilingsteps.accounts.errors import InvalidEmailTokenError, InvalidMfaChallengeError
from smilingsteps.accounts.models import Role
from smilingsteps.accounts.schemas import (
    LoginIn,
    MfaLoginIn,
    PasswordResetConfirmIn,
    PasswordResetRequestIn,
    RegisterIn,
    TokenIn,
    lookup_email,
)
from smilingsteps.accounts.sessions import IssuedSession
from smilingsteps.platform.dependencies import Client, DbSession, Now, RuntimeDep
from smilingsteps.platform.errors import AppError
from smilingsteps.platform.i18n import gettext_in
from smilingsteps.platform.ratelimit.policies import rate_limited
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
from smilingsteps.web.viewer import LANGUAGE_COOKIE, Viewer, ViewerDep, remember, safe_next

AUTH = rate_limited("auth")
EMAIL = rate_limited("email")


def home_of(role: Role) -> str:
    """Where a person lands after signing in."""
    return {Role.CLIENT: "/bookings", Role.THERAPIST: "/practice", Role.ADMIN: "/admin"}[role]


def _signed_in(request: Request, viewer: Viewer, issued: IssuedSession, now: Any, target: str | None) -> Response:
    kit = kit_of(request)
    user = issued.user
    if user.role is Role.ADMIN and not issued.mfa_verified:
        target = "/account/mfa"  # administrators must enrol before anything else
    response = see_other(safe_next(target, home_of(user.role)))
    viewer.drop_pending()  # a refresh the page began, or its failure, must not touch the new session's cookies
    set_session_cookies(response, kit, issued, now)
    remember(response, kit, LANGUAGE_COOKIE, user.language.value)
    return response


def build_pages() -> APIRouter:
    router = page_router()
    _sign_up(router)
    _sign_in(router)
    _password_reset(router)
    return router


def _sign_up(router: APIRouter) -> None:
    @router.get("/sign-up")
    async def sign_up_form(*, request: Request, viewer: ViewerDep, pages: PagesDep, role: str = "client") -> Response:
        chosen = "therapist" if role == "therapist" else "client"
        return pages.page(request, viewer, "sign_up.html", values={"role": chosen}, errors=FormErrors())

    @router.post("/sign-up", openapi_extra=EMAIL)
    async def sign_up(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        runtime: RuntimeDep,
        now: Now,
        client: Client,
    ) -> Response:
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        form = {**data, "language": viewer.language.value}
        if text(data, "terms") != "yes":
            form.pop("terms", None)
        parsed = validate(RegisterIn, {k: v for k, v in form.items() if k != "terms"}, _, drop_empty=True)
        errors = parsed if isinstance(parsed, FormErrors) else FormErrors()
        if text(data, "terms") != "yes":
            errors.add("terms", _("Please confirm you have read the privacy notice."))
        if errors or isinstance(parsed, FormErrors):
            return _sign_up_again(request, viewer, pages, data, errors)
        kit = kit_of(request)
        await runtime.limiter.enforce("email", f"to:{lookup_email(parsed.email)}")
        register = accounts.register_quietly if kit.settings.registration_hides_accounts else accounts.register
        refused = await attempt(session, register(session, kit, parsed, now=now, client=client))
        if isinstance(refused, AppError):
            return _sign_up_again(request, viewer, pages, data, from_app_error(refused, _), status=refused.status)
        return see_other("/sign-up/check-email")

    @router.get("/sign-up/check-email")
    async def check_email(*, request: Request, viewer: ViewerDep, pages: PagesDep) -> Response:
        return pages.page(request, viewer, "check_email.html")

    @router.get("/verify-email")
    async def verify_form(*, request: Request, viewer: ViewerDep, pages: PagesDep, token: str = "") -> Response:
        # A button, not the GET itself: mail scanners open links, and would spend the token.
        return pages.page(request, viewer, "verify_email.html", token=token[:512], verified=False, failed=False)

    @router.post("/verify-email", openapi_extra=AUTH)
    async def verify(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now, client: Client
    ) -> Response:
        data = await posted(request, viewer)
        parsed = validate(TokenIn, {"token": text(data, "token")}, gettext_in(viewer.language))
        verified = False
        if isinstance(parsed, TokenIn):
            try:
                await undoable(session, accounts.verify_email(session, parsed.token, now=now, client=client))
                verified = True
            except AppError:
                verified = False  # invalid, expired or spent: the page offers a new link
        return pages.page(
            request,
            viewer,
            "verify_email.html",
            token="",
            verified=verified,
            failed=not verified,
            status=200 if verified else 400,
        )


def _sign_up_again(
    request: Request, viewer: Viewer, pages: Pages, data: dict[str, Any], errors: FormErrors, *, status: int = 422
) -> Response:
    """The form again with what was typed (never the password) and what is wrong."""
    values = {key: value for key, value in data.items() if "password" not in key and key != "csrf_token"}
    return pages.page(request, viewer, "sign_up.html", values=values, errors=errors, status=status)


def _sign_in(router: APIRouter) -> None:
    @router.get("/sign-in")
    async def sign_in_form(*, request: Request, viewer: ViewerDep, pages: PagesDep, next: str = "") -> Response:
        if viewer.user is not None:
            return see_other(safe_next(next, home_of(viewer.user.role)))
        return pages.page(request, viewer, "sign_in.html", values={}, errors=FormErrors(), next=safe_next(next, ""))

    @router.post("/sign-in", openapi_extra=AUTH)
    async def sign_in(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, runtime: RuntimeDep, now: Now, client: Client
    ) -> Response:
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        target = safe_next(text(data, "next"), "")
        values = {"email": text(data, "email")[:254]}
        parsed = validate(LoginIn, {"email": text(data, "email"), "password": text(data, "password")}, _)
        if isinstance(parsed, FormErrors):
            return pages.page(request, viewer, "sign_in.html", values=values, errors=parsed, next=target, status=422)
        kit = kit_of(request)
        try:
            outcome = await signin.login(
                runtime.db, kit, email=parsed.email, password=parsed.password, now=now, client=client
            )
        except AppError as error:
            errors = FormErrors(general=[_(error.detail)])
            return pages.page(
                request,
                viewer,
                "sign_in.html",
                values=values,
                errors=errors,
                next=target,
                status=error.status,
                headers=error.headers,
            )
        if isinstance(outcome, signin.MfaChallenge):
            return pages.page(
                request, viewer, "sign_in_mfa.html", mfa_token=outcome.mfa_token, errors=FormErrors(), next=target
            )
        return _signed_in(request, viewer, outcome, now, target)

    @router.post("/sign-in/mfa", openapi_extra=AUTH)
    async def sign_in_mfa(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, runtime: RuntimeDep, now: Now, client: Client
    ) -> Response:
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        target = safe_next(text(data, "next"), "")
        code = text(data, "code").replace(" ", "")
        recovery = text(data, "recovery_code").strip()
        fields = {"mfa_token": text(data, "mfa_token")}
        # Exactly one second factor: the recovery code when one was typed, else the app's code.
        fields.update({"recovery_code": recovery} if recovery else {"code": code})
        parsed = validate(MfaLoginIn, fields, _)
        if isinstance(parsed, MfaLoginIn):
            try:
                issued = await signin.complete_mfa_login(
                    runtime.db,
                    kit_of(request),
                    mfa_token=parsed.mfa_token,
                    code=parsed.code,
                    recovery_code=parsed.recovery_code,
                    now=now,
                    client=client,
                )
            except AppError as error:
                if isinstance(error, InvalidMfaChallengeError):
                    return see_other(with_notice("/sign-in", "mfa-expired"))
                return pages.page(
                    request,
                    viewer,
                    "sign_in_mfa.html",
                    mfa_token=parsed.mfa_token,
                    next=target,
                    errors=FormErrors(general=[_(error.detail)]),
                    status=error.status,
                    headers=error.headers,
                )
            return _signed_in(request, viewer, issued, now, target)
        return pages.page(
            request, viewer, "sign_in_mfa.html", mfa_token=fields["mfa_token"], next=target, errors=parsed, status=422
        )

    @router.post("/sign-out")
    async def sign_out(
        *, request: Request, viewer: ViewerDep, session: DbSession, now: Now, client: Client
    ) -> Response:
        await posted(request, viewer)
        response = see_other(with_notice("/", "signed-out"))
        viewer.drop_pending()
        if viewer.principal is not None:
            principal = viewer.principal
            await sessions.logout(
                session, kit_of(request), principal.user_id, principal.session_id, now=now, client=client
            )
        clear_session_cookies(response, kit_of(request))
        return response


def _password_reset(router: APIRouter) -> None:
    @router.get("/reset-password")
    async def reset_form(*, request: Request, viewer: ViewerDep, pages: PagesDep, token: str = "") -> Response:
        template = "reset_confirm.html" if token else "reset_request.html"
        return pages.page(request, viewer, template, token=token[:512], values={}, errors=FormErrors())

    @router.post("/reset-password", openapi_extra=EMAIL)
    async def reset_request(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        runtime: RuntimeDep,
        background: BackgroundTasks,
        now: Now,
        client: Client,
    ) -> Response:
        data = await posted(request, viewer)
        parsed = validate(PasswordResetRequestIn, {"email": text(data, "email")}, gettext_in(viewer.language))
        if isinstance(parsed, FormErrors):
            values = {"email": text(data, "email")[:254]}
            return pages.page(request, viewer, "reset_request.html", token="", values=values, errors=parsed, status=422)
        await runtime.limiter.enforce("email", f"to:{lookup_email(parsed.email)}")
        # After the answer, as the API does: the time taken must not tell whether the account exists.
        background.add_task(
            accounts.send_password_reset, runtime.db, kit_of(request), parsed.email, now=now, client=client
        )
        return see_other(with_notice("/reset-password", "reset-sent"))

    @router.post("/reset-password/confirm", openapi_extra=AUTH)
    async def reset_confirm(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now, client: Client
    ) -> Response:
        data = await posted(request, viewer)
        _ = gettext_in(viewer.language)
        token = text(data, "token")
        fields = {"token": token, "new_password": text(data, "new_password")}
        parsed = validate(PasswordResetConfirmIn, fields, _)
        if isinstance(parsed, FormErrors):
            if "token" in parsed.fields:
                return see_other(with_notice("/reset-password", "reset-link-invalid"))
            return pages.page(request, viewer, "reset_confirm.html", token=token, values={}, errors=parsed, status=422)
        kit = kit_of(request)
        try:
            reset = accounts.confirm_password_reset(
                session, kit, parsed.token, parsed.new_password, now=now, client=client
            )
            await undoable(session, reset)
        except AppError as error:
            if isinstance(error, InvalidEmailTokenError):
                return see_other(with_notice("/reset-password", "reset-link-invalid"))
            errors = from_app_error(error, _)
            # The policy names the field `password`; this form calls it `new_password`.
            errors.fields = {"new_password": next(iter(errors.fields.values()))} if errors.fields else {}
            return pages.page(
                request, viewer, "reset_confirm.html", token=token, values={}, errors=errors, status=error.status
            )
        response = see_other(with_notice("/sign-in", "password-reset"))
        viewer.drop_pending()
        clear_session_cookies(response, kit)
        return response
