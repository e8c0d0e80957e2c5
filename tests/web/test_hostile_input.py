"""No page answers 500 to anything a browser (or someone pretending to be one) can send: every
page route, as anonymous, client, therapist and administrator, gets empty, oversized, oddly
encoded and wrongly typed fields and query strings, with a valid CSRF token so the handlers
themselves are reached. The pages are not in the OpenAPI document, so the API fuzzer does
not cover them; this does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from tests.support.bookings import therapist_user
from tests.support.clock import FakeClock
from tests.support.pages import csrf_token, open_page, submit
from tests.web.conftest import signed_up
from tests.web.test_admin import admin_browser
from tests.web.test_bookings import hold_first_slot, verified_client
from tests.web.test_practice import PROFILE

HOSTILE_VALUES = (
    "",
    " ",
    "x" * 15_000,
    "\u202eevil\u202c",
    "😀" * 300,
    "a\u0000b",
    "0" * 400,
    "-1",
    "99999999999999999999999999",
    "1e309",
    "2027-02-30",
    "25:61",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "{{ 7*7 }}",
)
FIELD_NAMES = (
    "email", "password", "full_name", "phone", "timezone", "role", "terms", "next", "token", "mfa_token", "code",
    "recovery_code", "language", "current_password", "new_password", "secret", "qr", "therapist_id", "starts_at",
    "reason", "text", "outcome", "decision", "action", "bio", "specialties", "languages", "license_number",
    "price_kes", "session_minutes", "buffer_minutes", "years_of_practice", "zone", "rule-0-0-start",
    "rule-0-0-end", "exc-0-day", "exc-0-kind", "exc-0-start", "exc-0-end", "exc-0-remove", "receipt",
)  # fmt: skip


QUERY_NAMES = (
    "tz", "token", "next", "role", "specialty", "language", "max_price", "available_by", "q", "from", "to",
    "status", "cursor", "action", "actor_id", "target_id", "before_seq", "page", "notice", "booking_id",
)  # fmt: skip


def page_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    for route in app.routes:
        if isinstance(route, APIRoute) and not route.path.startswith(("/api", "/static")):
            for method in route.methods - {"HEAD"}:
                yield method, route.path


def concrete(path: str, ids: dict[str, str]) -> list[str]:
    """The path with its parameters filled in: a real id of this person's, a stranger's, and garbage."""
    if "{" not in path:
        return [path]
    name = path.split("{", 1)[1].split("}", 1)[0]
    choices = [ids.get(name, str(uuid.uuid4())), str(uuid.uuid4()), "not-an-id", "%00", "x" * 300]
    return [path.replace("{" + name + "}", choice) for choice in choices]


def hostile_forms() -> Iterator[dict[str, object]]:
    for value in HOSTILE_VALUES:
        yield dict.fromkeys(FIELD_NAMES, value)
    yield {name: [value, value] for name, value in zip(FIELD_NAMES, HOSTILE_VALUES * 3, strict=False)}
    yield {}


async def hammer(browser: httpx.AsyncClient, app: FastAPI, ids: dict[str, str]) -> list[str]:
    """Every page route with every hostile input; the answers that were 500 or more."""
    failures: list[str] = []
    home = await open_page(browser, "/")
    token = csrf_token(home)
    for method, template in sorted(page_routes(app)):
        for path in concrete(template, ids):
            if method == "GET":
                for value in HOSTILE_VALUES:
                    query = dict.fromkeys(QUERY_NAMES, value[:200])  # the whole URL stays under 64 KiB
                    answer = await browser.get(path, params=query, headers={"Accept": "text/html"})
                    if answer.status_code >= 500:
                        failures.append(f"GET {path} {value[:20]!r}: {answer.status_code}")
                continue
            if path.endswith("/sign-out"):
                continue  # signing out would end the session the rest of the run needs
            for form in hostile_forms():
                answer = await submit(browser, path, form, token=token)  # type: ignore[arg-type]
                if answer.status_code >= 500:
                    failures.append(f"{method} {path} {str(form)[:60]}: {answer.status_code}")
    return failures


@asynccontextmanager
async def second_browser(browser: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=browser._transport, base_url=str(browser.base_url)) as other:
        yield other


@pytest.mark.sqlite_only
async def test_no_page_answers_500_to_anyone(browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock) -> None:
    therapist = await therapist_user(app, full_name="Dr Amina Yusuf")
    assert await hammer(browser, app, {"therapist_id": str(therapist.id)}) == []  # anonymous
    await verified_client(app, browser)
    booking = (await hold_first_slot(browser, str(therapist.id))).rsplit("/", 1)[1]
    ids = {"therapist_id": str(therapist.id), "booking_id": booking}
    assert await hammer(browser, app, ids) == []  # a client
    async with second_browser(browser) as practice:
        await signed_up(practice, role="therapist")
        form = await open_page(practice, "/practice/profile")
        assert (await submit(practice, "/practice/profile", PROFILE, token=csrf_token(form))).status_code == 303
        assert await hammer(practice, app, ids) == []  # a therapist
    async with admin_browser(app, browser, clock) as admin:
        ids["user_id"] = str(therapist.id)
        assert await hammer(admin, app, ids) == []  # an administrator
