"""The audit log table: append-only, each row hash-chained to the one before it.

`actor_id` deliberately has no foreign key: the log must outlive the accounts it
mentions. The database refuses UPDATE and DELETE with a trigger (created in the
migration, see `0003_audit`); the hash chain makes any change that gets past the
trigger detectable by `smilingsteps audit verify`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from smilingsteps.platform.models import Base, UtcDateTime, new_id

ACTION_MAX = 64
TARGET_TYPE_MAX = 64
TARGET_ID_MAX = 128
IP_MAX = 64
REQUEST_ID_MAX = 128
HASH_HEX_LEN = 64


class AuditEvent(Base):
    """One recorded action: who did what to which target, when and from where."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # Each admin filter reads newest first (seq descending) within its own index.
        Index("ix_audit_events_actor_id_seq", "actor_id", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_target_seq", "target_type", "target_id", "seq"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # Strictly increasing by one; the unique constraint is the last line of
    # defence against two writers forking the chain.
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    action: Mapped[str] = mapped_column(String(ACTION_MAX))
    target_type: Mapped[str | None] = mapped_column(String(TARGET_TYPE_MAX))
    target_id: Mapped[str | None] = mapped_column(String(TARGET_ID_MAX))
    ip: Mapped[str | None] = mapped_column(String(IP_MAX))
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_MAX))
    # JSON, not JSONB: PostgreSQL keeps the text exactly as written, so the
    # value read back is the value that was hashed (JSONB renormalises numbers).
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(HASH_HEX_LEN))
    hash: Mapped[str] = mapped_column(String(HASH_HEX_LEN))

    def __repr__(self) -> str:
        return f"AuditEvent(seq={self.seq}, action={self.action!r}, id={self.id})"
