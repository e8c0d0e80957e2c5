"""Paying with M-Pesa in a real browser, against the Daraja simulator the live app starts inside
itself (its outcome is the phone number's last digit) and that calls the live app back after half
a second: the payment's page turns to "paid" by itself (its script asks the server, nobody
reloads), a payment cancelled on the phone says so in plain words and is tried again, and the
booking shows its receipt. Screenshots of each state at 360 and 1280 px; axe on each."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, Response, expect

from smilingsteps.accounts.models import Role
from tests.e2e.steps import admin_signed_in, hold_a_slot, seeded_person, sign_in
from tests.support.bookings import therapist_user
from tests.support.browser import CONSOLE_ERROR, Browsers, LiveApp, check_accessibility, screenshots

PAYMENT_URL = re.compile(r"/payments/[0-9a-f-]{36}$")
RECEIPT = re.compile(r"^[A-Z0-9]{10}$")
PAY_BUTTON = "Pay Ksh 2,500 with M-Pesa"
# An answer from M-Pesa takes half a second here, then the page's next question (every 2 s).
ANSWER_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def live_app_settings() -> dict[str, Any]:
    # The embedded simulator calls back to PUBLIC_BASE_URL, which live_settings sets to the live app.
    return {"MPESA_SIMULATOR_DELAY": 0.5}


def client_holding(browsers: Browsers, live_app: LiveApp, full_name: str, **context: Any) -> tuple[Page, str]:
    """A new client, signed in, holding the first free time of a new therapist; (their page, the booking's path)."""
    therapist = live_app.run(therapist_user(live_app.app, full_name="Dr Amina Yusuf"))
    page = browsers.new_page(**context)
    user = seeded_person(live_app, Role.CLIENT, full_name, timezone="Europe/London")
    sign_in(page, user.email, lands="/bookings")
    return page, hold_a_slot(page, therapist.id)


def pay_with(page: Page, number: str) -> None:
    field = page.get_by_label("M-Pesa number")
    field.fill(number)
    page.get_by_role("button", name=PAY_BUTTON).click()
    expect(page).to_have_url(PAYMENT_URL)


def receipt_on(page: Page) -> str:
    receipt = page.locator("dt", has_text="M-Pesa receipt").locator("xpath=following-sibling::dd[1]").inner_text()
    assert RECEIPT.fullmatch(receipt.strip()), receipt
    return receipt.strip()


def test_a_client_pays_and_the_page_turns_to_paid_by_itself(browsers: Browsers, live_app: LiveApp) -> None:
    page, booking = client_holding(browsers, live_app, "Achieng Odhiambo")
    pay = page.get_by_role("region", name="Pay with M-Pesa")
    expect(pay).to_contain_text("Enter your M-Pesa PIN on it to pay Ksh 2,500.")
    number = page.get_by_label("M-Pesa number")
    expect(number).to_have_value("0712 345 678")  # the account's number, prefilled

    number.fill("0812 345 670")  # not a Safaricom mobile number
    page.get_by_role("button", name=PAY_BUTTON).click()
    expect(page.get_by_role("alert")).to_contain_text("Enter a Kenyan M-Pesa number such as 0712 345 678.")
    expect(number).to_have_attribute("aria-invalid", "true")
    expect(number).to_have_value("0812 345 670")
    screenshots(page, "pay-errors")
    seen = browsers.take_problems()  # chromium logs the 422 answer as a failed load: expected
    assert all(p.kind == CONSOLE_ERROR and "Failed to load resource" in p.detail for p in seen), seen

    pay_with(page, "0712 345 670")  # the simulator's "0": paid
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text("Paid — your session is confirmed", timeout=ANSWER_TIMEOUT_MS)
    receipt = receipt_on(page)
    expect(page.locator("dl.facts")).to_contain_text("Ksh 2,500")
    screenshots(page, "payment-paid")
    check_accessibility(page)

    page.get_by_role("link", name="See your session").click()
    expect(page).to_have_url(re.compile(re.escape(booking) + "$"))
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("Confirmed")
    expect(facts).to_contain_text(f"Paid Ksh 2,500 with M-Pesa, receipt {receipt}")
    expect(page.get_by_role("button", name=PAY_BUTTON)).to_have_count(0)
    expect(page.get_by_text("Time left to pay:")).to_have_count(0)
    screenshots(page, "session-paid")


def test_a_payment_cancelled_on_the_phone_says_so_and_the_retry_succeeds(browsers: Browsers, live_app: LiveApp) -> None:
    page, booking = client_holding(browsers, live_app, "Brian Otieno", width=360, height=740)
    pay_with(page, "0712 345 672")  # the simulator's "2": cancelled by the user on the phone
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text("The payment did not go through", timeout=ANSWER_TIMEOUT_MS)
    expect(page.get_by_text("The request was cancelled on the phone.")).to_be_visible()
    expect(page.get_by_text("Nothing was taken from your M-Pesa account.")).to_be_visible()
    number = page.get_by_label("M-Pesa number")
    expect(number).to_have_value("0712 345 672")  # the same number, ready to try again
    screenshots(page, "payment-failed")
    check_accessibility(page)

    live_app.clock.advance(5)  # a moment later: the second attempt is the newer one
    first = page.url
    pay_with(page, "0712 345 670")
    assert page.url != first
    expect(heading).to_have_text("Paid — your session is confirmed", timeout=ANSWER_TIMEOUT_MS)
    receipt = receipt_on(page)
    page.get_by_role("link", name="See your session").click()
    expect(page.locator("dl.facts")).to_contain_text(f"Paid Ksh 2,500 with M-Pesa, receipt {receipt}")
    page.goto(first)  # the cancelled attempt now points to the one that paid
    expect(page.get_by_role("link", name="See your latest payment for this session")).to_be_visible()
    assert booking


def test_while_the_phone_rings_the_page_asks_the_server_and_says_it_waits(
    browsers: Browsers, live_app: LiveApp
) -> None:
    page, booking = client_holding(browsers, live_app, "Chebet Kiprono")
    with page.expect_response(lambda response: response.url.endswith("/status")) as polled:
        pay_with(page, "0712 345 673")  # the simulator's "3": never calls back
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your phone and enter your M-Pesa PIN")
    answer: Response = polled.value
    assert answer.status == 200 and answer.json()["done"] is False
    expect(page.get_by_role("status")).to_have_text("Waiting for M-Pesa. This page updates by itself.")
    expect(page.get_by_text("07XX XXX 673")).to_be_visible()
    screenshots(page, "payment-waiting")
    check_accessibility(page)
    page.get_by_role("link", name="Back to the session").click()
    expect(page.get_by_role("heading", name="Waiting for your M-Pesa payment")).to_be_visible()
    expect(page.get_by_role("button", name=PAY_BUTTON)).to_have_count(0)
    page.get_by_role("link", name="See how the payment is going").click()
    expect(page).to_have_url(PAYMENT_URL)
    assert booking


def test_an_administrator_finds_a_refund_due_and_records_it(browsers: Browsers, live_app: LiveApp) -> None:
    page, booking = client_holding(browsers, live_app, "Dalia Mwangi")
    pay_with(page, "0712 345 670")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Paid — your session is confirmed", timeout=ANSWER_TIMEOUT_MS
    )
    receipt = receipt_on(page)
    payment = page.url
    page.goto(f"{booking}/cancel")
    expect(page.get_by_role("heading", name="What happens to the money").locator("..")).to_contain_text(
        "Ksh 2,500 will be refunded to the M-Pesa number that paid."
    )
    page.get_by_role("button", name="Yes, cancel the session").click()
    page.goto(payment)
    expect(page.get_by_role("heading", level=1)).to_have_text("Paid — a refund is on its way")

    admin = browsers.new_page()
    admin_signed_in(admin, live_app)
    admin.get_by_role("navigation", name="Administration").get_by_role("link", name="Payments").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Payments")
    admin.get_by_label("Status").select_option(label="Paid: refund due")
    admin.get_by_role("button", name="Show payments").click()
    row = admin.get_by_role("row", name=re.compile("Dalia Mwangi"))
    expect(row).to_contain_text(receipt)
    screenshots(admin, "admin-payments-refund-due")
    check_accessibility(admin)
    row.get_by_role("link", name=re.compile(r"^Record the refund")).click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Payment of Ksh 2,500 by Dalia Mwangi")
    expect(admin.get_by_text("Send Ksh 2,500 with M-Pesa to 0712 345 670")).to_be_visible()
    field = admin.get_by_label("M-Pesa receipt of the refund")
    field.fill(receipt)  # the payment's own receipt, by mistake
    admin.get_by_role("button", name="Record the refund of Ksh 2,500").click()
    expect(admin.get_by_role("alert")).to_contain_text(
        "That receipt number is already recorded for a payment or a refund."
    )
    expect(field).to_have_attribute("aria-invalid", "true")
    screenshots(admin, "admin-payment-refund-errors")
    seen = browsers.take_problems()  # the 422 answer, logged by chromium as a failed load: expected
    assert all(p.kind == CONSOLE_ERROR and "Failed to load resource" in p.detail for p in seen), seen
    field.fill("rfd1234567")
    admin.get_by_role("button", name="Record the refund of Ksh 2,500").click()
    expect(admin.get_by_role("status")).to_have_text("The refund has been recorded.")
    expect(admin.locator("dl.facts")).to_contain_text("RFD1234567")
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Refunded")
    expect(page.get_by_text("Ksh 2,500 was sent back to your M-Pesa, receipt RFD1234567.")).to_be_visible()
