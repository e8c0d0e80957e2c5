"""Errors the accounts domain raises; each fixes its status and problem type."""

from __future__ import annotations

from smilingsteps.platform.errors import (
    AppError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    UnauthorizedError,
    ValidationFailedError,
)


class EmailTakenError(ConflictError):
    slug, title = "email-taken", "Email already registered"
    default_detail = "An account with this email already exists. Sign in or reset your password."


class WeakPasswordError(ValidationFailedError):
    slug, title = "weak-password", "Password not accepted"

    def __init__(self, problem: str, *, field: str = "password") -> None:
        super().__init__(f"The password {problem}.", errors=[{"field": field, "location": "body", "message": problem}])


class WrongCurrentPasswordError(ValidationFailedError):
    """Not a 401: the caller is signed in; only the confirmation failed."""

    slug, title = "wrong-current-password", "Current password not correct"
    default_detail = "The current password is not correct."

    def __init__(self) -> None:
        super().__init__(errors=[{"field": "current_password", "location": "body", "message": "is not correct"}])


class InvalidCredentialsError(UnauthorizedError):
    slug, title = "invalid-credentials", "Invalid credentials"
    default_detail = "The email or password is not correct."


class AccountLockedError(AppError):
    status, slug, title = 429, "account-locked", "Sign-in temporarily locked"
    default_detail = "Too many failed sign-in attempts. Try again later, or reset your password to sign in now."

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(headers={"Retry-After": str(max(1, retry_after_s))})


class AccountSuspendedError(ForbiddenError):
    slug, title = "account-suspended", "Account suspended"
    default_detail = "This account is suspended. Contact support if you think this is a mistake."


class NotAuthenticatedError(UnauthorizedError):
    slug, title = "not-authenticated", "Authentication required"
    default_detail = "Sign in to continue."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="smilingsteps"'})


class InvalidAccessTokenError(NotAuthenticatedError):
    slug, title = "invalid-token", "Invalid or expired access token"
    default_detail = "The access token is invalid, expired or revoked; refresh it or sign in again."


class InvalidRefreshTokenError(UnauthorizedError):
    slug, title = "invalid-refresh-token", "Invalid refresh token"
    default_detail = "The session has ended; sign in again."


class RefreshTokenReusedError(UnauthorizedError):
    slug, title = "refresh-token-reused", "Refresh token reused"
    default_detail = "This refresh token was already used, so the session was ended for safety. Sign in again."


class InvalidMfaError(UnauthorizedError):
    slug, title = "invalid-mfa-code", "Invalid verification code"
    default_detail = "The verification code is not correct or was already used."


class InvalidMfaChallengeError(UnauthorizedError):
    slug, title = "invalid-mfa-challenge", "Sign-in step expired"
    default_detail = "The sign-in step expired or is invalid; enter your email and password again."


class InvalidEmailTokenError(BadRequestError):
    slug, title = "invalid-or-expired-token", "Invalid or expired link"
    default_detail = "This link is invalid, expired or was already used. Request a new one."


class CsrfError(ForbiddenError):
    slug, title = "csrf-failed", "Cross-site request refused"
    default_detail = "The request is missing a valid CSRF token or comes from an origin that is not allowed."


class EmailNotVerifiedError(ForbiddenError):
    slug, title = "email-not-verified", "Email not verified"
    default_detail = "Verify your email address first; we sent you a link."


class MfaRequiredError(ForbiddenError):
    slug, title = "mfa-required", "Two-factor authentication required"
    default_detail = "This action requires a session signed in with two-factor authentication; enrol and sign in again."


class RoleRequiredError(ForbiddenError):
    slug, title = "role-required", "Not allowed for your role"


class MfaStateError(ConflictError):
    slug, title = "mfa-state", "Two-factor authentication state"
