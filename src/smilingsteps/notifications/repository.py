"""Every outbox query.

Claiming is one statement on both engines:

    UPDATE email_outbox SET status = 'sending', claimed_by = :token, …
    WHERE id IN (SELECT id … due … ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED)
    RETURNING …

On PostgreSQL the subquery locks the rows it picks and skips rows another
sender holds, so concurrent senders claim disjoint sets without waiting. SQLite
has no row locks, but a writing statement takes the database's single write
lock before it reads, so two processes run the whole statement one after the
other and the second no longer sees the first one's rows as due. Every later
update is conditional on the claim token, so a sender whose lease ran out (and
whose rows another sender took over) cannot overwrite the new owner's result.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.notifications.models import OutboxMessage, OutboxStatus
from smilingsteps.platform.db import execute_core
from smilingsteps.platform.models import table_of

PENDING = OutboxStatus.PENDING
SENDING = OutboxStatus.SENDING
SENT = OutboxStatus.SENT
FAILED = OutboxStatus.FAILED


@dataclass(frozen=True)
class ClaimedMessage:
    """A message this sender holds until `claimed_until`; `attempts` includes this one."""

    id: uuid.UUID
    to_address: str
    template: str
    subject: str
    body_text: str
    body_html: str
    attempts: int
    created_at: datetime


def _due(now: datetime) -> ColumnElement[bool]:
    """Pending and due, or claimed by a sender whose lease ran out (it died or hung)."""
    return or_(
        and_(OutboxMessage.status == PENDING, OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.status == SENDING, OutboxMessage.claimed_until <= now),
    )


_INSERT = insert(table_of(OutboxMessage))


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, **values: object) -> None:
        """One new row, written with a single Core INSERT (no unit of work: queueing is on hot paths)."""
        await execute_core(self.session, _INSERT, values)

    async def claim_due(
        self, *, now: datetime, token: str, lease_until: datetime, limit: int, max_attempts: int
    ) -> list[ClaimedMessage]:
        """Claim up to `limit` due messages for `token` (see the module docstring)."""
        picked = (
            select(OutboxMessage.id)
            .where(_due(now), OutboxMessage.attempts < max_attempts)
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(picked.scalar_subquery()))
            .values(
                status=SENDING,
                claimed_by=token,
                claimed_until=lease_until,
                attempts=OutboxMessage.attempts + 1,
            )
            .returning(
                OutboxMessage.id,
                OutboxMessage.to_address,
                OutboxMessage.template,
                OutboxMessage.subject,
                OutboxMessage.body_text,
                OutboxMessage.body_html,
                OutboxMessage.attempts,
                OutboxMessage.created_at,
                OutboxMessage.next_attempt_at,
            )
            .execution_options(synchronize_session=False)
        )
        # RETURNING has no order; send the longest-waiting first.
        rows = sorted((await self.session.execute(statement)).all(), key=lambda row: row.next_attempt_at)
        return [
            ClaimedMessage(
                id=row.id,
                to_address=row.to_address,
                template=row.template,
                subject=row.subject,
                body_text=row.body_text or "",
                body_html=row.body_html or "",
                attempts=row.attempts,
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def fail_exhausted(self, *, now: datetime, max_attempts: int, error: str) -> list[uuid.UUID]:
        """Fail due messages that have no attempt left (a sender died during their last one)."""
        statement = (
            update(OutboxMessage)
            .where(_due(now), OutboxMessage.attempts >= max_attempts)
            .values(status=FAILED, claimed_by=None, claimed_until=None, last_error=error)
            .returning(OutboxMessage.id)
            .execution_options(synchronize_session=False)
        )
        return list((await self.session.execute(statement)).scalars())

    async def mark_sent(self, outbox_id: uuid.UUID, token: str, *, now: datetime, rfc_message_id: str) -> bool:
        """Record the send and drop the bodies (they can hold single-use links)."""
        return await self._finish(
            outbox_id,
            token,
            status=SENT,
            sent_at=now,
            message_id=rfc_message_id,
            body_text=None,
            body_html=None,
            last_error=None,
        )

    async def mark_retry(
        self, outbox_id: uuid.UUID, token: str, *, next_attempt_at: datetime, error: str, rfc_message_id: str
    ) -> bool:
        return await self._finish(
            outbox_id,
            token,
            status=PENDING,
            next_attempt_at=next_attempt_at,
            last_error=error,
            message_id=rfc_message_id,
        )

    async def mark_failed(self, outbox_id: uuid.UUID, token: str, *, error: str, rfc_message_id: str) -> bool:
        return await self._finish(outbox_id, token, status=FAILED, last_error=error, message_id=rfc_message_id)

    async def release(self, ids: Sequence[uuid.UUID], token: str, *, next_attempt_at: datetime) -> int:
        """Hand claimed messages back without counting an attempt (stopping, or the server is down)."""
        if not ids:
            return 0
        statement = (
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.claimed_by == token, OutboxMessage.status == SENDING)
            .values(
                status=PENDING,
                claimed_by=None,
                claimed_until=None,
                next_attempt_at=next_attempt_at,
                attempts=OutboxMessage.attempts - 1,
            )
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def purge_finished(self, *, before: datetime) -> int:
        """Delete sent and failed messages created before `before`."""
        statement = (
            delete(OutboxMessage)
            .where(OutboxMessage.status.in_((SENT, FAILED)), OutboxMessage.created_at < before)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def _finish(self, outbox_id: uuid.UUID, token: str, **values: object) -> bool:
        statement = (
            update(OutboxMessage)
            .where(
                OutboxMessage.id == outbox_id,
                OutboxMessage.claimed_by == token,
                OutboxMessage.status == SENDING,
            )
            .values(claimed_by=None, claimed_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(statement)
        return bool(getattr(result, "rowcount", 0))
