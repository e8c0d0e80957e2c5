"""Every query the audit log runs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.audit.models import AuditEvent
from smilingsteps.audit.schemas import AuditFilters
from smilingsteps.platform.db import take_write_turn

# One fixed key for the whole log; only audit writers take it.
CHAIN_LOCK_KEY = int.from_bytes(hashlib.sha256(b"smilingsteps.audit_events.chain").digest()[:8], "big", signed=True)


async def lock_chain(session: AsyncSession) -> None:
    """Make this transaction the only one appending until it ends.

    PostgreSQL: a transaction-scoped advisory lock, released by commit or
    rollback, so other writers wait only for the rest of this transaction.
    Under READ COMMITTED the head read that follows sees the row the previous
    holder committed.

    SQLite: the pysqlite driver opens its (deferred) transaction lazily, at the
    first data-changing statement, so a plain SELECT of the head could read a
    state another connection is about to extend. A write that touches no row
    takes SQLite's single write lock now (waiting for the busy timeout if
    another writer has it), so the head read below is current and stays so
    until commit. No row matches, so the append-only trigger does not fire.
    """
    await take_write_turn(session, table="audit_events", key=CHAIN_LOCK_KEY)


async def chain_head(session: AsyncSession) -> tuple[int, str] | None:
    """The (seq, hash) of the newest row, or None for an empty log."""
    row = (
        await session.execute(select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1))
    ).first()
    return None if row is None else (int(row.seq), str(row.hash))


async def add(session: AsyncSession, event: AuditEvent) -> None:
    session.add(event)
    await session.flush()


async def list_events(
    session: AsyncSession, filters: AuditFilters, *, limit: int, before_seq: int | None
) -> list[AuditEvent]:
    statement = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
    if before_seq is not None:
        statement = statement.where(AuditEvent.seq < before_seq)
    if filters.actor_id is not None:
        statement = statement.where(AuditEvent.actor_id == filters.actor_id)
    if filters.action is not None:
        if filters.action.endswith("."):
            statement = statement.where(AuditEvent.action.startswith(filters.action, autoescape=True))
        else:
            statement = statement.where(AuditEvent.action == filters.action)
    if filters.target_type is not None:
        statement = statement.where(AuditEvent.target_type == filters.target_type)
    if filters.target_id is not None:
        statement = statement.where(AuditEvent.target_id == filters.target_id)
    if filters.since is not None:
        statement = statement.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEvent.occurred_at < filters.until)
    return list((await session.execute(statement)).scalars())


async def chain_batch(session: AsyncSession, *, after_seq: int | None, limit: int) -> Sequence[RowMapping]:
    """Up to `limit` rows in seq order after `after_seq`, as plain mappings (no ORM identity map)."""
    statement: Any = select(*AuditEvent.__table__.c).order_by(AuditEvent.seq).limit(limit)
    if after_seq is not None:
        statement = statement.where(AuditEvent.seq > after_seq)
    return (await session.execute(statement)).mappings().all()
