"""Flows that go through email (real SMTP with STARTTLS), MFA, administration and the typed dependencies."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import select

from smilingsteps.accounts import service
from smilingsteps.accounts.auth import AdminUser, CurrentUser, TherapistUser, VerifiedUser
from smilingsteps.accounts.models import User
from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.notifications.sender import OutboxSender
from tests.conftest import SettingsFactory, running
from tests.support.accounts import (
    ORIGIN,
    PASSWORD,
    another_client,
    auth_kit,
    csrf,
    link_token,
    login,
    new_email,
    plain_text,
    problem_type,
    register,
    runtime,
    signed_in,
    tokens_to,
)
from tests.support.clock import FakeClock
from tests.support.smtp import SmtpServer, client_settings

API = "/api/v1"
ADMIN_PASSWORD = "granite kestrel orbit 7"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str, smtp_server: SmtpServer) -> Settings:
    return make_settings(
        DATABASE_URL=database_url,
        RATE_LIMIT_AUTH="10000/1m",
        RATE_LIMIT_ADMIN="10000/1m",
        PUBLIC_BASE_URL="http://127.0.0.1:8000",
        **client_settings(smtp_server),
        SMTP_TIMEOUT=10,
    )


def guarded_routes() -> APIRouter:
    """One route per typed dependency, as later domains will use them."""
    router = APIRouter(prefix="/api/v1/_test/guards")

    @router.get("/user")
    async def any_user(user: CurrentUser) -> dict[str, str]:
        return {"id": str(user.user_id)}

    @router.get("/verified")
    async def verified(user: VerifiedUser) -> dict[str, str]:
        return {"id": str(user.user_id)}

    @router.get("/therapist")
    async def therapist(user: TherapistUser) -> dict[str, str]:
        return {"id": str(user.user_id)}

    @router.get("/admin")
    async def admin(user: AdminUser) -> dict[str, str]:
        return {"id": str(user.user_id)}

    return router


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> FastAPI:
    app = create_app(settings, clock=clock)
    app.include_router(guarded_routes())
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app, headers={"Origin": ORIGIN}) as client:
        yield client


async def mail_for(app: FastAPI, clock: FakeClock, smtp: SmtpServer, address: str) -> list[EmailMessage]:
    """Run the outbox sender once (as `smilingsteps worker` does) and read what reached the SMTP server."""
    await OutboxSender(runtime(app).settings, runtime(app).db, clock=clock).run_once()
    return smtp.messages_to(address)


async def refresh(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.post(f"{API}/auth/refresh", headers=csrf(client))
    assert response.status_code == 200, response.text
    return response


# ---- email verification -----------------------------------------------------------------


async def test_verification_email_link_verifies_once(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    user = await signed_in(client)
    assert (await client.get(f"{API}/_test/guards/verified")).status_code == 403
    [message] = await mail_for(app, clock, smtp_server, user["email"])
    assert "email" in message["Subject"].lower()
    token = link_token(message, "/verify-email")
    html = message.get_body(("html",))
    assert html is not None and f"http://127.0.0.1:8000/verify-email?token={token}" in str(html.get_content())

    verified = await client.post(f"{API}/auth/verify-email", json={"token": token})
    assert verified.status_code == 200 and verified.json()["email_verified"] is True
    await refresh(client)  # a fresh access token carries the verified flag
    assert (await client.get(f"{API}/_test/guards/verified")).status_code == 200
    again = await client.post(f"{API}/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and problem_type(again) == "invalid-or-expired-token"


async def test_verification_links_expire_and_resending_retires_the_old_one(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    user = await signed_in(client)
    [first] = await mail_for(app, clock, smtp_server, user["email"])
    resent = await client.post(f"{API}/auth/verify-email/resend", headers=csrf(client))
    assert resent.status_code == 202
    tokens = tokens_to(await mail_for(app, clock, smtp_server, user["email"]), "/verify-email")
    assert len(tokens) == 2
    newest = next(t for t in tokens if t != link_token(first, "/verify-email"))
    old = await client.post(f"{API}/auth/verify-email", json={"token": link_token(first, "/verify-email")})
    assert old.status_code == 400
    clock.advance(48 * 3600 + 1)
    expired = await client.post(f"{API}/auth/verify-email", json={"token": newest})
    assert expired.status_code == 400 and problem_type(expired) == "invalid-or-expired-token"


@pytest.mark.parametrize("token", ["x" * 15, "not a token!", "a" * 600, "ünïcödé-tökén-123"])
async def test_malformed_tokens_are_422_and_unknown_ones_400(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post(f"{API}/auth/verify-email", json={"token": token})
    assert response.status_code == 422
    unknown = await client.post(f"{API}/auth/verify-email", json={"token": "A" * 43})
    assert unknown.status_code == 400


# ---- password reset -----------------------------------------------------------------------


async def test_password_reset_by_email_sets_the_password_and_ends_every_session(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    user = await signed_in(client)
    other = (await login(client, user["email"], client="native")).json()
    await mail_for(app, clock, smtp_server, user["email"])  # the verification email

    for address in (user["email"].upper(), new_email("nobody")):
        response = await client.post(f"{API}/auth/password-reset/request", json={"email": address})
        assert response.status_code == 202 and response.content == b""
    messages = await mail_for(app, clock, smtp_server, user["email"])
    [token] = tokens_to(messages, "/reset-password")

    weak = await client.post(
        f"{API}/auth/password-reset/confirm", json={"token": token, "new_password": "password1234"}
    )
    assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "new_password"
    done = await client.post(
        f"{API}/auth/password-reset/confirm", json={"token": token, "new_password": "violet harbour 2031"}
    )
    # The weak attempt rolled back with its request, so the token was still good.
    assert done.status_code == 204
    reused = await client.post(
        f"{API}/auth/password-reset/confirm", json={"token": token, "new_password": "another fine phrase 9"}
    )
    assert reused.status_code == 400 and problem_type(reused) == "invalid-or-expired-token"
    bearer = {"Authorization": f"Bearer {other['access_token']}"}
    assert (await client.get(f"{API}/users/me", headers=bearer)).status_code == 401
    assert (await login(client, user["email"])).status_code == 401
    assert (await login(client, user["email"], "violet harbour 2031")).status_code == 200
    notices = await mail_for(app, clock, smtp_server, user["email"])
    assert any("password" in m["Subject"].lower() for m in notices[2:])


async def test_reset_links_expire_after_30_minutes(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    user = await register(client)
    await client.post(f"{API}/auth/password-reset/request", json={"email": user["email"]})
    [token] = tokens_to(await mail_for(app, clock, smtp_server, user["email"]), "/reset-password")
    clock.advance(30 * 60 + 1)
    late = await client.post(
        f"{API}/auth/password-reset/confirm", json={"token": token, "new_password": "violet harbour 2031"}
    )
    assert late.status_code == 400


async def test_a_lockout_emails_the_owner(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    user = await register(client)
    for _ in range(5):
        await login(client, user["email"], "wrong password 123")
    messages = await mail_for(app, clock, smtp_server, user["email"])
    locked = [m for m in messages if "/reset-password" in plain_text(m)]
    assert len(locked) == 1


# ---- MFA ------------------------------------------------------------------------------------


async def enrol_totp(client: httpx.AsyncClient, clock: FakeClock) -> tuple[str, list[str]]:
    setup = await client.post(f"{API}/auth/mfa/totp/setup", headers=csrf(client))
    assert setup.status_code == 200, setup.text
    body = setup.json()
    assert body["qr_svg"].startswith("<svg") and body["otpauth_uri"].startswith("otpauth://totp/")
    code = pyotp.TOTP(body["secret"]).at(clock())
    confirmed = await client.post(f"{API}/auth/mfa/totp/confirm", json={"code": code}, headers=csrf(client))
    assert confirmed.status_code == 200, confirmed.text
    return body["secret"], confirmed.json()["recovery_codes"]


async def test_mfa_login_is_two_steps_and_the_first_grants_nothing(client: httpx.AsyncClient, clock: FakeClock) -> None:
    user = await signed_in(client)
    secret, recovery = await enrol_totp(client, clock)
    assert len(recovery) == 10
    async with another_client(client, Origin=ORIGIN) as browser:
        first = await login(browser, user["email"])
        assert first.status_code == 200
        body = first.json()
        assert body["mfa_required"] is True and body["access_token"] is None
        assert "set-cookie" not in first.headers
        challenge = {"Authorization": f"Bearer {body['mfa_token']}"}
        assert (await browser.get(f"{API}/users/me", headers=challenge)).status_code == 401

        wrong = await browser.post(f"{API}/auth/login/mfa", json={"mfa_token": body["mfa_token"], "code": "000000"})
        assert wrong.status_code == 401 and problem_type(wrong) == "invalid-mfa-code"
        clock.advance(30)
        code = pyotp.TOTP(secret).at(clock())
        ok = await browser.post(f"{API}/auth/login/mfa", json={"mfa_token": body["mfa_token"], "code": code})
        assert ok.status_code == 200 and ok.json()["access_token"]
        assert (await browser.get(f"{API}/users/me")).status_code == 200
        # The same code never works twice, even with a fresh challenge.
        again = (await login(browser, user["email"])).json()["mfa_token"]
        replay = await browser.post(f"{API}/auth/login/mfa", json={"mfa_token": again, "code": code})
        assert replay.status_code == 401

        with_recovery = await browser.post(
            f"{API}/auth/login/mfa", json={"mfa_token": again, "recovery_code": recovery[0].upper()}
        )
        assert with_recovery.status_code == 200
        spent = await browser.post(f"{API}/auth/login/mfa", json={"mfa_token": again, "recovery_code": recovery[0]})
        assert spent.status_code == 401


async def test_mfa_challenges_expire_and_cannot_be_forged(client: httpx.AsyncClient, clock: FakeClock) -> None:
    user = await signed_in(client)
    secret, _ = await enrol_totp(client, clock)
    token = (await login(client, user["email"])).json()["mfa_token"]
    clock.advance(5 * 60 + 1)
    code = pyotp.TOTP(secret).at(clock())
    late = await client.post(f"{API}/auth/login/mfa", json={"mfa_token": token, "code": code})
    assert late.status_code == 401 and problem_type(late) == "invalid-mfa-challenge"
    access = client.cookies.get("ss_access")
    forged = await client.post(f"{API}/auth/login/mfa", json={"mfa_token": access, "code": code})
    assert forged.status_code == 401 and problem_type(forged) == "invalid-mfa-challenge"
    both = await client.post(
        f"{API}/auth/login/mfa", json={"mfa_token": token, "code": code, "recovery_code": "aaaa-bbbb-cccc-dddd"}
    )
    assert both.status_code == 422


async def test_mfa_can_be_turned_off_with_password_and_code(client: httpx.AsyncClient, clock: FakeClock) -> None:
    user = await signed_in(client)
    secret, _ = await enrol_totp(client, clock)
    clock.advance(30)
    code = pyotp.TOTP(secret).at(clock())
    refused = await client.post(
        f"{API}/auth/mfa/disable", json={"password": "wrong password 1", "code": code}, headers=csrf(client)
    )
    assert refused.status_code == 401
    clock.advance(30)
    code = pyotp.TOTP(secret).at(clock())
    done = await client.post(f"{API}/auth/mfa/disable", json={"password": PASSWORD, "code": code}, headers=csrf(client))
    assert done.status_code == 204
    assert (await login(client, user["email"])).json()["mfa_required"] is False


# ---- administration and the typed dependencies ------------------------------------------------


async def make_admin(app: FastAPI, clock: FakeClock) -> str:
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


@asynccontextmanager
async def admin_client(client: httpx.AsyncClient, app: FastAPI, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """An administrator signed in with TOTP (enrolled on first sign-in, as the API requires)."""
    async with another_client(client, Origin=ORIGIN) as admin:
        email = await make_admin(app, clock)
        first = (await login(admin, email, ADMIN_PASSWORD)).json()
        assert first["mfa_enrolment_required"] is True
        denied = await admin.get(f"{API}/admin/users")
        assert denied.status_code == 403 and problem_type(denied) == "mfa-required"
        await enrol_totp(admin, clock)
        await refresh(admin)
        yield admin


async def test_dependencies_gate_by_role_verification_and_mfa(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    await signed_in(client, role="therapist")
    assert (await client.get(f"{API}/_test/guards/user")).status_code == 200
    assert problem_type(await client.get(f"{API}/_test/guards/therapist")) == "email-not-verified"
    assert problem_type(await client.get(f"{API}/_test/guards/admin")) == "role-required"
    async with admin_client(client, app, clock) as admin:
        assert (await admin.get(f"{API}/_test/guards/admin")).status_code == 200
        assert problem_type(await admin.get(f"{API}/_test/guards/therapist")) == "role-required"


async def test_admins_approve_therapists_and_the_therapist_is_emailed(
    client: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    therapist = await register(client, role="therapist", full_name="Dr Wambui Kariuki")
    async with admin_client(client, app, clock) as admin:
        pending = await admin.get(f"{API}/admin/users", params={"role": "therapist", "therapist_status": "pending"})
        assert therapist["id"] in {u["id"] for u in pending.json()["items"]}
        found = await admin.get(f"{API}/admin/users", params={"q": "wambui"})
        assert therapist["id"] in {u["id"] for u in found.json()["items"]}
        approved = await admin.patch(
            f"{API}/admin/users/{therapist['id']}", json={"therapist_status": "approved"}, headers=csrf(admin)
        )
        assert approved.status_code == 200 and approved.json()["therapist_status"] == "approved"
        both = await admin.patch(
            f"{API}/admin/users/{therapist['id']}",
            json={"therapist_status": "approved", "status": "suspended"},
            headers=csrf(admin),
        )
        assert both.status_code == 422
        client_user = await register(client)
        not_therapist = await admin.patch(
            f"{API}/admin/users/{client_user['id']}", json={"therapist_status": "approved"}, headers=csrf(admin)
        )
        assert not_therapist.status_code == 409
        missing = await admin.get(f"{API}/admin/users/{uuid.uuid4()}")
        assert missing.status_code == 404
        log = await admin.get(f"{API}/admin/audit-log", params={"target_id": therapist["id"], "action": "admin."})
        assert [e["action"] for e in log.json()["items"]] == ["admin.therapist.approved"]
    messages = await mail_for(app, clock, smtp_server, therapist["email"])
    assert any("approved" in m["Subject"].lower() for m in messages)


async def test_suspension_ends_every_session_at_once(client: httpx.AsyncClient, app: FastAPI, clock: FakeClock) -> None:
    user = await signed_in(client)
    async with admin_client(client, app, clock) as admin:
        suspended = await admin.patch(
            f"{API}/admin/users/{user['id']}",
            json={"status": "suspended", "reason": "chargebacks"},
            headers=csrf(admin),
        )
        assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
        assert (await client.get(f"{API}/users/me")).status_code == 401
        assert (await client.post(f"{API}/auth/refresh", headers=csrf(client))).status_code == 401
        blocked = await login(client, user["email"])
        assert blocked.status_code == 403 and problem_type(blocked) == "account-suspended"
        self_suspend = await admin.patch(
            f"{API}/admin/users/{(await admin.get(f'{API}/users/me')).json()['id']}",
            json={"status": "suspended"},
            headers=csrf(admin),
        )
        assert self_suspend.status_code == 403
        await admin.patch(f"{API}/admin/users/{user['id']}", json={"status": "active"}, headers=csrf(admin))
        assert (await login(client, user["email"])).status_code == 200
        log = (await admin.get(f"{API}/admin/audit-log", params={"target_id": user["id"]})).json()["items"]
        actions = [e["action"] for e in log]
        assert actions[:2] == ["admin.user.reactivated", "admin.user.suspended"]
        assert log[1]["details"] == {"reason": "chargebacks"}


async def test_non_admins_cannot_reach_the_admin_api(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    for path in ("/admin/users", "/admin/audit-log", f"/admin/users/{uuid.uuid4()}"):
        response = await client.get(f"{API}{path}")
        assert response.status_code == 403 and problem_type(response) == "role-required"
    async with another_client(client) as anonymous:
        assert (await anonymous.get(f"{API}/admin/users")).status_code == 401


async def test_admins_cannot_turn_mfa_off(client: httpx.AsyncClient, app: FastAPI, clock: FakeClock) -> None:
    async with admin_client(client, app, clock) as admin:
        response = await admin.post(
            f"{API}/auth/mfa/disable", json={"password": ADMIN_PASSWORD, "code": "123456"}, headers=csrf(admin)
        )
        assert response.status_code == 403


async def test_the_audit_log_filters_and_pages(client: httpx.AsyncClient, app: FastAPI, clock: FakeClock) -> None:
    user = await register(client)
    for _ in range(3):
        await login(client, user["email"], "wrong password 123")
    async with admin_client(client, app, clock) as admin:
        first = await admin.get(
            f"{API}/admin/audit-log", params={"target_id": user["id"], "action": "auth.login.failed", "limit": 2}
        )
        page = first.json()
        assert len(page["items"]) == 2 and page["next_before_seq"]
        rest = await admin.get(
            f"{API}/admin/audit-log",
            params={"target_id": user["id"], "action": "auth.login.failed", "before_seq": page["next_before_seq"]},
        )
        assert len(rest.json()["items"]) == 1
        for params in ({"action": "DROP TABLE"}, {"since": "0001-01-01T00:00:00+14:00"}, {"until": "2027-01-01"}):
            bad = await admin.get(f"{API}/admin/audit-log", params=params)
            assert bad.status_code == 422, params


async def test_stored_data_holds_no_secrets_in_clear(client: httpx.AsyncClient, app: FastAPI, clock: FakeClock) -> None:
    user = await signed_in(client)
    secret, _ = await enrol_totp(client, clock)
    async with runtime(app).db.session() as session:
        row: Any = (await session.execute(select(User).where(User.email == user["email"]))).scalar_one()
    assert row.password_hash.startswith("$argon2id$")
    assert row.mfa_secret and secret not in row.mfa_secret
