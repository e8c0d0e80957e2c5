"""Accounts HTTP: parse, authorise, one service call, shape the answer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from smilingsteps.accounts import mfa, service, signin
from smilingsteps.accounts import sessions as signed_in
from smilingsteps.accounts.auth import (
    CSRF_HEADER,
    AuthKitDep,
    CookieNames,
    CurrentUser,
    clear_session_cookies,
    origin_allowed,
    set_session_cookies,
)
from smilingsteps.accounts.errors import CsrfError, InvalidRefreshTokenError
from smilingsteps.accounts.models import AuthSession, Role
from smilingsteps.accounts.schemas import (
    AccountUpdateIn,
    LoginIn,
    LoginOut,
    MfaDisableIn,
    MfaLoginIn,
    PasswordChangeIn,
    PasswordResetConfirmIn,
    PasswordResetRequestIn,
    RecoveryCodesOut,
    RefreshIn,
    RegisterIn,
    RegistrationAccepted,
    SessionOut,
    TokenIn,
    TotpConfirmIn,
    TotpSetupOut,
    UserOut,
    lookup_email,
)
from smilingsteps.platform.dependencies import Client, DbSession, Now, RuntimeDep
from smilingsteps.platform.openapi import problems
from smilingsteps.platform.ratelimit.policies import rate_limited
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.platform.security_events import security_event

AUTH = rate_limited("auth")  # guessing: failed attempts count, a success is given back
EMAIL = rate_limited("email")  # requests that send an email


def _session_out(auth_session: AuthSession, current: uuid.UUID) -> SessionOut:
    return SessionOut(
        id=auth_session.id,
        device=auth_session.user_agent or "unknown device",
        ip=auth_session.ip,
        created_at=auth_session.created_at,
        last_seen_at=auth_session.last_seen_at,
        expires_at=auth_session.expires_at,
        current=auth_session.id == current,
    )


def _refuse_foreign_origin(request: Request, kit: AuthKitDep) -> None:
    """Browsers send Origin; a sign-in form posted from another site is login CSRF."""
    if "origin" in request.headers and not origin_allowed(request, kit.settings.origins):
        security_event(request, "csrf_origin")
        raise CsrfError("The request's Origin is not allowed.")


async def _spend_email_quota(runtime: RuntimeDep, to: str) -> None:
    """The email class per recipient, as the middleware counts it per sender: one address gets at
    most RATE_LIMIT_EMAIL messages a window, however many addresses ask (existing account or not)."""
    await runtime.limiter.enforce("email", f"to:{lookup_email(to)}")


def _signed_in(
    issued: signed_in.IssuedSession, response: Response, kit: AuthKitDep, now: Now, *, native: bool
) -> LoginOut:
    if not native:
        set_session_cookies(response, kit, issued, now)
    response.headers["Cache-Control"] = "no-store"
    return LoginOut(
        user=UserOut.of(issued.user),
        session_id=issued.session_id,
        access_token=issued.access_token,
        access_expires_at=issued.access_expires_at,
        csrf_token=None if native else issued.csrf_token,
        refresh_token=issued.refresh_token if native else None,
        mfa_enrolment_required=issued.user.role == Role.ADMIN and not issued.mfa_verified,
    )


def build_router() -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["accounts"])

    @router.post(
        "/auth/register",
        status_code=status.HTTP_201_CREATED,
        openapi_extra=EMAIL,
        responses={
            **problems(403, 409),
            202: {
                "model": RegistrationAccepted,
                "description": "With REGISTRATION_HIDES_ACCOUNTS (on when deployed): the same answer for a new "
                "address and for one that already has an account, which is emailed instead.",
            },
        },
    )
    async def register(
        *,
        body: RegisterIn,
        request: Request,
        response: Response,
        session: DbSession,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> UserOut | RegistrationAccepted:
        _refuse_foreign_origin(request, kit)
        await _spend_email_quota(runtime, body.email)
        if kit.settings.registration_hides_accounts:
            await service.register_quietly(session, kit, body, now=now, client=client)
            response.status_code = status.HTTP_202_ACCEPTED
            return RegistrationAccepted()
        return UserOut.of(await service.register(session, kit, body, now=now, client=client))

    @router.post("/auth/login", openapi_extra=AUTH, responses=problems(401, 403))
    async def login(
        *,
        body: LoginIn,
        request: Request,
        response: Response,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> LoginOut:
        _refuse_foreign_origin(request, kit)
        outcome = await signin.login(runtime.db, kit, email=body.email, password=body.password, now=now, client=client)
        if isinstance(outcome, signin.MfaChallenge):
            response.headers["Cache-Control"] = "no-store"
            return LoginOut(mfa_required=True, mfa_token=outcome.mfa_token)
        return _signed_in(outcome, response, kit, now, native=body.client == "native")

    @router.post("/auth/login/mfa", openapi_extra=AUTH, responses=problems(401, 403))
    async def login_mfa(
        *,
        body: MfaLoginIn,
        request: Request,
        response: Response,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> LoginOut:
        _refuse_foreign_origin(request, kit)
        issued = await signin.complete_mfa_login(
            runtime.db,
            kit,
            mfa_token=body.mfa_token,
            code=body.code,
            recovery_code=body.recovery_code,
            now=now,
            client=client,
        )
        return _signed_in(issued, response, kit, now, native=body.client == "native")

    @router.post("/auth/refresh", responses=problems(401, 403))
    async def refresh(
        *,
        request: Request,
        response: Response,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
        body: RefreshIn | None = None,
    ) -> LoginOut:
        if body is not None and body.refresh_token is not None:
            issued = await signed_in.refresh(runtime.db, kit, body.refresh_token, now=now, client=client)
            return _signed_in(issued, response, kit, now, native=True)
        names = CookieNames.for_kit(kit)
        token = request.cookies.get(names.refresh)
        if not token:
            raise InvalidRefreshTokenError("No session; sign in.")
        header = request.headers.get(CSRF_HEADER)
        if not header or header != request.cookies.get(names.csrf) or not origin_allowed(request, kit.settings.origins):
            security_event(request, "csrf_token")
            raise CsrfError()

        def csrf_bound(session_id: uuid.UUID) -> bool:
            if kit.codec.csrf_valid(header, session_id):
                return True
            security_event(request, "csrf_token")
            return False

        issued = await signed_in.refresh(runtime.db, kit, token, now=now, client=client, csrf_ok=csrf_bound)
        return _signed_in(issued, response, kit, now, native=False)

    @router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
    async def logout(
        *, user: CurrentUser, response: Response, session: DbSession, kit: AuthKitDep, now: Now, client: Client
    ) -> None:
        await signed_in.logout(session, kit, user.user_id, user.session_id, now=now, client=client)
        clear_session_cookies(response, kit)

    @router.get("/auth/sessions")
    async def sessions(user: CurrentUser, session: DbSession, now: Now) -> list[SessionOut]:
        found = await signed_in.list_sessions(session, user.user_id, now=now)
        return [_session_out(item, user.session_id) for item in found]

    @router.delete("/auth/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def revoke_session(
        *, session_id: uuid.UUID, user: CurrentUser, session: DbSession, kit: AuthKitDep, now: Now, client: Client
    ) -> None:
        await signed_in.revoke_session(session, kit, user.user_id, session_id, now=now, client=client)

    _email_and_password_routes(router)
    _mfa_routes(router)
    _account_routes(router)
    return router


def _email_and_password_routes(router: APIRouter) -> None:
    @router.post("/auth/verify-email", openapi_extra=AUTH, responses=problems(400))
    async def verify_email(body: TokenIn, session: DbSession, now: Now, client: Client) -> UserOut:
        return UserOut.of(await service.verify_email(session, body.token, now=now, client=client))

    @router.post(
        "/auth/verify-email/resend",
        status_code=status.HTTP_202_ACCEPTED,
        openapi_extra=EMAIL,
        response_class=Response,
        responses={202: {"description": "A new link is on its way (unless the address is verified already)."}},
    )
    async def resend_verification(user: CurrentUser, session: DbSession, kit: AuthKitDep, now: Now) -> Response:
        await service.resend_verification(session, kit, user.user_id, now=now)
        return Response(status_code=status.HTTP_202_ACCEPTED)

    @router.post(
        "/auth/password-reset/request",
        status_code=status.HTTP_202_ACCEPTED,
        openapi_extra=EMAIL,
        response_class=Response,
        responses={
            **problems(403),
            202: {"description": "If an active account has this address, a reset link is on its way."},
        },
    )
    async def password_reset_request(
        *,
        body: PasswordResetRequestIn,
        request: Request,
        background: BackgroundTasks,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> Response:
        _refuse_foreign_origin(request, kit)
        await _spend_email_quota(runtime, body.email)
        # The work happens after the answer, so an existing account cannot be
        # told from a missing one by how long the 202 takes.
        background.add_task(service.send_password_reset, runtime.db, kit, body.email, now=now, client=client)
        return Response(status_code=status.HTTP_202_ACCEPTED)

    @router.post(
        "/auth/password-reset/confirm",
        status_code=status.HTTP_204_NO_CONTENT,
        openapi_extra=AUTH,
        responses=problems(400, 403),
    )
    async def password_reset_confirm(
        *,
        body: PasswordResetConfirmIn,
        request: Request,
        response: Response,
        session: DbSession,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> None:
        _refuse_foreign_origin(request, kit)
        await service.confirm_password_reset(session, kit, body.token, body.new_password, now=now, client=client)
        clear_session_cookies(response, kit)

    @router.post("/auth/password/change", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=AUTH)
    async def change_password(
        *,
        body: PasswordChangeIn,
        user: CurrentUser,
        session: DbSession,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> None:
        await service.change_password(
            session,
            runtime.db,
            kit,
            user.user_id,
            user.session_id,
            current=body.current_password,
            new=body.new_password,
            now=now,
            client=client,
        )


def _mfa_routes(router: APIRouter) -> None:
    @router.post("/auth/mfa/totp/setup", responses=problems(409))
    async def totp_setup(
        *, user: CurrentUser, response: Response, session: DbSession, kit: AuthKitDep, now: Now
    ) -> TotpSetupOut:
        setup = await mfa.start_totp_enrolment(session, kit, user.user_id, now=now)
        response.headers["Cache-Control"] = "no-store"
        return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.uri, qr_svg=setup.svg)

    @router.post("/auth/mfa/totp/confirm", openapi_extra=AUTH, responses=problems(409))
    async def totp_confirm(
        *,
        body: TotpConfirmIn,
        user: CurrentUser,
        response: Response,
        session: DbSession,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> RecoveryCodesOut:
        codes = await mfa.confirm_totp_enrolment(
            session, kit, user.user_id, user.session_id, body.code, now=now, client=client
        )
        response.headers["Cache-Control"] = "no-store"
        return RecoveryCodesOut(recovery_codes=codes)

    @router.post(
        "/auth/mfa/disable", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=AUTH, responses=problems(409)
    )
    async def mfa_disable(
        *,
        body: MfaDisableIn,
        user: CurrentUser,
        session: DbSession,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> None:
        await mfa.disable_mfa(
            session, runtime.db, kit, user.user_id, password=body.password, code=body.code, now=now, client=client
        )

    @router.post("/auth/mfa/recovery-codes", openapi_extra=AUTH, responses=problems(409))
    async def recovery_codes(
        *,
        body: TotpConfirmIn,
        user: CurrentUser,
        response: Response,
        session: DbSession,
        runtime: RuntimeDep,
        kit: AuthKitDep,
        now: Now,
        client: Client,
    ) -> RecoveryCodesOut:
        codes = await mfa.regenerate_recovery_codes(
            session, runtime.db, kit, user.user_id, body.code, now=now, client=client
        )
        response.headers["Cache-Control"] = "no-store"
        return RecoveryCodesOut(recovery_codes=codes)


def _account_routes(router: APIRouter) -> None:
    @router.get("/users/me")
    async def me(user: CurrentUser, session: DbSession) -> UserOut:
        return UserOut.of(await service.get_user(session, user.user_id))

    @router.patch("/users/me")
    async def update_me(
        body: AccountUpdateIn, user: CurrentUser, session: DbSession, now: Now, client: Client
    ) -> UserOut:
        return UserOut.of(await service.update_account(session, user.user_id, body, now=now, client=client))
