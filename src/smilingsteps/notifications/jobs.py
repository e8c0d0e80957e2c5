"""The notifications domain's periodic jobs: send what the outbox holds, delete what it kept long enough."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.config import Settings
from smilingsteps.notifications.repository import OutboxRepository
from smilingsteps.notifications.sender import OutboxSender
from smilingsteps.platform.clock import Clock, system_clock, utc_from
from smilingsteps.platform.db import Database
from smilingsteps.platform.jobs import PeriodicJob

log = structlog.get_logger("smilingsteps.notifications")

RETENTION_JOB = "email-outbox-retention"
RETENTION_INTERVAL_S = 3600.0


class OutboxRetention:
    """Deletes sent and failed messages older than EMAIL_RETENTION_DAYS."""

    def __init__(self, settings: Settings, db: Database, *, clock: Clock = system_clock) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock

    def job(self) -> PeriodicJob:
        return PeriodicJob(RETENTION_JOB, RETENTION_INTERVAL_S, self.purge)

    async def purge(self, _: asyncio.Event | None = None) -> int:
        before = utc_from(self.clock) - timedelta(days=self.settings.EMAIL_RETENTION_DAYS)

        async def work(session: AsyncSession) -> int:
            return await OutboxRepository(session).purge_finished(before=before)

        deleted = await self.db.run_transaction(work)
        if deleted:
            log.info("email_outbox_purged", deleted=deleted, retention_days=self.settings.EMAIL_RETENTION_DAYS)
        return deleted


def jobs(settings: Settings, db: Database, clock: Clock = system_clock) -> list[PeriodicJob]:
    """The outbox sender and its retention, for the worker (or the development server)."""
    sender = OutboxSender(settings, db, clock=clock)
    log.info("email_sender_ready", **sender.describe())
    return [sender.job(), OutboxRetention(settings, db, clock=clock).job()]
