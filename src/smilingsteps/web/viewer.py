"""Who is looking at a page: the same session cookies as the API, refreshed in-process, and forms' CSRF.

A page reads the access cookie like the API does. When it has expired but the refresh
cookie is there, the page rotates it in-process (the same `sessions.refresh` the API
uses) and sends the new cookies with the answer, so a person is not signed out every
15 minutes; an idle, expired, revoked or suspended session ends here exactly as it does
in the API, and a page that needs a signed-in person sends them to sign in and back.

Forms carry a CSRF token bound to the signed-in session, or before sign-in to a random
pre-session id in its own cookie, and must come from one of our origins.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.responses import Response

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts import sessions
from smilingsteps.accounts.auth import (
    AuthKitDep,
    CookieNames,
    Principal,
    clear_session_cookies,
    origin_allowed,
    set_session_cookies,
)
from smilingsteps.accounts.models import AccountStatus, Role, User
from smilingsteps.accounts.security import AuthKit
from smilingsteps.accounts.tokens import InvalidTokenError
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.dependencies import Client, DbSession, Now
from smilingsteps.platform.errors import AppError, ForbiddenError
from smilingsteps.platform.i18n import Language, language_or_none, negotiate
from smilingsteps.platform.runtime import runtime_of
from smilingsteps.platform.security_events import security_event
from smilingsteps.platform.timezones import is_iana_zone

LANGUAGE_COOKIE = "ss_lang"
ZONE_COOKIE = "ss_tz"
FORM_COOKIE = "ss_form"
DEFAULT_ZONE = "Africa/Nairobi"
PREFERENCE_AGE = 365 * 86400
CSRF_FIELD = "csrf_token"


class Redirect(Exception):  # noqa: N818 (not an error: a page's answer)
    """Raised by a page (or a check it calls) to answer with a 303 to `location`."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class FormExpiredError(AppError):
    status, slug, title = 403, "form-expired", "Form expired"
    default_detail = "This form has expired. Please try again."


@dataclass
class Viewer:
    """The person (or visitor) a page is for, and what the answer must carry back (cookies)."""

    language: Language
    timezone: str
    csrf_token: str
    binding: uuid.UUID  # what the CSRF token is bound to: the session, or the pre-session cookie
    principal: Principal | None = None
    user: User | None = None
    _cookies: list[Callable[[Response], None]] = field(default_factory=list)

    @property
    def principal_id(self) -> uuid.UUID | None:
        return self.user.id if self.user is not None else None

    @property
    def signed_in(self) -> bool:
        return self.user is not None

    def later(self, action: Callable[[Response], None]) -> None:
        """Something to do to the answer (a cookie), whatever the page answers."""
        self._cookies.append(action)

    def drop_pending(self) -> None:
        """For a page that sets or clears the session cookies itself: nothing else may touch them after."""
        self._cookies.clear()

    def finish(self, response: Response) -> Response:
        for action in self._cookies:
            action(response)
        self._cookies.clear()
        return response


def _preference(request: Request, name: str) -> str | None:
    value = request.cookies.get(name)
    return value[:64] if value else None


def language_of_request(request: Request) -> Language:
    """Before sign-in: the switch's cookie, else the browser's Accept-Language."""
    return language_or_none(_preference(request, LANGUAGE_COOKIE)) or negotiate(
        request.headers.get("accept-language", "")[:512]
    )


def zone_of_request(request: Request) -> str:
    zone = request.query_params.get("tz") or _preference(request, ZONE_COOKIE)
    return zone if zone and is_iana_zone(zone) else DEFAULT_ZONE


def remember(response: Response, kit: AuthKit, name: str, value: str) -> None:
    response.set_cookie(
        name, value, max_age=PREFERENCE_AGE, path="/", secure=kit.secure_cookies, httponly=True, samesite="lax"
    )


def _access_principal(request: Request, kit: AuthKit, now: datetime) -> Principal | None:
    token = request.cookies.get(CookieNames.for_kit(kit).access)
    if not token:
        return None
    try:
        claims = kit.codec.decode_access(token, now=now)
    except InvalidTokenError:
        return None
    if claims.session_id in kit.revoked:
        return None
    try:
        role = Role(claims.role)
    except ValueError:
        return None
    return Principal(claims.user_id, claims.session_id, role, claims.email_verified, claims.mfa)


async def _refreshed(
    request: Request, kit: AuthKit, viewer_cookies: list[Callable[[Response], None]], now: datetime, client: ClientInfo
) -> Principal | None:
    """Rotate the refresh cookie in-process; an ended session clears the cookies."""
    names = CookieNames.for_kit(kit)
    token = request.cookies.get(names.refresh)
    if not token:
        return None
    csrf = request.cookies.get(names.csrf) or ""
    try:
        issued = await sessions.refresh(
            runtime_of(request).db,
            kit,
            token,
            now=now,
            client=client,
            csrf_ok=lambda session_id: kit.codec.csrf_valid(csrf, session_id),
        )
    except AppError:
        viewer_cookies.append(lambda response: clear_session_cookies(response, kit))
        return None
    viewer_cookies.append(lambda response: set_session_cookies(response, kit, issued, now))
    user = issued.user
    return Principal(user.id, issued.session_id, user.role, user.email_verified_at is not None, issued.mfa_verified)


async def get_viewer(request: Request, kit: AuthKitDep, session: DbSession, now: Now, client: Client) -> Viewer:
    pending: list[Callable[[Response], None]] = []
    principal = _access_principal(request, kit, now) or await _refreshed(request, kit, pending, now, client)
    user = None
    if principal is not None:
        user = await accounts.find_user(session, principal.user_id)
        if user is None or user.status is not AccountStatus.ACTIVE:
            principal, user = None, None
            pending.append(lambda response: clear_session_cookies(response, kit))
    if principal is not None and user is not None:
        binding = principal.session_id
        viewer = Viewer(user.language, user.timezone, kit.codec.csrf_token(binding), binding, principal, user)
    else:
        binding = _pre_session(request, pending, kit)
        viewer = Viewer(language_of_request(request), zone_of_request(request), kit.codec.csrf_token(binding), binding)
    viewer._cookies.extend(pending)
    request.state.viewer = viewer
    return viewer


def _pre_session(request: Request, pending: list[Callable[[Response], None]], kit: AuthKit) -> uuid.UUID:
    """The random id an anonymous visitor's forms are bound to (login CSRF), set once per browser session."""
    raw = request.cookies.get(FORM_COOKIE, "")
    try:
        return uuid.UUID(raw)
    except ValueError:
        fresh = uuid.uuid4()
        pending.append(
            lambda response: response.set_cookie(
                FORM_COOKIE, str(fresh), path="/", secure=kit.secure_cookies, httponly=True, samesite="lax"
            )
        )
        return fresh


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def check_form(request: Request, viewer: Viewer, kit: AuthKit, token: str | None) -> None:
    """A posted form must carry this viewer's CSRF token and come from one of our origins."""
    if not token or not kit.codec.csrf_valid(token, viewer.binding):
        security_event(request, "csrf_token", user_id=viewer.user.id if viewer.user else None)
        raise FormExpiredError()
    if not origin_allowed(request, kit.settings.origins):
        security_event(request, "csrf_origin", user_id=viewer.user.id if viewer.user else None)
        raise ForbiddenError("This form was sent from another site.")


def sign_in_location(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/sign-in?next=" + quote(target, safe="/")


def require_user(request: Request, viewer: Viewer) -> User:
    """The signed-in person, or a 303 to sign in and come back here."""
    if viewer.user is None:
        raise Redirect(sign_in_location(request))
    return viewer.user


def require_role(request: Request, viewer: Viewer, role: Role) -> User:
    user = require_user(request, viewer)
    if user.role is not role:
        security_event(request, "role_required", user_id=user.id)
        raise ForbiddenError("This page is not part of your account.")
    return user


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site (never //host or a scheme): an open redirect would help phishing."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(character) < 32 for character in target):
        return default
    return target[:512]
