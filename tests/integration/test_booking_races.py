"""No double booking under concurrency: many clients, one slot, at the same moment."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from smilingsteps.app import create_app
from smilingsteps.bookings.models import ACTIVE_VALUES, Booking
from smilingsteps.platform.logging import captured_events
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


def stored_booking(
    therapist_id: uuid.UUID, client_id: uuid.UUID, start: datetime, now: datetime, status: str = "confirmed"
) -> Booking:
    """A booking row written straight to the database (50-minute session, 10-minute buffer)."""
    return Booking(
        therapist_id=therapist_id,
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


async def active_bookings_of_client(app: FastAPI, client_id: uuid.UUID) -> list[Booking]:
    async with runtime(app).db.session() as session:
        rows = await session.execute(
            select(Booking).where(Booking.client_id == client_id, Booking.status.in_(ACTIVE_VALUES))
        )
        return list(rows.scalars())


async def test_one_client_booking_many_therapists_at_once_gets_one_booking(
    make_settings: SettingsFactory, database_url: str
) -> None:
    """One client, 8 therapists, the same start, 8 requests at the same moment: one hold, 7 client-overlap.

    Each request takes a different therapist's turn, so nothing in the code serialises them:
    on PostgreSQL only the per-client exclusion constraint stops the 7 others.
    """
    therapists_count = 8
    settings = make_settings(
        DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False, DB_POOL_SIZE=therapists_count + 2, DB_MAX_OVERFLOW=4
    )
    app = create_app(settings, clock=FakeClock())
    async with running(app):
        therapists = [await therapist_user(app) for _ in range(therapists_count)]
        person = await client_person(app)
        start = SLOT_STARTS[0].isoformat()
        responses = await asyncio.gather(
            *(person.post("/api/v1/bookings", json={"therapist_id": str(t.id), "starts_at": start}) for t in therapists)
        )
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {201: 1, 409: therapists_count - 1}, statuses
        assert {problem_type(r) for r in responses if r.status_code == 409} == {"client-overlap"}
        [booked] = await active_bookings_of_client(app, person.user_id)
        assert booked.starts_at == SLOT_STARTS[0]
        await person.http.aclose()


@pytest.mark.postgres_only
async def test_the_database_itself_refuses_overlapping_active_bookings_of_one_client(
    make_settings: SettingsFactory, postgres_database: str
) -> None:
    """Even code that skips every check cannot give one client two sessions at once on PostgreSQL."""
    app = create_app(make_settings(DATABASE_URL=postgres_database), clock=FakeClock())
    async with running(app):
        first, second = await therapist_user(app), await therapist_user(app)
        person, other = await client_person(app), await client_person(app)
        now = runtime(app).now()

        def at(minute: int) -> datetime:
            return utc(2027, 1, 18, 6, minute)

        async with runtime(app).db.session() as session:
            session.add(stored_booking(first.id, person.user_id, at(0), now))
        with pytest.raises(IntegrityError, match="ex_bookings_client_overlap"):
            async with runtime(app).db.session() as session:
                session.add(stored_booking(second.id, person.user_id, at(30), now))  # another therapist, same client
        with pytest.raises(IntegrityError, match="ex_bookings_client_overlap"):
            async with runtime(app).db.session() as session:
                session.add(stored_booking(second.id, person.user_id, at(0), now, status="held"))  # holds count too
        async with runtime(app).db.session() as session:
            # The buffer is the therapist's, not the client's: a session may start when the last one ends.
            session.add(stored_booking(second.id, person.user_id, at(50), now))
            session.add(stored_booking(first.id, person.user_id, at(0) - timedelta(days=1), now, status="cancelled"))
            session.add(stored_booking(first.id, other.user_id, at(0) + timedelta(hours=2), now))
        assert len(await active_bookings_of_client(app, person.user_id)) == 2
        for client in (person, other):
            await client.http.aclose()


@contextmanager
def booking_inserts_in_flight(app: FastAPI) -> Iterator[dict[str, int]]:
    """Count INSERTs into `bookings` that the database is executing at the same time (the most at once)."""
    engine = runtime(app).db.engine.sync_engine
    counts = {"now": 0, "most": 0, "total": 0}

    def before(_conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO BOOKINGS"):
            context.booking_insert = True
            counts["now"] += 1
            counts["total"] += 1
            counts["most"] = max(counts["most"], counts["now"])

    def after(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
        if getattr(context, "booking_insert", False):
            counts["now"] -= 1

    def failed(error: Any) -> None:
        if getattr(error.execution_context, "booking_insert", False):
            counts["now"] -= 1

    listeners = [("before_cursor_execute", before), ("after_cursor_execute", after), ("handle_error", failed)]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield counts
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


@pytest.mark.postgres_only
async def test_racing_bookings_of_one_therapist_take_turns_and_never_deadlock(
    make_settings: SettingsFactory, postgres_database: str
) -> None:
    """The therapist's advisory lock: racers for one slot take turns, and every loser is answered
    from the busy query (a quick 409 slot-taken), never by a second INSERT waiting on the winner's row.

    Two racing INSERTs of clashing rows wait on each other inside the exclusion check, and
    PostgreSQL kills one of them after `deadlock_timeout` (1 s); how often depends on timing (0.1 %
    of racing requests in bench/README.md). Without the lock, all racers reach that INSERT
    together every time, which is what this test sees deterministically: so it asserts that at
    most one INSERT of this therapist's bookings is ever in flight.
    """
    racers, rounds = 16, 4
    settings = make_settings(
        DATABASE_URL=postgres_database, RATE_LIMITS_ENABLED=False, DB_POOL_SIZE=racers + 2, DB_MAX_OVERFLOW=4
    )
    app = create_app(settings, clock=FakeClock())
    async with running(app):
        therapist = await therapist_user(app)
        people = [await client_person(app) for _ in range(racers)]
        for start in SLOT_STARTS[:rounds]:
            body = {"therapist_id": str(therapist.id), "starts_at": start.isoformat()}
            with captured_events() as events, booking_inserts_in_flight(app) as inserts:
                responses = await asyncio.gather(*(p.post("/api/v1/bookings", json=body) for p in people))
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {201: 1, 409: racers - 1}, statuses  # no 5xx
            assert {problem_type(r) for r in responses if r.status_code == 409} == {"slot-taken"}
            assert inserts == {"now": 0, "most": 1, "total": 1}, inserts
            troubles = [
                e
                for e in events
                if e.get("event") == "transaction_retry"
                or e.get("level") in ("error", "critical")
                or "deadlock" in str(e).lower()
            ]
            assert troubles == []
        for person in people:
            await person.http.aclose()
