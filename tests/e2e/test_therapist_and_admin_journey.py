"""A therapist applies and starts taking bookings, with an administrator in a second browser:
the therapist signs up, confirms the emailed link and writes their profile; the administrator
signs in, is sent to set up two-step verification, does it (the code from the key on the page),
reads the whole application and approves it; the therapist sets weekly hours and a day off; an
anonymous visitor in a third browser finds the new free times on the public profile."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.steps import admin_signed_in, confirm_email, sign_in, sign_up
from tests.support.browser import Browsers, LiveApp

BIO = "I help adults with anxiety and grief.\n\nSessions in English or Kiswahili."
LICENCE = "KCPB-2231"


def write_profile(page: Page) -> None:
    page.get_by_label("About you").fill(BIO)
    specialties = page.get_by_role("group", name="What you help with")
    specialties.get_by_label("Anxiety").check()
    specialties.get_by_label("Grief and loss").check()
    languages = page.get_by_role("group", name="Languages you hold sessions in")
    languages.get_by_label("English").check()
    languages.get_by_label("Swahili").check()
    page.get_by_label("Licence number").fill(LICENCE)
    page.get_by_label("Years of practice").fill("9")
    page.get_by_label("Price per session (KES)").fill("3000")
    page.get_by_label("Session length (minutes)").fill("50")
    page.get_by_label("Break after each session (minutes)").fill("10")
    page.get_by_label("Your time zone").select_option("Africa/Nairobi")
    page.get_by_role("button", name="Save profile").click()


def set_hours(page: Page, day: str, start: str, end: str) -> None:
    weekday = page.get_by_role("group", name=day, exact=True)
    weekday.get_by_label("From", exact=True).first.fill(start)
    weekday.get_by_label("to", exact=True).first.fill(end)


def test_therapist_and_admin_journey(browsers: Browsers, live_app: LiveApp) -> None:
    therapist = browsers.new_page(timezone_id="Africa/Nairobi")
    email = sign_up(therapist, full_name="Dr Halima Noor", therapist=True)
    confirm_email(therapist, live_app, email)
    sign_in(therapist, email, lands="/practice")
    expect(therapist.get_by_text("Write your profile to apply.")).to_be_visible()
    therapist.get_by_role("link", name="Profile", exact=True).click()
    expect(therapist.get_by_role("heading", level=1)).to_have_text("Your profile")
    write_profile(therapist)
    expect(therapist).to_have_url(re.compile(r"/practice\?notice=profile-saved$"))
    expect(therapist.get_by_role("status")).to_have_text("Your profile has been saved.")
    expect(therapist.get_by_text("Waiting for review.")).to_be_visible()

    admin = browsers.new_page(timezone_id="Africa/Nairobi")
    admin_signed_in(admin, live_app)
    expect(admin.get_by_role("heading", level=2)).to_have_text("Therapists waiting for review (1)")
    row = admin.get_by_role("row", name=re.compile("Dr Halima Noor"))
    expect(row).to_contain_text(email)
    row.get_by_role("link", name="Dr Halima Noor").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Dr Halima Noor")
    facts = admin.locator("dl.facts")
    expect(facts.get_by_text(LICENCE, exact=True)).to_be_visible()
    expect(facts).to_contain_text(email)
    expect(facts).to_contain_text("Ksh 3,000 for 50 minutes")
    expect(admin.get_by_text("I help adults with anxiety and grief.")).to_be_visible()
    admin.get_by_role("button", name="Approve").click()
    expect(admin).to_have_url(re.compile(r"/admin\?notice=approved$"))
    expect(admin.get_by_role("status")).to_have_text("The therapist has been approved and emailed.")
    expect(admin.get_by_text("No therapist is waiting for review.")).to_be_visible()

    therapist.reload()
    expect(therapist.get_by_text("Approved.")).to_be_visible()
    therapist.get_by_role("link", name="Hours and time off").click()
    expect(therapist.get_by_role("heading", level=1)).to_have_text("Hours and time off")
    expect(therapist.get_by_text("Times are in your profile's time zone: Africa/Nairobi.")).to_be_visible()
    set_hours(therapist, "Monday", "09:00", "12:00")
    set_hours(therapist, "Wednesday", "14:00", "16:00")
    day_off = therapist.get_by_role("group", name="Date 1")
    day_off.get_by_label("Date", exact=True).fill("2027-01-18")
    day_off.get_by_label("What").select_option(label="Time off")
    therapist.get_by_role("button", name="Save hours").click()
    expect(therapist).to_have_url(re.compile(r"/practice/availability\?notice=availability-saved$"))
    expect(therapist.get_by_role("status")).to_have_text(
        "Your hours have been saved. Clients see the new free times at once."
    )
    expect(therapist.get_by_role("group", name="Monday", exact=True).get_by_label("From").first).to_have_value("09:00")
    expect(therapist.get_by_role("group", name="Date 1").get_by_label("Date", exact=True)).to_have_value("2027-01-18")

    visitor = browsers.new_page(timezone_id="Africa/Nairobi")
    visitor.goto("/therapists")
    visitor.get_by_role("link", name="Dr Halima Noor").click()
    expect(visitor.get_by_role("heading", level=1)).to_have_text("Dr Halima Noor")
    expect(visitor.get_by_label("Times shown in")).to_have_value("Africa/Nairobi")
    # Now: Friday 15 January 2027. In the next 14 days: Wednesday 20 and 27 (14:00, 15:00) and
    # Monday 25 (09:00, 10:00, 11:00); Monday 18 is the day off.
    days = visitor.get_by_role("region", name=re.compile("^Free times")).get_by_role("heading", level=3)
    expect(days).to_have_text(["Wednesday 20 January 2027", "Monday 25 January 2027", "Wednesday 27 January 2027"])
    slots = visitor.get_by_role("link", name=re.compile(r"^Sign in to book "))
    expect(slots).to_have_text(["14:00", "15:00", "09:00", "10:00", "11:00", "14:00", "15:00"])
    expect(slots.nth(2)).to_have_accessible_name("Sign in to book Monday 25 January 2027, 09:00 (Africa/Nairobi)")
