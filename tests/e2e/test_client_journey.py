"""A new client's whole way in the browser: sign up, confirm the emailed link, sign in, filter
the directory, open a therapist whose times show in the browser's own zone, hold a time with its
live countdown, and find it in My sessions. Also: an anonymous visitor's profile page reloads
itself in the zone the browser reports."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.steps import BOOKING_URL, confirm_email, sign_in, sign_up
from tests.support.bookings import therapist_user
from tests.support.browser import Browsers, LiveApp

COUNTDOWN = re.compile(r"^\d+:\d\d$")


def test_client_journey(browsers: Browsers, live_app: LiveApp) -> None:
    live_app.run(therapist_user(live_app.app, full_name="Dr Amina Yusuf", specialties=("grief",), price_kes=3000))
    brian = live_app.run(
        therapist_user(
            live_app.app,
            full_name="Dr Brian Kiprop",
            specialties=("anxiety", "stress"),
            languages=("en",),
            price_kes=1500,
        )
    )
    live_app.run(therapist_user(live_app.app, full_name="Dr Cheptoo Rono", specialties=("anxiety",), price_kes=4500))
    page = browsers.new_page(timezone_id="Europe/London", locale="en-GB")

    email = sign_up(page, full_name="Zawadi Ochieng")
    confirm_email(page, live_app, email)
    page.get_by_role("main").get_by_role("link", name="Sign in").click()
    sign_in(page, email, lands="/bookings")
    expect(page.get_by_role("heading", level=1)).to_have_text("My sessions")

    page.get_by_role("banner").get_by_role("link", name="Find a therapist").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Find a therapist")
    results = page.get_by_role("region", name="Therapists")
    expect(results.get_by_role("heading", level=3)).to_have_count(3)
    page.get_by_label("Help with").select_option(label="Anxiety")
    page.get_by_label("Session language").select_option(label="English")
    page.get_by_label("Highest price per session (KES)").fill("2000")
    page.get_by_label("Free for a session by").fill("2027-01-22")
    page.get_by_role("button", name="Show therapists").click()
    expect(page).to_have_url(re.compile(r"specialty=anxiety&language=en&max_price=2000&available_by=2027-01-22"))
    expect(results.get_by_role("heading", level=3)).to_have_text(["Dr Brian Kiprop"])
    expect(results).to_contain_text("Ksh 1,500 for 50 minutes")
    expect(page.get_by_label("Help with")).to_have_value("anxiety")  # the filters stay as chosen

    results.get_by_role("link", name="Dr Brian Kiprop").click()
    expect(page).to_have_url(re.compile(rf"/therapists/{brian.id}"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Dr Brian Kiprop")
    # The account's zone is the one the sign-up page detected in the browser, not Nairobi's default.
    expect(page.get_by_label("Times shown in")).to_have_value("Europe/London")
    # The server's clock says Friday 15 January 2027, 08:00 UTC; the first free time is Monday's
    # 09:00 in Nairobi, which is 06:00 in London in January.
    first = page.get_by_role("button", name=re.compile(r"^Book "))
    expect(first.first).to_have_accessible_name("Book Monday 18 January 2027, 06:00 (Europe/London)")
    expect(first.first).to_have_text("06:00")
    first.first.click()

    expect(page).to_have_url(BOOKING_URL)
    expect(page.get_by_role("heading", level=1)).to_have_text("Session with Dr Brian Kiprop")
    expect(page.get_by_text("Time left to pay:")).to_be_visible()
    countdown = page.locator("[data-countdown-text]")
    expect(countdown).to_have_text(COUNTDOWN)  # the script replaced the server's "10 min"
    shown = countdown.inner_text()
    expect(countdown).not_to_have_text(shown)  # it ticks
    expect(countdown).to_have_text(COUNTDOWN)
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("Monday 18 January 2027, 06:00 (Europe/London)")
    expect(facts).to_contain_text("Held for you: waiting for payment")
    expect(facts).to_contain_text("Ksh 1,500")
    booking = page.url

    page.get_by_role("banner").get_by_role("link", name="My sessions").click()
    upcoming = page.get_by_role("region", name="Upcoming")
    expect(upcoming.get_by_role("listitem")).to_have_count(1)
    expect(upcoming).to_contain_text("With Dr Brian Kiprop")
    expect(upcoming).to_contain_text("Held for you: waiting for payment")
    upcoming.get_by_role("link", name="Monday 18 January 2027, 06:00 (Europe/London)").click()
    expect(page).to_have_url(booking)


def test_an_anonymous_visitor_sees_the_times_in_the_zone_of_their_browser(
    browsers: Browsers, live_app: LiveApp
) -> None:
    therapist = live_app.run(therapist_user(live_app.app, full_name="Dr Daudi Mwangi"))
    page = browsers.new_page(timezone_id="Europe/London")
    page.goto(f"/therapists/{therapist.id}")
    # Nairobi first (the default), then the page's script sends the form with the browser's zone.
    expect(page).to_have_url(re.compile(r"\?tz=Europe%2FLondon$"))
    expect(page.get_by_label("Times shown in")).to_have_value("Europe/London")
    first = page.get_by_role("link", name=re.compile(r"^Sign in to book "))
    expect(first.first).to_have_accessible_name("Sign in to book Monday 18 January 2027, 06:00 (Europe/London)")
    # Remembered: the next visit starts in London without reloading.
    page.goto(f"/therapists/{therapist.id}")
    expect(page.get_by_label("Times shown in")).to_have_value("Europe/London")
    expect(page).to_have_url(re.compile(rf"/therapists/{therapist.id}$"))
