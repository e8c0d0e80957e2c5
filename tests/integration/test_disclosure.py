"""What an anonymous caller can learn: only a health status, and not which addresses have accounts."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.audit.models import AuditEvent
from smilingsteps.notifications.sender import OutboxSender
from tests.conftest import SettingsFactory, running
from tests.integration.test_account_flows import admin_client
from tests.support.accounts import ORIGIN, plain_text, registration, runtime
from tests.support.clock import FakeClock
from tests.support.smtp import SmtpServer, client_settings

API = "/api/v1"
DETAILS = {"version", "environment", "uptime_seconds", "memory", "database"}


def client_at(app: FastAPI, address: str, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 1))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers={"Origin": ORIGIN, **headers})


async def test_health_shows_anonymous_callers_the_status_only(
    make_settings: SettingsFactory, database_url: str
) -> None:
    app = create_app(make_settings(DATABASE_URL=database_url, METRICS_TOKEN="m" * 32))
    async with running(app) as loopback, client_at(app, "203.0.113.5") as stranger:
        assert (await stranger.get("/health")).json() == {"status": "ok"}
        ready = await stranger.get("/health/ready")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        assert set((await loopback.get("/health")).json()) >= DETAILS
        assert "checks" in (await loopback.get("/health/ready")).json()
        with_token = await stranger.get("/health", headers={"Authorization": "Bearer " + "m" * 32})
        assert set(with_token.json()) >= DETAILS
        wrong_token = await stranger.get("/health", headers={"Authorization": "Bearer " + "x" * 32})
        assert wrong_token.json() == {"status": "ok"}


async def test_a_signed_in_administrator_sees_the_details(make_settings: SettingsFactory, database_url: str) -> None:
    clock = FakeClock()
    app = create_app(make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m"), clock=clock)
    async with running(app), client_at(app, "203.0.113.6") as browser, admin_client(browser, app, clock) as admin:
        assert set((await admin.get("/health")).json()) >= DETAILS
        assert (await browser.get("/health")).json() == {"status": "ok"}


@pytest.fixture
def quiet(make_settings: SettingsFactory, database_url: str, smtp_server: SmtpServer) -> Any:
    return make_settings(
        DATABASE_URL=database_url,
        REGISTRATION_HIDES_ACCOUNTS=True,
        RATE_LIMITS_ENABLED=False,
        **client_settings(smtp_server),
    )


async def test_registration_answers_the_same_for_new_and_taken_addresses(quiet: Any, smtp_server: SmtpServer) -> None:
    app = create_app(quiet, clock=FakeClock())
    email = f"quiet-{uuid.uuid4().hex[:8]}@example.com"
    async with running(app), client_at(app, "198.51.100.50") as browser:
        first = await browser.post(f"{API}/auth/register", json=registration(email=email))
        second = await browser.post(f"{API}/auth/register", json=registration(email=email, full_name="Someone Else"))
        await OutboxSender(runtime(app).settings, runtime(app).db, clock=runtime(app).clock).run_once()
        async with runtime(app).db.session() as session:
            attempts = (
                await session.execute(
                    AuditEvent.__table__.select().where(AuditEvent.action == "account.registration_attempted")
                )
            ).all()
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() and first.json()["status"] == "check_email"
    assert set(first.headers) == set(second.headers)
    texts = sorted((plain_text(message) for message in smtp_server.messages_to(email)), key=lambda t: "tried" in t)
    verification, attempt = texts
    assert "/verify-email?token=" in verification
    assert "Someone just tried to create a new" in attempt
    assert "/sign-in" in attempt and "/reset-password" in attempt
    assert len(attempts) >= 1


async def test_registration_still_refuses_what_any_address_would_be_refused_for(quiet: Any) -> None:
    app = create_app(quiet)
    async with running(app), client_at(app, "198.51.100.51") as browser:
        weak = await browser.post(f"{API}/auth/register", json=registration(password="password"))
        assert weak.status_code == 422  # the same for every address: it reveals nothing
