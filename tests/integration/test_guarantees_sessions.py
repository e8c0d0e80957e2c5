"""Sessions end one at a time, for a stated reason, with an audit trail; access tokens say
what the account has proved (verified email, second factor). Written from the survivors of
a mutation run over accounts/sessions.py (bench/mutation.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from smilingsteps.accounts.models import AuthSession, User
from smilingsteps.app import create_app
from smilingsteps.audit.models import AuditEvent
from smilingsteps.config import Settings
from smilingsteps.platform.logging import captured_events
from tests.conftest import SettingsFactory, running
from tests.support.accounts import ORIGIN, another_client, auth_kit, csrf, login, problem_type, register, runtime
from tests.support.clock import FakeClock

API = "/api/v1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def address() -> str:
    """The client address of this test's browsers (its own: no shared per-address counters)."""
    return f"10.78.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", SESSION_ABSOLUTE_LIFETIME_HOURS=1)


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
async def client(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Origin": ORIGIN, "User-Agent": "Browser A"}
    async with running(app, headers=headers, client_addr=(address, 50000)) as client:
        yield client


async def session_row(app: FastAPI, session_id: str) -> AuthSession:
    async with runtime(app).db.session() as session:
        found = await session.get(AuthSession, uuid.UUID(session_id))
        assert found is not None
        return found


async def audit_of(app: FastAPI, session_id: str) -> list[AuditEvent]:
    async with runtime(app).db.session() as session:
        rows = await session.execute(
            select(AuditEvent).where(AuditEvent.target_id == session_id).order_by(AuditEvent.seq)
        )
        return list(rows.scalars())


def summary(event: AuditEvent) -> dict[str, Any]:
    return {
        "action": event.action,
        "actor": str(event.actor_id),
        "target_type": event.target_type,
        "details": event.details,
    }


@asynccontextmanager
async def second_browser(
    client: httpx.AsyncClient, email: str, agent: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """Another browser of the same user, signed in: its client and its session id."""
    async with another_client(client, Origin=ORIGIN, **{"User-Agent": agent}) as browser:
        response = await login(browser, email)
        assert response.status_code == 200, response.text
        yield browser, str(response.json()["session_id"])


async def test_ending_one_session_leaves_the_others_and_says_why(client: httpx.AsyncClient, app: FastAPI) -> None:
    user = await register(client)
    first = await login(client, user["email"])
    session_a, user_id = str(first.json()["session_id"]), user["id"]
    async with second_browser(client, user["email"], "Browser B") as (browser_b, session_b):
        login_event = (await audit_of(app, session_a))[0]
        assert summary(login_event) == {
            "action": "auth.login.succeeded",
            "actor": user_id,
            "target_type": "session",
            "details": {"mfa": False},
        }
        listed = (await client.get(f"{API}/auth/sessions")).json()
        assert {(s["id"], s["device"], s["current"]) for s in listed} == {
            (session_a, "Browser A", True),
            (session_b, "Browser B", False),
        }
        assert {s["ip"] for s in listed} == {login_event.ip}

        # A signs B out: only B ends.
        ended = await client.delete(f"{API}/auth/sessions/{session_b}", headers=csrf(client))
        assert ended.status_code == 204
        assert (await browser_b.get(f"{API}/users/me")).status_code == 401
        assert (await client.get(f"{API}/users/me")).status_code == 200
        assert (await session_row(app, session_b)).revoke_reason == "revoked_by_user"
        assert (await session_row(app, session_a)).revoked_at is None
        assert summary((await audit_of(app, session_b))[-1]) == {
            "action": "auth.session.revoked",
            "actor": user_id,
            "target_type": "session",
            "details": {},
        }
        assert (await client.delete(f"{API}/auth/sessions/{session_b}", headers=csrf(client))).status_code == 404

        # B signs in again, A signs out: only A ends.
        async with second_browser(client, user["email"], "Browser C") as (browser_c, session_c):
            assert (await client.post(f"{API}/auth/logout", headers=csrf(client))).status_code == 204
            assert (await session_row(app, session_a)).revoke_reason == "logout"
            assert (await session_row(app, session_c)).revoked_at is None
            assert (await browser_c.get(f"{API}/users/me")).status_code == 200
            assert summary((await audit_of(app, session_a))[-1]) == {
                "action": "auth.logout",
                "actor": user_id,
                "target_type": "session",
                "details": {},
            }


async def test_a_reused_refresh_token_ends_its_own_session_only(
    client: httpx.AsyncClient, app: FastAPI, address: str
) -> None:
    user = await register(client)
    first = await login(client, user["email"])
    session_a = str(first.json()["session_id"])
    stolen = client.cookies.get("ss_refresh")
    assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 200
    async with (
        second_browser(client, user["email"], "Browser B") as (browser_b, session_b),
        another_client(client, Origin=ORIGIN) as thief,
    ):
        thief.cookies.set("ss_refresh", stolen or "")
        thief.cookies.set("ss_csrf", client.cookies.get("ss_csrf") or "")
        with captured_events() as events:
            reused = await thief.post(f"{API}/auth/refresh", headers=csrf(thief))
        assert reused.status_code == 401 and problem_type(reused) == "refresh-token-reused"
        assert (await session_row(app, session_a)).revoke_reason == "token_reuse"
        assert (await browser_b.post(f"{API}/auth/refresh", headers=csrf(browser_b))).status_code == 200
        assert (await session_row(app, session_b)).revoked_at is None
        assert summary((await audit_of(app, session_a))[-1]) == {
            "action": "auth.refresh.reused",
            "actor": user["id"],
            "target_type": "session",
            "details": {},
        }
        warnings = [e for e in events if e.get("event") == "security_refresh_token_reused"]
        assert len(warnings) == 1 and warnings[0]["ip"] == address and warnings[0]["level"] == "warning"


async def test_sessions_end_alone_when_idle_too_old_or_suspended(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    user = await register(client)
    session_a = str((await login(client, user["email"])).json()["session_id"])
    async with second_browser(client, user["email"], "Browser B") as (browser_b, session_b):
        # Idle: A is not refreshed for 31 minutes; B was, 11 minutes ago.
        clock.advance(20 * 60)
        assert (await browser_b.post(f"{API}/auth/refresh", headers=csrf(browser_b))).status_code == 200
        clock.advance(11 * 60)
        idle = await client.post(f"{API}/auth/refresh", headers=csrf(client))
        assert idle.status_code == 401 and problem_type(idle) == "invalid-refresh-token"
        assert (await session_row(app, session_a)).revoke_reason == "idle"
        assert (await session_row(app, session_b)).revoked_at is None

        # Too old: B, refreshed every 25 minutes, still ends an hour after sign-in (the test's lifetime).
        async with second_browser(client, user["email"], "Browser C") as (browser_c, session_c):
            assert (await browser_b.post(f"{API}/auth/refresh", headers=csrf(browser_b))).status_code == 200
            clock.advance(25 * 60)
            assert (await browser_b.post(f"{API}/auth/refresh", headers=csrf(browser_b))).status_code == 200
            assert (await browser_c.post(f"{API}/auth/refresh", headers=csrf(browser_c))).status_code == 200
            clock.advance(5 * 60)  # B: 61 minutes after its sign-in; C: 30
            old = await browser_b.post(f"{API}/auth/refresh", headers=csrf(browser_b))
            assert old.status_code == 401 and problem_type(old) == "invalid-refresh-token"
            assert (await session_row(app, session_b)).revoke_reason == "expired"
            assert (await session_row(app, session_c)).revoked_at is None

            # Suspended (here straight in the database, so the refresh itself must notice).
            async with runtime(app).db.session() as session:
                await session.execute(update(User).where(User.id == uuid.UUID(user["id"])).values(status="suspended"))
            refused = await browser_c.post(f"{API}/auth/refresh", headers=csrf(browser_c))
            assert refused.status_code == 401 and problem_type(refused) == "invalid-refresh-token"
            assert (await session_row(app, session_c)).revoke_reason == "suspended"


async def test_access_tokens_state_a_verified_email_and_a_second_factor(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    user = await register(client)

    def claims_of(response: httpx.Response) -> tuple[bool, bool]:
        assert response.status_code == 200, response.text
        decoded = auth_kit(app).codec.decode_access(response.json()["access_token"], now=runtime(app).now())
        return decoded.email_verified, decoded.mfa

    native = await login(client, user["email"], client="native")
    assert claims_of(native) == (False, False)
    async with runtime(app).db.session() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(user["id"])).values(email_verified_at=runtime(app).now())
        )
    refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": native.json()["refresh_token"]})
    assert claims_of(refreshed) == (True, False)

    # With a second factor: the session, and every token it issues, says so.
    await login(client, user["email"])
    setup = await client.post(f"{API}/auth/mfa/totp/setup", headers=csrf(client))
    secret = setup.json()["secret"]
    confirm = {"code": pyotp.TOTP(secret).at(clock())}
    assert (await client.post(f"{API}/auth/mfa/totp/confirm", json=confirm, headers=csrf(client))).status_code == 200
    clock.advance(30)
    challenge = (await login(client, user["email"])).json()["mfa_token"]
    second = await client.post(
        f"{API}/auth/login/mfa",
        json={"mfa_token": challenge, "code": pyotp.TOTP(secret).at(clock()), "client": "native"},
    )
    assert claims_of(second) == (True, True)
    assert (await session_row(app, str(second.json()["session_id"]))).mfa_verified is True
    again = await client.post(f"{API}/auth/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert claims_of(again) == (True, True)
