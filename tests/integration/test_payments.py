"""Paying for a booking with M-Pesa Express against the Daraja simulator, a real HTTP peer,
on SQLite and PostgreSQL: every outcome the simulator offers, retries, and the booking's hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from smilingsteps.bookings.models import BookingStatus
from smilingsteps.payments.states import FailureReason, PaymentStatus
from tests.conftest import SettingsFactory
from tests.support.payments import (
    API,
    CALLS_BACK_TWICE,
    CANCELS,
    EXPIRES,
    NEVER_CALLS_BACK,
    NEVER_DECIDED,
    NO_FUNDS,
    PAYS,
    UNREACHABLE,
    WRONG_AMOUNT,
    WRONG_PIN,
    World,
    msisdn,
    past_check,
    past_timeout,
    payment_world,
)


@pytest.fixture
async def world(make_settings: SettingsFactory, outbox_url: str) -> AsyncIterator[World]:
    """A database of its own: reconciliation looks at every payment, so it must see only this test's."""
    async with payment_world(make_settings, outbox_url, RATE_LIMITS_ENABLED=False) as world:
        yield world


async def test_a_paid_booking_is_confirmed_with_its_receipt(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, PAYS)
    assert started["status"] == "initiated"
    assert started["amount_kes"] == 2500
    push = await world.called_back(PAYS)
    payment = await world.payment(started["id"])
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.mpesa_receipt == push.receipt
    assert payment.checkout_request_id == push.checkout_request_id
    booking = await world.booking(booking_id)
    assert booking.status is BookingStatus.CONFIRMED
    assert booking.paid_kes == 2500
    shown = await person.http.get(f"{API}/payments/{started['id']}")
    assert shown.json()["status"] == "succeeded"
    assert shown.json()["mpesa_receipt"] == push.receipt
    assert shown.json()["phone"] == "2547…670"
    assert await world.audit_count("booking.confirmed", booking_id) == 1
    emails = await world.emails("booking_confirmed")
    client_email = next(text for to, text in emails if to == person.email)
    assert f"Paid: Ksh\u00a02,500 with M-Pesa, receipt {push.receipt}." in client_email
    therapist_email = next(text for to, text in emails if to != person.email)
    assert push.receipt not in therapist_email and "M-Pesa" not in therapist_email


@pytest.mark.parametrize(
    ("phone", "status", "reason"),
    [
        (NO_FUNDS, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
        (CANCELS, PaymentStatus.CANCELLED, FailureReason.CANCELLED_BY_USER),
        (EXPIRES, PaymentStatus.TIMED_OUT, FailureReason.EXPIRED),
        (WRONG_PIN, PaymentStatus.FAILED, FailureReason.WRONG_PIN),
        (UNREACHABLE, PaymentStatus.FAILED, FailureReason.UNREACHABLE),
    ],
)
async def test_a_refused_payment_gives_the_hold_back_and_the_client_may_pay_again(
    world: World, phone: str, status: PaymentStatus, reason: FailureReason
) -> None:
    person, booking_id = await world.held_booking()
    held_until = (await world.booking(booking_id)).hold_expires_at
    first = await world.pay(person, booking_id, phone)
    assert (await world.booking(booking_id)).status is BookingStatus.PENDING_PAYMENT
    await world.called_back(phone)
    payment = await world.payment(first["id"])
    assert (payment.status, payment.reason) == (status, reason)
    assert payment.result_desc
    booking = await world.booking(booking_id)
    assert booking.status is BookingStatus.HELD
    assert booking.hold_expires_at == held_until
    second = await world.pay(person, booking_id, PAYS)
    assert second["id"] != first["id"]
    await world.called_back(PAYS)
    assert (await world.payment(second["id"])).status is PaymentStatus.SUCCEEDED
    assert (await world.booking(booking_id)).status is BookingStatus.CONFIRMED


async def test_the_hold_is_extended_while_the_payment_is_open(world: World) -> None:
    person, booking_id = await world.held_booking()
    before = (await world.booking(booking_id)).hold_expires_at
    assert before is not None
    world.advance(9 * 60)  # the client takes their time: a minute of the hold is left
    await world.pay(person, booking_id, NEVER_DECIDED)
    await world.settle()
    booking = await world.booking(booking_id)
    assert booking.status is BookingStatus.PENDING_PAYMENT
    assert booking.hold_expires_at is not None and booking.hold_expires_at > before
    assert booking.hold_expires_at - before == timedelta(minutes=4)  # now + 5 minutes to pay
    # Past the original hold, the slot is still the client's while the payment is open.
    world.advance(2 * 60)
    assert (await world.booking(booking_id)).status is BookingStatus.PENDING_PAYMENT


async def test_paying_again_while_a_payment_is_open_answers_the_same_attempt(world: World) -> None:
    person, booking_id = await world.held_booking()
    first = await world.pay(person, booking_id, NEVER_DECIDED)
    await world.settle()
    again = await world.pay(person, booking_id, PAYS)
    assert again["id"] == first["id"]
    assert again["status"] == "pending"
    assert len(world.simulator.pushes) == 1
    assert len(await world.payments_of(booking_id)) == 1


async def test_a_lost_callback_is_found_by_reconciliation(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, NEVER_CALLS_BACK)
    await world.settle()
    assert (await world.payment(started["id"])).status is PaymentStatus.PENDING
    assert await world.reconcile() == 0  # not yet: M-Pesa has 90 seconds
    past_check(world)
    assert await world.reconcile() == 1
    payment = await world.payment(started["id"])
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.checks == 1
    assert (await world.booking(booking_id)).status is BookingStatus.CONFIRMED


async def test_a_payment_m_pesa_never_decides_times_out_and_gives_the_hold_back(world: World) -> None:
    person, booking_id = await world.held_booking()
    held_until = (await world.booking(booking_id)).hold_expires_at
    started = await world.pay(person, booking_id, NEVER_DECIDED)
    await world.settle()
    past_check(world)
    assert await world.reconcile() == 1
    payment = await world.payment(started["id"])
    assert payment.status is PaymentStatus.PENDING  # "being processed": asked again later
    past_timeout(world)
    assert await world.reconcile() == 1
    payment = await world.payment(started["id"])
    assert (payment.status, payment.reason) == (PaymentStatus.TIMED_OUT, FailureReason.NO_ANSWER)
    booking = await world.booking(booking_id)
    assert (booking.status, booking.hold_expires_at) == (BookingStatus.HELD, held_until)  # the hold as it was
    world.advance(10 * 60)
    await person.renew()
    assert "ran out" in (await world.pay(person, booking_id, PAYS, expect=409))["detail"]


async def test_two_callbacks_for_one_payment_count_once(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, CALLS_BACK_TWICE)
    await world.called_back(CALLS_BACK_TWICE, count=2)
    assert (await world.payment(started["id"])).status is PaymentStatus.SUCCEEDED
    outcomes = [row.outcome for row in await world.callbacks(started["id"])]
    assert sorted(outcomes) == ["awaiting_check", "replay"]
    assert await world.audit_count("booking.confirmed", booking_id) == 1


async def test_a_callback_with_the_wrong_amount_confirms_nothing(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, WRONG_AMOUNT)
    await world.called_back(WRONG_AMOUNT)
    payment = await world.payment(started["id"])
    assert payment.status is PaymentStatus.PENDING
    assert payment.mpesa_receipt is None
    assert (await world.booking(booking_id)).status is BookingStatus.PENDING_PAYMENT
    assert await world.audit_count("payment.callback_mismatch", started["id"]) == 1
    # Daraja's own answer decides: the push it accepted for this amount was paid.
    past_check(world)
    await world.reconcile()
    assert (await world.payment(started["id"])).status is PaymentStatus.SUCCEEDED


async def test_the_push_goes_out_as_daraja_requires(world: World) -> None:
    person, booking_id = await world.held_booking()
    await world.pay(person, booking_id, "+254 712 345 670")
    await world.called_back(PAYS)
    _, body = next(item for item in world.simulator.requests if item[0].endswith("processrequest"))
    assert body["PhoneNumber"] == body["PartyA"] == msisdn(PAYS)
    assert body["Amount"] == 2500 and isinstance(body["Amount"], int)
    assert len(body["AccountReference"]) <= 12 and body["AccountReference"].isalnum()
    assert body["TransactionType"] == "CustomerPayBillOnline"
    assert body["CallBackURL"].startswith(world.url + "/api/v1/payments/mpesa/callback/")
    assert len(body["Timestamp"]) == 14


async def test_the_token_is_fetched_once_and_reused(world: World) -> None:
    for phone in (PAYS, NO_FUNDS):
        person, booking_id = await world.held_booking()
        await world.pay(person, booking_id, phone)
        await world.called_back(phone)
    assert len(world.simulator._tokens) == 1


async def test_a_booking_that_is_not_payable_is_refused(world: World) -> None:
    person, booking_id = await world.held_booking()
    stranger, _ = await world.held_booking()
    refused = await world.pay(stranger, booking_id, PAYS, expect=404)
    assert refused["type"].endswith("/not-found")
    await world.pay(person, booking_id, "0812345670", expect=422)
    await world.pay(person, booking_id, PAYS)
    await world.called_back(PAYS)
    paid = await world.pay(person, booking_id, PAYS, expect=409)
    assert "already confirmed" in paid["detail"]
    cancelled, cancelled_id = await world.held_booking()
    assert (await cancelled.post(f"{API}/bookings/{cancelled_id}/cancel", json={})).status_code == 200
    assert "cancelled booking cannot be paid" in (await world.pay(cancelled, cancelled_id, PAYS, expect=409))["detail"]
    late, late_id = await world.held_booking()
    world.advance(11 * 60)
    assert "ran out" in (await world.pay(late, late_id, PAYS, expect=409))["detail"]
    assert world.simulator.pushes.keys() == {world.simulator.push_for(msisdn(PAYS)).checkout_request_id}


async def test_hold_and_deadline_use_the_settings(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, NEVER_DECIDED)
    payment = await world.payment(started["id"])
    assert payment.next_check_at - payment.created_at == timedelta(seconds=90)
    booking = await world.booking(booking_id)
    assert booking.hold_expires_at == payment.created_at + timedelta(minutes=10)  # the hold was longer already
