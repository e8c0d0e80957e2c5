"""Administration: suspend and reactivate accounts, review therapist applications.

Every change is audited with the administrator as the actor. Account state itself belongs
to accounts: this module decides who may do what and calls the accounts service. A review
reads the profile through the therapists service and the last decision from the audit log.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.models import AccountStatus, Role, TherapistStatus, User
from smilingsteps.accounts.security import AuthKit
from smilingsteps.admin.schemas import Application
from smilingsteps.audit import service as audit
from smilingsteps.audit.models import AuditEvent
from smilingsteps.audit.schemas import AuditFilters
from smilingsteps.audit.service import record
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.platform.context import ClientInfo
from smilingsteps.platform.errors import ForbiddenError, NotFoundError
from smilingsteps.platform.i18n import N_, gettext_in
from smilingsteps.therapists import service as therapists

# The audit actions of a review decision, and the prefix they share (the audit log's filter for both).
APPROVED_ACTION, REJECTED_ACTION = "admin.therapist.approved", "admin.therapist.rejected"
REVIEW_ACTIONS = "admin.therapist."
NO_REASON = N_("Your application did not meet our requirements.")


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
        {"full_name": user.full_name, "link": public_link(kit.settings, "/practice/availability")}
        if approved
        else {"full_name": user.full_name, "reason": reason or gettext_in(user.language)(NO_REASON)}
    )
    await queue_email(
        session,
        to=user.email,
        language=user.language,
        template="therapist_approved" if approved else "therapist_rejected",
        context=email_context,
        now=now,
    )
    await record(
        session,
        action=APPROVED_ACTION if approved else REJECTED_ACTION,
        context=client.audit(admin_id),
        now=now,
        target_type="user",
        target_id=str(user.id),
        details={"reason": reason} if reason else None,
    )
    return user


async def therapist_application(session: AsyncSession, user_id: uuid.UUID) -> Application:
    """A therapist account with its full profile and the last review decision; 404 for any other account.

    The rejection reason lives in the audit row of the decision (the account keeps only its status),
    so the newest review event is read back; its reason counts only while the account stands rejected.
    """
    user = await accounts.get_user(session, user_id)
    if user.role != Role.THERAPIST:
        raise NotFoundError("No such therapist.")
    therapist = await therapists.profile_for_review(session, user_id)
    filters = AuditFilters(action=REVIEW_ACTIONS, target_type="user", target_id=str(user_id))
    decisions = await audit.list_events(session, filters, limit=1)
    last = decisions[0] if decisions else None
    return Application(
        user=user,
        therapist=therapist,
        reviewed_at=None if last is None else last.occurred_at,
        rejection_reason=_rejection_reason(user, last),
    )


def _rejection_reason(user: User, last_decision: AuditEvent | None) -> str | None:
    if last_decision is None or last_decision.action != REJECTED_ACTION:
        return None
    if user.therapist_status != TherapistStatus.REJECTED:
        return None
    reason = (last_decision.details or {}).get("reason")
    return reason if isinstance(reason, str) else None
