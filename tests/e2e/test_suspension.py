"""An administrator (signed in with two steps) suspends someone whose browser is signed in:
that browser's next page is the sign-in page, and signing in again is refused."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.steps import admin_signed_in, sign_in, signed_in_client
from tests.support.browser import CONSOLE_ERROR, Browsers, LiveApp


def test_suspension(browsers: Browsers, live_app: LiveApp) -> None:
    person = browsers.new_page()
    user = signed_in_client(live_app, person, full_name="Otieno Suspect")
    person.get_by_role("banner").get_by_role("link", name="Account").click()
    expect(person.get_by_role("heading", level=1)).to_have_text("Your account")

    admin = browsers.new_page()
    admin_signed_in(admin, live_app)
    admin.get_by_role("navigation", name="Administration").get_by_role("link", name="People").click()
    admin.get_by_label("Name or email address").fill(user.email)
    admin.get_by_role("button", name="Search").click()
    expect(admin.get_by_text("1 person found")).to_be_visible()
    admin.get_by_role("link", name="Otieno Suspect").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Otieno Suspect")
    admin.get_by_label("Reason (kept in the audit log)").fill("Spam messages")
    admin.get_by_role("button", name="Suspend the account").click()
    expect(admin.get_by_role("status")).to_have_text("The account has been updated.")
    expect(admin.locator("dl.facts")).to_contain_text("Suspended")
    expect(admin.get_by_role("button", name="Reactivate the account")).to_be_visible()

    # The person's open page still shows the account; their next click goes to sign in, and back after.
    person.get_by_role("banner").get_by_role("link", name="My sessions").click()
    expect(person).to_have_url(re.compile(r"/sign-in\?next=/bookings$"))
    expect(person.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(person.get_by_role("button", name="Sign out")).to_have_count(0)

    sign_in(person, user.email)
    expect(person.get_by_text("This account is suspended.")).to_be_visible()
    # The refusal is a 403 page, which chromium logs as a failed load: the one problem expected.
    seen = browsers.take_problems()
    assert [problem.kind for problem in seen] == [CONSOLE_ERROR], seen
    assert "403" in seen[0].detail, seen
