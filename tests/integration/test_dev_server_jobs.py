"""The development server runs the worker's jobs itself: holds expire and reminders go out
with `./scripts/serve` alone, and two such servers on one database send each email once."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform.jobs import JobRunner
from tests.conftest import SettingsFactory, running
from tests.support.accounts import plain_text, runtime
from tests.support.bookings import client_person, confirm, therapist_user, utc
from tests.support.clock import FakeClock
from tests.support.postgres import free_port
from tests.support.processes import start_server, stop_server, wait_for_line
from tests.support.smtp import SmtpServer, client_settings

API = "/api/v1"
MONDAY_9_EAT = utc(2027, 1, 18, 6)  # the fake clock starts on the Friday before


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str, smtp_server: SmtpServer) -> Settings:
    """What `./scripts/serve` runs with (APP_ENV=development), on the test database and SMTP server."""
    return make_settings(
        APP_ENV="development", DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False, **client_settings(smtp_server)
    )


def jobs_of(app: FastAPI) -> JobRunner:
    jobs = runtime(app).jobs
    assert jobs is not None, "the development server runs no jobs"
    return jobs


async def test_development_runs_every_job_in_process_and_deployments_do_not(make_settings: SettingsFactory) -> None:
    assert make_settings(APP_ENV="development").jobs_in_process is True
    assert make_settings(APP_ENV="production").jobs_in_process is False
    assert make_settings(APP_ENV="test", JOBS_IN_PROCESS=True).jobs_in_process is True


async def test_an_unpaid_hold_expires_without_a_worker(settings: Settings) -> None:
    clock = FakeClock()
    app = create_app(settings, clock=clock)
    async with running(app):
        assert [job.name for job in jobs_of(app).jobs] == [
            "email-outbox",
            "email-outbox-retention",
            "booking-hold-expiry",
            "booking-reminders",
            "payment-reconciliation",
        ]
        therapist = await therapist_user(app)
        person = await client_person(app)
        held = await person.post(
            f"{API}/bookings", json={"therapist_id": str(therapist.id), "starts_at": MONDAY_9_EAT.isoformat()}
        )
        assert held.status_code == 201, held.text
        clock.advance(settings.BOOKING_HOLD_MINUTES * 60 + 1)
        await jobs_of(app).run_all_now()
        booking = await person.http.get(f"{API}/bookings/{held.json()['id']}")
        assert booking.json()["status"] == "expired"


async def test_a_due_reminder_is_sent_once_by_two_development_servers(
    settings: Settings, smtp_server: SmtpServer
) -> None:
    clock = FakeClock()
    first, second = create_app(settings, clock=clock), create_app(settings, clock=clock)
    async with AsyncExitStack() as stack:
        for app in (first, second):
            await stack.enter_async_context(running(app))
        therapist = await therapist_user(first)
        person = await client_person(first)
        booked = await person.post(
            f"{API}/bookings", json={"therapist_id": str(therapist.id), "starts_at": MONDAY_9_EAT.isoformat()}
        )
        assert booked.status_code == 201, booked.text
        await confirm(first, booked.json()["id"])
        # Send what is queued before the clock jumps two days: a message in flight when it jumps
        # would look like a dead sender's lease to the other server, which would send it again.
        await asyncio.gather(jobs_of(first).run_all_now(), jobs_of(second).run_all_now())
        await smtp_server.wait_for(therapist.email, count=1)  # confirmed
        clock.now = (MONDAY_9_EAT - timedelta(hours=23)).timestamp()  # the 24 h reminder is due
        # Both servers run all their jobs at once, twice: the reminder is queued, then sent.
        for _ in range(2):
            await asyncio.gather(jobs_of(first).run_all_now(), jobs_of(second).run_all_now())
        received = await smtp_server.wait_for(person.email, count=3)  # received, confirmed, reminder
    reminders = [message for message in received if "tomorrow" in plain_text(message)]
    assert len(reminders) == 1
    assert len(smtp_server.messages_to(therapist.email)) == 2  # confirmed, reminder


def test_serve_in_development_starts_the_jobs_itself(tmp_path: Path) -> None:
    """The real command a newcomer runs: no worker, and the log says which jobs the server runs."""
    process = start_server(tmp_path, free_port(), APP_ENV="development", LOG_FORMAT="json")
    seen: list[str] = []
    try:
        wait_for_line(process, "jobs_started", seen)
    finally:
        assert stop_server(process) == 0
    started = json.loads(seen[-1])
    assert started["in_process"] is True
    assert started["jobs"] == [
        "email-outbox",
        "email-outbox-retention",
        "booking-hold-expiry",
        "booking-reminders",
        "payment-reconciliation",
    ]
