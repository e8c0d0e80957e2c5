"""Two-factor authentication: TOTP enrolment, codes that work once, recovery codes, turning it off."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import lockout, repository, totp
from smilingsteps.accounts.errors import (
    InvalidMfaError,
    MfaStateError,
)
from smilingsteps.accounts.models import (
    Role,
    User,
)
from smilingsteps.accounts.security import AuthKit
from smilingsteps.audit.service import record
from smilingsteps.notifications.service import queue_email
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.db import Database
from smilingsteps.platform.errors import ForbiddenError


async def accept_second_factor(
    session: AsyncSession,
    user_id: uuid.UUID,
    secret: str,
    code: str | None,
    recovery_code: str | None,
    *,
    now: datetime,
) -> str | None:
    if code is not None:
        fresh = await repository.existing_user(session, user_id)
        if await spend_totp_code(session, fresh, secret, code, now=now):
            return "totp"
        return None
    if recovery_code is not None and await repository.use_recovery_code(
        session, user_id, totp.recovery_code_hash(recovery_code), now
    ):
        return "recovery_code"
    return None


async def spend_totp_code(session: AsyncSession, user: User, secret: str, code: str, *, now: datetime) -> bool:
    """True when `code` is valid now and newer than any code this user already used (then it is used up)."""
    step = totp.matching_step(secret, code, now=now, after_step=user.mfa_last_step)
    return step is not None and await repository.accept_totp_step(session, user.id, step)


# ---- MFA enrolment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TotpSetup:
    secret: str
    uri: str
    svg: str


async def start_totp_enrolment(session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, *, now: datetime) -> TotpSetup:
    """A new pending secret (replacing an unconfirmed one); enabled only once a code confirms it."""
    user = await repository.existing_user(session, user_id)
    if user.mfa_enabled:
        raise MfaStateError("Two-factor authentication is already on; turn it off first to enrol again.")
    secret = totp.new_secret()
    user.mfa_secret = kit.encryptor.encrypt(secret)
    user.mfa_last_step = None
    user.updated_at = now
    uri = totp.provisioning_uri(secret, user.email)
    return TotpSetup(secret=secret, uri=uri, svg=totp.qr_svg(uri))


async def confirm_totp_enrolment(
    session: AsyncSession,
    kit: AuthKit,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    code: str,
    *,
    now: datetime,
    client: ClientInfo,
) -> list[str]:
    """Turn MFA on with a first valid code; returns fresh recovery codes (shown once).

    The session that enrolled counts as signed in with MFA from now on.
    """
    user = await repository.existing_user(session, user_id)
    if user.mfa_enabled or user.mfa_secret is None:
        raise MfaStateError("Start enrolment first." if not user.mfa_enabled else "Already enabled.")
    secret = kit.encryptor.decrypt(user.mfa_secret)
    if not await spend_totp_code(session, user, secret, code, now=now):
        raise InvalidMfaError()
    user.mfa_enabled_at = now
    user.updated_at = now
    codes = totp.new_recovery_codes()
    await repository.replace_recovery_codes(session, user.id, [totp.recovery_code_hash(c) for c in codes], now)
    current = await repository.session_of(session, user.id, session_id)
    if current is not None:
        current.mfa_verified = True
    await _mfa_changed(session, user, enabled=True, now=now, client=client)
    return codes


async def disable_mfa(
    session: AsyncSession,
    db: Database,
    kit: AuthKit,
    user_id: uuid.UUID,
    *,
    password: str,
    code: str,
    now: datetime,
    client: ClientInfo,
) -> None:
    user = await repository.existing_user(session, user_id)
    if user.role == Role.ADMIN:
        raise ForbiddenError("Administrators must keep two-factor authentication on.")
    if not user.mfa_enabled or user.mfa_secret is None:
        raise MfaStateError("Two-factor authentication is not on.")
    await lockout.refuse_if_locked(db, user.email, client.ip, now)
    matches, _ = await kit.hasher.verify(user.password_hash, password)
    proven = matches and await spend_totp_code(session, user, kit.encryptor.decrypt(user.mfa_secret), code, now=now)
    if not await lockout.check_proof(db, kit, user, proven, reason="mfa_disable", now=now, client=client):
        raise InvalidMfaError("The password or the verification code is not correct.")
    user.mfa_secret = None
    user.mfa_enabled_at = None
    user.mfa_last_step = None
    user.updated_at = now
    await repository.delete_recovery_codes(session, user.id)
    await _mfa_changed(session, user, enabled=False, now=now, client=client)


async def regenerate_recovery_codes(
    session: AsyncSession,
    db: Database,
    kit: AuthKit,
    user_id: uuid.UUID,
    code: str,
    *,
    now: datetime,
    client: ClientInfo,
) -> list[str]:
    """Ten new recovery codes (the old ones stop working) after a fresh code; a wrong code counts toward the lockout."""
    user = await repository.existing_user(session, user_id)
    if not user.mfa_enabled or user.mfa_secret is None:
        raise MfaStateError("Two-factor authentication is not on.")
    await lockout.refuse_if_locked(db, user.email, client.ip, now)
    proven = await spend_totp_code(session, user, kit.encryptor.decrypt(user.mfa_secret), code, now=now)
    if not await lockout.check_proof(db, kit, user, proven, reason="mfa_recovery_codes", now=now, client=client):
        raise InvalidMfaError()
    codes = totp.new_recovery_codes()
    await repository.replace_recovery_codes(session, user.id, [totp.recovery_code_hash(c) for c in codes], now)
    await record(
        session,
        action="mfa.recovery_codes.regenerated",
        context=client.audit(user.id),
        now=now,
        target_type="user",
        target_id=str(user.id),
    )
    return codes


async def _mfa_changed(session: AsyncSession, user: User, *, enabled: bool, now: datetime, client: ClientInfo) -> None:
    await record(
        session,
        action="mfa.enabled" if enabled else "mfa.disabled",
        context=client.audit(user.id),
        now=now,
        target_type="user",
        target_id=str(user.id),
    )
    await queue_email(
        session,
        to=user.email,
        language=user.language,
        template="mfa_changed",
        context={"full_name": user.full_name, "enabled": enabled},
        now=now,
    )
