"""Who is asking (accounts/auth.py): a malformed Authorization header never falls back to the
cookie, the CSRF header must be the cookie's own value, session cookies carry exactly their
attributes (and logout really clears them), every refused authorisation is logged with its
reason and user, and the API quota follows the signed-in account across addresses. Written
from the survivors of a mutation run over accounts/auth.py (bench/mutation.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import jwt
import pyotp
import pytest
from fastapi import APIRouter, FastAPI

from smilingsteps.accounts.auth import TherapistUser
from smilingsteps.accounts.models import Role
from smilingsteps.accounts.tokens import AUDIENCE
from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform.crypto import derive_key
from smilingsteps.platform.logging import captured_events
from tests.conftest import TEST_SECRET, SettingsFactory, running
from tests.support.accounts import ORIGIN, another_client, csrf, login, problem_type, runtime, signed_in
from tests.support.bookings import make_user, sign_in
from tests.support.clock import FakeClock

API = "/api/v1"


def guarded_routes() -> APIRouter:
    router = APIRouter(prefix="/api/v1/_test/guards")

    @router.get("/therapist")
    async def therapist(user: TherapistUser) -> dict[str, str]:
        return {"id": str(user.user_id)}

    return router


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def address() -> str:
    return f"10.79.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", RATE_LIMIT_ADMIN="10000/1m")


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> FastAPI:
    app = create_app(settings, clock=clock)
    app.include_router(guarded_routes())
    return app


@pytest.fixture
async def client(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app, headers={"Origin": ORIGIN}, client_addr=(address, 50000)) as client:
        yield client


# ---- the Authorization header ---------------------------------------------------------------


@pytest.mark.parametrize("header", ["Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc", "bearer"])
async def test_a_malformed_authorization_header_is_refused_even_with_a_session_cookie(
    client: httpx.AsyncClient, header: str
) -> None:
    """Never "no bearer token, so use the cookie": that would also skip the CSRF check."""
    await signed_in(client)
    assert (await client.get(f"{API}/users/me")).status_code == 200
    me = await client.get(f"{API}/users/me", headers={"Authorization": header})
    assert me.status_code == 401 and problem_type(me) == "invalid-token"
    logout = await client.post(f"{API}/auth/logout", headers={"Authorization": header})
    assert logout.status_code == 401
    assert (await client.get(f"{API}/users/me")).status_code == 200  # still signed in


async def test_the_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    user = await signed_in(client)
    token = user["session"]["access_token"]
    async with another_client(client) as app_client:
        for scheme in ("Bearer", "bearer", "BEARER"):
            me = await app_client.get(f"{API}/users/me", headers={"Authorization": f"{scheme} {token}"})
            assert me.status_code == 200, scheme


# ---- CSRF: the header is the cookie's own value ---------------------------------------------


async def test_an_older_csrf_token_of_the_same_session_is_refused(client: httpx.AsyncClient) -> None:
    """Both tokens are HMAC-valid for the session; only the cookie's current value counts."""
    await signed_in(client)
    older = client.cookies.get("ss_csrf") or ""
    assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 200
    assert client.cookies.get("ss_csrf") not in (None, older)
    stale = await client.post(f"{API}/auth/logout", headers={"X-CSRF-Token": older})
    assert stale.status_code == 403 and problem_type(stale) == "csrf-failed"
    assert (await client.post(f"{API}/auth/logout", headers=csrf(client))).status_code == 204


# ---- cookies --------------------------------------------------------------------------------


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """Each Set-Cookie by name: its value and attributes (names lower-cased; SameSite's value too,
    which browsers compare case-insensitively)."""
    cookies: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        fields = {"value": value.strip('"')}
        for attribute in attributes:
            key, _, setting = attribute.partition("=")
            fields[key.lower()] = setting.lower() if key.lower() == "samesite" else setting
        cookies[name] = fields
    return cookies


@pytest.mark.parametrize("https", [False, True])
async def test_session_cookies_carry_exactly_their_attributes_and_logout_clears_them(
    make_settings: SettingsFactory, database_url: str, address: str, https: bool
) -> None:
    base = "https://app.example" if https else "http://127.0.0.1:8000"
    settings = make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", PUBLIC_BASE_URL=base)
    app = create_app(settings, clock=FakeClock())
    prefix = "__Host-" if https else ""
    names = [f"{prefix}ss_access", f"{prefix}ss_refresh", f"{prefix}ss_csrf"]
    secure = {"secure": ""} if https else {}
    async with running(app, headers={"Origin": base}, client_addr=(address, 1), base_url=base) as client:
        user = await signed_in(client)
        cookies = set_cookies(await login(client, user["email"]))
        assert sorted(cookies) == sorted(names)
        access, refresh, token = (cookies[name] for name in names)
        assert {k: v for k, v in access.items() if k != "value"} == {
            "httponly": "",
            "max-age": "900",  # ACCESS_TOKEN_TTL_MINUTES
            "path": "/",
            "samesite": "lax",
            **secure,
        }
        for cookie in (refresh, token):
            attributes = {k: v for k, v in cookie.items() if k not in ("value", "httponly")}
            assert attributes == {"max-age": "43200", "path": "/", "samesite": "strict", **secure}  # 12 h
        assert "httponly" in refresh and "httponly" not in token  # our scripts read the CSRF token

        header = {"X-CSRF-Token": token["value"]}
        cleared = set_cookies(await client.post(f"{API}/auth/logout", headers=header))
        assert sorted(cleared) == sorted(names)
        for cookie in cleared.values():
            # A deletion must name the same path (and, for __Host- cookies, be Secure) to replace the cookie.
            assert cookie["path"] == "/" and cookie["max-age"] == "0" and cookie["value"] == ""
            assert ("secure" in cookie) is https


# ---- security events ------------------------------------------------------------------------


async def test_every_refused_authorisation_is_logged_with_its_reason_and_user(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    user = await signed_in(client)
    user_id = user["session"]["user"]["id"]
    access = user["session"]["access_token"]
    client_person = await sign_in(app, await make_user(app, role=Role.CLIENT))
    admin = await sign_in(app, await make_user(app, role=Role.ADMIN))
    key = derive_key(TEST_SECRET, "jwt")
    now = int(runtime(app).now().timestamp())
    odd_role = {
        "iss": runtime(app).settings.PUBLIC_BASE_URL,
        "aud": AUDIENCE,
        "sub": user_id,
        "sid": user["session"]["session_id"],
        "typ": "access",
        "jti": "j",
        "iat": now,
        "exp": now + 60,
        "role": "superuser",
        "ver": True,
        "mfa": True,
    }
    with captured_events() as events:
        answers = [
            await client.get(f"{API}/users/me", headers={"Authorization": "Basic abc"}),
            await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {jwt.encode(odd_role, key)}"}),
            await client.post(f"{API}/auth/logout", headers={**csrf(client), "Origin": "https://evil.example"}),
            await client_person.http.get(f"{API}/_test/guards/therapist"),
            await admin.http.get(f"{API}/admin/users"),
        ]
        assert (await client.post(f"{API}/auth/logout", headers=csrf(client))).status_code == 204
        answers.append(await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {access}"}))
        clock.advance(timedelta(minutes=16).total_seconds())
        answers.append(await admin.http.get(f"{API}/users/me"))
    assert [a.status_code for a in answers] == [401, 401, 403, 403, 403, 401, 401]
    logged = [(e["reason"], e["user_id"], e["level"]) for e in events if e["event"] == "security_event"]
    assert logged == [
        ("malformed_authorization", None, "warning"),
        ("invalid_token", user_id, "warning"),
        ("csrf_origin", user_id, "warning"),
        ("role_required", client_person.id, "warning"),
        ("mfa_required", str(admin.user_id), "warning"),
        ("revoked_session", user_id, "warning"),
        ("expired_token", None, "info"),  # routine: the browser refreshes
    ]
    for person in (client_person, admin):
        await person.http.aclose()


# ---- the API quota follows the account ------------------------------------------------------


async def test_the_api_quota_follows_the_signed_in_account_not_the_address(
    make_settings: SettingsFactory, database_url: str
) -> None:
    settings = make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="10000/1m", RATE_LIMIT_API="3/15m")
    app = create_app(settings, clock=FakeClock())
    one, two = ("10.80.0.1", 1), ("10.80.0.2", 1)
    async with (
        running(app, headers={"Origin": ORIGIN}, client_addr=one) as first,
        running(app, headers={"Origin": ORIGIN}, client_addr=one) as second,
    ):
        alice, bob = await signed_in(first), await signed_in(second)
        for _ in range(3):
            answer = await first.get(f"{API}/users/me")  # the cookie
            assert answer.status_code == 200 and answer.headers["ratelimit-policy"].startswith('"api"')
        assert (await first.get(f"{API}/users/me")).status_code == 429
        # The same address, another account: its own quota (and the address's is untouched).
        assert (await second.get(f"{API}/users/me")).status_code == 200
        bearer = {"Authorization": f"Bearer {bob['session']['access_token']}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=two), base_url="http://testserver"
        ) as elsewhere:
            # The same account from another address: the same quota, by bearer token or cookie.
            assert (await elsewhere.get(f"{API}/users/me", headers=bearer)).status_code == 200
            assert (await elsewhere.get(f"{API}/users/me", headers=bearer)).status_code == 200
            assert (await elsewhere.get(f"{API}/users/me", headers=bearer)).status_code == 429
            alice_cookie = {"Cookie": f"ss_access={alice['session']['access_token']}"}
            assert (await elsewhere.get(f"{API}/users/me", headers=alice_cookie)).status_code == 429
            # Anonymous requests count per address: address two has spent nothing yet.
            for _ in range(3):
                assert (await elsewhere.get(f"{API}/therapists")).status_code == 200
            assert (await elsewhere.get(f"{API}/therapists")).status_code == 429
        # A signed-out session's token is nobody's: it counts per address (and is refused).
        async with another_client(first, Origin=ORIGIN) as third:
            carol = await signed_in(third)
            assert (await third.post(f"{API}/auth/logout", headers=csrf(third))).status_code == 204  # Carol: 1
        signed_out = {"Authorization": f"Bearer {carol['session']['access_token']}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.80.0.3", 1)), base_url="http://testserver"
        ) as fresh:
            for _ in range(3):
                assert (await fresh.get(f"{API}/users/me", headers=signed_out)).status_code == 401
            assert (await fresh.get(f"{API}/users/me", headers=signed_out)).status_code == 429


# ---- /health details: an MFA-signed-in administrator only ------------------------------------


async def sign_in_with_mfa(app: FastAPI, browser: httpx.AsyncClient, clock: FakeClock, role: Role) -> str:
    """A new account of `role` with TOTP enrolled, signed in on `browser` with both factors; its access token."""
    user = await make_user(app, role=role)
    assert (await login(browser, user.email)).status_code == 200
    secret = (await browser.post(f"{API}/auth/mfa/totp/setup", headers=csrf(browser))).json()["secret"]
    code = {"code": pyotp.TOTP(secret).at(clock())}
    assert (await browser.post(f"{API}/auth/mfa/totp/confirm", json=code, headers=csrf(browser))).status_code == 200
    clock.advance(30)
    challenge = (await login(browser, user.email)).json()["mfa_token"]
    second = {"mfa_token": challenge, "code": pyotp.TOTP(secret).at(clock())}
    done = await browser.post(f"{API}/auth/login/mfa", json=second)
    assert done.status_code == 200, done.text
    return str(done.json()["access_token"])


async def test_health_details_are_for_an_administrator_signed_in_with_mfa_only(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    def details(answer: httpx.Response) -> bool:
        assert answer.status_code == 200
        return set(answer.json()) != {"status"}

    assert not details(await client.get("/health"))  # anonymous, not loopback
    async with another_client(client, Origin=ORIGIN) as admin, another_client(client, Origin=ORIGIN) as other:
        token = await sign_in_with_mfa(app, admin, clock, Role.ADMIN)
        assert details(await admin.get("/health"))  # the cookie
        for scheme in ("Bearer", "bearer"):
            assert details(await other.get("/health", headers={"Authorization": f"{scheme} {token}"}))
        tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]  # the last digit is partly padding
        assert not details(await other.get("/health", headers={"Authorization": f"Bearer {tampered}"}))
        assert not details(await other.get("/health", headers={"Authorization": "Basic abc"}))

        await sign_in_with_mfa(app, other, clock, Role.CLIENT)
        assert not details(await other.get("/health"))  # a second factor, but not an administrator
        plain_admin = await make_user(app, role=Role.ADMIN)
        assert (await login(other, plain_admin.email)).status_code == 200
        assert not details(await other.get("/health"))  # an administrator without a second factor

        assert (await admin.post(f"{API}/auth/logout", headers=csrf(admin))).status_code == 204
        assert not details(await other.get("/health", headers={"Authorization": f"Bearer {token}"}))
