"""What runs outside a request's transaction, because it talks to Daraja: the STK push after the
attempt is committed, the STK query that confirms a success callback, and reconciliation.

Each step is: read what is needed, call Daraja with no transaction open, then record the answer
in a short transaction of its own (`Database.run_transaction`, retried on transient failures).
"""

from __future__ import annotations

import asyncio
import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.config import Settings
from smilingsteps.payments import repository, service
from smilingsteps.payments.gateway import MpesaGateway, gateway_of
from smilingsteps.payments.models import PaymentAttempt
from smilingsteps.payments.mpesa.client import DarajaError, DarajaRefusedError, StkQueryAnswer
from smilingsteps.platform.clock import Clock, utc_from
from smilingsteps.platform.db import Database, after_commit
from smilingsteps.platform.runtime import Runtime

log = structlog.get_logger("smilingsteps.payments")
CONCURRENT_CHECKS = 8


class Processor:
    def __init__(self, settings: Settings, db: Database, gateway: MpesaGateway, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.gateway = gateway
        self.clock = clock

    async def push(self, order: service.PushOrder) -> None:
        """Send the STK push for a committed attempt and record Daraja's answer."""
        fields: dict[str, str] = {}
        try:
            client = await self.gateway.client()
            accepted = await client.stk_push(
                amount=order.amount_kes,
                phone=order.phone,
                account_reference=order.account_reference,
                callback_url=order.callback_url,
                now=utc_from(self.clock),
            )
        except DarajaRefusedError as exc:
            fields["refused"] = exc.detail
        except DarajaError as exc:
            fields["unanswered"] = exc.detail
        else:
            fields = {"merchant_request_id": accepted.merchant_request_id}
            fields["checkout_request_id"] = accepted.checkout_request_id
        log.info("mpesa_stk_push", payment_id=str(order.payment_id), accepted="checkout_request_id" in fields)

        async def work(session: AsyncSession) -> None:
            await service.record_push(session, self.settings, order.payment_id, now=utc_from(self.clock), **fields)

        await self.db.run_transaction(work)

    async def verify(self, payment_id: uuid.UUID) -> None:
        """Ask Daraja about an attempt (an STK query) and record its answer."""

        async def read(session: AsyncSession) -> PaymentAttempt | None:
            return await session.get(PaymentAttempt, payment_id)

        attempt = await self.db.run_transaction(read)
        if attempt is None or attempt.checkout_request_id is None:
            return
        try:
            client = await self.gateway.client()
            answer = await client.stk_query(attempt.checkout_request_id, now=utc_from(self.clock))
        except DarajaError as exc:
            log.warning("mpesa_stk_query_failed", payment_id=str(payment_id), error=exc.detail)
            answer = StkQueryAnswer(None, exc.detail)

        async def record(session: AsyncSession) -> None:
            await service.apply_answer(session, self.settings, payment_id, answer, now=utc_from(self.clock))

        await self.db.run_transaction(record)

    async def reconcile(self, limit: int = 50) -> int:
        """One pass: every attempt still waiting past its check time is asked about (or timed out)."""

        async def claim(session: AsyncSession) -> list[uuid.UUID]:
            now = utc_from(self.clock)
            return await repository.claim_due_checks(
                session, now=now, lease_until=now + service.CHECK_LEASE, limit=limit
            )

        due = await self.db.run_transaction(claim)
        # Each check waits on Daraja for most of its time: a few at once (each holds at most one
        # connection, and only between its calls to Daraja).
        slots = asyncio.Semaphore(CONCURRENT_CHECKS)

        async def check(payment_id: uuid.UUID) -> None:
            async with slots:
                await self._check(payment_id)

        await asyncio.gather(*(check(payment_id) for payment_id in due))
        if due:
            log.info("payments_reconciled", count=len(due))
        return len(due)

    async def _check(self, payment_id: uuid.UUID) -> None:
        async def unpushed(session: AsyncSession) -> bool:
            attempt = await session.get(PaymentAttempt, payment_id)
            if attempt is None or attempt.checkout_request_id is not None:
                return False
            await service.give_up_unpushed(session, payment_id, now=utc_from(self.clock))
            return True

        if not await self.db.run_transaction(unpushed):
            await self.verify(payment_id)


def push_after_commit(session: AsyncSession, runtime: Runtime, order: service.PushOrder | None) -> None:
    """Send a new attempt's STK push once the transaction that stores it commits (never before it)."""
    if order is None:
        return  # the booking's live attempt was answered again: nothing to send
    processor = Processor(runtime.settings, runtime.db, gateway_of(runtime), runtime.clock)
    after_commit(session, lambda: runtime.tasks.spawn(processor.push(order), name="mpesa-stk-push"))
