"""Account guarantees that must hold under attack, each checked by breaking it on purpose:
a refresh token is spent once however many requests race for it, a CSRF pair minted for
one session is worthless on another, and a locked account stays locked at the MFA step."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from tests.conftest import SettingsFactory, running
from tests.support.accounts import ORIGIN, another_client, csrf, login, problem_type, signed_in
from tests.support.clock import FakeClock

API = "/api/v1"
RACERS = 8


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    # A generous auth quota: the lockout, not the rate limiter, must be what answers.
    return make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", DB_POOL_SIZE=RACERS + 2)


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # An address of its own: the failed sign-ins here must not count toward the per-address
    # lockout of 127.0.0.1, which the other tests on the shared database sign in from.
    address = f"10.77.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    async with running(app, headers={"Origin": ORIGIN}, client_addr=(address, 50000)) as client:
        yield client


# ---- refresh tokens are spent once ---------------------------------------------------------


async def test_parallel_refreshes_of_one_token_succeed_exactly_once(client: httpx.AsyncClient) -> None:
    """8 requests presenting one refresh token at the same moment: one rotation, never more.

    A read-then-write spend lets several readers see the token unspent and each mint a
    session's worth of new tokens (3-7 of 8 on PostgreSQL); the conditional UPDATE lets one.
    """
    user = await signed_in(client)
    native = await login(client, user["email"], client="native")
    assert native.status_code == 200, native.text
    token = native.json()["refresh_token"]
    assert token

    async def spend() -> httpx.Response:
        async with another_client(client) as app_instance:  # its own connection, no cookies
            return await app_instance.post(f"{API}/auth/refresh", json={"refresh_token": token})

    responses = await asyncio.gather(*(spend() for _ in range(RACERS)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] == 1, statuses
    assert statuses == {200: 1, 401: RACERS - 1}, statuses
    assert {problem_type(r) for r in responses if r.status_code == 401} <= {
        "refresh-token-reused",
        "invalid-refresh-token",
    }
    # Presenting the spent token again is reuse: the whole session ends.
    async with another_client(client) as late:
        again = await late.post(f"{API}/auth/refresh", json={"refresh_token": token})
    assert again.status_code == 401


# ---- CSRF tokens are bound to their session ------------------------------------------------


async def test_a_csrf_pair_from_another_session_is_refused(client: httpx.AsyncClient) -> None:
    """Session A's access cookie with session B's CSRF token (cookie and header both B's) is 403.

    That is the double-submit attack the HMAC binding stops: an attacker who can plant a
    cookie on a sibling site signs in themselves, and pairs their own valid token with the
    victim's session. Without the binding, header == cookie would be all that is checked.
    """
    victim = await signed_in(client)
    async with another_client(client, Origin=ORIGIN) as attacker:
        mine = await login(attacker, victim["email"])  # any other session works: here, a second one
        assert mine.status_code == 200, mine.text
        foreign_csrf = attacker.cookies.get("ss_csrf")
    assert foreign_csrf and foreign_csrf != client.cookies.get("ss_csrf")
    assert mine.json()["session_id"] != victim["session"]["session_id"]

    async with another_client(client, Origin=ORIGIN) as forged:
        forged.cookies.set("ss_access", client.cookies.get("ss_access") or "")
        forged.cookies.set("ss_refresh", client.cookies.get("ss_refresh") or "")
        forged.cookies.set("ss_csrf", foreign_csrf)
        header = {"X-CSRF-Token": foreign_csrf}
        # An unsafe request authenticated by the access cookie...
        logout = await forged.post(f"{API}/auth/logout", headers=header)
        assert logout.status_code == 403 and problem_type(logout) == "csrf-failed", logout.text
        # ...and the refresh endpoint, which checks the pair against the refresh token's session.
        refresh = await forged.post(f"{API}/auth/refresh", headers=header)
        assert refresh.status_code == 403 and problem_type(refresh) == "csrf-failed", refresh.text

    # The victim's session is untouched, and its own pair still works.
    assert (await client.get(f"{API}/auth/sessions")).status_code == 200
    assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 200


# ---- the lockout holds at the MFA step -----------------------------------------------------


def wrong_code(secret: str, when: float) -> str:
    """A well-formed code that is valid for no step near `when` (so it fails deterministically)."""
    totp = pyotp.TOTP(secret)
    near = {totp.at(when + offset) for offset in range(-120, 121, 30)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in near)


async def test_five_wrong_mfa_codes_lock_the_account_even_for_the_right_code(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    user = await signed_in(client)
    setup = await client.post(f"{API}/auth/mfa/totp/setup", headers=csrf(client))
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    confirm = await client.post(
        f"{API}/auth/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).at(clock())}, headers=csrf(client)
    )
    assert confirm.status_code == 200, confirm.text

    async with another_client(client, Origin=ORIGIN) as browser:
        first = await login(browser, user["email"])
        assert first.status_code == 200 and first.json()["mfa_required"] is True, first.text
        challenge = first.json()["mfa_token"]
        clock.advance(30)  # a step the enrolment did not spend
        bad = wrong_code(secret, clock())
        for attempt in range(5):
            wrong = await browser.post(f"{API}/auth/login/mfa", json={"mfa_token": challenge, "code": bad})
            assert wrong.status_code == 401 and problem_type(wrong) == "invalid-mfa-code", (attempt, wrong.text)
        right = pyotp.TOTP(secret).at(clock())
        locked = await browser.post(f"{API}/auth/login/mfa", json={"mfa_token": challenge, "code": right})
        assert locked.status_code == 429, locked.status_code  # not 200: no session for a locked account
        assert problem_type(locked) == "account-locked"
        assert int(locked.headers["retry-after"]) > 0
        assert "set-cookie" not in locked.headers
        # The password step is locked too, until the lockout passes.
        assert (await login(browser, user["email"])).status_code == 429
