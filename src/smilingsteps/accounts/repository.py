"""Every accounts query. Reads of a user's private rows take the owner's id,
so a caller cannot fetch someone else's sessions by forgetting a check."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import CursorResult, Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts.models import (
    AccountStatus,
    AccountToken,
    AuthSession,
    LoginThrottle,
    RecoveryCode,
    RefreshToken,
    Role,
    TherapistStatus,
    User,
)
from smilingsteps.accounts.schemas import Contact
from smilingsteps.platform.errors import NotFoundError


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def user_by_id(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def contacts(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Contact]:
    rows = await session.execute(
        select(User.id, User.email, User.full_name, User.language).where(User.id.in_(user_ids))
    )
    return {row.id: Contact(email=row.email, full_name=row.full_name, language=row.language) for row in rows}


async def existing_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """The account, or 404 ("No such account.") for the services that need it to exist."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError("No such account.")
    return user


async def email_exists(session: AsyncSession, email: str) -> bool:
    return (await session.execute(select(User.id).where(User.email == email))).first() is not None


async def any_admin(session: AsyncSession) -> bool:
    return (await session.execute(select(User.id).where(User.role == Role.ADMIN).limit(1))).first() is not None


def _user_search(
    query: str | None, role: Role | None, status: AccountStatus | None, therapist_status: TherapistStatus | None
) -> Select[User]:
    statement = select(User)
    if query:
        pattern = f"%{query.lower().replace('%', '').replace('_', '')}%"
        statement = statement.where(or_(User.email.like(pattern), func.lower(User.full_name).like(pattern)))
    if role:
        statement = statement.where(User.role == role)
    if status:
        statement = statement.where(User.status == status)
    if therapist_status:
        statement = statement.where(User.therapist_status == therapist_status)
    return statement


async def search_users(
    session: AsyncSession,
    *,
    query: str | None,
    role: Role | None,
    status: AccountStatus | None,
    therapist_status: TherapistStatus | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[User], int]:
    statement = _user_search(query, role, status, therapist_status)
    total = (await session.execute(select(func.count()).select_from(statement.subquery()))).scalar_one()
    rows = await session.execute(statement.order_by(User.created_at.desc(), User.id).limit(limit).offset(offset))
    return list(rows.scalars().all()), int(total)


# ---- sessions ---------------------------------------------------------------


async def add_refresh_token(session: AsyncSession, session_id: uuid.UUID, token_hash: str, now: datetime) -> None:
    session.add(RefreshToken(token_hash=token_hash, session_id=session_id, created_at=now))


async def refresh_token_with_session(
    session: AsyncSession, token_hash: str
) -> tuple[RefreshToken, AuthSession, User] | None:
    row = (
        await session.execute(
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .join(User, User.id == AuthSession.user_id)
            .where(RefreshToken.token_hash == token_hash)
        )
    ).first()
    return None if row is None else (row.RefreshToken, row.AuthSession, row.User)


async def spend_refresh_token(session: AsyncSession, token_hash: str, now: datetime) -> bool:
    """Mark the token rotated; False when it already was (a reuse), atomically even under races."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.rotated_at.is_(None))
        .values(rotated_at=now)
    )
    return _rowcount(result) == 1


async def active_sessions_of(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> Sequence[AuthSession]:
    rows = await session.execute(
        select(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None), AuthSession.expires_at > now)
        .order_by(AuthSession.last_seen_at.desc())
    )
    return rows.scalars().all()


async def session_of(session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> AuthSession | None:
    """The session only if it belongs to `user_id`."""
    return (
        await session.execute(select(AuthSession).where(AuthSession.id == session_id, AuthSession.user_id == user_id))
    ).scalar_one_or_none()


async def revoke_sessions(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    now: datetime,
    reason: str,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revoke the user's live sessions (one, or all but `keep`); returns the ids revoked."""
    conditions = [AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)]
    if only is not None:
        conditions.append(AuthSession.id == only)
    if keep is not None:
        conditions.append(AuthSession.id != keep)
    ids = list((await session.execute(select(AuthSession.id).where(*conditions))).scalars())
    if ids:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id.in_(ids), AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)
        )
    return ids


# ---- email tokens -----------------------------------------------------------


async def spend_once(
    session: AsyncSession, *, purpose: str, token_hash: str, user_id: uuid.UUID, now: datetime, expires_at: datetime
) -> bool:
    """Record `token_hash` as used for `purpose`; False when it already was (the hash is unique, so of two
    concurrent spenders exactly one gets True)."""
    try:
        async with session.begin_nested():
            session.add(
                AccountToken(
                    user_id=user_id,
                    purpose=purpose,
                    token_hash=token_hash,
                    created_at=now,
                    expires_at=expires_at,
                    used_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


async def add_account_token(
    session: AsyncSession, *, user_id: uuid.UUID, purpose: str, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    session.add(
        AccountToken(user_id=user_id, purpose=purpose, token_hash=token_hash, created_at=now, expires_at=expires_at)
    )


async def use_account_token(session: AsyncSession, *, purpose: str, token_hash: str, now: datetime) -> uuid.UUID | None:
    """Spend a live token once; the user it was for, or None if unknown, expired or already used."""
    token = (
        await session.execute(
            select(AccountToken).where(AccountToken.token_hash == token_hash, AccountToken.purpose == purpose)
        )
    ).scalar_one_or_none()
    if token is None or token.used_at is not None or token.expires_at <= now:
        return None
    result = await session.execute(
        update(AccountToken).where(AccountToken.id == token.id, AccountToken.used_at.is_(None)).values(used_at=now)
    )
    return token.user_id if _rowcount(result) == 1 else None


async def retire_account_tokens(session: AsyncSession, user_id: uuid.UUID, purpose: str, now: datetime) -> None:
    """Older links stop working once a newer one is sent or one is used."""
    await session.execute(
        update(AccountToken)
        .where(AccountToken.user_id == user_id, AccountToken.purpose == purpose, AccountToken.used_at.is_(None))
        .values(used_at=now)
    )


# ---- MFA ----------------------------------------------------------------------


async def accept_totp_step(session: AsyncSession, user_id: uuid.UUID, step: int) -> bool:
    """Record `step` as used; False if it (or a later one) was already accepted, even under races."""
    result = await session.execute(
        update(User)
        .where(User.id == user_id, or_(User.mfa_last_step.is_(None), User.mfa_last_step < step))
        .values(mfa_last_step=step)
    )
    return _rowcount(result) == 1


async def replace_recovery_codes(session: AsyncSession, user_id: uuid.UUID, hashes: list[str], now: datetime) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    session.add_all(RecoveryCode(user_id=user_id, code_hash=h, created_at=now) for h in hashes)


async def use_recovery_code(session: AsyncSession, user_id: uuid.UUID, code_hash: str, now: datetime) -> bool:
    result = await session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.code_hash == code_hash, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
    )
    return _rowcount(result) >= 1


async def remaining_recovery_codes(session: AsyncSession, user_id: uuid.UUID) -> int:
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(RecoveryCode)
                .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
            )
        ).scalar_one()
    )


async def delete_recovery_codes(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


# ---- login throttling -----------------------------------------------------------


async def throttles(
    session: AsyncSession, keys: Sequence[str], *, for_update: bool = False
) -> dict[str, LoginThrottle]:
    """The throttle rows of `keys`; `for_update` locks them (PostgreSQL) for a read-modify-write."""
    statement = select(LoginThrottle).where(LoginThrottle.key.in_(keys))
    rows = await session.execute(statement.with_for_update() if for_update else statement)
    return {row.key: row for row in rows.scalars()}


async def clear_throttle(session: AsyncSession, key: str) -> None:
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))


async def ensure_throttles(session: AsyncSession, keys: Sequence[str], now: datetime) -> None:
    """Create missing throttle rows without racing concurrent failures (insert … on conflict do nothing)."""
    dialect = session.get_bind().dialect.name
    values = [{"key": key, "failures": 0, "window_started_at": now, "lockouts": 0, "updated_at": now} for key in keys]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        await session.execute(pg_insert(LoginThrottle).values(values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        await session.execute(sqlite_insert(LoginThrottle).values(values).on_conflict_do_nothing())
