"""Accounts: request and response bodies."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, StringConstraints

from smilingsteps.accounts.models import AccountStatus, Role, TherapistStatus, User
from smilingsteps.accounts.passwords import MAX_LENGTH, MIN_LENGTH
from smilingsteps.platform.i18n import DEFAULT_LANGUAGE, Language
from smilingsteps.platform.schemas import OneOf, RequestModel, ResponseModel, TimeZoneName

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_KENYAN_MSISDN = re.compile(r"^254[17][0-9]{8}$")  # ASCII digits only: \d would take any script's


def normalise_email(value: str) -> str:
    """One spelling per mailbox, that every mail server accepts: the local part in ASCII (addresses
    needing SMTPUTF8 are refused here, with the reason), the domain in its IDNA (ASCII) form, all
    lower-cased (uniqueness is case-insensitive). `user@café.example` is kept as `user@xn--caf-dma.example`."""
    try:
        valid = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    # Without SMTPUTF8 every valid address has an ASCII form.
    return (valid.ascii_email or valid.normalized).lower()


def lookup_email(value: str) -> str:
    """The stored spelling of a typed address, or the text lower-cased when it is not a valid one:
    sign-in and password reset look the account up, and answer the same either way."""
    try:
        return normalise_email(value)
    except ValueError:
        return value.strip().lower()


def normalise_phone(value: str) -> str:
    """Kenyan mobile numbers as MSISDN 2547XXXXXXXX / 2541XXXXXXXX, from 07…, 01…, +254… or 254…."""
    digits = _PHONE_SEPARATORS.sub("", value)
    if digits.startswith("+"):
        digits = digits[1:]
    if digits.startswith("0") and len(digits) == 10:
        digits = "254" + digits[1:]
    if not _KENYAN_MSISDN.match(digits):
        raise ValueError("must be a Kenyan mobile number such as 0712345678 or +254712345678")
    return digits


@dataclass(frozen=True)
class Contact:
    """Whom to write to, and how to greet them: what other domains need of an account for their emails."""

    email: str
    full_name: str
    language: Language = DEFAULT_LANGUAGE  # what their emails are written in


Email = Annotated[str, Field(max_length=254, json_schema_extra={"format": "email"}), AfterValidator(normalise_email)]
# Passwords keep their spaces; the length rules live in the password policy so
# the error names the rule. The cap here only bounds the work a request can cause.
Password = Annotated[str, StringConstraints(strip_whitespace=False, max_length=1024)]
# A password being chosen: the schema states the policy's length bounds, which the policy enforces (with
# its own problem type, weak-password, like every other password rule).
NewPassword = Annotated[
    str,
    StringConstraints(strip_whitespace=False, max_length=1024),
    Field(json_schema_extra={"minLength": MIN_LENGTH, "maxLength": MAX_LENGTH}),
]
FullName = Annotated[str, Field(min_length=1, max_length=120)]
# What normalise_phone accepts, as a pattern: separators anywhere, an optional +, then 254 or 0, then 7 or 1
# and eight digits.
_SEP = r"[\s().\-]*"
PHONE_PATTERN = rf"^{_SEP}\+?{_SEP}(?:2{_SEP}5{_SEP}4|0){_SEP}[17](?:{_SEP}[0-9]){{8}}{_SEP}$"
Phone = Annotated[str, Field(max_length=20, pattern=PHONE_PATTERN), AfterValidator(normalise_phone)]
OpaqueToken = Annotated[str, Field(min_length=16, max_length=512, pattern=r"^[A-Za-z0-9_\-.]+$")]
TotpCode = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
RecoveryCodeText = Annotated[str, Field(min_length=16, max_length=24, pattern=r"^[A-Za-z2-7\- ]+$")]


class RegisterIn(RequestModel):
    email: Email
    password: NewPassword
    full_name: FullName
    phone: Phone
    timezone: TimeZoneName = "Africa/Nairobi"
    role: Annotated[Role, OneOf(Role.CLIENT, Role.THERAPIST)] = Role.CLIENT
    language: Language = DEFAULT_LANGUAGE


class AccountUpdateIn(RequestModel):
    """The account's own settings; fields left out keep their value."""

    full_name: FullName | None = None
    phone: Phone | None = None
    timezone: TimeZoneName | None = None
    language: Language | None = None


class LoginIn(RequestModel):
    # Not validated as an address: a malformed one must cost and answer the same as a wrong one.
    email: Annotated[str, Field(min_length=1, max_length=254)]
    password: Password
    client: Literal["browser", "native"] = "browser"


class MfaLoginIn(RequestModel):
    exactly_one = ("code", "recovery_code")

    mfa_token: Annotated[str, Field(min_length=16, max_length=2048)]
    code: TotpCode | None = None
    recovery_code: RecoveryCodeText | None = None
    client: Literal["browser", "native"] = "browser"


class RefreshIn(RequestModel):
    """Native clients send the refresh token in the body; browsers send the cookie and an empty body."""

    refresh_token: OpaqueToken | None = None


class TokenIn(RequestModel):
    token: OpaqueToken


class PasswordResetRequestIn(RequestModel):
    email: Annotated[str, Field(min_length=1, max_length=254)]


class PasswordResetConfirmIn(RequestModel):
    token: OpaqueToken
    new_password: NewPassword


class PasswordChangeIn(RequestModel):
    current_password: Password
    new_password: NewPassword


class TotpConfirmIn(RequestModel):
    code: TotpCode


class MfaDisableIn(RequestModel):
    password: Password
    code: TotpCode


class UserOut(ResponseModel):
    id: uuid.UUID
    email: str
    full_name: str
    phone: str
    timezone: str
    language: Language
    role: Role
    status: AccountStatus
    therapist_status: TherapistStatus | None
    email_verified: bool
    mfa_enabled: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            full_name=user.full_name,
            phone=user.phone,
            timezone=user.timezone,
            language=user.language,
            role=user.role,
            status=user.status,
            therapist_status=user.therapist_status,
            email_verified=user.email_verified_at is not None,
            mfa_enabled=user.mfa_enabled,
            created_at=user.created_at,
        )


class RegistrationAccepted(ResponseModel):
    """The answer to a registration when the platform hides which addresses have accounts."""

    status: Literal["check_email"] = "check_email"
    detail: str = (
        "Check your email to continue: we have sent a message to this address "
        "(a link to verify it, or, if it already has an account, how to sign in)."
    )


class SessionOut(ResponseModel):
    id: uuid.UUID
    device: str
    ip: str | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    current: bool


class LoginOut(ResponseModel):
    """Either a signed-in session, or (`mfa_required`) a challenge for the second step that grants nothing."""

    mfa_required: bool = False
    mfa_token: str | None = None
    user: UserOut | None = None
    session_id: uuid.UUID | None = None
    access_token: str | None = None
    access_expires_at: datetime | None = None
    csrf_token: str | None = None
    refresh_token: str | None = Field(default=None, description="Only for client=native; browsers get a cookie.")
    mfa_enrolment_required: bool = False


class TotpSetupOut(ResponseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodesOut(ResponseModel):
    recovery_codes: list[str]
