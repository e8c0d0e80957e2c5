"""Accounts rules: registration, email verification, passwords, and what other domains may
read or change of an account (through here, never the repository).

Functions only flush: the caller's transaction owns the change, its audit row and its emails.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import lockout, repository, sessions
from smilingsteps.accounts.errors import (
    EmailTakenError,
    InvalidEmailTokenError,
    WeakPasswordError,
    WrongCurrentPasswordError,
)
from smilingsteps.accounts.models import (
    AccountStatus,
    Role,
    TherapistStatus,
    TokenPurpose,
    User,
)
from smilingsteps.accounts.passwords import password_problem
from smilingsteps.accounts.schemas import AccountUpdateIn, Contact, RegisterIn, lookup_email
from smilingsteps.accounts.security import AuthKit
from smilingsteps.audit.service import record
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.platform.context import SYSTEM, ClientInfo
from smilingsteps.platform.crypto import new_token, token_hash
from smilingsteps.platform.db import Database
from smilingsteps.platform.errors import ConflictError

log = structlog.get_logger("smilingsteps.accounts")

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
        language=data.language,
        role=data.role,
        status=AccountStatus.ACTIVE,
        therapist_status=TherapistStatus.PENDING if data.role == Role.THERAPIST else None,
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


async def register_quietly(
    session: AsyncSession, kit: AuthKit, data: RegisterIn, *, now: datetime, client: ClientInfo
) -> None:
    """Registration that never tells whether the address has an account (REGISTRATION_HIDES_ACCOUNTS).

    A new address gets its account and verification email, as `register`; a taken one gets an
    email saying someone tried to register with it. The caller answers the same either way, and
    the password is hashed either way, so neither the answer nor its timing tells them apart.
    """
    check_password(data.password, email=data.email, full_name=data.full_name)
    existing = await repository.user_by_email(session, data.email)
    if existing is None:
        try:
            await register(session, kit, data, now=now, client=client)
            return
        except EmailTakenError:  # a concurrent registration won the address
            existing = await repository.user_by_email(session, data.email)
            assert existing is not None
    await kit.hasher.hash(data.password)  # the work a new account costs
    await queue_email(
        session,
        to=existing.email,
        language=existing.language,
        template="registration_attempt",
        context={
            "full_name": existing.full_name,
            "sign_in_link": public_link(kit.settings, "/sign-in"),
            "reset_link": public_link(kit.settings, "/reset-password"),
        },
        now=now,
    )
    await record(
        session,
        action="account.registration_attempted",
        context=client.audit(None),
        now=now,
        target_type="user",
        target_id=str(existing.id),
    )


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
        language=user.language,
        template="verify_email",
        context={
            "full_name": user.full_name,
            "link": public_link(kit.settings, "/verify-email", token=token),
            "expires_hours": kit.settings.EMAIL_VERIFICATION_TTL_HOURS,
        },
        now=now,
    )


async def resend_verification(session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, *, now: datetime) -> None:
    user = await repository.existing_user(session, user_id)
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


# ---- passwords -------------------------------------------------------------------------------


async def change_password(
    session: AsyncSession,
    db: Database,
    kit: AuthKit,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    *,
    current: str,
    new: str,
    now: datetime,
    client: ClientInfo,
) -> None:
    """Set a new password after checking the current one (a wrong one counts toward the lockout,
    and a locked account cannot change it); every other session ends."""
    user = await repository.existing_user(session, user_id)
    await lockout.refuse_if_locked(db, user.email, client.ip, now)
    matches, _ = await kit.hasher.verify(user.password_hash, current)
    if not await lockout.check_proof(db, kit, user, matches, reason="password_change", now=now, client=client):
        raise WrongCurrentPasswordError()
    check_password(new, email=user.email, full_name=user.full_name, field="new_password")
    await _set_password(session, kit, user, new, now=now)
    await sessions.revoke(session, kit, user.id, now=now, reason="password_changed", keep=session_id)
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
        session,
        to=user.email,
        language=user.language,
        template="password_changed",
        context={"full_name": user.full_name},
        now=now,
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
    user = await repository.user_by_email(session, lookup_email(email))
    if user is None or user.status != AccountStatus.ACTIVE:
        return
    ttl = timedelta(minutes=kit.settings.PASSWORD_RESET_TTL_MINUTES)
    token = await _issue_email_token(session, user, TokenPurpose.PASSWORD_RESET, ttl=ttl, now=now)
    await queue_email(
        session,
        to=user.email,
        language=user.language,
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
    if user is None or user.status != AccountStatus.ACTIVE:
        raise InvalidEmailTokenError()
    check_password(new_password, email=user.email, full_name=user.full_name, field="new_password")
    await _set_password(session, kit, user, new_password, now=now)
    await repository.retire_account_tokens(session, user.id, TokenPurpose.PASSWORD_RESET.value, now)
    await lockout.clear_lockout(session, user.email)
    await sessions.revoke(session, kit, user.id, now=now, reason="password_reset")
    await record(
        session,
        action="account.password.reset",
        context=client.audit(user.id),
        now=now,
        target_type="user",
        target_id=str(user.id),
    )


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
        role=Role.ADMIN,
        status=AccountStatus.ACTIVE,
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


async def set_status(
    session: AsyncSession, kit: AuthKit, user_id: uuid.UUID, status: AccountStatus, *, now: datetime
) -> tuple[User, bool]:
    """Suspend (every session ends at once) or reactivate an account; the account and whether it changed."""
    user = await repository.existing_user(session, user_id)
    if user.status == status:
        return user, False
    user.status = status
    user.updated_at = now
    if status is AccountStatus.SUSPENDED:
        await sessions.revoke(session, kit, user.id, now=now, reason="suspended")
    return user, True


async def set_therapist_status(
    session: AsyncSession, user_id: uuid.UUID, decision: TherapistStatus, *, now: datetime
) -> tuple[User, bool]:
    """Approve or reject a therapist account (409 for any other account); the account and whether it changed."""
    user = await repository.existing_user(session, user_id)
    if user.role != Role.THERAPIST:
        raise ConflictError("Only therapist accounts are approved or rejected.")
    if user.therapist_status == decision:
        return user, False
    user.therapist_status = decision
    user.updated_at = now
    return user, True


async def contacts(session: AsyncSession, *user_ids: uuid.UUID) -> list[Contact]:
    """Each account's address and name, in the order asked (for the emails other domains send)."""
    found = await repository.contacts(session, user_ids)
    missing = [str(user_id) for user_id in user_ids if user_id not in found]
    if missing:
        raise LookupError(f"no account {', '.join(missing)}")
    return [found[user_id] for user_id in user_ids]


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    return await repository.existing_user(session, user_id)


async def find_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await repository.user_by_id(session, user_id)


async def update_account(
    session: AsyncSession, user_id: uuid.UUID, data: AccountUpdateIn, *, now: datetime, client: ClientInfo
) -> User:
    """Change the account's own name, phone, time zone or language; audited with the fields' names only."""
    user = await repository.existing_user(session, user_id)
    changed = sorted(name for name in data.model_fields_set if getattr(data, name) is not None)
    for name in changed:
        setattr(user, name, getattr(data, name))
    if changed:
        user.updated_at = now
        await record(
            session,
            action="account.updated",
            context=client.audit(user.id),
            now=now,
            target_type="user",
            target_id=str(user.id),
            details={"fields": changed},
        )
    return user


async def search_users(
    session: AsyncSession,
    *,
    query: str | None,
    role: Role | None,
    status: AccountStatus | None,
    therapist_status: TherapistStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[User], int]:
    users, total = await repository.search_users(
        session, query=query, role=role, status=status, therapist_status=therapist_status, limit=limit, offset=offset
    )
    return list(users), total
