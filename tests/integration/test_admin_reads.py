"""What administrators read before acting, on SQLite and PostgreSQL: every booking, filtered and paged
by cursor with both parties' names, and a therapist's full application before the review decision."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from smilingsteps.accounts.models import Role, TherapistStatus
from smilingsteps.app import create_app
from smilingsteps.config import Settings
from tests.conftest import SettingsFactory, running
from tests.support.accounts import problem_type
from tests.support.bookings import (
    Person,
    admin_person,
    client_person,
    confirm,
    make_user,
    sign_in,
    therapist_user,
    utc,
)
from tests.support.clock import FakeClock

API = "/api/v1"


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url, RATE_LIMITS_ENABLED=False)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    # FakeClock starts on Friday 2027-01-15 08:00 UTC; the therapists work Mon-Fri 09:00-17:00 Nairobi.
    app = create_app(settings, clock=FakeClock())
    async with running(app):
        yield app


async def book(person: Person, therapist_id: uuid.UUID, hour_utc: int, day: int = 18) -> str:
    body = {"therapist_id": str(therapist_id), "starts_at": utc(2027, 1, day, hour_utc).isoformat()}
    response = await person.post(f"{API}/bookings", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def all_pages(admin: Person, **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing, following next_cursor until the last page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await admin.http.get(f"{API}/admin/bookings", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# ---- every booking ------------------------------------------------------------------------------


async def test_admins_list_every_booking_with_filters_and_both_names(app: FastAPI) -> None:
    first = await therapist_user(app, full_name="Dr Njeri Wambugu")
    second = await therapist_user(app, full_name="Dr Otieno Ouma")
    amani = await client_person(app, full_name="Amani Kiprop")
    zawadi = await client_person(app, full_name="Zawadi Chebet")
    admin = await admin_person(app)
    confirmed = await book(amani, first.id, 6)
    await confirm(app, confirmed)
    held = await book(zawadi, first.id, 8)
    other_day = await book(amani, second.id, 7, day=19)

    by_first = await all_pages(admin, therapist_id=str(first.id))
    assert [b["id"] for b in by_first] == [held, confirmed]  # latest start first
    assert [(b["therapist_name"], b["client_name"]) for b in by_first] == [
        ("Dr Njeri Wambugu", "Zawadi Chebet"),
        ("Dr Njeri Wambugu", "Amani Kiprop"),
    ]
    assert [b["id"] for b in await all_pages(admin, client_id=amani.id)] == [other_day, confirmed]
    assert [b["id"] for b in await all_pages(admin, therapist_id=str(first.id), status="confirmed")] == [confirmed]
    assert [b["id"] for b in await all_pages(admin, client_id=amani.id, status="held")] == [other_day]
    monday = {"from": utc(2027, 1, 18, 6).isoformat(), "to": utc(2027, 1, 18, 8).isoformat()}
    in_window = await all_pages(admin, **monday, client_id=amani.id)
    assert [b["id"] for b in in_window] == [confirmed]  # from is inclusive, to exclusive
    everyone = {b["id"] for b in await all_pages(admin, **{"from": utc(2027, 1, 18, 0).isoformat()})}
    assert {confirmed, held, other_day} <= everyone


async def test_the_admin_booking_list_pages_by_cursor_without_gaps_or_repeats(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    admin = await admin_person(app)
    ids = [await book(await client_person(app), therapist.id, hour) for hour in range(6, 12)]
    first = await admin.http.get(f"{API}/admin/bookings", params={"therapist_id": str(therapist.id), "limit": 4})
    page = first.json()
    assert [b["id"] for b in page["items"]] == ids[::-1][:4]
    assert page["next_cursor"] is not None
    rest = await admin.http.get(
        f"{API}/admin/bookings", params={"therapist_id": str(therapist.id), "limit": 4, "cursor": page["next_cursor"]}
    )
    assert [b["id"] for b in rest.json()["items"]] == ids[::-1][4:]
    assert rest.json()["next_cursor"] is None
    exact = await admin.http.get(f"{API}/admin/bookings", params={"therapist_id": str(therapist.id), "limit": 6})
    assert exact.json()["next_cursor"] is None  # a full last page says so: no empty page follows
    assert [b["id"] for b in await all_pages(admin, therapist_id=str(therapist.id), limit=1)] == ids[::-1]


async def test_bookings_that_start_together_page_by_id(app: FastAPI) -> None:
    admin = await admin_person(app)
    together = {await book(await client_person(app), (await therapist_user(app)).id, 9, day=20) for _ in range(3)}
    instant = {"from": utc(2027, 1, 20, 9).isoformat(), "to": utc(2027, 1, 20, 9, 1).isoformat()}
    one_by_one = [b["id"] for b in await all_pages(admin, **instant, limit=1)]
    assert one_by_one == [b["id"] for b in await all_pages(admin, **instant, limit=100)]
    assert len(one_by_one) == len(set(one_by_one)) and together <= set(one_by_one)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2027-01-18T08:00:00Z", "to": "2027-01-18T08:00:00Z"},
        {"from": "2027-01-19T00:00:00Z", "to": "2027-01-18T00:00:00Z"},
        {"from": "2027-01-18T08:00:00"},  # no offset
        {"cursor": "not-a-cursor"},
        {"status": "paid"},
        {"limit": "0"},
        {"limit": "101"},
    ],
)
async def test_bad_admin_booking_queries_are_422(app: FastAPI, params: dict[str, str]) -> None:
    admin = await admin_person(app)
    response = await admin.http.get(f"{API}/admin/bookings", params=params)
    assert response.status_code == 422, response.text


async def test_only_administrators_list_every_booking(app: FastAPI) -> None:
    therapist = await therapist_user(app)
    person = await client_person(app)
    await book(person, therapist.id, 6)
    therapist_http = await sign_in(app, therapist)
    for caller in (person, therapist_http):
        for path in ("/admin/bookings", f"/admin/therapists/{therapist.id}"):
            response = await caller.http.get(f"{API}{path}")
            assert response.status_code == 403 and problem_type(response) == "role-required"


# ---- a therapist's application -----------------------------------------------------------------


async def test_admins_read_a_pending_therapists_full_profile_then_the_decision(app: FastAPI) -> None:
    pending = await therapist_user(app, approved=False, full_name="Dr Halima Yusuf", price_kes=3000)
    admin = await admin_person(app)
    read = await admin.http.get(f"{API}/admin/therapists/{pending.id}")
    assert read.status_code == 200, read.text
    application = read.json()
    assert application["account"]["email"] == pending.email
    assert application["account"]["full_name"] == "Dr Halima Yusuf"
    assert application["account"]["therapist_status"] == "pending"
    profile = application["profile"]
    assert profile["license_number"] == "KCPB-12345"
    assert profile["bio"] == "Warm, practical support."
    assert (profile["specialties"], profile["languages"], profile["price_kes"]) == (["anxiety"], ["en", "sw"], 3000)
    assert profile["approved"] is False
    assert application["submitted_at"] is not None and application["profile_updated_at"] is not None
    assert (application["reviewed_at"], application["rejection_reason"]) == (None, None)

    rejected = await admin.http.patch(
        f"{API}/admin/users/{pending.id}",
        json={"therapist_status": "rejected", "reason": "Licence number not found in the KCPB register."},
        headers=admin.csrf(),
    )
    assert rejected.status_code == 200, rejected.text
    after = (await admin.http.get(f"{API}/admin/therapists/{pending.id}")).json()
    assert after["account"]["therapist_status"] == "rejected"
    assert after["rejection_reason"] == "Licence number not found in the KCPB register."
    assert after["reviewed_at"] is not None

    await admin.http.patch(
        f"{API}/admin/users/{pending.id}", json={"therapist_status": "approved"}, headers=admin.csrf()
    )
    approved = (await admin.http.get(f"{API}/admin/therapists/{pending.id}")).json()
    assert approved["account"]["therapist_status"] == "approved" and approved["profile"]["approved"] is True
    assert approved["rejection_reason"] is None  # the old reason no longer stands


async def test_an_application_without_a_profile_and_accounts_that_are_not_therapists(app: FastAPI) -> None:
    admin = await admin_person(app)
    bare = await make_user(app, role=Role.THERAPIST, therapist_status=TherapistStatus.PENDING, full_name="Dr No")
    application = (await admin.http.get(f"{API}/admin/therapists/{bare.id}")).json()
    assert application["account"]["id"] == str(bare.id)
    assert (application["profile"], application["submitted_at"]) == (None, None)
    person = await client_person(app)
    for user_id in (person.id, str(uuid.uuid4())):
        response = await admin.http.get(f"{API}/admin/therapists/{user_id}")
        assert response.status_code == 404 and problem_type(response) == "not-found"
