"""Paying with M-Pesa in the browser, without JavaScript, against the Daraja simulator served over
HTTP (its outcome is the phone number's last digit) with Safaricom's callbacks arriving at the app
as real requests: the pay form and its refusals, the payment's page in every state, the receipt on
the booking, and the administrator's list of payments and refund form."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from smilingsteps.accounts.models import Role
from smilingsteps.bookings.models import BookingStatus
from smilingsteps.config import Settings
from smilingsteps.payments.models import PaymentAttempt
from smilingsteps.payments.mpesa.simulator import DarajaSimulator, loopback_socket, serving, serving_asgi
from smilingsteps.payments.states import FailureReason, PaymentStatus
from smilingsteps.platform.i18n import Language
from smilingsteps.web.payment_views import REASONS, local_phone, masked_phone, reason_of
from tests.conftest import running
from tests.support.accounts import runtime
from tests.support.bookings import make_user, therapist_user
from tests.support.clock import FakeClock
from tests.support.pages import csrf_token, open_page, submit, text_of
from tests.support.payments import CANCELS, EXPIRES, NEVER_CALLS_BACK, NO_FUNDS, PAYS, UNREACHABLE, WRONG_PIN, World
from tests.web.test_admin import admin_browser
from tests.web.test_bookings import hold_first_slot, sign_in_page, verified_client

PAYMENT_URL = re.compile(r"/payments/([0-9a-f-]{36})")
WAITING = "Check your phone and enter your M-Pesa PIN"
PAID = "Paid — your session is confirmed"
REFRESH = '<meta http-equiv="refresh" content="3">'


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[DarajaSimulator, str]]:
    found = DarajaSimulator(delay=0)
    async with serving(found) as url:
        yield found, url


@pytest.fixture
def callback_socket() -> Iterator[socket.socket]:
    sock = loopback_socket()
    yield sock
    sock.close()


@pytest.fixture
def settings(settings: Settings, simulator: tuple[DarajaSimulator, str], callback_socket: socket.socket) -> Settings:
    """The page tests' settings, with Daraja at the simulator and its callbacks at this app."""
    port = callback_socket.getsockname()[1]
    changes = {
        "MPESA_BASE_URL": simulator[1],
        "MPESA_CALLBACK_BASE_URL": f"http://127.0.0.1:{port}",
        "RATE_LIMIT_PAYMENTS": "10000/1m",
    }
    return settings.model_copy(update=changes)


@pytest.fixture
async def browser(app: FastAPI, callback_socket: socket.socket) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client, serving_asgi(app, callback_socket):
        yield client


@pytest.fixture
def world(app: FastAPI, simulator: tuple[DarajaSimulator, str], clock: FakeClock) -> World:
    return World(app, simulator[0], clock, runtime(app).settings.mpesa_callback_base_url)


async def held(app: FastAPI, browser: httpx.AsyncClient, **therapist: object) -> tuple[str, str]:
    """A signed-in client holding a new therapist's first slot; (the booking's path, its id)."""
    doctor = await therapist_user(app, full_name="Dr Amina Yusuf", **therapist)  # type: ignore[arg-type]
    await verified_client(app, browser)
    path = await hold_first_slot(browser, str(doctor.id))
    return path, path.rsplit("/", 1)[1]


async def pay(browser: httpx.AsyncClient, page: httpx.Response, booking_id: str, phone: str) -> httpx.Response:
    return await submit(browser, f"/bookings/{booking_id}/pay", {"phone": phone}, token=csrf_token(page))


async def paid_to(browser: httpx.AsyncClient, path: str, booking_id: str, phone: str) -> str:
    """Pay from the booking's page; the payment's path (where the form leads)."""
    answer = await pay(browser, await open_page(browser, path), booking_id, phone)
    assert answer.status_code == 303, text_of(answer)
    location = answer.headers["location"]
    assert PAYMENT_URL.fullmatch(location), location
    return location


async def test_a_client_pays_from_the_hold_page_and_the_booking_shows_the_receipt(
    browser: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    path, booking_id = await held(app, browser)
    page = await open_page(browser, path)
    said = text_of(page)
    assert "Pay with M-Pesa" in said and "Pay Ksh 2,500 with M-Pesa" in said
    assert 'value="0712 345 678"' in page.text  # the account's number, written as Kenyans do
    location = await paid_to(browser, path, booking_id, PAYS)
    push = await world.called_back(PAYS)
    done = await open_page(browser, location)
    said = text_of(done)
    assert PAID in said and push.receipt in said and "Ksh 2,500" in said
    assert REFRESH not in done.text and "payment.js" not in done.text
    status = await browser.get(f"{location}/status", headers={"Accept": "application/json"})
    assert status.json() == {"status": "succeeded", "done": True}
    assert status.headers["cache-control"] == "no-store"
    booking = text_of(await open_page(browser, path))
    assert f"Paid Ksh 2,500 with M-Pesa, receipt {push.receipt}" in booking
    assert "Confirmed" in booking and "Pay with M-Pesa" not in booking


async def test_while_the_phone_has_the_prompt_the_page_waits_and_refreshes_itself(
    browser: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    path, booking_id = await held(app, browser)
    location = await paid_to(browser, path, booking_id, NEVER_CALLS_BACK)
    await world.settle()
    page = await open_page(browser, location)
    said = text_of(page)
    assert WAITING in said and "Ksh 2,500" in said and "07XX XXX 673" in said
    assert "Waiting for M-Pesa. This page updates by itself." in said
    assert f"<noscript>{REFRESH}</noscript>" in page.text  # without JavaScript; with it, payment.js polls
    assert re.search(r'<script type="module" src="/static/js/payment\.[0-9a-f]{10}\.js" integrity="sha384-', page.text)
    assert f'data-payment-status="{location}/status"' in page.text
    status = await browser.get(f"{location}/status", headers={"Accept": "application/json"})
    assert status.json() == {"status": "pending", "done": False}
    # The booking waits for the payment: its page leads to the payment, and offers no second one.
    booking = await open_page(browser, path)
    assert "Waiting for your M-Pesa payment" in text_of(booking)
    assert f'href="{location}"' in booking.text and "Pay Ksh" not in text_of(booking)
    # Paying again (another tab, a double click) leads to the same payment: no second prompt.
    again = await submit(browser, f"/bookings/{booking_id}/pay", {"phone": PAYS}, token=csrf_token(booking))
    assert again.headers["location"] == location
    assert len(await world.payments_of(booking_id)) == 1


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        (NO_FUNDS, "There was not enough money in the M-Pesa account."),
        (CANCELS, "The request was cancelled on the phone."),
        (EXPIRES, "The request on the phone expired before the PIN was entered."),
        (WRONG_PIN, "The M-Pesa PIN entered was wrong."),
        (UNREACHABLE, "The phone could not be reached: it may be off or out of network."),
    ],
)
async def test_a_payment_that_did_not_go_through_says_why_and_offers_to_try_again(
    browser: httpx.AsyncClient, app: FastAPI, world: World, phone: str, reason: str
) -> None:
    path, booking_id = await held(app, browser)
    first = await paid_to(browser, path, booking_id, phone)
    await world.called_back(phone)
    page = await open_page(browser, first)
    said = text_of(page)
    assert "The payment did not go through" in said and reason in said
    assert REFRESH not in page.text
    assert "The time is still held for you." in said
    assert f'value="{local_phone("254" + phone[1:])}"' in page.text  # the same number, to try again
    world.advance(5)  # a moment later: the newest attempt is the newer one
    retry = await pay(browser, page, booking_id, PAYS)
    second = retry.headers["location"]
    assert second != first
    push = await world.called_back(PAYS)
    assert push.receipt in text_of(await open_page(browser, second))
    old = await open_page(browser, first)
    assert "See your latest payment for this session" in text_of(old) and f'href="{second}"' in old.text
    assert 'action="/bookings/' not in old.text.split("<main", 1)[1]  # no pay form on an old attempt


async def test_when_the_hold_has_run_out_the_failed_payment_offers_to_book_again(
    browser: httpx.AsyncClient, app: FastAPI, world: World, clock: FakeClock
) -> None:
    path, booking_id = await held(app, browser)
    location = await paid_to(browser, path, booking_id, CANCELS)
    clock.advance(runtime(app).settings.BOOKING_HOLD_MINUTES * 60 + 1)  # the hold ends while the phone rings
    await world.called_back(CANCELS)
    assert (await world.booking(booking_id)).status is BookingStatus.EXPIRED
    said = text_of(await open_page(browser, location))
    assert "The request was cancelled on the phone." in said
    assert "The time is no longer held for you." in said and "Book again with Dr Amina Yusuf" in said
    assert "Pay Ksh" not in said


@pytest.mark.parametrize(
    ("phone", "message"),
    [
        ("12345", "Enter a Kenyan M-Pesa number such as 0712 345 678."),
        ("0812 345 678", "Enter a Kenyan M-Pesa number such as 0712 345 678."),
        ("   ", "Enter the M-Pesa number to pay from."),
    ],
)
async def test_a_wrong_number_is_explained_beside_the_field_and_nothing_is_started(
    browser: httpx.AsyncClient, app: FastAPI, world: World, phone: str, message: str
) -> None:
    path, booking_id = await held(app, browser)
    answer = await pay(browser, await open_page(browser, path), booking_id, phone)
    assert answer.status_code == 422
    said = text_of(answer)
    assert "There is a problem" in said and said.count(message) == 2  # the summary and beside the field
    assert '<a href="#field-phone">' in answer.text
    field = answer.text.split('id="error-phone"', 1)[1].split(">", 2)[2]
    assert 'aria-invalid="true"' in field.split("</div>", 1)[0]
    assert f'value="{phone}"' in answer.text  # what was typed stays, to be corrected
    assert await world.payments_of(booking_id) == []
    assert (await world.booking(booking_id)).status is BookingStatus.HELD


async def test_someone_elses_booking_or_payment_is_not_found(
    browser: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    doctor = await therapist_user(app, full_name="Dr Amina Yusuf")
    await verified_client(app, browser)
    path = await hold_first_slot(browser, str(doctor.id))
    booking_id = path.rsplit("/", 1)[1]
    location = await paid_to(browser, path, booking_id, NEVER_CALLS_BACK)
    await world.settle()
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as other:
        await verified_client(app, other, full_name="Someone Else")
        mine = await open_page(other, "/bookings")
        refused = await submit(other, f"/bookings/{booking_id}/pay", {"phone": PAYS}, token=csrf_token(mine))
        assert refused.status_code == 404
        bad = await submit(other, f"/bookings/{booking_id}/pay", {"phone": "nonsense"}, token=csrf_token(mine))
        assert bad.status_code == 404
        assert (await open_page(other, location)).status_code == 404
        status = await other.get(f"{location}/status", headers={"Accept": "application/json"})
        assert status.status_code == 404 and status.headers["content-type"].startswith("application/problem+json")
        assert (await open_page(other, f"/payments/{uuid.uuid4()}")).status_code == 404
        assert (await open_page(other, "/payments/not-an-id")).status_code == 404
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as practice:
        await sign_in_page(practice, doctor.email)
        assert (await open_page(practice, location)).status_code == 404  # the therapist does not see it either
        session = await open_page(practice, path)
        assert "07XX" not in session.text and "Waiting for your M-Pesa payment" not in text_of(session)
    assert len(await world.payments_of(booking_id)) == 1


async def test_the_therapist_never_sees_the_clients_receipt_or_number(
    browser: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    doctor = await therapist_user(app, full_name="Dr Amina Yusuf")
    await verified_client(app, browser)
    path = await hold_first_slot(browser, str(doctor.id))
    await paid_to(browser, path, path.rsplit("/", 1)[1], PAYS)
    push = await world.called_back(PAYS)
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as practice:
        await sign_in_page(practice, doctor.email)
        page = await open_page(practice, path)
        assert "Confirmed" in text_of(page)
        assert push.receipt not in page.text and "0712 345 670" not in page.text and "Paid Ksh" not in page.text


async def test_an_administrator_lists_payments_and_records_a_refund(
    browser: httpx.AsyncClient, app: FastAPI, world: World, clock: FakeClock
) -> None:
    path, booking_id = await held(app, browser)
    location = await paid_to(browser, path, booking_id, PAYS)
    push = await world.called_back(PAYS)
    payment_id = location.rsplit("/", 1)[1]
    form = await open_page(browser, f"{path}/cancel")
    cancelled = await submit(browser, f"{path}/cancel", {"reason": ""}, token=csrf_token(form))
    assert cancelled.status_code == 303
    payment = await world.payment(payment_id)
    assert payment.status is PaymentStatus.REFUND_DUE
    assert "Paid — a refund is on its way" in text_of(await open_page(browser, location))

    async with admin_browser(app, browser, clock) as admin:
        listing = await open_page(admin, f"/admin/payments?status=refund_due&booking_id={booking_id}")
        said = text_of(listing)
        assert listing.status_code == 200 and "1 payment found" in said
        assert "Achieng Odhiambo" in said and push.receipt in said and "Paid: refund due" in said
        assert f'href="/admin/payments/{payment_id}#refund-title"' in listing.text
        nav = text_of(await open_page(admin, "/admin"))
        assert "Payments" in nav
        assert "0 payments found" in text_of(
            await open_page(admin, f"/admin/payments?status=failed&booking_id={booking_id}")
        )

        detail_path = f"/admin/payments/{payment_id}"
        detail = await open_page(admin, detail_path)
        assert "0712 345 670" in text_of(detail)  # where the refund goes: the admin sees the whole number
        refund = f"{detail_path}/refund"
        for receipt, message in [
            ("", "Enter the M-Pesa receipt number of the refund you sent."),
            ("ABC", "Enter the refund's M-Pesa receipt: 10 capital letters and digits, like SGR7T3X9QA."),
            (push.receipt, "That receipt number is already recorded for a payment or a refund."),
        ]:
            answer = await submit(admin, refund, {"receipt": receipt}, token=csrf_token(detail))
            assert answer.status_code == 422, receipt
            assert text_of(answer).count(message) == 2 and 'id="error-receipt"' in answer.text
            assert (await world.payment(payment_id)).status is PaymentStatus.REFUND_DUE
        done = await submit(admin, refund, {"receipt": "rfd 123 4567"}, token=csrf_token(detail))
        assert done.headers["location"] == f"{detail_path}?notice=refund-recorded"
        recorded = await world.payment(payment_id)
        assert (recorded.status, recorded.refund_receipt) == (PaymentStatus.REFUNDED, "RFD1234567")
        shown = text_of(await open_page(admin, done.headers["location"]))
        assert "The refund has been recorded." in shown and "RFD1234567" in shown and "Record the refund" not in shown
        again = await submit(admin, refund, {"receipt": "RFD7654321"}, token=csrf_token(detail))
        assert "This payment is not waiting for a refund, so none can be recorded." in text_of(again)

        odd = await open_page(admin, "/admin/payments?booking_id=xyz&status=lost&from=2027-02-01&to=2027-01-01")
        assert odd.status_code == 422
        assert "Enter a booking's whole id: 36 letters, digits and dashes." in text_of(odd)
        backwards = await open_page(admin, "/admin/payments?from=2027-02-01&to=2027-01-01")
        assert backwards.status_code == 422 and "The end date must not be before the start date." in text_of(backwards)
        assert (await open_page(admin, f"/admin/payments/{uuid.uuid4()}")).status_code == 404
    said = text_of(await open_page(browser, location))
    assert "Refunded" in said and "RFD1234567" in said
    assert (await open_page(browser, "/admin/payments")).status_code == 403


def test_every_reason_has_its_own_plain_sentence_in_both_languages() -> None:
    assert set(REASONS) == set(FailureReason)
    assert len(set(REASONS.values())) == len(REASONS)
    for reason in FailureReason:
        attempt = PaymentAttempt(reason=reason, result_desc=None)
        english, swahili = reason_of(attempt, Language.ENGLISH), reason_of(attempt, Language.KISWAHILI)
        assert english.endswith(".") and swahili and swahili != english, reason
    unknown = PaymentAttempt(reason=FailureReason.OTHER, result_desc="System busy, try later")
    assert reason_of(unknown, Language.ENGLISH) == "M-Pesa said: System busy, try later"


def test_numbers_are_written_as_kenyans_write_them_and_hidden_for_people() -> None:
    assert local_phone("254712345678") == "0712 345 678"
    assert local_phone("254112345678") == "0112 345 678"
    assert masked_phone("254712345678") == "07XX XXX 678"
    assert masked_phone("oops") == "…"


async def test_only_clients_pay(browser: httpx.AsyncClient, app: FastAPI) -> None:
    therapist = await make_user(app, role=Role.THERAPIST)
    await sign_in_page(browser, therapist.email)
    page = await open_page(browser, "/practice")
    answer = await submit(browser, f"/bookings/{uuid.uuid4()}/pay", {"phone": PAYS}, token=csrf_token(page))
    assert answer.status_code == 403
