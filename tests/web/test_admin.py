"""Administration pages without JavaScript: two steps enforced as in the API, reviewing a
therapist with their full profile, suspending and reactivating people (whose open pages go
to sign-in at once), every booking with filters and confirmation, the audit log."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pyotp
from fastapi import FastAPI

from tests.support.accounts import PASSWORD
from tests.support.bookings import therapist_user
from tests.support.clock import FakeClock
from tests.support.pages import csrf_token, fill, open_page, submit, text_of
from tests.web.conftest import ADMIN_PASSWORD, enrol_by_page, make_admin, signed_up
from tests.web.test_bookings import hold_first_slot, verified_client
from tests.web.test_practice import PROFILE

ADMIN_PAGES = ("/admin", "/admin/users", "/admin/bookings", "/admin/audit-log")


@asynccontextmanager
async def admin_browser(app: FastAPI, browser: httpx.AsyncClient, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser, signed in as a new administrator who enrols two steps on the way."""
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as admin:
        email = await make_admin(app)
        await fill(admin, "/sign-in", "/sign-in", {"email": email, "password": ADMIN_PASSWORD})
        for path in ADMIN_PAGES:
            assert (await open_page(admin, path)).status_code == 403, path  # not before two steps
        await enrol_by_page(admin, clock)
        yield admin


async def test_only_administrators_signed_in_with_two_steps_see_administration(browser: httpx.AsyncClient) -> None:
    for path in ADMIN_PAGES:
        assert (await open_page(browser, path)).headers["location"] == f"/sign-in?next={path}"
    await signed_up(browser)
    for path in ADMIN_PAGES:
        page = await open_page(browser, path)
        assert page.status_code == 403 and "You cannot open this page" in text_of(page)


async def test_an_administrator_reads_the_whole_application_then_decides(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    name = f"Dr Halima {uuid.uuid4().hex[:8]}"  # the database is shared with other tests
    email = await signed_up(browser, role="therapist", full_name=name)
    await fill(browser, "/practice/profile", "/practice/profile", PROFILE)
    async with admin_browser(app, browser, clock) as admin:
        assert "Therapists waiting for review" in text_of(await open_page(admin, "/admin"))
        found = await open_page(admin, f"/admin/users?q={email}")
        person = found.text.split('<a href="/admin/users/', 1)[1].split('"', 1)[0]
        assert f'href="/admin/therapists/{person}"' in (await open_page(admin, f"/admin/users/{person}")).text
        link = person
        application = await open_page(admin, f"/admin/therapists/{link}")
        said = text_of(application)
        assert "KCPB-2231" in said and email in said and "I help adults with anxiety and grief." in said
        silent = await submit(
            admin, f"/admin/therapists/{link}/review", {"decision": "reject"}, token=csrf_token(application)
        )
        assert silent.status_code == 422 and "Say why, so the therapist knows what to change." in text_of(silent)
        rejected = await submit(
            admin,
            f"/admin/therapists/{link}/review",
            {"decision": "reject", "reason": "Licence not found"},
            token=csrf_token(application),
        )
        assert rejected.headers["location"] == "/admin?notice=rejected"
        status = text_of(await open_page(browser, "/practice"))
        assert "Not approved." in status and "Licence not found" in status
        approved = await submit(
            admin, f"/admin/therapists/{link}/review", {"decision": "approve"}, token=csrf_token(application)
        )
        assert approved.headers["location"] == "/admin?notice=approved"
    assert "Approved." in text_of(await open_page(browser, "/practice"))
    assert name in text_of(await open_page(browser, f"/therapists/{link}"))


async def test_a_suspended_persons_browser_goes_to_sign_in_on_its_next_page(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    email = await signed_up(browser, full_name="Otieno Suspect")
    async with admin_browser(app, browser, clock) as admin:
        found = await open_page(admin, f"/admin/users?q={email}")
        assert "1 person found" in text_of(found)
        person = found.text.split('<a href="/admin/users/', 1)[1].split('"', 1)[0]
        page = await open_page(admin, f"/admin/users/{person}")
        done = await submit(
            admin, f"/admin/users/{person}/status", {"action": "suspend", "reason": "spam"}, token=csrf_token(page)
        )
        assert done.headers["location"] == f"/admin/users/{person}?notice=status-changed"
        after = await open_page(browser, "/bookings")
        assert after.headers["location"] == "/sign-in?next=/bookings"
        blocked = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
        assert blocked.status_code == 403 and "This account is suspended." in text_of(blocked)
        page = await open_page(admin, f"/admin/users/{person}")
        assert "Suspended" in text_of(page)
        await submit(admin, f"/admin/users/{person}/status", {"action": "reactivate"}, token=csrf_token(page))
        assert (await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})).status_code == 303
        log = text_of(await open_page(admin, f"/admin/audit-log?target_id={person}&action=admin."))
        assert "admin.user.suspended" in log and "admin.user.reactivated" in log and "reason: spam" in log
        wrong = await open_page(admin, "/admin/audit-log?action=not%20an%20action!")
        assert wrong.status_code == 422


async def test_every_booking_is_listed_filtered_and_confirmable(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    therapist = await therapist_user(app, full_name="Dr Amina Yusuf")
    client = f"Achieng {uuid.uuid4().hex[:8]}"  # the database is shared with other tests
    await verified_client(app, browser, full_name=client)
    location = await hold_first_slot(browser, str(therapist.id))
    async with admin_browser(app, browser, clock) as admin:
        listed = await open_page(admin, "/admin/bookings?status=held")
        said = text_of(listed)
        assert client in said and "Dr Amina Yusuf" in said
        assert client not in text_of(await open_page(admin, "/admin/bookings?status=confirmed"))
        reversed_window = await open_page(admin, "/admin/bookings?from=2027-03-02&to=2027-03-01")
        assert reversed_window.status_code == 422
        assert "The end date must not be before the start date." in text_of(reversed_window)
        booking = location.rsplit("/", 1)[1]
        confirmed = await submit(admin, f"/admin/bookings/{booking}/confirm", {}, token=csrf_token(listed))
        assert confirmed.headers["location"] == "/admin/bookings?notice=booking-confirmed"
    assert "Confirmed" in text_of(await open_page(browser, location))


async def test_an_administrator_signing_in_with_both_steps_lands_on_administration(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    email = await make_admin(app)
    await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": ADMIN_PASSWORD})
    secret, _ = await enrol_by_page(browser, clock)
    await fill(browser, "/", "/sign-out", {})
    clock.advance(30)  # the next code: a code is good once
    step = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": ADMIN_PASSWORD})
    token = step.text.split('name="mfa_token" value="', 1)[1].split('"', 1)[0]
    code = pyotp.TOTP(secret).at(clock())
    signed = await submit(browser, "/sign-in/mfa", {"mfa_token": token, "code": code}, token=csrf_token(step))
    assert signed.headers["location"] == "/admin"
    assert (await open_page(browser, "/admin")).status_code == 200
