"""The bookings domain's periodic jobs (the worker's, or the development server's): expire holds, send reminders."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.bookings import repository, service
from smilingsteps.config import Settings
from smilingsteps.platform.clock import Clock, system_clock, utc_from
from smilingsteps.platform.db import Database
from smilingsteps.platform.jobs import PeriodicJob

log = structlog.get_logger("smilingsteps.bookings")
HOLD_EXPIRY_INTERVAL_S = 30.0
REMINDER_INTERVAL_S = 60.0


class BookingJobs:
    def __init__(self, settings: Settings, db: Database, *, clock: Clock = system_clock) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock

    async def expire_holds(self, _: asyncio.Event | None = None) -> int:
        """Holds past BOOKING_HOLD_MINUTES without payment become `expired` (their slots were already free)."""

        async def work(session: AsyncSession) -> int:
            return await repository.expire_stale_holds(session, now=utc_from(self.clock))

        expired = await self.db.run_transaction(work)
        if expired:
            log.info("booking_holds_expired", count=expired)
        return expired

    async def send_reminders(self, stop: asyncio.Event | None = None) -> int:
        """Queue due reminders in batches until none is left (or the worker stops)."""
        total = 0
        while stop is None or not stop.is_set():

            async def work(session: AsyncSession) -> int:
                return await service.send_due_reminders(session, self.settings, now=utc_from(self.clock))

            sent = await self.db.run_transaction(work)
            total += sent
            if not sent:
                break
        if total:
            log.info("booking_reminders_queued", count=total)
        return total

    def jobs(self) -> list[PeriodicJob]:
        return [
            PeriodicJob("booking-hold-expiry", HOLD_EXPIRY_INTERVAL_S, self.expire_holds),
            PeriodicJob("booking-reminders", REMINDER_INTERVAL_S, self.send_reminders),
        ]


def jobs(settings: Settings, db: Database, clock: Clock = system_clock) -> list[PeriodicJob]:
    return BookingJobs(settings, db, clock=clock).jobs()
