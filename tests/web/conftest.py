"""Fixtures for the page tests: the app with a controllable clock and a real SMTP server, a
browser-like client (no JavaScript), sign-up data and an administrator signed in with TOTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from smilingsteps.accounts import service
from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.notifications.sender import OutboxSender
from tests.conftest import SettingsFactory, running
from tests.support.accounts import PASSWORD, auth_kit, new_email, runtime
from tests.support.clock import FakeClock
from tests.support.pages import csrf_token, fill, open_page, submit
from tests.support.smtp import SmtpServer, client_settings

ADMIN_PASSWORD = "granite kestrel orbit 7"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str, smtp_server: SmtpServer) -> Settings:
    return make_settings(
        DATABASE_URL=database_url,
        RATE_LIMIT_AUTH="10000/1m",
        RATE_LIMIT_EMAIL="10000/1m",
        RATE_LIMIT_ADMIN="10000/1m",
        PUBLIC_BASE_URL="http://127.0.0.1:8000",
        **client_settings(smtp_server),
        SMTP_TIMEOUT=10,
    )


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client:
        yield client


async def mail_for(app: FastAPI, clock: FakeClock, smtp: SmtpServer, address: str) -> list[EmailMessage]:
    """Run the outbox sender once (as the worker does) and read what reached the SMTP server."""
    await OutboxSender(runtime(app).settings, runtime(app).db, clock=clock).run_once()
    return smtp.messages_to(address)


def sign_up_fields(email: str, **overrides: str) -> dict[str, str]:
    fields = {
        "role": "client",
        "full_name": "Wanjiru Kamau",
        "email": email,
        "phone": "0712 345 678",
        "password": PASSWORD,
        "timezone": "Europe/London",
        "terms": "yes",
    }
    fields.update(overrides)
    return fields


async def signed_up(browser: httpx.AsyncClient, **overrides: str) -> str:
    """A new account, signed in through the pages; its email address."""
    email = new_email("web")
    made = await fill(browser, "/sign-up", "/sign-up", sign_up_fields(email, **overrides))
    assert made.status_code == 303, made.text
    signed = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
    assert signed.status_code == 303, signed.text
    return email


async def make_admin(app: FastAPI) -> str:
    email = new_email("admin")
    async with runtime(app).db.session() as session:
        await service.create_admin(
            session,
            auth_kit(app),
            email=email,
            full_name="Grace Admin",
            phone="0722000000",
            password=ADMIN_PASSWORD,
            now=runtime(app).now(),
        )
    return email


async def enrol_by_page(browser: httpx.AsyncClient, clock: FakeClock) -> tuple[str, httpx.Response]:
    """Set up two-step verification through the pages; (the secret, the recovery codes page)."""
    page = await open_page(browser, "/account/mfa")
    setup = await submit(browser, "/account/mfa/setup", {}, token=csrf_token(page))
    assert setup.status_code == 200, setup.text
    secret = setup.text.split('<code class="secret">', 1)[1].split("</code>", 1)[0]
    fields = {"code": pyotp.TOTP(secret).at(clock()), "secret": secret, "qr": ""}
    codes = await submit(browser, "/account/mfa/confirm", fields, token=csrf_token(setup))
    assert codes.status_code == 200, codes.text
    return secret, codes
