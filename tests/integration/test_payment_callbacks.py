"""Safaricom's callbacks under attack and under load: replays, forgeries, malformed bodies, Daraja
failing, and refunds; on SQLite and PostgreSQL, with the simulator and the app on real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from smilingsteps.bookings.models import BookingStatus
from smilingsteps.payments.callbacks import stored_payload
from smilingsteps.payments.mpesa.simulator import BEHAVIOURS
from smilingsteps.payments.states import FailureReason, PaymentStatus
from tests.conftest import SettingsFactory
from tests.support.bookings import admin_person, sign_in, user_row
from tests.support.payments import (
    API,
    NEVER_CALLS_BACK,
    NEVER_DECIDED,
    PAYS,
    World,
    msisdn,
    past_check,
    past_timeout,
    payment_world,
)

CALLBACK = f"{API}/payments/mpesa/callback/"


@pytest.fixture
async def world(make_settings: SettingsFactory, outbox_url: str) -> AsyncIterator[World]:
    async with payment_world(make_settings, outbox_url, RATE_LIMITS_ENABLED=False) as world:
        yield world


async def open_payment(world: World, phone: str = NEVER_CALLS_BACK) -> tuple[str, str, dict[str, Any], str]:
    """A pending payment no callback has reached yet: (booking id, payment id, its true callback, its URL)."""
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, phone)
    await world.settle()
    push = world.simulator.push_for(msisdn(phone))
    return booking_id, started["id"], world.simulator.callback_body(push), push.callback_url


async def post(url: str, body: object, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        if isinstance(body, bytes):
            return await http.post(url, content=body, headers={"Content-Type": "application/json"}, **kwargs)
        return await http.post(url, json=body, **kwargs)


async def test_a_callback_replayed_100_times_at_once_counts_once(world: World) -> None:
    booking_id, payment_id, body, url = await open_payment(world)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as http:
        answers = await asyncio.gather(*(http.post(url, json=body) for _ in range(100)))
    assert {(a.status_code, a.text) for a in answers} == {(200, '{"ResultCode":0,"ResultDesc":"Accepted"}')}
    assert (await world.payment(payment_id)).status is PaymentStatus.PENDING  # heard, not yet checked
    assert await world.reconcile() == 1  # the worker's pass: the STK query
    payment = await world.payment(payment_id)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert (await world.booking(booking_id)).status is BookingStatus.CONFIRMED
    outcomes = sorted(row.outcome for row in await world.callbacks(payment_id))
    assert outcomes == ["awaiting_check"] + ["replay"] * 99
    assert await world.audit_count("payment.succeeded", payment_id) == 1
    assert await world.audit_count("booking.confirmed", booking_id) == 1
    queries = [b for path, b in world.simulator.requests if path.endswith("query")]
    assert len(queries) == 1  # one STK query confirmed it; the replays asked nothing


async def test_a_callback_with_an_unknown_token_changes_nothing(world: World) -> None:
    _, payment_id, body, url = await open_payment(world)
    forged = url.rsplit("/", 1)[0] + "/" + "A" * 43
    for _ in range(3):
        answer = await post(forged, body)
        assert answer.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert (await world.payment(payment_id)).status is PaymentStatus.PENDING
    assert await world.callbacks(payment_id) == []
    assert await world.audit_count("payment.callback_forged") == 1  # one audit row per address per minute
    assert (await post(forged[:-30], body)).status_code == 422  # not even token-shaped


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("CheckoutRequestID", lambda cb: cb.update(CheckoutRequestID="ws_CO_000000000000000000")),
        ("Amount", lambda cb: cb["CallbackMetadata"]["Item"][0].update(Value=1.0)),
        ("PhoneNumber", lambda cb: cb["CallbackMetadata"]["Item"][4].update(Value=254700000000)),
    ],
)
async def test_a_mismatched_callback_confirms_nothing_and_is_recorded(world: World, field: str, change: Any) -> None:
    booking_id, payment_id, body, url = await open_payment(world)
    change(body["Body"]["stkCallback"])
    assert (await post(url, body)).status_code == 200
    assert await world.reconcile() == 0  # nothing to check: the callback was not believed
    assert (await world.payment(payment_id)).status is PaymentStatus.PENDING
    assert (await world.booking(booking_id)).status is BookingStatus.PENDING_PAYMENT
    assert [row.outcome for row in await world.callbacks(payment_id)] == ["mismatch"]
    assert await world.audit_count("payment.callback_mismatch", payment_id) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"\xff\xfe\x00",
        b'{"Body": {}}',
        b"[1, 2, 3]",
        json.dumps({"Body": {"stkCallback": {"ResultCode": "0"}}}).encode(),
        json.dumps(
            {"Body": {"stkCallback": {"MerchantRequestID": "1", "CheckoutRequestID": "2", "ResultCode": 0}}}
        ).encode(),
        json.dumps({"Body": {"stkCallback": {"ResultCode": 0, "CheckoutRequestID": "\u202e\u0000" * 10}}}).encode(),
        json.dumps(
            {"Body": {"stkCallback": {"MerchantRequestID": "1", "CheckoutRequestID": "ws\u0000CO", "ResultCode": 1}}}
        ).encode(),
    ],
)
async def test_a_malformed_callback_is_kept_and_acknowledged_without_effect(world: World, body: bytes) -> None:
    booking_id, payment_id, _, url = await open_payment(world)
    answer = await post(url, body)
    assert answer.status_code == 200, answer.text
    assert await world.reconcile() == 0
    assert (await world.payment(payment_id)).status is PaymentStatus.PENDING
    assert (await world.booking(booking_id)).status is BookingStatus.PENDING_PAYMENT
    [stored] = await world.callbacks(payment_id)
    assert stored.outcome == "malformed"
    assert stored.payload == stored_payload(body)
    assert await world.audit_count("payment.callback_malformed", payment_id) == 1


async def test_a_callback_without_a_body_is_refused(world: World) -> None:
    _, payment_id, _, url = await open_payment(world)
    answer = await post(url, b"")
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("application/problem+json")
    assert await world.callbacks(payment_id) == []


async def test_an_oversized_callback_is_refused_before_it_is_read_whole(world: World) -> None:
    _, payment_id, body, url = await open_payment(world)
    body["padding"] = "x" * 20_000
    answer = await post(url, body)
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert await world.callbacks(payment_id) == []


async def test_a_success_daraja_does_not_confirm_never_confirms_the_booking(world: World) -> None:
    booking_id, payment_id, _, url = await open_payment(world, NEVER_DECIDED)
    push = world.simulator.push_for(msisdn(NEVER_DECIDED))
    forged = world.simulator.callback_body(push)  # right ids, amount and phone: only the STK query can tell
    assert (await post(url, forged)).status_code == 200
    assert await world.reconcile() == 1
    payment = await world.payment(payment_id)
    assert payment.status is PaymentStatus.PENDING
    assert (await world.booking(booking_id)).status is BookingStatus.PENDING_PAYMENT
    assert await world.audit_count("payment.succeeded", payment_id) == 0


async def test_a_refused_push_fails_at_once_and_gives_the_hold_back(world: World) -> None:
    person, booking_id = await world.held_booking()
    world.simulator.fail_next("refuse")
    started = await world.pay(person, booking_id, PAYS)
    await world.settle()
    payment = await world.payment(started["id"])
    assert (payment.status, payment.reason) == (PaymentStatus.FAILED, FailureReason.REFUSED)
    assert payment.result_desc == "Bad Request - Invalid PartyB"
    assert (await world.booking(booking_id)).status is BookingStatus.HELD


@pytest.mark.parametrize("fault", ["server_error", "garbage", "html"])
async def test_a_push_daraja_never_answered_times_out_and_may_be_tried_again(world: World, fault: str) -> None:
    person, booking_id = await world.held_booking()
    world.simulator.fail_next(fault)
    started = await world.pay(person, booking_id, PAYS)
    await world.settle()
    payment = await world.payment(started["id"])
    assert payment.status is PaymentStatus.INITIATED  # a prompt may have gone out: no second push meanwhile
    again = await world.pay(person, booking_id, PAYS)
    assert again["id"] == started["id"]
    past_check(world)
    assert await world.reconcile() == 1
    payment = await world.payment(started["id"])
    assert (payment.status, payment.reason) == (PaymentStatus.TIMED_OUT, FailureReason.NO_ANSWER)
    await person.renew()
    retry = await world.pay(person, booking_id, PAYS)
    await world.called_back(PAYS)
    assert (await world.payment(retry["id"])).status is PaymentStatus.SUCCEEDED


async def test_money_that_comes_after_the_time_out_is_still_confirmed(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, NEVER_DECIDED)
    await world.settle()
    past_timeout(world)
    await world.reconcile()
    assert (await world.payment(started["id"])).status is PaymentStatus.TIMED_OUT
    assert (await world.booking(booking_id)).status is BookingStatus.HELD  # the hold as it was
    push = world.simulator.push_for(msisdn(NEVER_DECIDED))
    push.behaviour, push.decided_at = BEHAVIOURS["0"], 0.0  # M-Pesa took the money after all
    assert (await post(push.callback_url, world.simulator.callback_body(push))).status_code == 200
    assert await world.reconcile() == 1  # the late success is checked like any other
    payment = await world.payment(started["id"])
    assert payment.status is PaymentStatus.SUCCEEDED and payment.mpesa_receipt == push.receipt
    assert (await world.booking(booking_id)).status is BookingStatus.CONFIRMED


async def test_a_success_after_the_booking_was_cancelled_becomes_a_refund_due(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, NEVER_CALLS_BACK)
    await world.settle()
    cancelled = await person.post(f"{API}/bookings/{booking_id}/cancel", json={})
    assert cancelled.json()["refund_due_kes"] == 0  # nothing was taken when it was cancelled
    past_check(world)
    await person.renew()
    await world.reconcile()
    payment = await world.payment(started["id"])
    assert (payment.status, payment.refund_kes) == (PaymentStatus.REFUND_DUE, 2500)
    assert (await world.booking(booking_id)).status is BookingStatus.CANCELLED
    assert await world.audit_count("payment.refund_due", started["id"]) == 1


async def test_a_refunded_cancellation_is_paid_back_by_an_administrator(world: World) -> None:
    person, booking_id = await world.held_booking()
    started = await world.pay(person, booking_id, PAYS)
    await world.called_back(PAYS)
    booking = await world.booking(booking_id)
    therapist = await sign_in(world.app, await user_row(world.app, booking.therapist_id))
    cancelled = await therapist.post(f"{API}/bookings/{booking_id}/cancel", json={"reason": "ill"})
    assert cancelled.json()["refund_due_kes"] == 2500
    payment = await world.payment(started["id"])
    assert (payment.status, payment.refund_kes) == (PaymentStatus.REFUND_DUE, 2500)

    admin = await admin_person(world.app)
    due = (await admin.http.get(f"{API}/admin/payments", params={"status": "refund_due"})).json()
    assert [item["id"] for item in due["items"]] == [started["id"]]
    assert due["items"][0]["full_phone"] == msisdn(PAYS)
    not_due = await admin.post(f"{API}/admin/payments/{started['id']}/refund", json={"receipt": "bad"})
    assert not_due.status_code == 422
    refunded = await admin.post(f"{API}/admin/payments/{started['id']}/refund", json={"receipt": "SRF0000001"})
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["status"] == "refunded" and refunded.json()["refund_receipt"] == "SRF0000001"
    again = await admin.post(f"{API}/admin/payments/{started['id']}/refund", json={"receipt": "SRF0000001"})
    assert again.status_code == 200  # the same form twice
    other = await admin.post(f"{API}/admin/payments/{started['id']}/refund", json={"receipt": "SRF0000002"})
    assert other.status_code == 409
    assert await world.audit_count("payment.refunded", started["id"]) == 1
    assert (await person.http.get(f"{API}/payments/{started['id']}")).json()["status"] == "refunded"


async def test_a_receipt_is_never_recorded_twice(world: World) -> None:
    person, booking_id = await world.held_booking()
    paid = await world.pay(person, booking_id, PAYS)
    push = await world.called_back(PAYS)
    booking = await world.booking(booking_id)
    therapist = await sign_in(world.app, await user_row(world.app, booking.therapist_id))
    await therapist.post(f"{API}/bookings/{booking_id}/cancel", json={})
    admin = await admin_person(world.app)
    reused = await admin.post(f"{API}/admin/payments/{paid['id']}/refund", json={"receipt": push.receipt})
    assert reused.status_code == 409 and reused.json()["type"].endswith("/receipt-taken")
    # A callback for another payment carrying this payment's receipt is a mismatch.
    other_booking, other_id, body, url = await open_payment(world)
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"][1]["Value"] = push.receipt
    await post(url, body)
    assert [row.outcome for row in await world.callbacks(other_id)] == ["mismatch"]
    assert (await world.booking(other_booking)).status is BookingStatus.PENDING_PAYMENT


async def test_a_late_cancellation_by_the_client_keeps_the_payment(world: World) -> None:
    person, booking_id = await world.held_booking()
    paid = await world.pay(person, booking_id, PAYS)
    await world.called_back(PAYS)
    world.advance(2 * 24 * 3600 + 16 * 3600)  # Sunday 16:00 Nairobi: under 24 hours before Monday 09:00
    await person.renew()
    cancelled = await person.post(f"{API}/bookings/{booking_id}/cancel", json={})
    assert cancelled.json()["refund_due_kes"] == 0
    assert (await world.payment(paid["id"])).status is PaymentStatus.SUCCEEDED


async def test_a_payment_is_only_its_clients(world: World) -> None:
    person, booking_id = await world.held_booking()
    paid = await world.pay(person, booking_id, PAYS)
    stranger, _ = await world.held_booking()
    assert (await stranger.http.get(f"{API}/payments/{paid['id']}")).status_code == 404
    assert (await person.http.get(f"{API}/payments/{paid['id']}")).status_code == 200
    admin = await admin_person(world.app)
    assert (await admin.http.get(f"{API}/admin/payments/{paid['id']}")).json()["amount_kes"] == 2500
    assert (await person.http.get(f"{API}/admin/payments")).status_code == 403


async def test_callbacks_from_outside_the_allowlist_are_refused(
    make_settings: SettingsFactory, outbox_url: str
) -> None:
    async with payment_world(
        make_settings, outbox_url, RATE_LIMITS_ENABLED=False, MPESA_CALLBACK_ALLOWED_IPS="196.201.214.0/24"
    ) as world:
        booking_id, payment_id, body, url = await open_payment(world)
        answer = await post(url, body)
        assert answer.status_code == 403
        assert await world.callbacks(payment_id) == []
        assert (await world.booking(booking_id)).status is BookingStatus.PENDING_PAYMENT
