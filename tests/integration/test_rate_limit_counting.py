"""What the limits count: an attacker's guesses and the emails anyone can trigger, never a
person's ordinary day. Default quotas (auth 5/15 min, email 5/1 h), on memory and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.notifications.sender import OutboxSender
from smilingsteps.platform.logging import captured_events
from tests.conftest import SettingsFactory, running
from tests.support.accounts import (
    ORIGIN,
    csrf,
    link_token,
    login,
    new_email,
    problem_type,
    register,
    registration,
    runtime,
)
from tests.support.clock import FakeClock
from tests.support.smtp import SmtpServer, client_settings

API = "/api/v1"


@pytest.fixture(params=["memory", "redis"])
def settings(
    request: pytest.FixtureRequest,
    make_settings: SettingsFactory,
    database_url: str,
    smtp_server: SmtpServer,
    redis_url: str,
    redis_prefix: str,
) -> Settings:
    shared: dict[str, Any] = (
        {} if request.param == "memory" else {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix}
    )
    return make_settings(DATABASE_URL=database_url, **client_settings(smtp_server), **shared)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    app = create_app(settings, clock=clock)
    async with running(app):
        yield app


def browser(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A browser on its own address (the key of the unauthenticated limits)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers={"Origin": ORIGIN})


def remaining(response: httpx.Response) -> int:
    return int(response.headers["x-ratelimit-remaining"])


async def test_a_new_users_first_day_is_never_refused(app: FastAPI, clock: FakeClock, smtp_server: SmtpServer) -> None:
    async with browser(app, "198.51.100.10") as laptop, browser(app, "198.51.100.10") as phone:
        user = await register(laptop)
        await OutboxSender(runtime(app).settings, runtime(app).db, clock=clock).run_once()
        [verification] = smtp_server.messages_to(user["email"])
        verified = await laptop.post(
            f"{API}/auth/verify-email", json={"token": link_token(verification, "/verify-email")}
        )
        assert verified.status_code == 200 and remaining(verified) == 5  # a valid token costs nothing

        for device in (laptop, phone):
            signed = await login(device, user["email"])
            assert signed.status_code == 200 and remaining(signed) == 5

        setup = await laptop.post(f"{API}/auth/mfa/totp/setup", headers=csrf(laptop))
        secret = setup.json()["secret"]
        confirmed = await laptop.post(
            f"{API}/auth/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).at(clock())}, headers=csrf(laptop)
        )
        assert confirmed.status_code == 200 and remaining(confirmed) == 5

        for _ in range(30):
            clock.advance(60)
            refreshed = await laptop.post(f"{API}/auth/refresh", headers=csrf(laptop))
            assert refreshed.status_code == 200, refreshed.text

        assert (await laptop.post(f"{API}/auth/logout", headers=csrf(laptop))).status_code == 204
        for _ in range(3):  # and back in, more than once, with the second step each time
            clock.advance(30)
            challenge = await login(laptop, user["email"])
            assert challenge.status_code == 200 and challenge.json()["mfa_required"] is True
            step = await laptop.post(
                f"{API}/auth/login/mfa",
                json={"mfa_token": challenge.json()["mfa_token"], "code": pyotp.TOTP(secret).at(clock())},
            )
            assert step.status_code == 200 and remaining(step) == 5


async def test_the_sixth_failed_sign_in_from_an_address_is_refused_but_not_its_neighbours(app: FastAPI) -> None:
    async with browser(app, "203.0.113.66") as attacker:
        # A different (unknown) account each time: the account lockout never sees two of them.
        failed = [await login(attacker, new_email("guess"), "wrong password 123") for _ in range(5)]
        assert [response.status_code for response in failed] == [401] * 5
        assert [remaining(response) for response in failed] == [4, 3, 2, 1, 0]
        sixth = await login(attacker, new_email("guess"), "wrong password 123")
    assert sixth.status_code == 429 and problem_type(sixth) == "rate-limited"
    assert sixth.json()["policy"] == "auth" and int(sixth.headers["retry-after"]) > 0

    async with browser(app, "203.0.113.67") as neighbour:
        user = await register(neighbour)
        assert (await login(neighbour, user["email"])).status_code == 200


async def test_failed_sign_ins_to_one_account_from_many_addresses_lock_that_account_only(app: FastAPI) -> None:
    async with browser(app, "198.51.100.20") as owner:
        victim = await register(owner)
        other = await register(owner)
    statuses = []
    for index in range(6):
        async with browser(app, f"192.0.2.{index + 1}") as attacker:
            statuses.append(await login(attacker, victim["email"], "wrong password 123"))
    assert [response.status_code for response in statuses] == [401] * 5 + [429]
    assert problem_type(statuses[-1]) == "account-locked" and int(statuses[-1].headers["retry-after"]) > 0
    async with browser(app, "198.51.100.21") as someone_else:
        assert (await login(someone_else, other["email"])).status_code == 200


async def test_mail_to_one_address_is_capped_whoever_asks(app: FastAPI) -> None:
    target = new_email("target")
    registrations = []
    for index in range(6):
        async with browser(app, f"192.0.2.{100 + index}") as spammer:
            registrations.append(await spammer.post(f"{API}/auth/register", json=registration(email=target)))
    assert [response.status_code for response in registrations] == [201, 409, 409, 409, 409, 429]
    assert registrations[-1].json()["policy"] == "email"

    resets = []
    for index in range(6):
        async with browser(app, f"192.0.2.{120 + index}") as spammer:
            resets.append(await spammer.post(f"{API}/auth/password-reset/request", json={"email": target.upper()}))
    # The recipient's count already holds the registrations: the quota is per window, not per route.
    assert [response.status_code for response in resets] == [429] * 6

    async with browser(app, "192.0.2.130") as honest:
        assert (await honest.post(f"{API}/auth/register", json=registration())).status_code == 201


async def test_registrations_from_one_address_are_capped(app: FastAPI) -> None:
    async with browser(app, "203.0.113.90") as bot:
        statuses = [(await bot.post(f"{API}/auth/register", json=registration())).status_code for _ in range(6)]
    assert statuses == [201] * 5 + [429]


async def test_a_request_refused_before_routing_is_logged_with_its_route(app: FastAPI) -> None:
    with captured_events() as events:
        async with browser(app, "203.0.113.91") as bot:
            for _ in range(6):
                await login(bot, f"nobody-{uuid.uuid4().hex[:6]}@example.com", "wrong password 123")
    lines = [event for event in events if event["event"] == "request" and event.get("status") == 429]
    assert [line["route"] for line in lines] == ["/api/v1/auth/login"]


async def test_a_password_change_with_the_right_password_costs_nothing(app: FastAPI) -> None:
    async with browser(app, "198.51.100.30") as person:
        user = await register(person)
        assert (await login(person, user["email"])).status_code == 200
        changes = []
        for new in ("first new phrase 2027", "second new phrase 2027", "third new phrase 2027"):
            changes.append(
                await person.post(
                    f"{API}/auth/password/change",
                    json={"current_password": user["password"], "new_password": new},
                    headers=csrf(person),
                )
            )
            user["password"] = new
    assert [response.status_code for response in changes] == [204] * 3
    assert [remaining(response) for response in changes] == [5, 5, 5]
