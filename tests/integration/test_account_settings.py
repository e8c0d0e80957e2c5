"""PATCH /api/v1/users/me: a person changes their own name, phone, time zone and language."""

from __future__ import annotations

import httpx

from tests.support.accounts import csrf, problem_type, signed_in


async def test_people_change_their_own_settings_and_only_the_fields_they_send(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    headers = {**csrf(client), "Origin": "http://127.0.0.1:8000"}
    changed = await client.patch(
        "/api/v1/users/me",
        json={"language": "sw", "timezone": "Europe/London", "phone": "+254 722 000 111"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["language"], body["timezone"], body["phone"]) == ("sw", "Europe/London", "254722000111")
    assert body["full_name"] == "Amani Otieno"  # not sent, kept
    assert (await client.get("/api/v1/users/me")).json()["language"] == "sw"


async def test_unknown_languages_zones_and_fields_are_refused(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    headers = {**csrf(client), "Origin": "http://127.0.0.1:8000"}
    for body in ({"language": "fr"}, {"timezone": "Mars/Olympus"}, {"email": "new@example.com"}, {"full_name": ""}):
        refused = await client.patch("/api/v1/users/me", json=body, headers=headers)
        assert refused.status_code == 422, body
        assert problem_type(refused) == "validation-error"
    assert (await client.get("/api/v1/users/me")).json()["language"] == "en"


async def test_settings_need_a_session_and_its_csrf_token(client: httpx.AsyncClient) -> None:
    assert (await client.patch("/api/v1/users/me", json={"language": "sw"})).status_code == 401
    await signed_in(client)
    forged = await client.patch(
        "/api/v1/users/me", json={"language": "sw"}, headers={"Origin": "http://127.0.0.1:8000"}
    )
    assert forged.status_code == 403
