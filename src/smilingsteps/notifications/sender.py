"""The outbox sender: claims due messages, sends them outside any transaction, records the result.

Guarantees:
- a message whose transaction rolled back does not exist, so it is never sent;
- two live senders never send the same message: a claim is atomic (see the
  repository) and every result is recorded only by the holder of the claim;
- delivery is at least once: if a sender dies after the server accepted a
  message but before recording it, the claim's lease (EMAIL_CLAIM_TIMEOUT)
  runs out and another sender sends it again, with the same Message-ID.

Retries back off exponentially (with jitter) from EMAIL_RETRY_BASE_DELAY up to
EMAIL_RETRY_MAX_DELAY; a permanent refusal or the last of EMAIL_MAX_ATTEMPTS
fails the message and logs `email_failed`.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.config import Settings
from smilingsteps.notifications.backends import (
    MailBackend,
    MailDeliveryError,
    MailServerUnavailableError,
    MailSession,
    TransientMailError,
    build_backend,
    compose,
    rfc_message_id,
)
from smilingsteps.notifications.repository import ClaimedMessage, OutboxRepository
from smilingsteps.platform.clock import Clock, system_clock, utc_from
from smilingsteps.platform.db import Database, backoff_delay
from smilingsteps.platform.errors import DatabaseUnavailableError
from smilingsteps.platform.jobs import PeriodicJob, run_periodically

log = structlog.get_logger("smilingsteps.notifications")

OUTBOX_JOB = "email-outbox"
NO_ATTEMPTS_LEFT = "no attempts left: the sender stopped during the last one"


class OutboxSender:
    """Sends what the outbox holds; any number of these may run at once, in any process."""

    def __init__(
        self, settings: Settings, db: Database, *, clock: Clock = system_clock, backend: MailBackend | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.backend = backend if backend is not None else build_backend(settings)
        self.worker_id = f"{socket.gethostname()[:32]}:{os.getpid()}"
        self._rng = random.Random()  # noqa: S311 (jitter, not security)

    def job(self) -> PeriodicJob:
        return PeriodicJob(OUTBOX_JOB, self.settings.WORKER_POLL_INTERVAL, self.process_due)

    def describe(self) -> dict[str, str]:
        """Where mail goes, for the start-up log line (no credentials)."""
        if self.backend.name == "file":
            return {"backend": "file", "directory": str(self.settings.email_file_dir)}
        return {"backend": self.backend.name, "host": f"{self.settings.SMTP_HOST}:{self.settings.SMTP_PORT}"}

    async def run_once(self) -> int:
        """Send everything due now; return how many messages were sent."""
        return await self.process_due(asyncio.Event())

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Poll every WORKER_POLL_INTERVAL until `stop`; the message in flight is finished first."""
        await run_periodically(self.job(), stop)

    async def process_due(self, stop: asyncio.Event) -> int:
        """Claim, send and record batches until nothing is due or `stop` is set."""
        await self._ensure_database()
        sent = 0
        while not stop.is_set():
            await self._fail_exhausted()
            token = f"{self.worker_id}/{secrets.token_hex(6)}"
            batch = await self._claim(token)
            if not batch:
                break
            sent_now, server_down = await self._send_batch(batch, token, stop)
            sent += sent_now
            if server_down:
                break
        return sent

    # ---- steps ------------------------------------------------------------

    def _now(self) -> datetime:
        return utc_from(self.clock)

    async def _ensure_database(self) -> None:
        if self.db.status.available:
            return
        try:
            await self.db.ping()
        except Exception as exc:
            raise DatabaseUnavailableError(retry_after=self.db.retry_after) from exc

    async def _claim(self, token: str) -> list[ClaimedMessage]:
        now = self._now()

        async def work(session: AsyncSession) -> list[ClaimedMessage]:
            return await OutboxRepository(session).claim_due(
                now=now,
                token=token,
                lease_until=now + timedelta(seconds=self.settings.EMAIL_CLAIM_TIMEOUT),
                limit=self.settings.EMAIL_BATCH_SIZE,
                max_attempts=self.settings.EMAIL_MAX_ATTEMPTS,
            )

        return await self.db.run_transaction(work)

    async def _fail_exhausted(self) -> None:
        now = self._now()

        async def work(session: AsyncSession) -> list[uuid.UUID]:
            return await OutboxRepository(session).fail_exhausted(
                now=now, max_attempts=self.settings.EMAIL_MAX_ATTEMPTS, error=NO_ATTEMPTS_LEFT
            )

        for outbox_id in await self.db.run_transaction(work):
            log.error("email_failed", outbox_id=str(outbox_id), reason=NO_ATTEMPTS_LEFT)

    async def _send_batch(self, batch: Sequence[ClaimedMessage], token: str, stop: asyncio.Event) -> tuple[int, bool]:
        sent = 0
        async with self.backend.session() as mail:
            for index, message in enumerate(batch):
                if stop.is_set():
                    await self._release(batch[index:], token, self._now())
                    return sent, False
                try:
                    sent += await self._deliver(mail, message, token)
                except MailServerUnavailableError:
                    # Nothing else will go out now either: hand the rest back, untried.
                    later = self._now() + timedelta(seconds=self._retry_delay(message.attempts))
                    await self._release(batch[index + 1 :], token, later)
                    return sent, True
        return sent, False

    async def _deliver(self, mail: MailSession, message: ClaimedMessage, token: str) -> int:
        message_id = rfc_message_id(message.id, self.settings)
        error: MailDeliveryError
        try:
            email = compose(
                self.settings,
                to=message.to_address,
                subject=message.subject,
                text=message.body_text,
                html=message.body_html,
                message_id=message_id,
                date=self._now(),
            )
            await mail.send(email)
        except MailDeliveryError as exc:
            error = exc
        except Exception as exc:
            # A bug or an unforeseen library error: retried like a transient failure, and loud.
            log.error("email_send_error", outbox_id=str(message.id), template=message.template, exc_info=exc)
            error = TransientMailError(f"{type(exc).__name__}")
        else:
            await self._record_sent(message, token, message_id)
            return 1
        await self._record_failure(message, token, error, message_id)
        if isinstance(error, MailServerUnavailableError):
            raise error
        return 0

    async def _record_sent(self, message: ClaimedMessage, token: str, message_id: str) -> None:
        now = self._now()

        async def work(session: AsyncSession) -> bool:
            return await OutboxRepository(session).mark_sent(message.id, token, now=now, rfc_message_id=message_id)

        recorded = await self.db.run_transaction(work)
        log.info(
            "email_sent",
            outbox_id=str(message.id),
            template=message.template,
            attempt=message.attempts,
            backend=self.backend.name,
        )
        if not recorded:
            # Our lease ran out mid-send and another sender took the message over.
            log.warning("email_claim_lost", outbox_id=str(message.id), template=message.template)

    async def _record_failure(
        self, message: ClaimedMessage, token: str, error: MailDeliveryError, message_id: str
    ) -> None:
        now = self._now()
        reason = str(error) or type(error).__name__
        final = error.permanent or message.attempts >= self.settings.EMAIL_MAX_ATTEMPTS
        delay = self._retry_delay(message.attempts)

        async def work(session: AsyncSession) -> bool:
            repository = OutboxRepository(session)
            if final:
                return await repository.mark_failed(message.id, token, error=reason, rfc_message_id=message_id)
            return await repository.mark_retry(
                message.id,
                token,
                next_attempt_at=now + timedelta(seconds=delay),
                error=reason,
                rfc_message_id=message_id,
            )

        await self.db.run_transaction(work)
        if final:
            log.error(
                "email_failed",
                outbox_id=str(message.id),
                template=message.template,
                attempts=message.attempts,
                permanent=error.permanent,
                reason=reason,
            )
        else:
            log.warning(
                "email_deferred",
                outbox_id=str(message.id),
                template=message.template,
                attempt=message.attempts,
                retry_in_s=round(delay, 1),
                reason=reason,
            )

    async def _release(self, messages: Sequence[ClaimedMessage], token: str, next_attempt_at: datetime) -> None:
        if not messages:
            return

        async def work(session: AsyncSession) -> int:
            return await OutboxRepository(session).release(
                [message.id for message in messages], token, next_attempt_at=next_attempt_at
            )

        await self.db.run_transaction(work)

    def _retry_delay(self, attempts: int) -> float:
        """Exponential with jitter in [ceiling/2, ceiling]: never an immediate retry."""
        base, cap = self.settings.EMAIL_RETRY_BASE_DELAY, self.settings.EMAIL_RETRY_MAX_DELAY
        ceiling = min(cap, base * 2.0 ** max(0, attempts - 1))
        return ceiling / 2 + backoff_delay(0, base=ceiling / 2, cap=ceiling / 2, rng=self._rng)
