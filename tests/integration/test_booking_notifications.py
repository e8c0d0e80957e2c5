"""Booking emails through a real SMTP server, reminders that follow the booking, two workers, DST at the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from smilingsteps.app import create_app
from smilingsteps.bookings.jobs import BookingJobs
from smilingsteps.bookings.models import BookingReminder
from smilingsteps.config import Settings
from smilingsteps.notifications.models import OutboxMessage
from smilingsteps.notifications.sender import OutboxSender
from smilingsteps.platform.db import Database
from smilingsteps.therapists.schemas import RuleIn
from tests.conftest import SettingsFactory, running
from tests.support.accounts import plain_text, runtime
from tests.support.bookings import Person, client_person, confirm, therapist_user, utc
from tests.support.clock import FakeClock
from tests.support.smtp import SmtpServer, client_settings

API = "/api/v1"
MONDAY_9_EAT = utc(2027, 1, 18, 6)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str, smtp_server: SmtpServer) -> Settings:
    return make_settings(
        DATABASE_URL=database_url,
        RATE_LIMITS_ENABLED=False,
        **client_settings(smtp_server),
    )


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    app = create_app(settings, clock=clock)
    async with running(app):
        yield app


async def book_and_confirm(app: FastAPI, person: Person, therapist_id: uuid.UUID, start: datetime) -> str:
    response = await person.post(
        f"{API}/bookings",
        json={"therapist_id": str(therapist_id), "starts_at": start.isoformat(), "timezone": "Europe/London"},
    )
    assert response.status_code == 201, response.text
    booking_id = str(response.json()["id"])
    await confirm(app, booking_id)
    return str(booking_id)


async def reminder_count(app: FastAPI, address: str) -> int:
    async with runtime(app).db.session() as session:
        rows = await session.execute(
            select(OutboxMessage.id).where(
                OutboxMessage.to_address == address, OutboxMessage.template == "booking_reminder"
            )
        )
        return len(rows.all())


async def test_confirmation_reaches_both_in_their_own_time_zones(
    app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    therapist = await therapist_user(app, full_name="Dr Achieng Odhiambo")
    person = await client_person(app, full_name="Tom Client")
    await book_and_confirm(app, person, therapist.id, MONDAY_9_EAT)
    await OutboxSender(runtime(app).settings, runtime(app).db, clock=clock).run_once()
    [to_client] = [m for m in smtp_server.messages_to(person.email) if "Confirmed" in m["Subject"]]
    [to_therapist] = [m for m in smtp_server.messages_to(therapist.email) if "Confirmed" in m["Subject"]]
    assert "Dr Achieng Odhiambo" in plain_text(to_client)
    assert "Monday 18 January 2027, 06:00 (Europe/London)" in plain_text(to_client)
    assert "Monday 18 January 2027, 09:00 (Africa/Nairobi)" in plain_text(to_therapist)


async def test_reminders_move_with_a_rescheduled_booking(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    person = await client_person(app)
    booking_id = await book_and_confirm(app, person, therapist.id, MONDAY_9_EAT)
    new_start = utc(2027, 1, 20, 6)
    moved = await person.post(f"{API}/bookings/{booking_id}/reschedule", json={"starts_at": new_start.isoformat()})
    assert moved.status_code == 200
    async with runtime(app).db.session() as session:
        due = sorted(
            (
                await session.execute(
                    select(BookingReminder.due_at).where(BookingReminder.booking_id == uuid.UUID(booking_id))
                )
            ).scalars()
        )
    assert due == [new_start - timedelta(hours=24), new_start - timedelta(hours=1)]
    jobs = BookingJobs(runtime(app).settings, runtime(app).db, clock=clock)
    clock.now = (MONDAY_9_EAT - timedelta(minutes=30)).timestamp()  # the old 1 h reminder would be due
    await jobs.send_reminders()
    assert await reminder_count(app, person.email) == 0
    clock.now = (new_start - timedelta(minutes=30)).timestamp()
    await jobs.send_reminders()
    assert await reminder_count(app, person.email) == 2  # the 24 h and the 1 h one, each once


async def test_two_workers_send_each_reminder_once(app: FastAPI, clock: FakeClock, settings: Settings) -> None:
    therapists = [await therapist_user(app), await therapist_user(app)]
    starts = [MONDAY_9_EAT + timedelta(hours=i) for i in range(8)]  # 06:00 ... 13:00 UTC
    booked: list[tuple[Person, datetime]] = []
    for therapist in therapists:
        for start in starts:
            person = await client_person(app)
            await book_and_confirm(app, person, therapist.id, start)
            booked.append((person, start))
    clock.now = (MONDAY_9_EAT - timedelta(minutes=30)).timestamp()  # every 24 h reminder due, and the 06:00 1 h ones
    other_db = Database(settings)
    await other_db.connect_with_retry(max_retries=0)
    try:
        workers = [BookingJobs(settings, db, clock=clock) for db in (runtime(app).db, other_db)]
        counts = await asyncio.gather(*(worker.send_reminders() for worker in workers))
    finally:
        await other_db.dispose()
    assert sum(counts) == 16 + 2
    for person, start in booked:
        assert await reminder_count(app, person.email) == (2 if start == MONDAY_9_EAT else 1)


@pytest.mark.parametrize(
    ("zone", "day_before", "day_after", "offset_before", "offset_after"),
    [
        ("Europe/London", "2027-03-26", "2027-03-29", "+00:00", "+01:00"),
        ("America/New_York", "2027-03-12", "2027-03-15", "-05:00", "-04:00"),
        ("Europe/London", "2027-10-29", "2027-11-01", "+01:00", "+00:00"),
        ("America/New_York", "2027-11-05", "2027-11-08", "-04:00", "-05:00"),
    ],
)
async def test_slots_across_a_dst_change_in_the_clients_zone(
    make_settings: SettingsFactory,
    database_url: str,
    zone: str,
    day_before: str,
    day_after: str,
    offset_before: str,
    offset_after: str,
) -> None:
    start = datetime.fromisoformat(day_before).replace(tzinfo=UTC) - timedelta(days=3)
    app = create_app(
        make_settings(DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False), clock=FakeClock(start.timestamp())
    )
    async with running(app):
        therapist = await therapist_user(app)  # Nairobi, Mon-Fri 09:00-17:00: no DST on this side
        viewer = await client_person(app)
        window = {"from": f"{day_before}T00:00:00Z", "to": f"{day_after}T23:59:00Z"}
        local = (await viewer.http.get(f"{API}/therapists/{therapist.id}/slots", params={**window, "tz": zone})).json()
        nairobi = (await viewer.http.get(f"{API}/therapists/{therapist.id}/slots", params=window)).json()
        assert [s["start"] for s in local] == [s["start"] for s in nairobi]  # the same instants
        assert len(local) == 16 and len({s["start"] for s in local}) == 16  # two working days, no gap or duplicate
        for slot in local:
            instant = datetime.fromisoformat(slot["start"])
            label = datetime.fromisoformat(slot["local_start"])
            assert label == instant  # the label is the same moment, in the client's zone
            expected = offset_before if slot["start"].startswith(day_before) else offset_after
            assert slot["local_start"].endswith(expected), slot


async def test_the_directory_can_ask_for_a_free_slot_by_a_date(app: FastAPI) -> None:
    language = "luy"
    busy = await therapist_user(
        app,
        languages=(language,),
        full_name="Dr Busy",
        rules=[RuleIn(weekday=0, start=datetime(2000, 1, 1, 9).time(), end=datetime(2000, 1, 1, 10).time())],
    )
    free = await therapist_user(app, languages=(language,), full_name="Dr Free")
    person = await client_person(app)
    response = await person.post(
        f"{API}/bookings", json={"therapist_id": str(busy.id), "starts_at": MONDAY_9_EAT.isoformat()}
    )
    assert response.status_code == 201
    found = (
        await person.http.get(f"{API}/therapists", params={"language": language, "available_by": "2027-01-18"})
    ).json()
    assert [t["id"] for t in found["items"]] == [str(free.id)]
    later = (
        await person.http.get(f"{API}/therapists", params={"language": language, "available_by": "2027-01-25"})
    ).json()
    assert [t["full_name"] for t in later["items"]] == ["Dr Busy", "Dr Free"]
