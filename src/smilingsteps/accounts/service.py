"""Accounts rules: registration, sign-in, sessions, email tokens, MFA, administration.

Functions that take a `session` only flush: the caller's transaction owns the
change, its audit row and its emails. Sign-in and refresh take the `Database`
instead, because a failed attempt must still be recorded (failure counters,
token-reuse revocation, audit) although the request itself fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import repository, totp
from smilingsteps.accounts.errors import (
    AccountLockedError,
    AccountSuspendedError,
    CsrfError,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidEmailTokenError,
    InvalidMfaChallengeError,
    InvalidMfaError,
    InvalidRefreshTokenError,
    MfaStateError,
    RefreshTokenReusedError,
    WeakPasswordError,
    WrongCurrentPasswordError,
)
from smilingsteps.accounts.models import (
    AccountStatus,
    AuthSession,
    LoginThrottle,
    Role,
    TherapistStatus,
    TokenPurpose,
    User,
)
from smilingsteps.accounts.passwords import password_problem
from smilingsteps.accounts.schemas import RegisterIn
from smilingsteps.accounts.security import MFA_CHALLENGE_TTL, AuthKit
from smilingsteps.accounts.tokens import InvalidTokenError
from smilingsteps.audit.service import record
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.platform.context import SYSTEM, ClientInfo
from smilingsteps.platform.crypto import new_token, token_hash
from smilingsteps.platform.db import Database, after_commit
from smilingsteps.platform.errors import ConflictError, ForbiddenError, NotFoundError

log = structlog.get_logger("smilingsteps.accounts")
USER_AGENT_MAX = 256


# ---- results ------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedSession:
    """What a browser or app receives on sign-in or refresh."""

    user: User
    session_id: uuid.UUID
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    session_expires_at: datetime
    csrf_token: str
    mfa_verified: bool


@dataclass(frozen=True)
class MfaChallenge:
    mfa_token: str


# ---- registration and email verification ----------------------------------------


def check_password(password: str, *, email: str, full_name: str, field: str = "password") -> None:
    personal = (email.split("@", 1)[0], *full_name.split())
    problem = password_problem(password, personal=personal)
    if problem is not None:
        raise WeakPasswordError(problem, field=field)


async def register(session: AsyncSession, kit: AuthKit, data: RegisterIn, *, now: datetime, client: ClientInfo) -> User:
    """Create a client or (pending) therapist account and send the verification email; 409 if the email is taken."""
    check_password(data.password, email=data.email, full_name=data.full_name)
    if await repository.email_exists(session, data.email):
        raise EmailTakenError()
    user = User(
        id=uuid.uuid4(),
        email=data.email,
        password_hash=await kit.hasher.hash(data.password),
        full_name=data.full_name,
        phone=data.phone,
        timezone=data.timezone,
        role=data.role,
        status=AccountStatus.ACTIVE.value,
        therapist_status=TherapistStatus.PENDING.value if data.role == Role.THERAPIST.value else None,
        password_changed_at=now,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:
        # Two registrations raced for one address; the unique index decided.
        raise EmailTakenError() from None
    await _send_verification(session, kit, user, now=now)
    await record(
        session,
        action="account.registered",
        context=client.audit(user.id),
        now=now,
        target_type="user",
        target_id=str(user.id),
        details={"role": user.role},
    )
    return user


async def _issue_email_token(
    session: AsyncSession, user: User, purpose: TokenPurpose, *, ttl: timedelta, now: datetime
) -> str:
    """A new single-use token for `purpose` (only its hash is kept); older unused ones stop working."""
    await repository.retire_account_tokens(session, user.id, purpose.value, now)
    token = new_token()
    await repository.add_account_token(
        session,
        user_id=user.id,
        purpose=purpose.value,
        token_hash=token_hash(token),
        now=now,
        expires_at=now + ttl,
    )
    return token


async def _send_verification(session: AsyncSession, kit: AuthKit, user: User, *, now: datetime) -> None:
    ttl = timedelta(hours=kit.settings.EMAIL_VERIFICATION_TTL_HOURS)
    token = await _issue_email_token(session, user, TokenPurpose.VERIFY_EMAIL, ttl=ttl, now=now)
    await queue_email(
        session,
        to=user.email,
        template="verify_email",
        context={
            "full_name": user.full_name,
            "link": public_link(kit.settings, "/verify-email", token=token),
            "expires_hours": kit.settings.EMAIL_VERIFICATION_TTL_HOURS,
        },
        now=now,
    )


async def resend_verification(session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, *, now: datetime) -> None:
    user = await _existing_user(session, user_id)
    if user.email_verified_at is None:
        await _send_verification(session, kit, user, now=now)


async def verify_email(session: AsyncSession, token: str, *, now: datetime, client: ClientInfo) -> User:
    """Spend a verification token once and mark the address verified."""
    user_id = await repository.use_account_token(
        session, purpose=TokenPurpose.VERIFY_EMAIL.value, token_hash=token_hash(token), now=now
    )
    user = await repository.user_by_id(session, user_id) if user_id else None
    if user is None:
        raise InvalidEmailTokenError()
    if user.email_verified_at is None:
        user.email_verified_at = now
        user.updated_at = now
        await record(
            session,
            action="account.email_verified",
            context=client.audit(user.id),
            now=now,
            target_type="user",
            target_id=str(user.id),
        )
    return user


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
    normalised = email.strip().lower()
    await _refuse_if_locked(db, normalised, client.ip, now)
    async with db.session() as session:
        user = await repository.user_by_email(session, normalised)
    matches, needs_rehash = await kit.hasher.verify(user.password_hash if user else None, password)
    if user is None or not matches:
        await record_login_failure(
            db, kit, email=normalised, user_id=user.id if user else None, reason="password", now=now, client=client
        )
        raise InvalidCredentialsError()
    if user.status != AccountStatus.ACTIVE.value:
        raise AccountSuspendedError()
    new_hash = await kit.hasher.hash(password) if needs_rehash else None

    async def succeed(session: AsyncSession) -> IssuedSession | MfaChallenge:
        fresh = await _existing_user(session, user.id)
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
        return await _start_session(session, kit, fresh, now=now, client=client, mfa_verified=False)

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
    if user.status != AccountStatus.ACTIVE.value:
        raise AccountSuspendedError()
    secret = kit.encryptor.decrypt(user.mfa_secret)

    async def attempt(session: AsyncSession) -> IssuedSession | None:
        method = await _accept_second_factor(session, user.id, secret, code, recovery_code, now=now)
        if method is None:
            return None
        fresh = await _existing_user(session, user.id)
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
        return await _start_session(session, kit, fresh, now=now, client=client, mfa_verified=True)

    issued = await db.run_transaction(attempt)
    if issued is None:
        await record_login_failure(db, kit, email=user.email, user_id=user.id, reason="mfa", now=now, client=client)
        raise InvalidMfaError()
    return issued


async def _accept_second_factor(
    session: AsyncSession,
    user_id: uuid.UUID,
    secret: str,
    code: str | None,
    recovery_code: str | None,
    *,
    now: datetime,
) -> str | None:
    if code is not None:
        fresh = await _existing_user(session, user_id)
        if await _spend_totp_code(session, fresh, secret, code, now=now):
            return "totp"
        return None
    if recovery_code is not None and await repository.use_recovery_code(
        session, user_id, totp.recovery_code_hash(recovery_code), now
    ):
        return "recovery_code"
    return None


async def _spend_totp_code(session: AsyncSession, user: User, secret: str, code: str, *, now: datetime) -> bool:
    """True when `code` is valid now and newer than any code this user already used (then it is used up)."""
    step = totp.matching_step(secret, code, now=now, after_step=user.mfa_last_step)
    return step is not None and await repository.accept_totp_step(session, user.id, step)


async def _start_session(
    session: AsyncSession, kit: AuthKit, user: User, *, now: datetime, client: ClientInfo, mfa_verified: bool
) -> IssuedSession:
    auth_session = AuthSession(
        id=uuid.uuid4(),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + kit.session_lifetime,
        mfa_verified=mfa_verified,
        user_agent=client.user_agent[:USER_AGENT_MAX],
        ip=client.ip,
    )
    session.add(auth_session)
    await session.flush()
    await record(
        session,
        action="auth.login.succeeded",
        context=client.audit(user.id),
        now=now,
        target_type="session",
        target_id=str(auth_session.id),
        details={"mfa": mfa_verified},
    )
    return await _issue(session, kit, user, auth_session, now=now)


async def _issue(
    session: AsyncSession, kit: AuthKit, user: User, auth_session: AuthSession, *, now: datetime
) -> IssuedSession:
    refresh = new_token()
    await repository.add_refresh_token(session, auth_session.id, token_hash(refresh), now)
    access_expires = min(now + kit.access_ttl, auth_session.expires_at)
    access = kit.codec.issue_access(
        user_id=user.id,
        session_id=auth_session.id,
        role=user.role,
        email_verified=user.email_verified_at is not None,
        mfa=auth_session.mfa_verified,
        now=now,
        expires_at=access_expires,
    )
    return IssuedSession(
        user=user,
        session_id=auth_session.id,
        access_token=access,
        access_expires_at=access_expires,
        refresh_token=refresh,
        session_expires_at=auth_session.expires_at,
        csrf_token=kit.codec.csrf_token(auth_session.id),
        mfa_verified=auth_session.mfa_verified,
    )


# ---- refresh, sessions, sign-out -------------------------------------------------------


async def refresh(
    db: Database,
    kit: AuthKit,
    raw_token: str,
    *,
    now: datetime,
    client: ClientInfo,
    csrf_ok: Callable[[uuid.UUID], bool] | None = None,
) -> IssuedSession:
    """Rotate the refresh token. A token that was already rotated ends its whole session (theft signal).

    `csrf_ok`, for cookie-borne tokens, must accept the session before anything changes.
    """
    hashed = token_hash(raw_token)

    async def rotate(session: AsyncSession) -> IssuedSession | str:
        found = await repository.refresh_token_with_session(session, hashed)
        if found is None:
            return "unknown"
        token, auth_session, user = found
        if csrf_ok is not None and not csrf_ok(auth_session.id):
            return "csrf"
        if auth_session.revoked_at is not None:
            return "revoked" if token.rotated_at is None else "reused-after-revoke"
        if not await repository.spend_refresh_token(session, hashed, now):
            return "reused"
        ended = _session_end_reason(kit, auth_session, user, now)
        if ended is not None:
            await _revoke(session, kit, user.id, now=now, reason=ended, only=auth_session.id)
            return ended
        auth_session.last_seen_at = now
        return await _issue(session, kit, user, auth_session, now=now)

    outcome = await db.run_transaction(rotate)
    if isinstance(outcome, IssuedSession):
        return outcome
    if outcome == "reused":
        await _revoke_family_after_reuse(db, kit, hashed, now=now, client=client)
        raise RefreshTokenReusedError()
    if outcome == "csrf":
        raise CsrfError()
    raise InvalidRefreshTokenError()


def _session_end_reason(kit: AuthKit, auth_session: AuthSession, user: User, now: datetime) -> str | None:
    if auth_session.expires_at <= now:
        return "expired"
    if auth_session.last_seen_at + kit.idle_timeout <= now:
        return "idle"
    if user.status != AccountStatus.ACTIVE.value:
        return "suspended"
    return None


async def _revoke_family_after_reuse(
    db: Database, kit: AuthKit, hashed: str, *, now: datetime, client: ClientInfo
) -> None:
    async def work(session: AsyncSession) -> None:
        found = await repository.refresh_token_with_session(session, hashed)
        if found is None:
            return
        _, auth_session, user = found
        await _revoke(session, kit, user.id, now=now, reason="token_reuse", only=auth_session.id)
        await record(
            session,
            action="auth.refresh.reused",
            context=client.audit(user.id),
            now=now,
            target_type="session",
            target_id=str(auth_session.id),
        )

    await db.run_transaction(work)
    log.warning("security_refresh_token_reused", ip=client.ip)


async def _revoke(
    session: AsyncSession,
    kit: AuthKit,
    user_id: uuid.UUID,
    *,
    now: datetime,
    reason: str,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    revoked = await repository.revoke_sessions(session, user_id, now=now, reason=reason, only=only, keep=keep)

    def remember() -> None:
        for session_id in revoked:
            kit.revoked.add(session_id, now)

    after_commit(session, remember)
    return revoked


async def list_sessions(session: AsyncSession, user_id: uuid.UUID, *, now: datetime) -> list[AuthSession]:
    return list(await repository.active_sessions_of(session, user_id, now))


async def revoke_session(
    session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, session_id: uuid.UUID, *, now: datetime, client: ClientInfo
) -> None:
    """End one of the caller's own sessions; someone else's is 'not found'."""
    target = await repository.session_of(session, user_id, session_id)
    if target is None or target.revoked_at is not None:
        raise NotFoundError("No such active session.")
    await _end_session(session, kit, user_id, session_id, reason="revoked_by_user", now=now, client=client)


async def logout(
    session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, session_id: uuid.UUID, *, now: datetime, client: ClientInfo
) -> None:
    await _end_session(session, kit, user_id, session_id, reason="logout", now=now, client=client)


async def _end_session(
    session: AsyncSession,
    kit: AuthKit,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    *,
    reason: str,
    now: datetime,
    client: ClientInfo,
) -> None:
    await _revoke(session, kit, user_id, now=now, reason=reason, only=session_id)
    action = "auth.logout" if reason == "logout" else "auth.session.revoked"
    await record(
        session, action=action, context=client.audit(user_id), now=now, target_type="session", target_id=str(session_id)
    )


# ---- passwords -------------------------------------------------------------------------------


async def change_password(
    session: AsyncSession,
    kit: AuthKit,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    *,
    current: str,
    new: str,
    now: datetime,
    client: ClientInfo,
) -> None:
    """Set a new password after checking the current one; every other session ends."""
    user = await _existing_user(session, user_id)
    matches, _ = await kit.hasher.verify(user.password_hash, current)
    if not matches:
        raise WrongCurrentPasswordError()
    check_password(new, email=user.email, full_name=user.full_name, field="new_password")
    await _set_password(session, kit, user, new, now=now)
    await _revoke(session, kit, user.id, now=now, reason="password_changed", keep=session_id)
    await record(
        session,
        action="account.password.changed",
        context=client.audit(user.id),
        now=now,
        target_type="user",
        target_id=str(user.id),
    )


async def _set_password(session: AsyncSession, kit: AuthKit, user: User, password: str, *, now: datetime) -> None:
    user.password_hash = await kit.hasher.hash(password)
    user.password_changed_at = now
    user.updated_at = now
    await queue_email(
        session, to=user.email, template="password_changed", context={"full_name": user.full_name}, now=now
    )


async def send_password_reset(db: Database, kit: AuthKit, email: str, *, now: datetime, client: ClientInfo) -> None:
    """`request_password_reset` in its own transaction, run after the 202 was sent; failures are logged."""
    try:
        await db.run_transaction(lambda session: request_password_reset(session, kit, email, now=now, client=client))
    except Exception as exc:
        log.error("password_reset_request_failed", error=type(exc).__name__, exc_info=exc)


async def request_password_reset(
    session: AsyncSession, kit: AuthKit, email: str, *, now: datetime, client: ClientInfo
) -> None:
    """Email a reset link if an active account has this address; callers always answer 202."""
    user = await repository.user_by_email(session, email.strip().lower())
    if user is None or user.status != AccountStatus.ACTIVE.value:
        return
    ttl = timedelta(minutes=kit.settings.PASSWORD_RESET_TTL_MINUTES)
    token = await _issue_email_token(session, user, TokenPurpose.PASSWORD_RESET, ttl=ttl, now=now)
    await queue_email(
        session,
        to=user.email,
        template="password_reset",
        context={
            "full_name": user.full_name,
            "link": public_link(kit.settings, "/reset-password", token=token),
            "expires_minutes": kit.settings.PASSWORD_RESET_TTL_MINUTES,
        },
        now=now,
    )
    await record(
        session,
        action="account.password.reset_requested",
        context=client.audit(None),
        now=now,
        target_type="user",
        target_id=str(user.id),
    )


async def confirm_password_reset(
    session: AsyncSession, kit: AuthKit, token: str, new_password: str, *, now: datetime, client: ClientInfo
) -> None:
    """Spend the reset token once, set the password, end every session and lift a lockout."""
    user_id = await repository.use_account_token(
        session, purpose=TokenPurpose.PASSWORD_RESET.value, token_hash=token_hash(token), now=now
    )
    user = await repository.user_by_id(session, user_id) if user_id else None
    if user is None or user.status != AccountStatus.ACTIVE.value:
        raise InvalidEmailTokenError()
    check_password(new_password, email=user.email, full_name=user.full_name, field="new_password")
    await _set_password(session, kit, user, new_password, now=now)
    await repository.retire_account_tokens(session, user.id, TokenPurpose.PASSWORD_RESET.value, now)
    await repository.clear_throttle(session, _throttle_keys(user.email, None)[0])
    await _revoke(session, kit, user.id, now=now, reason="password_reset")
    await record(
        session,
        action="account.password.reset",
        context=client.audit(user.id),
        now=now,
        target_type="user",
        target_id=str(user.id),
    )


# ---- MFA enrolment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TotpSetup:
    secret: str
    uri: str
    svg: str


async def start_totp_enrolment(session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, *, now: datetime) -> TotpSetup:
    """A new pending secret (replacing an unconfirmed one); enabled only once a code confirms it."""
    user = await _existing_user(session, user_id)
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
    user = await _existing_user(session, user_id)
    if user.mfa_enabled or user.mfa_secret is None:
        raise MfaStateError("Start enrolment first." if not user.mfa_enabled else "Already enabled.")
    secret = kit.encryptor.decrypt(user.mfa_secret)
    if not await _spend_totp_code(session, user, secret, code, now=now):
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
    kit: AuthKit,
    user_id: uuid.UUID,
    *,
    password: str,
    code: str,
    now: datetime,
    client: ClientInfo,
) -> None:
    user = await _existing_user(session, user_id)
    if user.role == Role.ADMIN.value:
        raise ForbiddenError("Administrators must keep two-factor authentication on.")
    if not user.mfa_enabled or user.mfa_secret is None:
        raise MfaStateError("Two-factor authentication is not on.")
    matches, _ = await kit.hasher.verify(user.password_hash, password)
    if not matches or not await _spend_totp_code(session, user, kit.encryptor.decrypt(user.mfa_secret), code, now=now):
        raise InvalidMfaError("The password or the verification code is not correct.")
    user.mfa_secret = None
    user.mfa_enabled_at = None
    user.mfa_last_step = None
    user.updated_at = now
    await repository.delete_recovery_codes(session, user.id)
    await _mfa_changed(session, user, enabled=False, now=now, client=client)


async def regenerate_recovery_codes(
    session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, code: str, *, now: datetime, client: ClientInfo
) -> list[str]:
    user = await _existing_user(session, user_id)
    if not user.mfa_enabled or user.mfa_secret is None:
        raise MfaStateError("Two-factor authentication is not on.")
    if not await _spend_totp_code(session, user, kit.encryptor.decrypt(user.mfa_secret), code, now=now):
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
        template="mfa_changed",
        context={"full_name": user.full_name, "enabled": enabled},
        now=now,
    )


# ---- administration ----------------------------------------------------------------------------------


async def set_account_status(
    session: AsyncSession,
    kit: AuthKit,
    admin_id: uuid.UUID,
    user_id: uuid.UUID,
    status: AccountStatus,
    *,
    reason: str | None,
    now: datetime,
    client: ClientInfo,
) -> User:
    """Suspend (ending every session at once) or reactivate an account."""
    if user_id == admin_id:
        raise ForbiddenError("Administrators cannot change their own account status.")
    user = await _existing_user(session, user_id)
    if user.status == status.value:
        return user
    user.status = status.value
    user.updated_at = now
    if status is AccountStatus.SUSPENDED:
        await _revoke(session, kit, user.id, now=now, reason="suspended")
    await record(
        session,
        action="admin.user.suspended" if status is AccountStatus.SUSPENDED else "admin.user.reactivated",
        context=client.audit(admin_id),
        now=now,
        target_type="user",
        target_id=str(user.id),
        details={"reason": reason} if reason else None,
    )
    return user


async def review_therapist(
    session: AsyncSession,
    kit: AuthKit,
    admin_id: uuid.UUID,
    user_id: uuid.UUID,
    decision: TherapistStatus,
    *,
    reason: str | None,
    now: datetime,
    client: ClientInfo,
) -> User:
    """Approve or reject a therapist application; the therapist is emailed either way."""
    user = await _existing_user(session, user_id)
    if user.role != Role.THERAPIST.value:
        raise ConflictError("Only therapist accounts are approved or rejected.")
    if user.therapist_status == decision.value:
        return user
    user.therapist_status = decision.value
    user.updated_at = now
    approved = decision is TherapistStatus.APPROVED
    email_context: dict[str, Any] = (
        {"full_name": user.full_name, "link": public_link(kit.settings, "/therapist")}
        if approved
        else {"full_name": user.full_name, "reason": reason or "Your application did not meet our requirements."}
    )
    await queue_email(
        session,
        to=user.email,
        template="therapist_approved" if approved else "therapist_rejected",
        context=email_context,
        now=now,
    )
    await record(
        session,
        action="admin.therapist.approved" if approved else "admin.therapist.rejected",
        context=client.audit(admin_id),
        now=now,
        target_type="user",
        target_id=str(user.id),
        details={"reason": reason} if reason else None,
    )
    return user


async def create_admin(
    session: AsyncSession, kit: AuthKit, *, email: str, full_name: str, phone: str, password: str, now: datetime
) -> User:
    """The first (or another) administrator, from the command line; email counts as verified."""
    check_password(password, email=email, full_name=full_name)
    if await repository.email_exists(session, email):
        raise EmailTakenError()
    user = User(
        id=uuid.uuid4(),
        email=email,
        password_hash=await kit.hasher.hash(password),
        full_name=full_name,
        phone=phone,
        timezone="Africa/Nairobi",
        role=Role.ADMIN.value,
        status=AccountStatus.ACTIVE.value,
        email_verified_at=now,
        password_changed_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    await session.flush()
    await record(
        session,
        action="admin.user.created",
        context=SYSTEM,
        now=now,
        target_type="user",
        target_id=str(user.id),
        details={"role": "admin", "via": "cli"},
    )
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    return await _existing_user(session, user_id)


async def search_users(
    session: AsyncSession,
    *,
    query: str | None,
    role: str | None,
    status: str | None,
    therapist_status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[User], int]:
    users, total = await repository.search_users(
        session, query=query, role=role, status=status, therapist_status=therapist_status, limit=limit, offset=offset
    )
    return list(users), total


async def _existing_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await repository.user_by_id(session, user_id)
    if user is None:
        raise NotFoundError("No such account.")
    return user
