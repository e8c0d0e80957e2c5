"""Payments against a real Daraja peer: the simulator served over HTTP on loopback, and the app
served over HTTP too, so Safaricom's callbacks arrive as real requests (test clients still talk
to the app in-process). Waits are on events (a callback answered, the app's M-Pesa tasks done),
never on sleeps."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select

from smilingsteps.app import create_app
from smilingsteps.audit.models import AuditEvent
from smilingsteps.bookings.models import Booking
from smilingsteps.notifications.models import OutboxMessage
from smilingsteps.payments.gateway import gateway_of
from smilingsteps.payments.models import MpesaCallback, PaymentAttempt
from smilingsteps.payments.mpesa.simulator import DarajaSimulator, Push, loopback_socket, serving, serving_asgi
from smilingsteps.payments.processing import Processor
from tests.conftest import SettingsFactory, running
from tests.support.accounts import runtime
from tests.support.bookings import Person, client_person, therapist_user, utc
from tests.support.clock import FakeClock

API = "/api/v1"
MONDAY_9_EAT = utc(2027, 1, 18, 6)  # bookable from the fake clock's start (a Friday)
# The simulator's outcome is the phone number's last digit.
PAYS = "0712345670"
NO_FUNDS = "0712345671"
CANCELS = "0712345672"
NEVER_CALLS_BACK = "0712345673"
CALLS_BACK_TWICE = "0712345674"
WRONG_AMOUNT = "0712345675"
EXPIRES = "0712345676"
WRONG_PIN = "0712345677"
UNREACHABLE = "0712345678"
NEVER_DECIDED = "0712345679"


def msisdn(phone: str) -> str:
    return "254" + phone[1:]


@dataclass
class World:
    app: FastAPI
    simulator: DarajaSimulator
    clock: FakeClock
    url: str

    async def settle(self) -> None:
        """Until the app's M-Pesa work in flight (pushes, checks) is done."""
        await runtime(self.app).tasks.settle("mpesa-")

    async def called_back(self, phone: str, count: int = 1) -> Push:
        """Until the simulator's callbacks for the latest push to `phone` were answered, and checked as the
        worker checks them (its pass asks Daraja about every payment whose check is due)."""
        await self.settle()
        push = self.simulator.push_for(msisdn(phone))
        await self.simulator.delivered(push.checkout_request_id, count)
        await self.reconcile()
        return push

    async def reconcile(self) -> int:
        """One reconciliation pass, as the worker runs it."""
        run = runtime(self.app)
        return await Processor(run.settings, run.db, gateway_of(run), run.clock).reconcile()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def payment(self, payment_id: str | uuid.UUID) -> PaymentAttempt:
        async with runtime(self.app).db.session() as session:
            found = await session.get(PaymentAttempt, uuid.UUID(str(payment_id)))
            assert found is not None
            return found

    async def booking(self, booking_id: str | uuid.UUID) -> Booking:
        async with runtime(self.app).db.session() as session:
            found = await session.get(Booking, uuid.UUID(str(booking_id)))
            assert found is not None
            return found

    async def payments_of(self, booking_id: str | uuid.UUID) -> list[PaymentAttempt]:
        async with runtime(self.app).db.session() as session:
            rows = await session.execute(
                select(PaymentAttempt)
                .where(PaymentAttempt.booking_id == uuid.UUID(str(booking_id)))
                .order_by(PaymentAttempt.created_at)
            )
            return list(rows.scalars())

    async def callbacks(self, payment_id: str | uuid.UUID) -> list[MpesaCallback]:
        async with runtime(self.app).db.session() as session:
            rows = await session.execute(
                select(MpesaCallback)
                .where(MpesaCallback.payment_id == uuid.UUID(str(payment_id)))
                .order_by(MpesaCallback.received_at)
            )
            return list(rows.scalars())

    async def emails(self, template: str) -> list[tuple[str, str]]:
        """(address, text) of every queued email of `template`."""
        async with runtime(self.app).db.session() as session:
            rows = await session.execute(
                select(OutboxMessage.to_address, OutboxMessage.body_text).where(OutboxMessage.template == template)
            )
            return [(row.to_address, row.body_text) for row in rows]

    async def audit_count(self, action: str, target_id: str | uuid.UUID | None = None) -> int:
        async with runtime(self.app).db.session() as session:
            statement = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
            if target_id is not None:
                statement = statement.where(AuditEvent.target_id == str(target_id))
            return int((await session.execute(statement)).scalar_one())

    async def held_booking(self, person: Person | None = None, **therapist: Any) -> tuple[Person, str]:
        """A client holding a booking with a new therapist (KES 2,500 unless told)."""
        therapist_row = await therapist_user(self.app, **therapist)
        person = person or await client_person(self.app)
        response = await person.post(
            f"{API}/bookings",
            json={"therapist_id": str(therapist_row.id), "starts_at": MONDAY_9_EAT.isoformat()},
        )
        assert response.status_code == 201, response.text
        return person, str(response.json()["id"])

    async def pay(self, person: Person, booking_id: str, phone: str, *, expect: int = 202) -> dict[str, Any]:
        response = await person.post(f"{API}/payments/mpesa/stk-push", json={"booking_id": booking_id, "phone": phone})
        assert response.status_code == expect, response.text
        return dict(response.json())


@asynccontextmanager
async def payment_world(make_settings: SettingsFactory, database_url: str, **overrides: Any) -> AsyncIterator[World]:
    """The app (real HTTP for callbacks, lifespan run once) and a simulator that calls back at once."""
    clock = FakeClock()
    simulator = DarajaSimulator(delay=0)
    async with serving(simulator) as simulator_url:
        sock = loopback_socket()
        port = sock.getsockname()[1]
        values: dict[str, Any] = {
            "DATABASE_URL": database_url,
            "MPESA_BASE_URL": simulator_url,
            "MPESA_CALLBACK_BASE_URL": f"http://127.0.0.1:{port}",
        }
        settings = make_settings(**{**values, **overrides})
        app = create_app(settings, clock=clock)
        async with running(app), serving_asgi(app, sock) as url:
            yield World(app, simulator, clock, url)


def past_check(world: World) -> None:
    world.advance(runtime(world.app).settings.MPESA_CHECK_AFTER_SECONDS + 1)


def past_timeout(world: World) -> None:
    world.advance(runtime(world.app).settings.MPESA_PAYMENT_TIMEOUT_SECONDS + 1)
