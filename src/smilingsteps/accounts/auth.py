"""Who is asking: typed dependencies every router uses, cookies and CSRF.

`CurrentUser` accepts an access token from `Authorization: Bearer` or from the
access cookie. Cookie-authenticated unsafe requests must also carry the CSRF
token (header equal to the CSRF cookie, bound to the session) and come from an
allowed Origin (or Referer). The checks need no database round trip: the
token is verified locally and revocation is an in-memory lookup.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from starlette.requests import cookie_parser
from starlette.types import Scope

from smilingsteps.accounts.errors import (
    CsrfError,
    EmailNotVerifiedError,
    InvalidAccessTokenError,
    MfaRequiredError,
    NotAuthenticatedError,
    RoleRequiredError,
)
from smilingsteps.accounts.models import Role
from smilingsteps.accounts.security import AuthKit, auth_kit_of
from smilingsteps.accounts.sessions import IssuedSession
from smilingsteps.accounts.tokens import InvalidTokenError
from smilingsteps.platform.runtime import runtime_of
from smilingsteps.platform.security_events import security_event

# Dependencies here are `async def` on purpose: a plain `def` dependency runs in
# a worker thread, and that hop costs more than the whole check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class CookieNames:
    access: str
    refresh: str
    csrf: str

    @classmethod
    def for_kit(cls, kit: AuthKit) -> CookieNames:
        # __Host- binds a cookie to this exact host over HTTPS with Path=/ (no
        # sibling subdomain can set or shadow it); it requires Secure.
        prefix = "__Host-" if kit.secure_cookies else ""
        return cls(access=f"{prefix}ss_access", refresh=f"{prefix}ss_refresh", csrf=f"{prefix}ss_csrf")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, from a verified access token."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    role: Role
    email_verified: bool
    mfa: bool


async def auth_kit(request: Request) -> AuthKit:
    return auth_kit_of(runtime_of(request))


AuthKitDep = Annotated[AuthKit, Depends(auth_kit)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        security_event(request, "malformed_authorization")
        raise InvalidAccessTokenError("Use 'Authorization: Bearer <access token>'.")
    return token.strip()


def origin_allowed(request: Request, allowed: list[str]) -> bool:
    """The request's Origin, or failing that its Referer's origin, is one we serve."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.rstrip("/") in allowed


def check_csrf(request: Request, kit: AuthKit, session_id: uuid.UUID, user_id: uuid.UUID | None = None) -> None:
    names = CookieNames.for_kit(kit)
    header = request.headers.get(CSRF_HEADER)
    cookie = request.cookies.get(names.csrf)
    if not header or not cookie or header != cookie or not kit.codec.csrf_valid(header, session_id):
        security_event(request, "csrf_token", user_id=user_id)
        raise CsrfError("Send the X-CSRF-Token header with the value of the CSRF cookie.")
    if not origin_allowed(request, kit.settings.origins):
        security_event(request, "csrf_origin", user_id=user_id)
        raise CsrfError("The request's Origin is not allowed.")


def rate_limit_identity(kit: AuthKit, now: Callable[[], datetime]) -> Callable[[Scope], str | None]:
    """For the rate limiter: the signed-in user's id, so limits follow the account, not the address."""
    names = CookieNames.for_kit(kit)

    def identify(scope: Scope) -> str | None:
        token = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                token = rest.strip() if scheme.lower() == "bearer" else None
                break
            if name == b"cookie" and token is None:
                token = cookie_parser(value.decode("latin-1")).get(names.access)
        if not token:
            return None
        try:
            # The codec keeps verified tokens, so the dependency's own decode of this one is a lookup.
            claims = kit.codec.decode_access(token, now=now())
        except InvalidTokenError:
            return None
        return None if claims.session_id in kit.revoked else str(claims.user_id)

    return identify


def authenticate(request: Request, kit: AuthKit) -> Principal:
    bearer = _bearer(request)
    token = bearer or request.cookies.get(CookieNames.for_kit(kit).access)
    if not token:
        raise NotAuthenticatedError()
    try:
        claims = kit.codec.decode_access(token, now=runtime_of(request).now())
    except InvalidTokenError as exc:
        security_event(request, "expired_token" if str(exc) == "expired" else "invalid_token")
        raise InvalidAccessTokenError() from None
    if claims.session_id in kit.revoked:
        security_event(request, "revoked_session", user_id=claims.user_id)
        raise InvalidAccessTokenError()
    if bearer is None and request.method not in SAFE_METHODS:
        check_csrf(request, kit, claims.session_id, claims.user_id)
    try:
        role = Role(claims.role)
    except ValueError:
        security_event(request, "invalid_token", user_id=claims.user_id)
        raise InvalidAccessTokenError() from None
    return Principal(
        user_id=claims.user_id,
        session_id=claims.session_id,
        role=role,
        email_verified=claims.email_verified,
        mfa=claims.mfa,
    )


def is_admin_request(request: Request, kit: AuthKit) -> bool:
    """Whether the request comes from an MFA-signed-in administrator; never raises, never logs
    (for pages that show more to admins, such as /health's details)."""
    token = request.cookies.get(CookieNames.for_kit(kit).access)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    if not token:
        return False
    try:
        claims = kit.codec.decode_access(token, now=runtime_of(request).now())
    except InvalidTokenError:
        return False
    return claims.role == Role.ADMIN and claims.mfa and claims.session_id not in kit.revoked


async def current_user(request: Request, kit: AuthKitDep) -> Principal:
    return authenticate(request, kit)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def verified_user(user: CurrentUser) -> Principal:
    if not user.email_verified:
        raise EmailNotVerifiedError()
    return user


VerifiedUser = Annotated[Principal, Depends(verified_user)]


async def therapist_user(request: Request, user: VerifiedUser) -> Principal:
    """A verified therapist; whether they are approved is checked where it matters (bookings)."""
    if user.role is not Role.THERAPIST:
        security_event(request, "role_required", user_id=user.user_id)
        raise RoleRequiredError("This is for therapists.")
    return user


TherapistUser = Annotated[Principal, Depends(therapist_user)]


async def admin_user(request: Request, user: CurrentUser) -> Principal:
    """An administrator whose session was signed in with a second factor."""
    if user.role is not Role.ADMIN:
        security_event(request, "role_required", user_id=user.user_id)
        raise RoleRequiredError("This is for administrators.")
    if not user.mfa:
        security_event(request, "mfa_required", user_id=user.user_id)
        raise MfaRequiredError()
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


# ---- cookies ------------------------------------------------------------------------


def set_session_cookies(response: Response, kit: AuthKit, issued: IssuedSession, now: datetime) -> None:
    names = CookieNames.for_kit(kit)
    secure = kit.secure_cookies
    access_age = max(1, int((issued.access_expires_at - now).total_seconds()))
    session_age = max(1, int((issued.session_expires_at - now).total_seconds()))
    response.set_cookie(
        names.access, issued.access_token, max_age=access_age, path="/", secure=secure, httponly=True, samesite="lax"
    )
    # Strict: the refresh cookie is never sent on a request another site started.
    response.set_cookie(
        names.refresh,
        issued.refresh_token,
        max_age=session_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    # Readable by our own scripts, which echo it in X-CSRF-Token.
    response.set_cookie(
        names.csrf, issued.csrf_token, max_age=session_age, path="/", secure=secure, httponly=False, samesite="strict"
    )


def clear_session_cookies(response: Response, kit: AuthKit) -> None:
    names = CookieNames.for_kit(kit)
    for name in (names.access, names.refresh, names.csrf):
        response.delete_cookie(name, path="/", secure=kit.secure_cookies, httponly=name != names.csrf)
