"""A therapist's pages without JavaScript: applying by writing the profile, the application's
status, weekly hours and time off, and their sessions list."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.support.pages import csrf_token, fill, open_page, submit, text_of
from tests.web.conftest import signed_up

PROFILE = {
    "bio": "I help adults with anxiety and grief.\n\nSessions in English or Kiswahili.",
    "specialties": ["anxiety", "grief"],
    "languages": ["en", "sw"],
    "license_number": "KCPB-2231",
    "years_of_practice": "9",
    "price_kes": "3000",
    "session_minutes": "50",
    "buffer_minutes": "10",
    "timezone": "Africa/Nairobi",
}


async def test_a_new_therapist_applies_by_writing_their_profile(browser: httpx.AsyncClient) -> None:
    await signed_up(browser, role="therapist", full_name="Dr Halima Noor")
    start = text_of(await open_page(browser, "/practice"))
    assert "Write your profile to apply." in start
    hours = await open_page(browser, "/practice/availability")
    assert hours.headers["location"] == "/practice/profile?notice=profile-first"
    refused = await fill(
        browser, "/practice/profile", "/practice/profile", {**PROFILE, "specialties": [], "price_kes": "5"}
    )
    assert refused.status_code == 422
    said = text_of(refused)
    assert "Choose at least one thing you help with." in said and "Enter at least 100." in said
    assert "I help adults with anxiety and grief." in refused.text  # kept
    saved = await fill(browser, "/practice/profile", "/practice/profile", PROFILE)
    assert saved.headers["location"] == "/practice?notice=profile-saved"
    assert "Waiting for review." in text_of(await open_page(browser, "/practice"))
    form = await open_page(browser, "/practice/profile")
    assert 'value="KCPB-2231"' in form.text and 'value="grief" checked' in form.text


async def test_weekly_hours_and_time_off_are_saved_and_explained_when_wrong(browser: httpx.AsyncClient) -> None:
    await signed_up(browser, role="therapist")
    await fill(browser, "/practice/profile", "/practice/profile", PROFILE)
    page = await open_page(browser, "/practice/availability")
    assert "Africa/Nairobi" in text_of(page)
    backwards = {"rule-0-0-start": "12:00", "rule-0-0-end": "09:00", "exc-0-day": "", "exc-1-day": ""}
    wrong = await submit(browser, "/practice/availability", backwards, token=csrf_token(page))
    assert wrong.status_code == 422
    assert "the end must be after the start" in text_of(wrong)
    overlapping = {
        "rule-0-0-start": "09:00",
        "rule-0-0-end": "12:00",
        "rule-0-1-start": "11:00",
        "rule-0-1-end": "13:00",
        "exc-0-day": "",
        "exc-1-day": "",
    }
    clash = await submit(browser, "/practice/availability", overlapping, token=csrf_token(page))
    assert clash.status_code == 422 and "Two ranges on the same day overlap." in text_of(clash)
    good = {
        "rule-0-0-start": "09:00",
        "rule-0-0-end": "12:00",
        "rule-2-0-start": "14:00",
        "rule-2-0-end": "18:00",
        "exc-0-day": "2027-02-01",
        "exc-0-kind": "off",
        "exc-1-day": "2027-02-06",
        "exc-1-kind": "extra",
        "exc-1-start": "10:00",
        "exc-1-end": "12:00",
    }
    saved = await submit(browser, "/practice/availability", good, token=csrf_token(page))
    assert saved.headers["location"] == "/practice/availability?notice=availability-saved"
    again = await open_page(browser, "/practice/availability")
    assert 'name="rule-2-0-start" value="14:00"' in again.text
    assert 'name="exc-0-day" value="2027-02-01"' in again.text
    assert 'name="exc-1-day" value="2027-02-06"' in again.text
    removed = await submit(
        browser, "/practice/availability", {**good, "exc-0-remove": "yes", "exc-2-day": ""}, token=csrf_token(again)
    )
    assert removed.status_code == 303
    assert "2027-02-01" not in (await open_page(browser, "/practice/availability")).text


async def test_practice_pages_are_for_therapists_only(browser: httpx.AsyncClient, app: FastAPI) -> None:
    await signed_up(browser)
    for path in ("/practice", "/practice/profile", "/practice/availability", "/practice/sessions"):
        page = await open_page(browser, path)
        assert page.status_code == 403, path
        assert "You cannot open this page" in text_of(page)
