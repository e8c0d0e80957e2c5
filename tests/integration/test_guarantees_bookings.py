"""What the bookings repository must get exactly right: which bookings block a slot (a confirmed
one, a live hold; not a cancelled one, not a hold at the moment it expires), back-to-back
sessions, a booking made under an older grid, listing and paging, notes per booking, and
reminders kept per booking. Written from the survivors of a mutation run over
bookings/repository.py (bench/mutation.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from smilingsteps.accounts.models import Role
from smilingsteps.app import create_app
from smilingsteps.bookings.jobs import BookingJobs
from smilingsteps.bookings.models import Booking, BookingReminder
from smilingsteps.config import Settings
from smilingsteps.notifications.models import OutboxMessage
from smilingsteps.therapists import service as therapists
from smilingsteps.therapists.schemas import AvailabilityIn, RuleIn
from tests.conftest import SettingsFactory, running
from tests.support.accounts import problem_type, runtime
from tests.support.bookings import Person, client_person, confirm, make_user, sign_in, therapist_user, utc
from tests.support.clock import FakeClock

API = "/api/v1"
# FakeClock starts on Friday 2027-01-15 08:00 UTC; therapists work 09:00-17:00 Nairobi (06:00-14:00 UTC).
START = utc(2027, 1, 15, 8)


def monday(hour: int, minute: int = 0) -> datetime:
    """A time on Monday 2027-01-18, given in Nairobi local time (UTC+3)."""
    return utc(2027, 1, 18, hour - 3, minute)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False)


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    app = create_app(settings, clock=clock)
    async with running(app):
        yield app


async def book(person: Person, therapist_id: uuid.UUID, start: datetime) -> httpx.Response:
    return await person.post(
        f"{API}/bookings", json={"therapist_id": str(therapist_id), "starts_at": start.isoformat()}
    )


async def booked(person: Person, therapist_id: uuid.UUID, start: datetime) -> str:
    response = await book(person, therapist_id, start)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def offered(person: Person, therapist_id: uuid.UUID, day_from: datetime, day_to: datetime) -> list[str]:
    params = {"from": day_from.isoformat(), "to": day_to.isoformat()}
    response = await person.http.get(f"{API}/therapists/{therapist_id}/slots", params=params)
    assert response.status_code == 200, response.text
    return [slot["start"] for slot in response.json()]


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def stale_holds(app: FastAPI) -> set[str]:
    """The ids of the holds past their expiry that the job has not marked yet, across the database."""
    async with runtime(app).db.session() as session:
        rows = await session.execute(
            select(Booking.id).where(Booking.status == "held", Booking.hold_expires_at <= runtime(app).now())
        )
        return {str(booking_id) for booking_id in rows.scalars()}


async def booking_row(app: FastAPI, booking_id: str) -> Booking:
    async with runtime(app).db.session() as session:
        found = await session.get(Booking, uuid.UUID(booking_id))
        assert found is not None
        return found


# ---- what blocks a slot ------------------------------------------------------------------------


async def test_slots_hide_confirmed_and_live_holds_and_offer_cancelled_and_just_expired_ones(
    app: FastAPI, clock: FakeClock
) -> None:
    therapist = await therapist_user(app)
    expiring, confirmed, cancelled, live, late = [await client_person(app) for _ in range(5)]
    expiring_id = await booked(expiring, therapist.id, monday(9))
    await confirm(app, await booked(confirmed, therapist.id, monday(10)))
    cancelled_id = await booked(cancelled, therapist.id, monday(11))
    assert (await cancelled.post(f"{API}/bookings/{cancelled_id}/cancel", json={})).status_code == 200
    clock.advance(5 * 60)
    live_id = await booked(live, therapist.id, monday(12))
    clock.advance(5 * 60)  # the first hold expires exactly now; the last one in five minutes

    # Asked from 08:00 local: an index-friendly lower bound must not hide the morning's bookings.
    slots = await offered(late, therapist.id, monday(8), monday(23))
    assert z(monday(9)) in slots and z(monday(11)) in slots
    assert z(monday(10)) not in slots and z(monday(12)) not in slots
    assert len(slots) == 6

    # The worker expires the hold that is due, and only that one (other tests' holds share the
    # database and the fake clock's time, so it counts every hold due by now, this one included).
    due = await stale_holds(app)
    assert expiring_id in due and live_id not in due
    expired = await BookingJobs(runtime(app).settings, runtime(app).db, clock=clock).expire_holds()
    assert expired == len(due)
    row = await booking_row(app, expiring_id)
    assert row.status == "expired" and row.updated_at == runtime(app).now()
    assert (await booking_row(app, live_id)).status == "held"
    assert (await booking_row(app, cancelled_id)).status == "cancelled"


async def test_a_hold_frees_its_slot_at_the_moment_it_expires(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    first, second = await client_person(app), await client_person(app)
    held = await booked(first, therapist.id, monday(9))
    clock.advance(10 * 60)  # exactly BOOKING_HOLD_MINUTES: the hold has run out
    assert (await book(second, therapist.id, monday(9))).status_code == 201
    assert (await booking_row(app, held)).status == "expired"


async def test_an_expired_hold_does_not_hide_the_live_booking_after_it(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    stale, live, late = [await client_person(app) for _ in range(3)]
    await booked(stale, therapist.id, monday(9))
    clock.advance(11 * 60)  # expired, not yet marked
    await booked(live, therapist.id, monday(10))
    taken = await book(late, therapist.id, monday(10))
    assert taken.status_code == 409 and problem_type(taken) == "slot-taken"


async def test_back_to_back_sessions_with_two_therapists_are_allowed(app: FastAPI) -> None:
    """A session may start when the client's previous one ends (the buffer is the therapist's)."""
    nine = await therapist_user(app)  # 09:00-09:50
    ten_to_ten = await therapist_user(app, rules=[RuleIn(weekday=0, start=time(9, 50), end=time(17))])  # 09:50-10:40
    one, two = await client_person(app), await client_person(app)
    await booked(one, nine.id, monday(9))
    await booked(one, ten_to_ten.id, monday(9, 50))
    await booked(two, ten_to_ten.id, monday(10, 50))
    await booked(two, nine.id, monday(10))  # ends 10:50, when the other starts


async def test_a_booking_made_under_an_older_grid_still_blocks_the_new_grid(app: FastAPI) -> None:
    """The longest booking (180 minutes and a 120-minute buffer) reaches five hours past its start."""
    therapist = await therapist_user(app, session_minutes=180, buffer_minutes=120)
    first, second = await client_person(app), await client_person(app)
    await booked(first, therapist.id, monday(9))  # blocks 09:00-14:00
    async with runtime(app).db.session() as session:
        rules = AvailabilityIn(rules=[RuleIn(weekday=0, start=time(10), end=time(17))], exceptions=[])
        await therapists.set_availability(session, therapist.id, rules)
    assert await offered(second, therapist.id, monday(3), monday(23)) == []
    taken = await book(second, therapist.id, monday(10))
    assert taken.status_code == 409 and problem_type(taken) == "slot-taken"


# ---- listing ----------------------------------------------------------------------------------


async def test_listing_filters_by_status_pages_and_puts_the_latest_first(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    one, two = await client_person(app), await client_person(app)
    starts = {
        monday(9): one,
        monday(9) + timedelta(days=1): one,
        monday(9) + timedelta(days=2): one,
        monday(11): two,
        monday(11) + timedelta(days=3): two,
    }
    ids = {start: await booked(person, therapist.id, start) for start, person in starts.items()}
    await confirm(app, ids[monday(9)])
    latest_first = [ids[start] for start in sorted(starts, reverse=True)]

    async def listed(person: Person, **params: object) -> list[str]:
        response = await person.http.get(f"{API}/bookings", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()]

    therapist_http = await sign_in(app, therapist)
    assert await listed(therapist_http) == latest_first
    mine = [booking for booking in latest_first if booking in {ids[s] for s, p in starts.items() if p is one}]
    assert await listed(one) == mine
    assert await listed(one, status="confirmed") == [ids[monday(9)]]
    assert await listed(one, status="held") == mine[:2]
    assert await listed(therapist_http, limit=2) == latest_first[:2]
    assert await listed(therapist_http, limit=2, offset=2) == latest_first[2:4]


# ---- notes and reminders ------------------------------------------------------------------------


async def test_each_booking_has_its_own_note(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    writer = await sign_in(app, therapist)
    person = await client_person(app)
    first, second = await booked(person, therapist.id, monday(9)), await booked(person, therapist.id, monday(11))
    assert (await writer.put(f"{API}/bookings/{first}/notes", json={"text": "first"})).status_code == 204
    assert (await writer.put(f"{API}/bookings/{second}/notes", json={"text": "second"})).status_code == 204
    assert (await writer.http.get(f"{API}/bookings/{first}/notes")).json()["text"] == "first"
    assert (await writer.http.get(f"{API}/bookings/{second}/notes")).json()["text"] == "second"


async def reminders_of(app: FastAPI, booking_id: str) -> tuple[int, int]:
    """(sent, unsent) reminders of a booking."""
    async with runtime(app).db.session() as session:
        rows = (
            await session.execute(
                select(BookingReminder.sent_at).where(BookingReminder.booking_id == uuid.UUID(booking_id))
            )
        ).scalars()
        sent_at = list(rows)
    return sum(1 for s in sent_at if s is not None), sum(1 for s in sent_at if s is None)


async def test_moving_one_booking_keeps_the_other_bookings_reminders_and_what_was_sent(
    app: FastAPI, clock: FakeClock
) -> None:
    therapist = await therapist_user(app)
    one, two = await client_person(app), await client_person(app)
    moved, kept = await booked(one, therapist.id, monday(9)), await booked(two, therapist.id, monday(10))
    for booking in (moved, kept):
        await confirm(app, booking)
    assert await reminders_of(app, moved) == (0, 2) and await reminders_of(app, kept) == (0, 2)

    clock.advance((monday(10) - timedelta(hours=24) - START).total_seconds())  # the second's 24 h reminder is due now
    await BookingJobs(runtime(app).settings, runtime(app).db, clock=clock).send_reminders()
    assert await reminders_of(app, moved) == (1, 1) and await reminders_of(app, kept) == (1, 1)

    therapist_http = await sign_in(app, therapist)
    tuesday = monday(9) + timedelta(days=1)
    answer = await therapist_http.post(f"{API}/bookings/{moved}/reschedule", json={"starts_at": tuesday.isoformat()})
    assert answer.status_code == 200, answer.text
    assert await reminders_of(app, moved) == (1, 2)  # the record of what was sent stays
    assert await reminders_of(app, kept) == (1, 1)


async def test_the_hold_email_greets_the_client_by_name(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    client = await make_user(app, role=Role.CLIENT, full_name="Nyokabi Wairimu")
    person = await sign_in(app, client)
    await booked(person, therapist.id, monday(9))
    async with runtime(app).db.session() as session:
        [text] = (
            await session.execute(
                select(OutboxMessage.body_text).where(
                    OutboxMessage.to_address == client.email, OutboxMessage.template == "booking_received"
                )
            )
        ).scalars()
    assert text is not None and "Nyokabi Wairimu" in text
