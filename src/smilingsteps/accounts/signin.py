"""Signing in: the password step in constant time, the MFA step, and the lockout that
failed attempts build up per account and per address.

These take the `Database` rather than a session: a failed attempt must still be recorded
(failure counters, audit, the owner's email) although the request itself fails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import mfa, repository, sessions
from smilingsteps.accounts.errors import (
    AccountLockedError,
    AccountSuspendedError,
    InvalidCredentialsError,
    InvalidMfaChallengeError,
    InvalidMfaError,
)
from smilingsteps.accounts.models import (
    AccountStatus,
    LoginThrottle,
)
from smilingsteps.accounts.schemas import lookup_email
from smilingsteps.accounts.security import MFA_CHALLENGE_TTL, AuthKit
from smilingsteps.accounts.sessions import IssuedSession
from smilingsteps.accounts.tokens import InvalidTokenError
from smilingsteps.audit.service import record
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.crypto import token_hash
from smilingsteps.platform.db import Database

log = structlog.get_logger("smilingsteps.accounts")


@dataclass(frozen=True)
class MfaChallenge:
    mfa_token: str


# ---- sign-in -------------------------------------------------------------------------


def _throttle_keys(email: str, ip: str | None) -> tuple[str, str]:
    return f"acct:{token_hash(email.strip().lower())}", f"ip:{token_hash(ip or 'unknown')}"


def _locked_for(throttle: LoginThrottle | None, now: datetime) -> int:
    if throttle is None or throttle.locked_until is None or throttle.locked_until <= now:
        return 0
    return int((throttle.locked_until - now).total_seconds()) + 1


async def _refuse_if_locked(db: Database, email: str, ip: str | None, now: datetime) -> None:
    account_key, ip_key = _throttle_keys(email, ip)
    async with db.session() as session:
        found = await repository.throttles(session, [account_key, ip_key])
    wait = max(_locked_for(found.get(account_key), now), _locked_for(found.get(ip_key), now))
    if wait:
        raise AccountLockedError(wait)


def _lockout_duration(kit: AuthKit, lockouts: int) -> timedelta:
    """15 min, 30, 60, … capped: each lockout in a row doubles the next."""
    base = kit.settings.LOGIN_LOCKOUT_BASE_MINUTES
    return timedelta(minutes=min(base * 2 ** max(0, lockouts - 1), kit.settings.LOGIN_LOCKOUT_MAX_MINUTES))


def _count_failure(kit: AuthKit, throttle: LoginThrottle, limit: int, now: datetime) -> bool:
    """Count one failure in the window; True when it locks the subject."""
    window = timedelta(minutes=kit.settings.LOGIN_FAILURE_WINDOW_MINUTES)
    if throttle.window_started_at + window <= now:
        throttle.failures = 0
        throttle.window_started_at = now
    throttle.failures += 1
    throttle.updated_at = now
    if throttle.failures < limit:
        return False
    throttle.lockouts += 1
    throttle.failures = 0
    throttle.window_started_at = now
    throttle.locked_until = now + _lockout_duration(kit, throttle.lockouts)
    return True


async def clear_lockout(session: AsyncSession, email: str) -> None:
    """Forget the account's failed sign-ins and lift its lock (a password reset proves the owner)."""
    await repository.clear_throttle(session, _throttle_keys(email, None)[0])


async def record_login_failure(
    db: Database, kit: AuthKit, *, email: str, user_id: uuid.UUID | None, reason: str, now: datetime, client: ClientInfo
) -> None:
    """Count a failed attempt per account and per address, lock on the threshold, email the owner, audit."""
    account_key, ip_key = _throttle_keys(email, client.ip)

    async def work(session: AsyncSession) -> None:
        await repository.ensure_throttles(session, [account_key, ip_key], now)
        found = await repository.throttles(session, [account_key, ip_key], for_update=True)
        account_locked = _count_failure(kit, found[account_key], kit.settings.LOGIN_MAX_FAILURES, now)
        ip_locked = _count_failure(kit, found[ip_key], kit.settings.LOGIN_IP_MAX_FAILURES, now)
        context = client.audit(None)
        target = {"target_type": "user", "target_id": str(user_id)} if user_id else {}
        await record(
            session, action="auth.login.failed", context=context, now=now, details={"reason": reason}, **target
        )
        if ip_locked:
            log.warning("login_ip_locked", ip=client.ip)
            await record(session, action="auth.lockout.ip", context=context, now=now, details={"ip": client.ip})
        if account_locked:
            locked_until = found[account_key].locked_until
            assert locked_until is not None
            await record(
                session,
                action="auth.lockout",
                context=context,
                now=now,
                details={"until": locked_until.isoformat(), "lockouts": found[account_key].lockouts},
                **target,
            )
            log.warning("login_account_locked", user_id=str(user_id) if user_id else None)
            user = await repository.user_by_id(session, user_id) if user_id else None
            if user is not None:
                await queue_email(
                    session,
                    to=user.email,
                    template="account_locked",
                    context={
                        "full_name": user.full_name,
                        "locked_until": locked_until.strftime("%Y-%m-%d %H:%M UTC"),
                        "reset_link": public_link(kit.settings, "/reset-password"),
                    },
                    now=now,
                )

    await db.run_transaction(work)


async def login(
    db: Database, kit: AuthKit, *, email: str, password: str, now: datetime, client: ClientInfo
) -> IssuedSession | MfaChallenge:
    """Check the password in constant time whether or not the account exists; lock after repeated failures.

    Accounts with MFA get a challenge that grants nothing until the second step.
    """
    normalised = lookup_email(email)
    await _refuse_if_locked(db, normalised, client.ip, now)
    async with db.session() as session:
        user = await repository.user_by_email(session, normalised)
    matches, needs_rehash = await kit.hasher.verify(user.password_hash if user else None, password)
    if user is None or not matches:
        await record_login_failure(
            db, kit, email=normalised, user_id=user.id if user else None, reason="password", now=now, client=client
        )
        raise InvalidCredentialsError()
    if user.status != AccountStatus.ACTIVE:
        raise AccountSuspendedError()
    new_hash = await kit.hasher.hash(password) if needs_rehash else None

    async def succeed(session: AsyncSession) -> IssuedSession | MfaChallenge:
        fresh = await repository.existing_user(session, user.id)
        await repository.clear_throttle(session, _throttle_keys(normalised, client.ip)[0])
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
    await _refuse_if_locked(db, user.email, client.ip, now)
    if user.status != AccountStatus.ACTIVE:
        raise AccountSuspendedError()
    secret = kit.encryptor.decrypt(user.mfa_secret)

    async def attempt(session: AsyncSession) -> IssuedSession | None:
        method = await mfa.accept_second_factor(session, user.id, secret, code, recovery_code, now=now)
        if method is None:
            return None
        fresh = await repository.existing_user(session, user.id)
        await repository.clear_throttle(session, _throttle_keys(fresh.email, client.ip)[0])
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
        await record_login_failure(db, kit, email=user.email, user_id=user.id, reason="mfa", now=now, client=client)
        raise InvalidMfaError()
    return issued
