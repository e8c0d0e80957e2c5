"""Account pages, as a browser without JavaScript uses them: settings, password, two-step
verification with recovery codes, signed-in devices; and what happens to an open page when
the session ends (suspension, idle timeout, another device signing it out)."""

from __future__ import annotations

import httpx
import pyotp
from fastapi import FastAPI

from smilingsteps.accounts import repository
from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.models import AccountStatus
from tests.support.accounts import PASSWORD, auth_kit, runtime
from tests.support.clock import FakeClock
from tests.support.pages import csrf_token, fill, open_page, submit, text_of
from tests.web.conftest import ADMIN_PASSWORD, enrol_by_page, make_admin, signed_up


async def test_settings_are_saved_and_refused_in_plain_words(browser: httpx.AsyncClient) -> None:
    await signed_up(browser)
    page = await open_page(browser, "/account")
    assert page.status_code == 200 and "Your account" in text_of(page)
    fields = {"full_name": "Wanjiru K.", "phone": "12", "timezone": "Mars/Olympus", "language": "sw"}
    refused = await submit(browser, "/account", fields, token=csrf_token(page))
    assert refused.status_code == 422
    said = text_of(refused)
    assert "Enter a Kenyan mobile number such as 0712 345 678." in said
    assert "Choose a time zone from the list." in said
    assert "Wanjiru K." in refused.text  # what was typed stays
    fields.update(phone="+254 722 000 111", timezone="Europe/London")
    saved = await submit(browser, "/account", fields, token=csrf_token(page))
    assert saved.headers["location"] == "/account?notice=saved"
    again = await open_page(browser, "/account")
    assert '<html lang="sw">' in again.text
    assert 'value="254722000111"' in again.text
    assert '<option value="Europe/London" selected>' in again.text


async def test_a_wrong_current_password_changes_nothing(browser: httpx.AsyncClient) -> None:
    email = await signed_up(browser)
    fields = {"current_password": "not my password at all", "new_password": "orchard piano eleven"}
    wrong = await fill(browser, "/account/password", "/account/password", fields)
    assert wrong.status_code == 422
    assert "The current password is not correct." in text_of(wrong)
    fields["current_password"] = PASSWORD
    changed = await fill(browser, "/account/password", "/account/password", fields)
    assert changed.headers["location"] == "/account?notice=password-changed"
    await fill(browser, "/", "/sign-out", {})
    old = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": "orchard piano eleven"})
    assert new.status_code == 303


async def test_two_step_verification_from_qr_code_to_sign_in_with_a_recovery_code(
    browser: httpx.AsyncClient, clock: FakeClock
) -> None:
    email = await signed_up(browser)
    page = await open_page(browser, "/account/mfa")
    setup = await submit(browser, "/account/mfa/setup", {}, token=csrf_token(page))
    assert '<img class="qr" src="data:image/svg+xml;base64,' in setup.text
    secret = setup.text.split('<code class="secret">', 1)[1].split("</code>", 1)[0]
    wrong = await submit(browser, "/account/mfa/confirm", {"code": "000000", "secret": secret}, token=csrf_token(setup))
    assert wrong.status_code == 401
    assert "The verification code is not correct or was already used." in text_of(wrong)
    assert secret in wrong.text  # the key stays on the page to try again
    code = pyotp.TOTP(secret).at(clock())
    codes_page = await submit(
        browser, "/account/mfa/confirm", {"code": code, "secret": secret}, token=csrf_token(setup)
    )
    assert codes_page.status_code == 200
    codes = [c.split("</code>")[0] for c in codes_page.text.split("<li><code>")[1:]]
    assert len(codes) >= 8
    assert "Two-step verification is on." in text_of(await open_page(browser, "/account/mfa"))

    await fill(browser, "/", "/sign-out", {})
    password_step = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
    assert password_step.status_code == 200 and "Two-step verification" in text_of(password_step)
    token = password_step.text.split('name="mfa_token" value="', 1)[1].split('"', 1)[0]
    bad = await submit(browser, "/sign-in/mfa", {"mfa_token": token, "code": "123456"}, token=csrf_token(password_step))
    assert bad.status_code == 401
    recovered = await submit(
        browser, "/sign-in/mfa", {"mfa_token": token, "recovery_code": codes[0]}, token=csrf_token(password_step)
    )
    assert recovered.status_code == 303
    assert recovered.headers["location"] == "/bookings"


async def test_an_administrator_is_sent_to_set_up_two_step_verification_first(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    email = await make_admin(app)
    first = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": ADMIN_PASSWORD})
    assert first.headers["location"] == "/account/mfa"
    assert "Administrators must turn on two-step verification" in text_of(await open_page(browser, "/account/mfa"))
    await enrol_by_page(browser, clock)
    page = await open_page(browser, "/account/mfa")
    assert "Administrators must keep two-step verification on." in text_of(page)
    # The enrolling session now counts as signed in with two steps: the next page's token says so.
    principal = browser.cookies.get("ss_access")
    assert principal is not None
    claims = auth_kit(app).codec.decode_access(principal, now=runtime(app).now())
    assert claims.mfa is True


async def test_devices_are_listed_and_one_can_be_signed_out_from_another(
    browser: httpx.AsyncClient, app: FastAPI
) -> None:
    email = await signed_up(browser)
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as phone:
        await fill(phone, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
        assert "Sign out" in text_of(await open_page(phone, "/account"))
        page = await open_page(browser, "/account/sessions")
        cards = page.text.split('<li class="card">')[1:]
        assert len(cards) == 2 and sum("This device" in card for card in cards) == 1
        other = next(c for c in cards if "This device" not in c).split('action="/account/sessions/')[1].split("/")[0]
        revoked = await submit(browser, f"/account/sessions/{other}/revoke", {}, token=csrf_token(page))
        assert revoked.headers["location"] == "/account/sessions?notice=session-revoked"
        gone = await open_page(phone, "/account")
        assert gone.status_code == 303 and gone.headers["location"] == "/sign-in?next=/account"
        someone_elses = await submit(browser, f"/account/sessions/{other}/revoke", {}, token=csrf_token(page))
        assert someone_elses.status_code == 404


async def test_a_suspended_persons_next_page_goes_to_sign_in(browser: httpx.AsyncClient, app: FastAPI) -> None:
    email = await signed_up(browser)
    assert (await open_page(browser, "/account")).status_code == 200
    async with runtime(app).db.session() as session:
        user = await repository.user_by_email(session, email)
        assert user is not None
        await accounts.set_status(session, auth_kit(app), user.id, AccountStatus.SUSPENDED, now=runtime(app).now())
    after = await open_page(browser, "/account?tab=1")
    assert after.status_code == 303
    assert after.headers["location"] == "/sign-in?next=/account%3Ftab%3D1"


async def test_after_the_idle_timeout_a_page_asks_to_sign_in_and_then_comes_back(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    email = await signed_up(browser)
    clock.advance(runtime(app).settings.SESSION_IDLE_TIMEOUT_MINUTES * 60 + 1)
    after = await open_page(browser, "/account/sessions")
    assert after.headers["location"] == "/sign-in?next=/account/sessions"
    back = await fill(
        browser,
        after.headers["location"],
        "/sign-in",
        {"email": email, "password": PASSWORD, "next": "/account/sessions"},
    )
    assert back.headers["location"] == "/account/sessions"


async def test_within_the_idle_timeout_an_expired_access_token_is_refreshed_in_place(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    await signed_up(browser)
    before = browser.cookies.get("ss_access")
    clock.advance(auth_kit(app).access_ttl.total_seconds() + 1)
    page = await open_page(browser, "/account")
    assert page.status_code == 200 and "Your account" in text_of(page)
    assert browser.cookies.get("ss_access") not in (None, before)


async def test_a_refreshed_session_survives_an_error_page(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    """The page that refreshed the session in-process answered 404: the rotated cookies must still
    reach the browser, or its next page would present a spent refresh token and end the session."""
    await signed_up(browser)
    clock.advance(auth_kit(app).access_ttl.total_seconds() + 1)
    missing = await open_page(browser, "/bookings/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert "ss_refresh" in missing.headers.get("set-cookie", "")
    clock.advance(auth_kit(app).access_ttl.total_seconds() + 1)
    after = await open_page(browser, "/account")
    assert after.status_code == 200 and "Your account" in text_of(after)
