"""Therapist directory, slots and the booking lifecycle on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, time, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from smilingsteps.accounts.models import Role, TherapistStatus, User
from smilingsteps.app import create_app
from smilingsteps.audit.models import AuditEvent
from smilingsteps.audit.service import AuditContext
from smilingsteps.bookings import service
from smilingsteps.bookings.jobs import BookingJobs
from smilingsteps.bookings.models import SessionNote
from smilingsteps.config import Settings
from smilingsteps.notifications.models import OutboxMessage
from smilingsteps.therapists.schemas import ExceptionIn, RuleIn
from tests.conftest import SettingsFactory, running
from tests.support.accounts import problem_type, runtime
from tests.support.bookings import Person, client_person, confirm, make_user, sign_in, therapist_user, utc
from tests.support.clock import FakeClock

API = "/api/v1"
# FakeClock starts at 2027-01-15 08:00 UTC, a Friday. The default therapist works Mon-Fri
# 09:00-17:00 in Nairobi (06:00-14:00 UTC), 50-minute sessions with a 10-minute buffer.
MONDAY_9_EAT = utc(2027, 1, 18, 6)
MONDAY_10_EAT = utc(2027, 1, 18, 7)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False)


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    app = create_app(settings, clock=clock)
    async with running(app):
        yield app


async def book(person: Person, therapist_id: uuid.UUID, start: object) -> httpx.Response:
    body = {"therapist_id": str(therapist_id), "starts_at": str(start.isoformat()), "timezone": "Europe/London"}  # type: ignore[attr-defined]
    return await person.post(f"{API}/bookings", json=body)


async def templates_to(app: FastAPI, address: str) -> list[str]:
    async with runtime(app).db.session() as session:
        rows = await session.execute(
            select(OutboxMessage.template).where(OutboxMessage.to_address == address).order_by(OutboxMessage.created_at)
        )
        return list(rows.scalars())


# ---- directory and slots --------------------------------------------------------------------


async def test_only_approved_active_therapists_are_listed(app: FastAPI) -> None:
    tag = f"Dr Zz {uuid.uuid4().hex[:6]}"
    approved = await therapist_user(app, full_name=f"{tag} A", specialties=("grief",), price_kes=4000)
    pending = await therapist_user(app, full_name=f"{tag} B", approved=False, specialties=("grief",))
    visitor = await client_person(app)
    listed = (await visitor.http.get(f"{API}/therapists", params={"specialty": "grief", "limit": 50})).json()
    ids = {item["id"] for item in listed["items"]}
    assert str(approved.id) in ids and str(pending.id) not in ids
    assert (await visitor.http.get(f"{API}/therapists/{pending.id}")).status_code == 404
    one = (await visitor.http.get(f"{API}/therapists/{approved.id}")).json()
    assert one["price_kes"] == 4000 and one["specialties"] == ["grief"] and one["approved"] is True


async def test_directory_filters_and_pages(app: FastAPI) -> None:
    language = "kam"  # a language only this test's therapists speak
    made = [
        await therapist_user(app, languages=(language,), price_kes=1000 + i * 1000, full_name=f"Dr Kam {i}")
        for i in range(5)
    ]
    visitor = await client_person(app)
    cheap = (await visitor.http.get(f"{API}/therapists", params={"language": language, "max_price": 3000})).json()
    assert [i["price_kes"] for i in cheap["items"]] == [1000, 2000, 3000]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"language": language, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await visitor.http.get(f"{API}/therapists", params=params)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(t.id) for t in made]
    for params in ({"limit": 500}, {"specialty": "astrology"}, {"cursor": "!!!"}, {"min_price": 5, "max_price": 1}):
        assert (await visitor.http.get(f"{API}/therapists", params=params)).status_code == 422, params


async def test_slots_are_in_utc_with_the_clients_local_time(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    visitor = await client_person(app)
    response = await visitor.http.get(
        f"{API}/therapists/{therapist.id}/slots",
        params={"from": "2027-01-18T00:00:00Z", "to": "2027-01-19T00:00:00Z", "tz": "America/New_York"},
    )
    assert response.status_code == 200
    slots = response.json()
    assert len(slots) == 8  # 09:00 … 16:00 Nairobi
    assert slots[0]["start"] == "2027-01-18T06:00:00Z" and slots[0]["end"] == "2027-01-18T06:50:00Z"
    assert slots[0]["local_start"] == "2027-01-18T01:00:00-05:00"


async def test_a_change_of_availability_is_used_at_once_by_slots_and_bookings(app: FastAPI) -> None:
    """Availability is cached per instance by (therapist, availability_version); a change must never be missed."""
    therapist = await therapist_user(app)
    visitor = await client_person(app)
    monday = {"from": "2027-01-18T00:00:00Z", "to": "2027-01-19T00:00:00Z", "tz": "UTC"}
    slots = f"{API}/therapists/{therapist.id}/slots"
    assert len((await visitor.http.get(slots, params=monday)).json()) == 8  # read (and cached) before the change
    own = await sign_in(app, therapist)
    tuesday_to_friday = {"rules": [{"weekday": day, "start": "09:00", "end": "17:00"} for day in range(1, 5)]}
    assert (await own.put(f"{API}/therapists/me/availability", json=tuesday_to_friday)).status_code == 200
    assert (await visitor.http.get(slots, params=monday)).json() == []
    refused = await book(visitor, therapist.id, MONDAY_9_EAT)
    assert refused.status_code == 422 and "not available" in refused.json()["detail"]
    back_again = {"rules": [{"weekday": 0, "start": "09:00", "end": "10:00"}]}
    assert (await own.put(f"{API}/therapists/me/availability", json=back_again)).status_code == 200
    assert [s["start"] for s in (await visitor.http.get(slots, params=monday)).json()] == ["2027-01-18T06:00:00Z"]
    assert (await book(visitor, therapist.id, MONDAY_9_EAT)).status_code == 201


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2027-01-18T00:00:00", "to": "2027-01-19T00:00:00Z"},  # naive
        {"from": "2027-01-19T00:00:00Z", "to": "2027-01-18T00:00:00Z"},  # reversed
        {"from": "2027-01-18T00:00:00Z", "to": "2027-03-30T00:00:00Z"},  # over 60 days
        {"from": "2027-01-18T00:00:00Z", "to": "2027-01-19T00:00:00Z", "tz": "Mars/Olympus"},
        {"from": "yesterday", "to": "2027-01-19T00:00:00Z"},
        {"to": "2027-01-19T00:00:00Z"},
        {"from": "0001-01-01T00:00:00+14:00", "to": "0001-01-02T00:00:00+14:00"},  # would overflow in UTC
        {"from": "9999-12-31T00:00:00-12:00", "to": "9999-12-31T23:00:00-12:00"},
    ],
)
async def test_bad_slot_queries_are_422(app: FastAPI, params: dict[str, str]) -> None:
    therapist = await therapist_user(app)
    visitor = await client_person(app)
    response = await visitor.http.get(f"{API}/therapists/{therapist.id}/slots", params=params)
    assert response.status_code == 422, response.text


async def test_exceptions_remove_and_add_hours(app: FastAPI) -> None:
    therapist = await therapist_user(
        app,
        exceptions=[
            ExceptionIn(day=date(2027, 1, 18), kind="off"),
            ExceptionIn(day=date(2027, 1, 23), kind="extra", start=time(10), end=time(12)),  # a Saturday
        ],
    )
    visitor = await client_person(app)
    slots = (
        await visitor.http.get(
            f"{API}/therapists/{therapist.id}/slots",
            params={"from": "2027-01-18T00:00:00Z", "to": "2027-01-24T00:00:00Z"},
        )
    ).json()
    days = sorted({s["start"][:10] for s in slots})
    assert "2027-01-18" not in days and "2027-01-23" in days
    assert [s["start"] for s in slots if s["start"].startswith("2027-01-23")] == [
        "2027-01-23T07:00:00Z",
        "2027-01-23T08:00:00Z",
    ]


# ---- booking ---------------------------------------------------------------------------------


async def test_a_hold_takes_the_slot_and_a_second_client_gets_409(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    first, second = await client_person(app), await client_person(app)
    held = await book(first, therapist.id, MONDAY_9_EAT)
    assert held.status_code == 201, held.text
    body = held.json()
    assert body["status"] == "held" and body["price_kes"] == 2500
    assert body["hold_expires_at"] == "2027-01-15T08:10:00Z"
    taken = await book(second, therapist.id, MONDAY_9_EAT)
    assert taken.status_code == 409 and problem_type(taken) == "slot-taken"
    slots = (
        await first.http.get(
            f"{API}/therapists/{therapist.id}/slots",
            params={"from": "2027-01-18T00:00:00Z", "to": "2027-01-19T00:00:00Z"},
        )
    ).json()
    assert "2027-01-18T06:00:00Z" not in [s["start"] for s in slots]
    assert "booking_received" in await templates_to(app, first.email)


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        (utc(2027, 1, 14, 6), "past"),
        (utc(2027, 1, 15, 12), "too_soon"),  # Friday 15:00 Nairobi: within 12 h
        (utc(2027, 4, 5, 6), "beyond_horizon"),
        (utc(2027, 1, 18, 15), "outside_availability"),
        (utc(2027, 1, 18, 6, 30), "not_on_grid"),
        (utc(2027, 1, 16, 7), "outside_availability"),  # a Saturday
    ],
)
async def test_times_that_are_not_slots_are_422_naming_why(app: FastAPI, start: object, reason: str) -> None:
    therapist = await therapist_user(app)
    person = await client_person(app)
    response = await book(person, therapist.id, start)
    assert response.status_code == 422 and problem_type(response) == "slot-not-bookable"
    assert response.json()["errors"][0]["message"] == reason


async def test_who_may_book(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    pending = await therapist_user(app, approved=False)
    other_therapist = await sign_in(app, await therapist_user(app))
    unverified = await client_person(app, verified=False)
    person = await client_person(app)
    assert (await book(other_therapist, therapist.id, MONDAY_9_EAT)).status_code == 403
    own = await sign_in(app, await _user(app, therapist.id))
    assert (await book(own, therapist.id, MONDAY_9_EAT)).status_code == 403
    suspended = await therapist_user(app)
    async with runtime(app).db.session() as session:
        (await session.get(User, suspended.id)).status = "suspended"  # type: ignore[union-attr]
    assert (await book(await client_person(app), suspended.id, MONDAY_9_EAT)).status_code == 404
    assert problem_type(await book(unverified, therapist.id, MONDAY_9_EAT)) == "email-not-verified"
    assert (await book(person, pending.id, MONDAY_9_EAT)).status_code == 404
    assert (await book(person, uuid.uuid4(), MONDAY_9_EAT)).status_code == 404
    for start in ("2027-01-18T06:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        odd = await person.post(f"{API}/bookings", json={"therapist_id": str(therapist.id), "starts_at": start})
        assert odd.status_code == 422, start


async def test_a_client_cannot_hold_two_overlapping_sessions(app: FastAPI) -> None:
    one, two = await therapist_user(app), await therapist_user(app)
    person = await client_person(app)
    assert (await book(person, one.id, MONDAY_9_EAT)).status_code == 201
    clash = await book(person, two.id, MONDAY_9_EAT)
    assert clash.status_code == 409 and problem_type(clash) == "client-overlap"


async def test_an_expired_hold_frees_the_slot(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    first, second = await client_person(app), await client_person(app)
    held = (await book(first, therapist.id, MONDAY_9_EAT)).json()
    clock.advance(10 * 60 + 1)
    assert (await book(second, therapist.id, MONDAY_9_EAT)).status_code == 201
    mine = (await first.http.get(f"{API}/bookings/{held['id']}")).json()
    assert mine["status"] == "expired"
    with pytest.raises(Exception, match="cannot be confirmed"):
        await confirm(app, held["id"])


async def test_the_worker_expires_stale_holds(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    person = await client_person(app)
    held = (await book(person, therapist.id, MONDAY_10_EAT)).json()
    clock.advance(11 * 60)
    await BookingJobs(runtime(app).settings, runtime(app).db, clock=clock).expire_holds()
    assert (await person.http.get(f"{API}/bookings/{held['id']}")).json()["status"] == "expired"


async def test_bookings_are_private_to_their_client_and_therapist(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    person, stranger = await client_person(app), await client_person(app)
    held = (await book(person, therapist.id, MONDAY_9_EAT)).json()
    therapist_http = await sign_in(app, await _user(app, therapist.id))
    assert (await therapist_http.http.get(f"{API}/bookings/{held['id']}")).status_code == 200
    assert (await stranger.http.get(f"{API}/bookings/{held['id']}")).status_code == 404
    assert held["id"] not in [b["id"] for b in (await stranger.http.get(f"{API}/bookings")).json()]
    assert (await stranger.post(f"{API}/bookings/{held['id']}/cancel", json={})).status_code == 404
    assert held["id"] in [b["id"] for b in (await person.http.get(f"{API}/bookings")).json()]


async def test_each_party_sees_the_others_name(app: FastAPI) -> None:
    therapist = await therapist_user(app, full_name="Dr Achieng Odhiambo")
    person = await client_person(app, full_name="Baraka Mwangi")
    therapist_http = await sign_in(app, await _user(app, therapist.id))
    names = {"therapist_name": "Dr Achieng Odhiambo", "client_name": "Baraka Mwangi"}

    def named(booking: dict[str, object]) -> dict[str, object]:
        return {key: booking[key] for key in names}

    held = (await book(person, therapist.id, MONDAY_9_EAT)).json()
    assert named(held) == names
    for viewer in (person, therapist_http):
        assert named((await viewer.http.get(f"{API}/bookings/{held['id']}")).json()) == names
        [listed] = (await viewer.http.get(f"{API}/bookings")).json()
        assert named(listed) == names
    cancelled = (await therapist_http.post(f"{API}/bookings/{held['id']}/cancel", json={})).json()
    assert named(cancelled) == names
    schema = (await person.http.get(f"{API}/openapi.json")).json()["components"]["schemas"]["BookingOut"]
    assert {"therapist_name", "client_name"} <= set(schema["required"])
    assert all(schema["properties"][key]["description"] for key in names)


async def _user(app: FastAPI, user_id: uuid.UUID):  # type: ignore[no-untyped-def]
    from smilingsteps.accounts.models import User

    async with runtime(app).db.session() as session:
        return await session.get(User, user_id)


# ---- confirmation, cancellation, reschedule, outcome ------------------------------------------------


async def _confirmed_bookings(
    app: FastAPI, therapist: User, count: int, *, paid_kes: int = 0
) -> tuple[list[Person], list[str]]:
    """`count` clients, each with a confirmed booking on Monday 18 January (09:00, 10:00… Nairobi),
    paid through the platform when `paid_kes` (as a confirmed M-Pesa payment confirms it)."""
    people, ids = [await client_person(app) for _ in range(count)], []
    for hour, person in enumerate(people, start=6):
        ids.append((await book(person, therapist.id, utc(2027, 1, 18, hour))).json()["id"])
        await confirm(app, ids[-1], paid_kes=paid_kes)
    return people, ids


async def _cancellation_emails(app: FastAPI, address: str) -> list[str]:
    async with runtime(app).db.session() as session:
        rows = await session.execute(
            select(OutboxMessage.body_text).where(
                OutboxMessage.to_address == address, OutboxMessage.template == "booking_cancelled"
            )
        )
        return [str(text) for text in rows.scalars()]


async def _cancellation_email(app: FastAPI, address: str) -> str:
    [text] = await _cancellation_emails(app, address)
    return text


async def test_a_confirmed_booking_never_paid_promises_no_refund(app: FastAPI) -> None:
    # A booking an administrator confirmed (paid outside the platform), cancelled early by its
    # client or by its therapist, owes nothing back here, and the emails say nothing about money.
    therapist = await therapist_user(app)
    therapist_http = await sign_in(app, await _user(app, therapist.id))
    (early, by_therapist), ids = await _confirmed_bookings(app, therapist, 2)
    actor = service.Actor(user_id=early.user_id, role=Role.CLIENT, audit=AuditContext(None, None, None))
    async with runtime(app).db.session() as session:
        terms = await service.cancellation_terms(
            session, runtime(app).settings, actor, uuid.UUID(ids[0]), now=runtime(app).now()
        )
    assert (terms.paid_kes, terms.refund_kes, terms.note()) == (0, 0, "")

    cancelled = (await early.post(f"{API}/bookings/{ids[0]}/cancel", json={"reason": "exam"})).json()
    by_them = (await therapist_http.post(f"{API}/bookings/{ids[1]}/cancel", json={})).json()
    assert [(b["status"], b["refund_due_kes"]) for b in (cancelled, by_them)] == [("cancelled", 0)] * 2
    emails = [*await _cancellation_emails(app, early.email), *await _cancellation_emails(app, by_therapist.email)]
    emails += await _cancellation_emails(app, therapist_http.email)
    assert len(emails) == 4
    for text in emails:
        assert "was cancelled by" in text
        assert not {"refund", "m-pesa", "kes", "payment", "fee"} & set(text.lower().replace(".", " ").split())
    async with runtime(app).db.session() as session:
        details = await session.execute(
            select(AuditEvent.details).where(AuditEvent.action == "booking.cancelled", AuditEvent.target_id.in_(ids))
        )
        assert [(d["paid_kes"], d["refund_due_kes"]) for d in details.scalars()] == [(0, 0)] * 2


async def test_cancellation_refunds_only_what_was_paid(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    therapist_http = await sign_in(app, await _user(app, therapist.id))
    (early, late, by_therapist), ids = await _confirmed_bookings(app, therapist, 3, paid_kes=2500)
    unpaid = await client_person(app)
    unpaid_id = (await book(unpaid, therapist.id, utc(2027, 1, 18, 9))).json()["id"]
    refund = (await early.post(f"{API}/bookings/{ids[0]}/cancel", json={"reason": "exam"})).json()
    assert (refund["status"], refund["refund_due_kes"]) == ("cancelled", 2500)
    assert "Ksh\u00a02,500 will be refunded to the M-Pesa number that paid." in await _cancellation_email(
        app, early.email
    )
    unpaid_cancel = (await unpaid.post(f"{API}/bookings/{unpaid_id}/cancel", json={})).json()
    assert unpaid_cancel["refund_due_kes"] == 0  # a hold: nothing taken yet
    clock.advance(3 * 24 * 3600 - 10 * 3600)  # Sunday 22:00 UTC: under 24 h before Monday 07:00 UTC
    for person in (late, therapist_http, early):
        await person.renew()
    no_refund = (await late.post(f"{API}/bookings/{ids[1]}/cancel", json={})).json()
    assert (no_refund["status"], no_refund["refund_due_kes"]) == ("cancelled", 0)
    assert "the fee is not refunded" in await _cancellation_email(app, late.email)
    therapist_cancel = (await therapist_http.post(f"{API}/bookings/{ids[2]}/cancel", json={})).json()
    assert therapist_cancel["refund_due_kes"] == 2500
    again = await early.post(f"{API}/bookings/{ids[0]}/cancel", json={})
    assert again.status_code == 409 and problem_type(again) == "booking-state"
    assert "booking_cancelled" in await templates_to(app, by_therapist.email)


async def test_reschedule_moves_atomically_and_never_for_cancelled(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    person, other = await client_person(app), await client_person(app)
    booking = (await book(person, therapist.id, MONDAY_9_EAT)).json()
    blocker = (await book(other, therapist.id, MONDAY_10_EAT)).json()
    await confirm(app, booking["id"])
    blocked = await person.post(
        f"{API}/bookings/{booking['id']}/reschedule", json={"starts_at": MONDAY_10_EAT.isoformat()}
    )
    assert blocked.status_code == 409
    unchanged = (await person.http.get(f"{API}/bookings/{booking['id']}")).json()
    assert unchanged["starts_at"] == "2027-01-18T06:00:00Z" and unchanged["status"] == "confirmed"
    new_start = utc(2027, 1, 19, 6)
    moved = await person.post(f"{API}/bookings/{booking['id']}/reschedule", json={"starts_at": new_start.isoformat()})
    assert moved.status_code == 200 and moved.json()["starts_at"] == "2027-01-19T06:00:00Z"
    assert moved.json()["reschedule_count"] == 1
    # The old time is free again.
    third = await client_person(app)
    assert (await book(third, therapist.id, MONDAY_9_EAT)).status_code == 201
    await other.post(f"{API}/bookings/{blocker['id']}/cancel", json={})
    refused = await other.post(f"{API}/bookings/{blocker['id']}/reschedule", json={"starts_at": new_start.isoformat()})
    assert refused.status_code == 409 and problem_type(refused) == "booking-state"
    assert "booking_rescheduled" in await templates_to(app, person.email)


async def test_outcomes_are_recorded_by_the_therapist_after_the_end(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    therapist_http = await sign_in(app, await _user(app, therapist.id))
    person = await client_person(app)
    booking = (await book(person, therapist.id, MONDAY_9_EAT)).json()
    await confirm(app, booking["id"])
    path = f"{API}/bookings/{booking['id']}/outcome"
    early = await therapist_http.post(path, json={"outcome": "completed"})
    assert early.status_code == 409
    clock.advance(3 * 24 * 3600)  # Monday 08:00 UTC, after the 06:00-06:50 session
    for someone in (person, therapist_http):
        await someone.renew()
    assert (await person.post(path, json={"outcome": "completed"})).status_code == 403
    done = await therapist_http.post(path, json={"outcome": "no_show_client"})
    assert done.status_code == 200 and done.json()["status"] == "no_show_client"


async def test_reminders_are_sent_once_and_never_for_a_cancelled_booking(app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app)
    kept, dropped = await client_person(app), await client_person(app)
    kept_booking = (await book(kept, therapist.id, MONDAY_9_EAT)).json()
    dropped_booking = (await book(dropped, therapist.id, MONDAY_10_EAT)).json()
    await confirm(app, kept_booking["id"])
    await confirm(app, dropped_booking["id"])
    await dropped.post(f"{API}/bookings/{dropped_booking['id']}/cancel", json={})
    jobs = BookingJobs(runtime(app).settings, runtime(app).db, clock=clock)
    clock.advance((MONDAY_10_EAT - timedelta(hours=23) - utc(2027, 1, 15, 8)).total_seconds())
    await jobs.send_reminders()
    await jobs.send_reminders()
    assert (await templates_to(app, kept.email)).count("booking_reminder") == 1
    assert "booking_reminder" not in await templates_to(app, dropped.email)


# ---- notes ---------------------------------------------------------------------------------------------


async def test_notes_are_private_encrypted_and_every_read_is_audited(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    therapist_http = await sign_in(app, await _user(app, therapist.id))
    person = await client_person(app)
    booking = (await book(person, therapist.id, MONDAY_9_EAT)).json()
    path = f"{API}/bookings/{booking['id']}/notes"
    secret = "Client mentioned sleep trouble since March.\nFollow up on CBT-I."
    assert (await therapist_http.put(path, json={"text": secret})).status_code == 204
    for _ in range(2):
        read = await therapist_http.http.get(path)
        assert read.status_code == 200 and read.json()["text"] == secret
    assert (await person.http.get(path)).status_code == 404
    assert (await person.put(path, json={"text": "x"})).status_code == 404
    async with runtime(app).db.session() as session:
        stored = (
            await session.execute(
                select(SessionNote.ciphertext).where(SessionNote.booking_id == uuid.UUID(booking["id"]))
            )
        ).scalar_one()
        reads = (
            await session.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "note.read", AuditEvent.target_id == booking["id"])
            )
        ).scalar_one()
    assert "sleep" not in stored
    assert reads == 2


async def test_notes_survive_key_rotation(make_settings: SettingsFactory, database_url: str, clock: FakeClock) -> None:
    old_key, new_key = "qJ3cKp8qK8bq3m0f1Zq2n9W4z6Yv1xT0b5Q7r8s9u2E=", "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGw="
    first = create_app(
        make_settings(DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False, ENCRYPTION_KEYS=old_key), clock=clock
    )
    async with running(first):
        therapist = await therapist_user(first)
        person = await client_person(first)
        booking = (await book(person, therapist.id, MONDAY_9_EAT)).json()
        writer = await sign_in(first, await _user(first, therapist.id))
        await writer.put(f"{API}/bookings/{booking['id']}/notes", json={"text": "before rotation"})
    rotated = create_app(
        make_settings(DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False, ENCRYPTION_KEYS=f"{new_key},{old_key}"),
        clock=clock,
    )
    async with running(rotated):
        reader = await sign_in(rotated, await _user(rotated, therapist.id))
        assert (await reader.http.get(f"{API}/bookings/{booking['id']}/notes")).json()["text"] == "before rotation"


async def test_profile_and_availability_endpoints(app: FastAPI) -> None:
    therapist = await sign_in(app, await make_user(app, role=Role.THERAPIST, therapist_status=TherapistStatus.PENDING))
    assert problem_type(await therapist.http.get(f"{API}/therapists/me")) == "therapist-profile-missing"
    body = {
        "bio": "CBT and ACT.\nEvenings.",
        "specialties": ["anxiety", "trauma"],
        "languages": ["en", "sw"],
        "years_of_practice": 6,
        "license_number": "KCPB/2020/001",
        "price_kes": 3000,
        "timezone": "Africa/Nairobi",
    }
    saved = await therapist.put(f"{API}/therapists/me", json=body)
    assert saved.status_code == 200 and saved.json()["approved"] is False
    for bad in (
        {**body, "specialties": ["astrology"]},
        {**body, "price_kes": -1},
        {**body, "specialties": ["anxiety", "anxiety"]},
    ):
        assert (await therapist.put(f"{API}/therapists/me", json=bad)).status_code == 422
    rules = {
        "rules": [{"weekday": 0, "start": "09:00", "end": "12:00"}, {"weekday": 0, "start": "11:00", "end": "13:00"}]
    }
    assert (await therapist.put(f"{API}/therapists/me/availability", json=rules)).status_code == 422
    ok = {
        "rules": [{"weekday": 0, "start": "09:00", "end": "12:00"}],
        "exceptions": [{"day": "2027-01-25", "kind": "off"}],
    }
    stored = await therapist.put(f"{API}/therapists/me/availability", json=ok)
    assert stored.status_code == 200 and stored.json()["rules"][0]["start"] == "09:00:00"
    person = await client_person(app)
    assert (await person.put(f"{API}/therapists/me", json=body)).status_code == 403
    assert RuleIn  # the schema the service stores


async def test_a_clients_own_expired_hold_does_not_block_another_booking(app: FastAPI, clock: FakeClock) -> None:
    first, second = await therapist_user(app), await therapist_user(app)
    person = await client_person(app)
    assert (await book(person, first.id, MONDAY_9_EAT)).status_code == 201
    clock.advance(10 * 60 + 1)
    assert (await book(person, second.id, MONDAY_9_EAT)).status_code == 201
