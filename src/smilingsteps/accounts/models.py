"""Accounts tables: users, server-side sessions and their refresh tokens,
single-use email tokens, MFA recovery codes and login throttling."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from smilingsteps.platform.i18n import DEFAULT_LANGUAGE, Language
from smilingsteps.platform.models import Base, EnumText, UtcDateTime, new_id, one_of


class Role(StrEnum):
    CLIENT = "client"
    THERAPIST = "therapist"
    ADMIN = "admin"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class TherapistStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"  # noqa: S105 (a purpose name, not a secret)
    MFA_CHALLENGE = "mfa_challenge"  # a spent sign-in challenge, kept so it cannot sign in twice


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # Normalised and lower-cased, so uniqueness is case-insensitive on every backend.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(120))
    phone: Mapped[str] = mapped_column(String(12))
    timezone: Mapped[str] = mapped_column(String(64))
    # The language of the pages and emails this person gets.
    language: Mapped[Language] = mapped_column(EnumText(Language, 8), default=DEFAULT_LANGUAGE)
    role: Mapped[Role] = mapped_column(EnumText(Role, 16))
    status: Mapped[AccountStatus] = mapped_column(EnumText(AccountStatus, 16), default=AccountStatus.ACTIVE)
    therapist_status: Mapped[TherapistStatus | None] = mapped_column(EnumText(TherapistStatus, 16), default=None)
    email_verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # The TOTP secret, encrypted with the application's data key.
    mfa_secret: Mapped[str | None] = mapped_column(String(255), default=None)
    mfa_enabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # The last TOTP time step accepted: a code is good once, never replayed.
    mfa_last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_users_role_status", "role", "status"),
        one_of("role", Role, name="role_known"),
        one_of("status", AccountStatus, name="status_known"),
        one_of("therapist_status", TherapistStatus, name="therapist_status_known"),
        one_of("language", Language, name="language_known"),
    )

    @property
    def mfa_enabled(self) -> bool:
        return self.mfa_enabled_at is not None


class AuthSession(Base):
    """One sign-in: the family every rotated refresh token of that sign-in belongs to."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None, index=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    mfa_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    user_agent: Mapped[str] = mapped_column(String(256), default="")
    ip: Mapped[str | None] = mapped_column(String(45), default=None)


class RefreshToken(Base):
    """A refresh token's hash; `rotated_at` set means it was spent and must never come back."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class AccountToken(Base):
    """A single-use, expiring token sent by email (verification, password reset); only its hash is kept."""

    __tablename__ = "account_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class RecoveryCode(Base):
    __tablename__ = "mfa_recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class LoginThrottle(Base):
    """Failed sign-ins for one subject: an account (by email, existing or not) or a client address.

    Keyed by a hash of the email, not the user, so a locked-out address looks
    the same whether or not it has an account.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
