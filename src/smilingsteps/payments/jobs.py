"""The payments domain's periodic job (the worker's, or the development server's): checking payments.

One pass asks Daraja (STK query) about every attempt whose check is due: a success callback makes
its check due at once, an attempt nobody answered is due MPESA_CHECK_AFTER_SECONDS after it began.
The pass runs every few seconds, so a paid booking is confirmed moments after the callback
without the web process spending its time on it; a process that runs the jobs itself is woken by
the callback instead.
"""

from __future__ import annotations

import asyncio

import structlog

from smilingsteps.config import Settings
from smilingsteps.payments import gateway
from smilingsteps.payments.processing import Processor
from smilingsteps.platform.clock import Clock, system_clock
from smilingsteps.platform.db import Database
from smilingsteps.platform.jobs import PeriodicJob

log = structlog.get_logger("smilingsteps.payments")
RECONCILIATION = "payment-reconciliation"
RECONCILE_INTERVAL_S = 2.0
BATCH = 50


def jobs(settings: Settings, db: Database, clock: Clock = system_clock) -> list[PeriodicJob]:
    if settings.mpesa_embedded_simulator and not gateway.installed(settings):
        # A worker of its own would start a simulator of its own, which knows none of the app's pushes.
        log.warning(
            "payment_checks_need_a_shared_simulator",
            hint="run `smilingsteps mpesa-simulator` and set MPESA_BASE_URL for both the app and the worker",
        )
    processor = Processor(settings, db, gateway.shared(settings), clock)

    async def reconcile(stop: asyncio.Event | None = None) -> int:
        """Payments still waiting past MPESA_CHECK_AFTER_SECONDS, asked about in batches until none is due."""
        total = 0
        while stop is None or not stop.is_set():
            checked = await processor.reconcile(BATCH)
            total += checked
            if checked < BATCH:
                break
        return total

    return [PeriodicJob(RECONCILIATION, RECONCILE_INTERVAL_S, reconcile)]
