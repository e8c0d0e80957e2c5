"""Which sessions were revoked recently, checked on every authenticated request.

An access token is self-contained, so revoking its session must also stop the
token at once. Checking the database on every request would cost more than the
rest of authentication, so each instance keeps the set of sessions revoked
within the last access-token lifetime in memory (older tokens have expired
anyway): its own revocations are added as they commit, and the others'
arrive by polling an indexed query every SESSION_REVOCATION_SYNC_SECONDS.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select

from smilingsteps.accounts.models import AuthSession
from smilingsteps.platform.db import Database

log = structlog.get_logger("smilingsteps.accounts.revocations")
# Commits land a little after the revocation time they record; look back this far.
_SYNC_OVERLAP = timedelta(seconds=60)


class RevokedSessions:
    def __init__(self, *, keep_for: timedelta) -> None:
        self.keep_for = keep_for
        self._until: dict[uuid.UUID, datetime] = {}
        self._synced_to: datetime | None = None

    def add(self, session_id: uuid.UUID, revoked_at: datetime) -> None:
        self._until[session_id] = revoked_at + self.keep_for

    def __contains__(self, session_id: uuid.UUID) -> bool:
        return session_id in self._until

    def __len__(self) -> int:
        return len(self._until)

    def prune(self, now: datetime) -> None:
        for session_id in [sid for sid, until in self._until.items() if until <= now]:
            del self._until[session_id]

    async def sync(self, db: Database, now: datetime) -> int:
        """Load revocations committed by any instance since the last sync; returns how many were seen."""
        since = (self._synced_to or now - self.keep_for) - _SYNC_OVERLAP
        async with db.session() as session:
            rows = (
                await session.execute(
                    select(AuthSession.id, AuthSession.revoked_at).where(AuthSession.revoked_at >= since)
                )
            ).all()
        for session_id, revoked_at in rows:
            if revoked_at is not None:
                self.add(session_id, revoked_at)
        self._synced_to = now
        self.prune(now)
        return len(rows)

    async def run(self, db: Database, now: Callable[[], datetime], interval_s: float) -> None:
        """Background task: keep syncing; a failed round is logged and retried next interval."""
        while True:
            try:
                await self.sync(db, now())
            except Exception as exc:
                log.warning("session_revocation_sync_failed", error=type(exc).__name__)
            await asyncio.sleep(interval_s)
