"""Inputs a schema accepted and a later layer refused (a 500 each, found by an outside test):
now refused at validation with a clear 422, or accepted all the way through."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.notifications.sender import OutboxSender
from tests.conftest import SettingsFactory, running
from tests.support.accounts import ORIGIN, login, registration, runtime
from tests.support.bookings import sign_in, therapist_user
from tests.support.clock import FakeClock
from tests.support.smtp import SmtpServer, client_settings

API = "/api/v1"


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str, smtp_server: SmtpServer) -> Settings:
    return make_settings(DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False, **client_settings(smtp_server))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings, clock=FakeClock())
    async with running(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.200", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers={"Origin": ORIGIN}) as c:
        yield c


@pytest.mark.parametrize("local", ["üser", "café", "\u0430dmin", "用户"])
async def test_an_internationalised_local_part_is_refused_at_validation(client: httpx.AsyncClient, local: str) -> None:
    response = await client.post(f"{API}/auth/register", json=registration(email=f"{local}@example.com"))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "email" and "before the @" in error["message"]


async def test_an_internationalised_domain_is_kept_in_its_ascii_form_and_mail_reaches_it(
    client: httpx.AsyncClient, app: FastAPI, smtp_server: SmtpServer
) -> None:
    name = f"wanjiru-{uuid.uuid4().hex[:8]}"
    body = registration(email=f"{name.title()}@Café.example")
    created = await client.post(f"{API}/auth/register", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["email"] == f"{name}@xn--caf-dma.example"
    # Either spelling signs in, and the verification email went out (through real SMTP).
    for spelling in (f"{name}@café.example", f"{name.upper()}@xn--caf-dma.example"):
        assert (await login(client, spelling, body["password"])).status_code == 200
    await OutboxSender(runtime(app).settings, runtime(app).db, clock=runtime(app).clock).run_once()
    assert len(smtp_server.messages_to(f"{name}@xn--caf-dma.example")) == 1


@pytest.mark.parametrize(
    ("start", "end"),
    [("20:00:00+12:00", "04:00:00-12:00"), ("10:00+05:00", "11:00+05:00"), ("10:00", "11:00Z")],
)
async def test_availability_exceptions_refuse_times_with_an_offset(app: FastAPI, start: str, end: str) -> None:
    therapist = await sign_in(app, await therapist_user(app))
    body = {"rules": [], "exceptions": [{"day": "2027-01-10", "kind": "extra", "start": start, "end": end}]}
    response = await therapist.put(f"{API}/therapists/me/availability", json=body)
    assert response.status_code == 422, response.text
    assert "offset" in response.text
    stored = await therapist.http.get(f"{API}/therapists/me/availability")
    assert stored.json()["exceptions"] == []  # nothing half-saved


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1999-12-31"])
async def test_the_directory_refuses_a_day_outside_the_bookable_years(client: httpx.AsyncClient, day: str) -> None:
    response = await client.get(f"{API}/therapists", params={"available_by": day})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "available_by"


@pytest.mark.parametrize(("price", "status"), [("2000", 422), (False, 422), (2000.5, 422), (2000.0, 200), (2000, 200)])
async def test_numbers_in_bodies_are_json_numbers(app: FastAPI, price: object, status: int) -> None:
    therapist = await sign_in(app, await therapist_user(app))
    body = {
        "specialties": ["anxiety"],
        "languages": ["en"],
        "years_of_practice": 3,
        "license_number": "KCPB-9",
        "price_kes": price,
    }
    response = await therapist.put(f"{API}/therapists/me", json=body)
    assert response.status_code == status, response.text
