"""Sessions and their tokens: start one, issue access and refresh tokens, rotate on refresh
(a reused refresh token ends its session), list, revoke, sign out.

Functions that take a `session` only flush; `refresh` takes the `Database`, because a
reused token must end its session although the request itself fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import repository
from smilingsteps.accounts.errors import (
    CsrfError,
    InvalidRefreshTokenError,
    RefreshTokenReusedError,
)
from smilingsteps.accounts.models import (
    AccountStatus,
    AuthSession,
    User,
)
from smilingsteps.accounts.security import AuthKit
from smilingsteps.audit.service import record
from smilingsteps.platform.context import USER_AGENT_MAX, ClientInfo
from smilingsteps.platform.crypto import new_token, token_hash
from smilingsteps.platform.db import Database, after_commit
from smilingsteps.platform.errors import NotFoundError

log = structlog.get_logger("smilingsteps.accounts")


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


async def start_session(
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
            await revoke(session, kit, user.id, now=now, reason=ended, only=auth_session.id)
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
    if user.status != AccountStatus.ACTIVE:
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
        await revoke(session, kit, user.id, now=now, reason="token_reuse", only=auth_session.id)
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


async def revoke(
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
    await revoke(session, kit, user_id, now=now, reason=reason, only=session_id)
    action = "auth.logout" if reason == "logout" else "auth.session.revoked"
    await record(
        session, action=action, context=client.audit(user_id), now=now, target_type="session", target_id=str(session_id)
    )
