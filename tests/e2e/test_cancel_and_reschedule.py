"""A client holds a time; an administrator confirms it (paid outside the platform); the client
moves it to another time, then cancels it, told first what happens to the money."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.steps import admin_signed_in, hold_a_slot, signed_in_client
from tests.support.bookings import therapist_user
from tests.support.browser import Browsers, LiveApp

NOTHING_PAID = "Nothing has been paid for this session, so nothing is charged or refunded."


def test_cancel_and_reschedule(browsers: Browsers, live_app: LiveApp) -> None:
    therapist = live_app.run(therapist_user(live_app.app, full_name="Dr Amina Yusuf"))
    client = browsers.new_page(timezone_id="Europe/London")
    signed_in_client(live_app, client, full_name="Achieng Odhiambo")
    booking = hold_a_slot(client, therapist.id)
    facts = client.locator("dl.facts")
    expect(facts).to_contain_text("Held for you: waiting for payment")
    first_time = "Monday 18 January 2027, 06:00 (Europe/London)"
    expect(facts).to_contain_text(first_time)
    expect(client.get_by_role("link", name="Move to another time")).to_have_count(0)  # only once confirmed

    admin = browsers.new_page()
    admin_signed_in(admin, live_app)
    admin.get_by_role("navigation", name="Administration").get_by_role("link", name="Bookings").click()
    admin.get_by_label("Status").select_option(label="Held for you: waiting for payment")
    admin.get_by_role("button", name="Show bookings").click()
    row = admin.get_by_role("row", name=re.compile("Achieng Odhiambo"))
    expect(row).to_contain_text("Dr Amina Yusuf")
    # The button says what it does; its accessible name adds whose booking and when (label in name).
    row.get_by_role("button", name=re.compile(r"Confirm \(paid outside the platform\).*Achieng Odhiambo")).click()
    expect(admin.get_by_role("status")).to_have_text("The booking has been confirmed and both people told.")

    client.reload()
    expect(facts).to_contain_text("Confirmed")
    expect(client.get_by_text("Time left to pay:")).to_have_count(0)
    client.get_by_role("link", name="Move to another time").click()
    expect(client.get_by_role("heading", level=1)).to_have_text("Move this session")
    expect(client.get_by_text(f"Now: {first_time} with Dr Amina Yusuf.")).to_be_visible()
    new_time = "Tuesday 19 January 2027, 08:00 (Europe/London)"
    client.get_by_role("button", name=f"Move to {new_time}").click()
    expect(client).to_have_url(re.compile(rf"{booking}\?notice=rescheduled$"))
    expect(client.get_by_role("status")).to_have_text("The session has been moved to its new time.")
    expect(facts).to_contain_text(new_time)
    expect(facts).to_contain_text("Confirmed")

    client.get_by_role("link", name="Cancel this session").click()
    expect(client.get_by_role("heading", level=1)).to_have_text("Cancel this session?")
    money = client.get_by_role("heading", name="What happens to the money").locator("..")
    expect(money).to_contain_text(NOTHING_PAID)
    expect(money).not_to_contain_text("will be refunded")
    client.get_by_label("Reason (optional, shared with the other person)").fill("Something came up")
    client.get_by_role("button", name="Yes, cancel the session").click()
    expect(client).to_have_url(re.compile(rf"{booking}\?notice=cancelled$"))
    expect(client.get_by_role("status")).to_have_text("The session has been cancelled.")
    expect(facts).to_contain_text("Cancelled")
    expect(client.get_by_role("link", name="Cancel this session")).to_have_count(0)

    client.get_by_role("link", name="All my sessions").click()
    expect(client.get_by_role("region", name="Upcoming")).to_contain_text("No upcoming sessions.")
    past = client.get_by_role("region", name="Past and cancelled")
    expect(past).to_contain_text("With Dr Amina Yusuf")
    expect(past).to_contain_text("Cancelled")
