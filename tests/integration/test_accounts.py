"""Accounts end to end on SQLite and PostgreSQL: registration, sign-in, sessions, CSRF, lockout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from smilingsteps.accounts.models import AuthSession, User
from smilingsteps.app import create_app
from smilingsteps.audit.models import AuditEvent
from smilingsteps.config import Settings
from tests.conftest import SettingsFactory, running
from tests.support.accounts import (
    ORIGIN,
    PASSWORD,
    another_client,
    auth_kit,
    csrf,
    login,
    new_email,
    problem_type,
    register,
    registration,
    runtime,
    signed_in,
)
from tests.support.clock import FakeClock

API = "/api/v1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m")


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app, headers={"Origin": ORIGIN}) as client:
        yield client


async def count(app: FastAPI, model: Any, *conditions: Any) -> int:
    async with runtime(app).db.session() as session:
        return int((await session.execute(select(func.count()).select_from(model).where(*conditions))).scalar_one())


async def audit_actions(app: FastAPI, target_id: str) -> list[str]:
    async with runtime(app).db.session() as session:
        rows = await session.execute(
            select(AuditEvent.action).where(AuditEvent.target_id == target_id).order_by(AuditEvent.seq)
        )
        return list(rows.scalars())


# ---- registration -----------------------------------------------------------------------


async def test_registration_normalises_fields_and_starts_unverified(client: httpx.AsyncClient) -> None:
    email = new_email()
    user = await register(client, email=email.upper(), phone="+254 712 345 678", timezone="Europe/London")
    assert user["email"] == email
    assert user["phone"] == "254712345678"
    assert (user["role"], user["status"], user["email_verified"], user["therapist_status"]) == (
        "client",
        "active",
        False,
        None,
    )


async def test_therapists_start_pending(client: httpx.AsyncClient) -> None:
    user = await register(client, role="therapist")
    assert (user["role"], user["therapist_status"]) == ("therapist", "pending")


async def test_admin_role_cannot_be_registered(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/auth/register", json=registration(role="admin"))
    assert response.status_code == 422


async def test_duplicate_email_is_409_whatever_the_case(client: httpx.AsyncClient, app: FastAPI) -> None:
    user = await register(client)
    response = await client.post(f"{API}/auth/register", json=registration(email=user["email"].upper()))
    assert response.status_code == 409 and problem_type(response) == "email-taken"
    assert await count(app, User, User.email == user["email"]) == 1


async def test_concurrent_registrations_of_one_email_create_one_account(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    email = new_email()
    responses = await asyncio.gather(
        *(client.post(f"{API}/auth/register", json=registration(email=email)) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    assert await count(app, User, User.email == email) == 1


@pytest.mark.parametrize(
    ("password", "rule"),
    [("short pass", "at least 12"), ("password12345", "too common"), ("x" * 129, "at most 128")],
)
async def test_weak_password_is_422_naming_the_rule_and_creates_nothing(
    client: httpx.AsyncClient, app: FastAPI, password: str, rule: str
) -> None:
    body = registration(password=password)
    response = await client.post(f"{API}/auth/register", json=body)
    assert response.status_code == 422 and problem_type(response) == "weak-password"
    assert rule in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == "password"
    assert await count(app, User, User.email == body["email"]) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"email": "not-an-email"},
        {"phone": "+1 212 555 0100"},
        {"timezone": "Mars/Olympus"},
        {"full_name": ""},
        {"full_name": "x" * 121},
        {"full_name": "Amani\u202eOtieno"},
        {"full_name": "Amani\x00Otieno"},
        {"role": "root"},
        {"is_admin": True},
        {"password": 123456789012},
        {"email": ["a@example.com"]},
    ],
)
async def test_malformed_registration_is_422(client: httpx.AsyncClient, change: dict[str, Any]) -> None:
    response = await client.post(f"{API}/auth/register", json=registration(**change))
    assert response.status_code == 422, response.text
    assert response.json()["errors"]


async def test_malformed_json_and_wrong_media_type_are_clean_errors(client: httpx.AsyncClient) -> None:
    bad_json = await client.post(
        f"{API}/auth/register", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and problem_type(bad_json) == "malformed-json"
    form = await client.post(f"{API}/auth/login", data={"email": "a", "password": "b"})
    assert form.status_code == 415


# ---- sign-in ------------------------------------------------------------------------------


async def test_login_sets_httponly_samesite_cookies_and_authenticates(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await login(client, user["email"].upper())
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    cookies = {c.split("=", 1)[0]: c.lower() for c in response.headers.get_list("set-cookie")}
    assert set(cookies) == {"ss_access", "ss_refresh", "ss_csrf"}
    assert "httponly" in cookies["ss_access"] and "samesite=lax" in cookies["ss_access"]
    assert "httponly" in cookies["ss_refresh"] and "samesite=strict" in cookies["ss_refresh"]
    assert "httponly" not in cookies["ss_csrf"]
    me = await client.get(f"{API}/users/me")
    assert me.status_code == 200 and me.json()["id"] == user["id"]


async def test_production_cookies_are_secure_and_host_prefixed(
    make_settings: SettingsFactory, database_url: str, clock: FakeClock
) -> None:
    settings = make_settings(
        DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", PUBLIC_BASE_URL="https://app.smilingsteps.example"
    )
    origin = "https://app.smilingsteps.example"
    async with running(create_app(settings, clock=clock), headers={"Origin": origin}, base_url=origin) as client:
        user = await register(client)
        response = await login(client, user["email"])
        cookies = response.headers.get_list("set-cookie")
        assert {c.split("=", 1)[0] for c in cookies} == {"__Host-ss_access", "__Host-ss_refresh", "__Host-ss_csrf"}
        assert all("secure" in c.lower() and "path=/" in c.lower() and "domain" not in c.lower() for c in cookies)
        assert (await client.get(f"{API}/users/me")).status_code == 200


async def test_bearer_tokens_work_without_cookies_or_csrf(client: httpx.AsyncClient, app: FastAPI) -> None:
    user = await register(client)
    body = (await login(client, user["email"], client="native")).json()
    assert body["refresh_token"] and body["csrf_token"] is None
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await client.get(f"{API}/users/me", headers=bearer)).status_code == 200
    assert (await client.post(f"{API}/auth/logout", headers=bearer)).status_code == 204
    assert (await client.get(f"{API}/users/me", headers=bearer)).status_code == 401


async def test_wrong_password_and_unknown_email_answer_alike(client: httpx.AsyncClient) -> None:
    user = await register(client)
    wrong = await login(client, user["email"], "not the password 1")
    unknown = await login(client, new_email(), "not the password 1")
    malformed = await login(client, "no-at-sign", "not the password 1")
    for response in (wrong, unknown, malformed):
        assert response.status_code == 401 and problem_type(response) == "invalid-credentials"
        assert "set-cookie" not in response.headers
    strip = ("request_id",)
    assert {k: v for k, v in wrong.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }


async def test_no_auth_is_401_and_garbage_tokens_are_401(client: httpx.AsyncClient) -> None:
    assert problem_type(await client.get(f"{API}/users/me")) == "not-authenticated"
    for header in ("Bearer", "Bearer ", "Basic abc", "Bearer a.b.c", "Bearer " + "x" * 3000):
        response = await client.get(f"{API}/users/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"].startswith("Bearer")
    client.cookies.set("ss_access", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
    assert (await client.get(f"{API}/users/me")).status_code == 401


# ---- lockout -------------------------------------------------------------------------------


async def test_five_failures_lock_the_account_for_a_growing_period(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    user = await register(client)
    for _ in range(5):
        assert (await login(client, user["email"], "wrong password 123")).status_code == 401
    locked = await login(client, user["email"])  # even the right password
    assert locked.status_code == 429 and problem_type(locked) == "account-locked"
    assert 800 <= int(locked.headers["retry-after"]) <= 901
    assert "auth.lockout" in await audit_actions(app, user["id"])
    clock.advance(15 * 60 + 1)
    assert (await login(client, user["email"])).status_code == 200
    # A success resets the count; lockouts in a row (no success between) grow: 15, 30, 60 minutes…
    for _ in range(5):
        await login(client, user["email"], "wrong password 123")
    clock.advance(15 * 60 + 1)
    for _ in range(5):
        await login(client, user["email"], "wrong password 123")
    second = await login(client, user["email"])
    assert second.status_code == 429 and 1700 <= int(second.headers["retry-after"]) <= 1801
    clock.advance(15 * 60 + 1)
    assert (await login(client, user["email"])).status_code == 429
    clock.advance(15 * 60 + 1)
    assert (await login(client, user["email"])).status_code == 200


async def test_a_lockout_looks_the_same_for_an_address_without_account(client: httpx.AsyncClient) -> None:
    nobody = new_email()
    statuses = [(await login(client, nobody, "wrong password 123")).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


async def test_failures_spread_over_more_than_the_window_do_not_lock(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    user = await register(client)
    for _ in range(8):
        await login(client, user["email"], "wrong password 123")
        clock.advance(4 * 60)
    assert (await login(client, user["email"])).status_code == 200


async def test_many_failures_from_one_address_lock_that_address(
    make_settings: SettingsFactory, database_url: str, clock: FakeClock
) -> None:
    settings = make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", LOGIN_IP_MAX_FAILURES=4)
    async with running(
        create_app(settings, clock=clock), headers={"Origin": ORIGIN}, client_addr=("10.9.8.7", 1)
    ) as client:
        user = await register(client)
        for _ in range(4):
            await login(client, new_email(), "wrong password 123")  # four different accounts
        assert (await login(client, user["email"])).status_code == 429


# ---- sessions, refresh, logout ---------------------------------------------------------------


async def test_refresh_rotates_and_reuse_ends_the_whole_session(client: httpx.AsyncClient, app: FastAPI) -> None:
    user = await signed_in(client)
    first_refresh = client.cookies.get("ss_refresh")
    rotated = await client.post(f"{API}/auth/refresh", headers=csrf(client))
    assert rotated.status_code == 200
    second_refresh = client.cookies.get("ss_refresh")
    assert second_refresh and second_refresh != first_refresh
    assert (await client.get(f"{API}/users/me")).status_code == 200

    async with another_client(client, Origin=ORIGIN) as thief:
        thief.cookies.set("ss_refresh", first_refresh or "")
        thief.cookies.set("ss_csrf", client.cookies.get("ss_csrf") or "")
        reused = await thief.post(f"{API}/auth/refresh", headers=csrf(thief))
    assert reused.status_code == 401 and problem_type(reused) == "refresh-token-reused"
    # The legitimate holder is signed out too: the family is revoked at once.
    assert (await client.get(f"{API}/users/me")).status_code == 401
    assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 401
    assert "auth.refresh.reused" in await audit_actions(app, str(user["session"]["session_id"]))


async def test_refresh_needs_the_csrf_header_and_an_allowed_origin(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    assert problem_type(await client.post(f"{API}/auth/refresh")) == "csrf-failed"
    foreign = await client.post(f"{API}/auth/refresh", headers={**csrf(client), "Origin": "https://evil.example"})
    assert problem_type(foreign) == "csrf-failed"
    assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 200


async def test_cookie_authenticated_unsafe_requests_need_csrf(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    assert problem_type(await client.post(f"{API}/auth/logout")) == "csrf-failed"
    wrong = await client.post(f"{API}/auth/logout", headers={"X-CSRF-Token": "forged.0000"})
    assert problem_type(wrong) == "csrf-failed"
    other_origin = await client.post(f"{API}/auth/logout", headers={**csrf(client), "Origin": "https://evil.example"})
    assert problem_type(other_origin) == "csrf-failed"
    async with another_client(client) as bare:
        bare.cookies.update(client.cookies)
        no_origin = await bare.post(f"{API}/auth/logout", headers=csrf(client))
        assert problem_type(no_origin) == "csrf-failed"
        referer = await bare.post(f"{API}/auth/refresh", headers={**csrf(client), "Referer": f"{ORIGIN}/account"})
        assert referer.status_code == 200
        client.cookies.update(bare.cookies)
    assert (await client.get(f"{API}/auth/sessions")).status_code == 200  # safe methods need none
    assert (await client.post(f"{API}/auth/logout", headers=csrf(client))).status_code == 204


async def test_a_sign_in_form_posted_from_another_site_is_refused(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        f"{API}/auth/login",
        json={"email": user["email"], "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403 and problem_type(response) == "csrf-failed"


async def test_logout_stops_the_access_token_at_once(client: httpx.AsyncClient) -> None:
    user = await signed_in(client)
    token = user["session"]["access_token"]
    response = await client.post(f"{API}/auth/logout", headers=csrf(client))
    assert response.status_code == 204
    assert not client.cookies.get("ss_access")
    stale = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"})
    assert stale.status_code == 401 and problem_type(stale) == "invalid-token"


async def test_sessions_are_listed_and_revoked_by_their_owner_only(client: httpx.AsyncClient, app: FastAPI) -> None:
    user = await register(client)
    phone = (await login(client, user["email"], client="native")).json()
    await login(client, user["email"])  # the browser session (cookies)
    listed = (await client.get(f"{API}/auth/sessions")).json()
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
    assert {"device", "ip", "created_at", "last_seen_at"} <= set(listed[0])

    stranger = await signed_in(
        httpx.AsyncClient(transport=client._transport, base_url="http://testserver", headers={"Origin": ORIGIN})
    )
    other_session = stranger["session"]["session_id"]
    refused = await client.delete(f"{API}/auth/sessions/{other_session}", headers=csrf(client))
    assert refused.status_code == 404
    assert (await client.delete(f"{API}/auth/sessions/{uuid.uuid4()}", headers=csrf(client))).status_code == 404
    assert (await client.delete(f"{API}/auth/sessions/not-a-uuid", headers=csrf(client))).status_code == 422

    revoked = await client.delete(f"{API}/auth/sessions/{phone['session_id']}", headers=csrf(client))
    assert revoked.status_code == 204
    phone_auth = {"Authorization": f"Bearer {phone['access_token']}"}
    assert (await client.get(f"{API}/users/me", headers=phone_auth)).status_code == 401
    assert len((await client.get(f"{API}/auth/sessions")).json()) == 1


async def test_idle_sessions_end(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await signed_in(client)
    clock.advance(14 * 60)
    assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 200
    clock.advance(30 * 60)
    expired = await client.post(f"{API}/auth/refresh", headers=csrf(client))
    assert expired.status_code == 401 and problem_type(expired) == "invalid-refresh-token"


async def test_sessions_end_after_their_absolute_lifetime(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await signed_in(client)
    for _ in range(12 * 4 - 1):  # active every 15 minutes for 12 hours
        clock.advance(15 * 60)
        assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 200
    clock.advance(15 * 60)
    assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 401


async def test_access_tokens_expire_after_15_minutes(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await signed_in(client)
    clock.advance(14 * 60 + 59)
    assert (await client.get(f"{API}/users/me")).status_code == 200
    clock.advance(2)
    expired = await client.get(
        f"{API}/users/me", headers={"Authorization": f"Bearer {client.cookies.get('ss_access')}"}
    )
    assert expired.status_code == 401


async def test_password_change_ends_other_sessions_and_keeps_this_one(client: httpx.AsyncClient) -> None:
    user = await register(client)
    other = (await login(client, user["email"], client="native")).json()
    await login(client, user["email"])
    weak = await client.post(
        f"{API}/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "amani otieno 99"},
        headers=csrf(client),
    )
    assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "new_password"
    wrong = await client.post(
        f"{API}/auth/password/change",
        json={"current_password": "not it at all 1", "new_password": "violet harbour 2031"},
        headers=csrf(client),
    )
    assert wrong.status_code == 422 and problem_type(wrong) == "wrong-current-password"
    changed = await client.post(
        f"{API}/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "violet harbour 2031"},
        headers=csrf(client),
    )
    assert changed.status_code == 204
    assert (await client.get(f"{API}/users/me")).status_code == 200
    other_auth = {"Authorization": f"Bearer {other['access_token']}"}
    assert (await client.get(f"{API}/users/me", headers=other_auth)).status_code == 401
    assert (await login(client, user["email"])).status_code == 401
    assert (await login(client, user["email"], "violet harbour 2031")).status_code == 200


async def test_revocations_reach_other_instances(
    settings: Settings, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    other_app = create_app(settings, clock=clock)
    async with running(other_app, headers={"Origin": ORIGIN}) as other:
        user = await signed_in(client)
        bearer = {"Authorization": f"Bearer {user['session']['access_token']}"}
        assert (await other.get(f"{API}/users/me", headers=bearer)).status_code == 200
        assert (await client.post(f"{API}/auth/logout", headers=csrf(client))).status_code == 204
        # The other instance learns of it on its next sync (every SESSION_REVOCATION_SYNC_SECONDS).
        other_runtime = runtime(other_app)
        await auth_kit(other_app).revoked.sync(other_runtime.db, other_runtime.now())
        assert (await other.get(f"{API}/users/me", headers=bearer)).status_code == 401


async def test_a_stronger_hash_setting_rehashes_on_login(
    make_settings: SettingsFactory, database_url: str, clock: FakeClock, client: httpx.AsyncClient, app: FastAPI
) -> None:
    user = await register(client)
    stronger = make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", ARGON2_TIME_COST=2)
    async with running(create_app(stronger, clock=clock), headers={"Origin": ORIGIN}) as upgraded:
        assert (await login(upgraded, user["email"])).status_code == 200
    async with runtime(app).db.session() as session:
        stored = (await session.execute(select(User.password_hash).where(User.email == user["email"]))).scalar_one()
    assert ",t=2," in stored or "t=2," in stored


async def test_every_login_is_a_server_side_session_row(client: httpx.AsyncClient, app: FastAPI) -> None:
    user = await register(client)
    for _ in range(3):
        await login(client, user["email"])
    assert await count(app, AuthSession, AuthSession.user_id == uuid.UUID(user["id"])) == 3


async def test_request_limits_follow_the_signed_in_account_across_addresses(
    make_settings: SettingsFactory, database_url: str, clock: FakeClock
) -> None:
    settings = make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", RATE_LIMIT_API="3/1h")
    app = create_app(settings, clock=clock)
    async with running(app, headers={"Origin": ORIGIN}) as home:
        user = await signed_in(home)
        bearer = {"Authorization": f"Bearer {user['session']['access_token']}"}
        for _ in range(3):
            assert (await home.get(f"{API}/users/me")).status_code == 200
        elsewhere = httpx.ASGITransport(app=app, client=("10.0.0.9", 4000))
        async with httpx.AsyncClient(transport=elsewhere, base_url="http://testserver") as cafe:
            limited = await cafe.get(f"{API}/users/me", headers=bearer)
            assert limited.status_code == 429
            assert (await cafe.get(f"{API}")).status_code == 200  # the address itself still has its budget
