"""No double booking under concurrency: many clients, one slot, at the same moment."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import func, select

from smilingsteps.app import create_app
from smilingsteps.bookings.models import ACTIVE_VALUES, Booking
from tests.conftest import SettingsFactory, running
from tests.support.accounts import problem_type, runtime
from tests.support.bookings import client_person, therapist_user, utc
from tests.support.clock import FakeClock

# Mon-Fri 09:00-17:00 Nairobi: 8 slots a day from Monday 2027-01-18 (06:00 UTC).
SLOT_STARTS = [utc(2027, 1, 18 + day, 6 + hour) for day in range(5) for hour in range(8)]


@pytest.mark.parametrize(("clients", "rounds"), [(64, 20)])
async def test_one_slot_many_clients_exactly_one_booking(
    make_settings: SettingsFactory, database_url: str, backend: str, clients: int, rounds: int
) -> None:
    if backend == "sqlite":
        clients, rounds = 16, 3  # one writer at a time: the same rule, a smaller crowd
    settings = make_settings(
        DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False, DB_POOL_SIZE=clients, DB_MAX_OVERFLOW=8
    )
    app = create_app(settings, clock=FakeClock())
    async with running(app):
        therapist = await therapist_user(app)
        people = [await client_person(app) for _ in range(clients)]
        for start in SLOT_STARTS[:rounds]:
            body = {"therapist_id": str(therapist.id), "starts_at": start.isoformat()}
            responses = await asyncio.gather(*(p.post("/api/v1/bookings", json=body) for p in people))
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {201: 1, 409: clients - 1}, statuses
            assert {problem_type(r) for r in responses if r.status_code == 409} == {"slot-taken"}
        async with runtime(app).db.session() as session:
            active = (
                await session.execute(
                    select(func.count())
                    .select_from(Booking)
                    .where(Booking.therapist_id == therapist.id, Booking.status.in_(ACTIVE_VALUES))
                )
            ).scalar_one()
        assert active == rounds
        for person in people:
            await person.http.aclose()


async def test_the_database_itself_refuses_overlapping_active_bookings(
    make_settings: SettingsFactory, postgres_database: str
) -> None:
    """Even code that skips every check cannot store a double booking on PostgreSQL."""
    import uuid
    from datetime import timedelta

    from sqlalchemy.exc import IntegrityError

    app = create_app(make_settings(DATABASE_URL=postgres_database), clock=FakeClock())
    async with running(app):
        therapist = await therapist_user(app)
        one, two = await client_person(app), await client_person(app)
        now = runtime(app).now()

        def booking(client_id: uuid.UUID, start_minute: int, status: str = "confirmed") -> Booking:
            start = utc(2027, 1, 18, 6, start_minute)
            return Booking(
                therapist_id=therapist.id,
                client_id=client_id,
                starts_at=start,
                ends_at=start + timedelta(minutes=50),
                blocks_until=start + timedelta(minutes=60),
                status=status,
                price_kes=2500,
                client_timezone="UTC",
                therapist_timezone="UTC",
                refund_due_kes=0,
                reschedule_count=0,
                created_at=now,
                updated_at=now,
            )

        async with runtime(app).db.session() as session:
            session.add(booking(one.user_id, 0))
        with pytest.raises(IntegrityError, match="ex_bookings_therapist_overlap"):
            async with runtime(app).db.session() as session:
                session.add(booking(two.user_id, 55))  # inside the first one's buffer
        async with runtime(app).db.session() as session:
            session.add(booking(two.user_id, 0, status="cancelled"))  # inactive rows never clash
        for person in (one, two):
            await person.http.aclose()
