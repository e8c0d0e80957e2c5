"""Signing in: the password step in constant time, then the MFA step; failures build up the lockout (`lockout`).

These take the `Database` rather than a session: a failed attempt must still be recorded
(failure counters, audit, the owner's email) although the request itself fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import lockout, mfa, repository, sessions
from smilingsteps.accounts.errors import (
    AccountSuspendedError,
    InvalidCredentialsError,
    InvalidMfaChallengeError,
    InvalidMfaError,
)
from smilingsteps.accounts.models import AccountStatus, TokenPurpose
from smilingsteps.accounts.schemas import lookup_email
from smilingsteps.accounts.security import MFA_CHALLENGE_TTL, AuthKit
from smilingsteps.accounts.sessions import IssuedSession
from smilingsteps.accounts.tokens import InvalidTokenError
from smilingsteps.audit.service import record
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.crypto import token_hash
from smilingsteps.platform.db import Database

log = structlog.get_logger("smilingsteps.accounts")


@dataclass(frozen=True)
class MfaChallenge:
    mfa_token: str


# ---- sign-in -------------------------------------------------------------------------


async def login(
    db: Database, kit: AuthKit, *, email: str, password: str, now: datetime, client: ClientInfo
) -> IssuedSession | MfaChallenge:
    """Check the password in constant time whether or not the account exists; lock after repeated failures.

    Accounts with MFA get a challenge that grants nothing until the second step.
    """
    normalised = lookup_email(email)
    await lockout.refuse_if_locked(db, normalised, client.ip, now)
    async with db.session() as session:
        user = await repository.user_by_email(session, normalised)
    matches, needs_rehash = await kit.hasher.verify(user.password_hash if user else None, password)
    if user is None or not matches:
        await lockout.record_login_failure(
            db, kit, email=normalised, user_id=user.id if user else None, reason="password", now=now, client=client
        )
        raise InvalidCredentialsError()
    if user.status != AccountStatus.ACTIVE:
        raise AccountSuspendedError()
    new_hash = await kit.hasher.hash(password) if needs_rehash else None

    async def succeed(session: AsyncSession) -> IssuedSession | MfaChallenge:
        fresh = await repository.existing_user(session, user.id)
        await repository.clear_throttle(session, lockout.throttle_keys(normalised, client.ip)[0])
        if new_hash is not None:
            fresh.password_hash = new_hash  # argon2 parameters changed since this hash was made
            log.info("password_rehashed", user_id=str(fresh.id))
        if fresh.mfa_enabled:
            await record(
                session,
                action="auth.login.password_ok",
                context=client.audit(fresh.id),
                now=now,
                target_type="user",
                target_id=str(fresh.id),
            )
            return MfaChallenge(kit.codec.issue_mfa_challenge(user_id=fresh.id, now=now, ttl=MFA_CHALLENGE_TTL))
        return await sessions.start_session(session, kit, fresh, now=now, client=client, mfa_verified=False)

    return await db.run_transaction(succeed)


async def complete_mfa_login(
    db: Database,
    kit: AuthKit,
    *,
    mfa_token: str,
    code: str | None,
    recovery_code: str | None,
    now: datetime,
    client: ClientInfo,
) -> IssuedSession:
    """The second step: a fresh TOTP code (never one already used) or an unused recovery code."""
    try:
        user_id = kit.codec.decode_mfa_challenge(mfa_token, now=now)
    except InvalidTokenError:
        raise InvalidMfaChallengeError() from None
    async with db.session() as session:
        user = await repository.user_by_id(session, user_id)
    if user is None or user.mfa_secret is None or user.mfa_enabled_at is None:
        raise InvalidMfaChallengeError()
    await lockout.refuse_if_locked(db, user.email, client.ip, now)
    if user.status != AccountStatus.ACTIVE:
        raise AccountSuspendedError()
    secret = kit.encryptor.decrypt(user.mfa_secret)

    async def attempt(session: AsyncSession) -> IssuedSession | None:
        method = await mfa.accept_second_factor(session, user.id, secret, code, recovery_code, now=now)
        if method is None:
            return None
        # One challenge, one session: a second use (a replay, or a race with the first) is refused,
        # and rolling back gives the code back unused.
        spent = await repository.spend_once(
            session,
            purpose=TokenPurpose.MFA_CHALLENGE,
            token_hash=token_hash(mfa_token),
            user_id=user.id,
            now=now,
            expires_at=now + MFA_CHALLENGE_TTL,
        )
        if not spent:
            raise InvalidMfaChallengeError()
        fresh = await repository.existing_user(session, user.id)
        await repository.clear_throttle(session, lockout.throttle_keys(fresh.email, client.ip)[0])
        if method == "recovery_code":
            left = await repository.remaining_recovery_codes(session, fresh.id)
            await record(
                session,
                action="mfa.recovery_code.used",
                context=client.audit(fresh.id),
                now=now,
                target_type="user",
                target_id=str(fresh.id),
                details={"remaining": left},
            )
        return await sessions.start_session(session, kit, fresh, now=now, client=client, mfa_verified=True)

    issued = await db.run_transaction(attempt)
    if issued is None:
        await lockout.record_login_failure(
            db, kit, email=user.email, user_id=user.id, reason="mfa", now=now, client=client
        )
        raise InvalidMfaError()
    return issued
