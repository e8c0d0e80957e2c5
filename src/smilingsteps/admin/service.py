"""Administration: suspend and reactivate accounts, review therapist applications.

Every change is audited with the administrator as the actor. Account state itself belongs
to accounts: this module decides who may do what and calls the accounts service.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.models import AccountStatus, TherapistStatus, User
from smilingsteps.accounts.security import AuthKit
from smilingsteps.audit.service import record
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.errors import ForbiddenError


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
    user, changed = await accounts.set_status(session, kit, user_id, status, now=now)
    if not changed:
        return user
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
    user, changed = await accounts.set_therapist_status(session, user_id, decision, now=now)
    if not changed:
        return user
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
