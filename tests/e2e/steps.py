"""What people do in the browser, step by step, as the e2e tests share it: sign up, confirm
the emailed link, sign in, set up two-step verification as an administrator, hold a slot.

Every step uses the page as a person would: labels, roles and the visible words (in English),
and checks where it lands before going on. Seeding that is not the point of a test goes straight
to the database through the live app's loop (`live_app.run`, tests/support/bookings.py).
"""

from __future__ import annotations

import re
import uuid

import pyotp
from fastapi import FastAPI
from playwright.sync_api import Page, expect

from smilingsteps.accounts import repository
from smilingsteps.accounts.models import Role, User
from smilingsteps.platform.i18n import Language
from tests.support.accounts import PASSWORD, new_email, runtime
from tests.support.bookings import make_user
from tests.support.browser import LiveApp, first_link
from tests.web.conftest import ADMIN_PASSWORD, make_admin

BOOKING_URL = re.compile(r"/bookings/[0-9a-f-]{36}$")
CLIENT_ROLE = "Someone looking for a therapist"
THERAPIST_ROLE = re.compile(r"^A therapist")


def sign_up(page: Page, *, full_name: str, therapist: bool = False, email: str | None = None) -> str:
    """Fill in /sign-up as a new person; their email address. Lands on 'Check your email'."""
    address = email or new_email("e2e")
    page.goto("/sign-up")
    page.get_by_role("radio", name=THERAPIST_ROLE if therapist else CLIENT_ROLE).check()
    page.get_by_label("Full name").fill(full_name)
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Mobile number").fill("0712 345 678")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("checkbox", name=re.compile("privacy notice")).check()
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/sign-up/check-email$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    return address


def confirm_email(page: Page, live_app: LiveApp, address: str) -> None:
    """Open the link the real SMTP server received and press the button (a GET spends nothing)."""
    link = first_link(live_app.wait_for_email(address))
    assert link.startswith(f"{live_app.url}/verify-email?token="), link
    page.goto(link)
    page.get_by_role("button", name="Confirm my email address").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your email address is confirmed")


def sign_in(page: Page, address: str, password: str = PASSWORD, *, lands: str | re.Pattern[str] | None = None) -> None:
    """Sign in through /sign-in (from wherever the page is); `lands`: where the form must lead."""
    if "/sign-in" not in page.url:
        page.goto("/sign-in")
    main = page.get_by_role("main")
    main.get_by_label("Email address").fill(address)
    main.get_by_label("Password").fill(password)
    main.get_by_role("button", name="Sign in").click()
    if lands is not None:
        expect(page).to_have_url(re.compile(re.escape(lands) + "$") if isinstance(lands, str) else lands)


def seeded_person(live_app: LiveApp, role: Role, full_name: str, *, timezone: str = "Africa/Nairobi") -> User:
    """A verified account made straight in the database (password `PASSWORD`)."""
    return live_app.run(make_user(live_app.app, role=role, full_name=full_name, timezone=timezone))


def signed_in_client(live_app: LiveApp, page: Page, full_name: str = "Achieng Odhiambo") -> User:
    user = seeded_person(live_app, Role.CLIENT, full_name, timezone="Europe/London")
    sign_in(page, user.email, lands="/bookings")
    return user


def enrol_two_steps(page: Page, live_app: LiveApp) -> list[str]:
    """On /account/mfa: set up TOTP with the key shown on the page (the code computed at the
    server's clock), save the recovery codes; the recovery codes."""
    page.get_by_role("button", name="Set up two-step verification").click()
    secret = page.locator("code.secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{16,64}", secret), secret
    code = pyotp.TOTP(secret).at(live_app.clock())
    page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Turn on two-step verification").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    codes = [text.strip() for text in page.locator("ul.codes code").all_inner_texts()]
    assert len(codes) >= 8 and len(set(codes)) == len(codes), codes
    page.get_by_role("link", name="I have saved my codes").click()
    expect(page.get_by_text("Two-step verification is on.").first).to_be_visible()
    return codes


def admin_signed_in(page: Page, live_app: LiveApp) -> str:
    """A new administrator signs in, is sent to set up two steps, does, and opens Administration;
    their email address."""
    address = live_app.run(make_admin(live_app.app))
    sign_in(page, address, ADMIN_PASSWORD, lands="/account/mfa")
    expect(page.get_by_text("Administrators must turn on two-step verification")).to_be_visible()
    enrol_two_steps(page, live_app)
    page.get_by_role("banner").get_by_role("link", name="Administration").click()
    expect(page).to_have_url(re.compile(r"/admin$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Administration")
    return address


def hold_a_slot(page: Page, therapist_id: uuid.UUID, *, index: int = 0) -> str:
    """From the therapist's profile, press a free time's button; the held booking's path."""
    page.goto(f"/therapists/{therapist_id}")
    page.get_by_role("button", name=re.compile(r"^Book ")).nth(index).click()
    expect(page).to_have_url(BOOKING_URL)
    expect(page.get_by_text("Time left to pay:")).to_be_visible()
    return page.url.removeprefix(page.url.split("/bookings/")[0])


async def set_language(app: FastAPI, user_id: uuid.UUID, language: Language) -> None:
    """The account's language for pages and emails, as its settings page would save it."""
    async with runtime(app).db.session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.language = language


async def user_by_email(app: FastAPI, address: str) -> User:
    async with runtime(app).db.session() as session:
        found = await repository.user_by_email(session, address)
    assert found is not None, address
    return found
