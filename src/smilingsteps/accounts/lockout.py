"""The lockout: failed proofs of identity (a wrong password at sign-in or when changing it, a
wrong MFA code at sign-in or when turning MFA off or renewing recovery codes) count per
account and per address; LOGIN_MAX_FAILURES of them within the window lock the account
(LOGIN_IP_MAX_FAILURES lock the address) for 15 min, then 30, 60… for lockouts in a row,
and the owner is emailed. Every such action is refused while locked.

Failures are counted in their own transaction (`Database.run_transaction`): the request that
failed is rolled back, its failure must still count.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import repository
from smilingsteps.accounts.errors import AccountLockedError
from smilingsteps.accounts.models import LoginThrottle, User
from smilingsteps.accounts.security import AuthKit
from smilingsteps.audit.service import record
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.platform import i18n
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.crypto import token_hash
from smilingsteps.platform.db import Database

log = structlog.get_logger("smilingsteps.accounts")


def throttle_keys(email: str, ip: str | None) -> tuple[str, str]:
    return f"acct:{token_hash(email.strip().lower())}", f"ip:{token_hash(ip or 'unknown')}"


def _locked_for(throttle: LoginThrottle | None, now: datetime) -> int:
    if throttle is None or throttle.locked_until is None or throttle.locked_until <= now:
        return 0
    return int((throttle.locked_until - now).total_seconds()) + 1


async def refuse_if_locked(db: Database, email: str, ip: str | None, now: datetime) -> None:
    """429 `account-locked` while the account (by email) or the address is locked."""
    account_key, ip_key = throttle_keys(email, ip)
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


async def check_proof(
    db: Database, kit: AuthKit, user: User, proven: bool, *, reason: str, now: datetime, client: ClientInfo
) -> bool:
    """For an action that asks a signed-in user to prove it is them again (current password, MFA code):
    a failure counts toward the lockout like a failed sign-in. Returns `proven`; call `refuse_if_locked` first."""
    if not proven:
        await record_login_failure(db, kit, email=user.email, user_id=user.id, reason=reason, now=now, client=client)
    return proven


async def clear_lockout(session: AsyncSession, email: str) -> None:
    """Forget the account's failed sign-ins and lift its lock (a password reset proves the owner)."""
    await repository.clear_throttle(session, throttle_keys(email, None)[0])


async def record_login_failure(
    db: Database, kit: AuthKit, *, email: str, user_id: uuid.UUID | None, reason: str, now: datetime, client: ClientInfo
) -> None:
    """Count a failed attempt per account and per address, lock on the threshold, email the owner, audit."""
    account_key, ip_key = throttle_keys(email, client.ip)

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
                    language=user.language,
                    template="account_locked",
                    context={
                        "full_name": user.full_name,
                        "locked_until": i18n.when(locked_until, user.timezone, user.language),
                        "reset_link": public_link(kit.settings, "/reset-password"),
                    },
                    now=now,
                )

    await db.run_transaction(work)
