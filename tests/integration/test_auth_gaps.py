"""Authentication gaps an outside test found: a reusable MFA challenge, second proofs that did
not count toward the lockout, and refused authorisation that left no security event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform.logging import captured_events
from tests.conftest import SettingsFactory, running
from tests.support.accounts import (
    ORIGIN,
    PASSWORD,
    another_client,
    csrf,
    login,
    problem_type,
    signed_in,
)
from tests.support.clock import FakeClock

API = "/api/v1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    # The auth rate limit would answer 429 first; these tests are about the account lockout.
    return make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m")


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app, headers={"Origin": ORIGIN}) as client:
        yield client


async def enrol(client: httpx.AsyncClient, clock: FakeClock) -> tuple[str, list[str]]:
    setup = (await client.post(f"{API}/auth/mfa/totp/setup", headers=csrf(client))).json()
    code = pyotp.TOTP(setup["secret"]).at(clock())
    confirmed = await client.post(f"{API}/auth/mfa/totp/confirm", json={"code": code}, headers=csrf(client))
    assert confirmed.status_code == 200, confirmed.text
    return setup["secret"], confirmed.json()["recovery_codes"]


async def test_an_mfa_challenge_signs_in_once(client: httpx.AsyncClient, clock: FakeClock) -> None:
    user = await signed_in(client)
    secret, recovery = await enrol(client, clock)
    challenge = (await login(client, user["email"])).json()["mfa_token"]
    clock.advance(30)
    first = await client.post(
        f"{API}/auth/login/mfa", json={"mfa_token": challenge, "code": pyotp.TOTP(secret).at(clock())}
    )
    assert first.status_code == 200
    clock.advance(30)
    replay = await client.post(
        f"{API}/auth/login/mfa", json={"mfa_token": challenge, "code": pyotp.TOTP(secret).at(clock())}
    )
    assert replay.status_code == 401 and problem_type(replay) == "invalid-mfa-challenge"
    with_recovery = await client.post(
        f"{API}/auth/login/mfa", json={"mfa_token": challenge, "recovery_code": recovery[0]}
    )
    assert with_recovery.status_code == 401


async def test_two_racing_second_steps_on_one_challenge_sign_in_once(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    user = await signed_in(client)
    secret, recovery = await enrol(client, clock)
    challenge = (await login(client, user["email"])).json()["mfa_token"]
    clock.advance(30)
    bodies = [
        {"mfa_token": challenge, "code": pyotp.TOTP(secret).at(clock())},
        {"mfa_token": challenge, "recovery_code": recovery[0]},
        {"mfa_token": challenge, "recovery_code": recovery[1]},
    ]
    async with another_client(client, Origin=ORIGIN) as a, another_client(client, Origin=ORIGIN) as b:
        clients = [client, a, b]
        answers = await asyncio.gather(
            *(http.post(f"{API}/auth/login/mfa", json=body) for http, body in zip(clients, bodies, strict=True))
        )
    assert sorted(answer.status_code for answer in answers) == [200, 401, 401]


async def test_wrong_current_passwords_lock_the_account_like_failed_sign_ins(client: httpx.AsyncClient) -> None:
    user = await signed_in(client)
    wrong = {"current_password": "not my password 9", "new_password": "a fresh phrase for 2027"}
    attempts = [await client.post(f"{API}/auth/password/change", json=wrong, headers=csrf(client)) for _ in range(5)]
    assert [attempt.status_code for attempt in attempts] == [422] * 5
    right = {"current_password": PASSWORD, "new_password": "a fresh phrase for 2027"}
    locked = await client.post(f"{API}/auth/password/change", json=right, headers=csrf(client))
    assert locked.status_code == 429 and problem_type(locked) == "account-locked"
    async with another_client(client, Origin=ORIGIN) as other:
        assert (await login(other, user["email"])).status_code == 429  # sign-in is locked the same way


@pytest.mark.parametrize("action", ["disable", "recovery-codes"])
async def test_wrong_codes_for_mfa_changes_lock_the_account(
    client: httpx.AsyncClient, clock: FakeClock, action: str
) -> None:
    await signed_in(client)
    secret, _ = await enrol(client, clock)
    path = f"{API}/auth/mfa/{action}"

    def body(code: str) -> dict[str, str]:
        return {"password": PASSWORD, "code": code} if action == "disable" else {"code": code}

    for _ in range(5):
        clock.advance(30)
        refused = await client.post(path, json=body("000000"), headers=csrf(client))
        assert refused.status_code in (401, 422), refused.text
        assert problem_type(refused) == "invalid-mfa-code"
    clock.advance(30)
    locked = await client.post(path, json=body(pyotp.TOTP(secret).at(clock())), headers=csrf(client))
    assert locked.status_code == 429 and problem_type(locked) == "account-locked"


async def test_refused_authorisation_is_a_security_event_with_who_and_which_request(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    user = await signed_in(client)
    user_id = user["session"]["user"]["id"]
    with captured_events() as events:
        no_csrf = await client.post(f"{API}/auth/logout")  # cookie-authenticated, no CSRF header
        not_admin = await client.get(f"{API}/admin/users")
        forged = await client.get(f"{API}/users/me", headers={"Authorization": "Bearer not.a.token"})
    assert (no_csrf.status_code, not_admin.status_code, forged.status_code) == (403, 403, 401)
    logged = [event for event in events if event["event"] == "security_event"]
    assert [(event["reason"], event["user_id"]) for event in logged] == [
        ("csrf_token", user_id),
        ("role_required", user_id),
        ("invalid_token", None),
    ]
    assert [event["request_id"] for event in logged] == [
        answer.headers["x-request-id"] for answer in (no_csrf, not_admin, forged)
    ]
    assert all(event["level"] == "warning" and event["route"].startswith("/api/v1/") for event in logged)
    assert "not.a.token" not in str(logged)
    metrics = (await client.get("/metrics")).text
    assert 'smilingsteps_security_events_total{reason="role_required"} 1.0' in metrics
