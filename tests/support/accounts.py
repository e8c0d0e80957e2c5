"""Driving the accounts API the way a browser does: cookies, CSRF header, Origin."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
from fastapi import FastAPI

from smilingsteps.accounts.security import AuthKit
from smilingsteps.platform.runtime import Runtime

ORIGIN = "http://127.0.0.1:8000"  # the default PUBLIC_BASE_URL's origin, allowed by default
PASSWORD = "tangerine lantern 42"


def runtime(app: FastAPI) -> Runtime:
    """The running app's state (database, clock)."""
    value = app.state.runtime
    assert isinstance(value, Runtime)
    return value


def auth_kit(app: FastAPI) -> AuthKit:
    """The running app's accounts toolkit (hasher, token codec, revocations)."""
    return runtime(app).part(AuthKit)


def new_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def registration(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": new_email(),
        "password": PASSWORD,
        "full_name": "Amani Otieno",
        "phone": "0712345678",
        "timezone": "Africa/Nairobi",
    }
    body.update(overrides)
    return body


async def register(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = registration(**overrides)
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    return {**response.json(), "password": body["password"]}


async def login(http: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"email": email, "password": password, **extra})


async def signed_in(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    user = await register(client, **overrides)
    response = await login(client, user["email"], user["password"])
    assert response.status_code == 200, response.text
    return {**user, "session": response.json()}


def another_client(client: httpx.AsyncClient, **headers: str) -> httpx.AsyncClient:
    """A second browser on the same app: its own cookies, the given headers only."""
    return httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url), headers=headers)


def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies.get("ss_csrf") or ""}


def plain_text(message: EmailMessage) -> str:
    text = message.get_body(("plain",))
    assert text is not None
    return str(text.get_content())


def _token_in(message: EmailMessage, path: str) -> str | None:
    for word in plain_text(message).split():
        parts = urlsplit(word.strip("<>()."))
        if parts.scheme in ("http", "https") and parts.path == path and "token" in parse_qs(parts.query):
            return parse_qs(parts.query)["token"][0]
    return None


def link_token(message: EmailMessage, path: str) -> str:
    """Follow the link in an email: the token in the query of the first link to `path`."""
    token = _token_in(message, path)
    if token is None:
        raise AssertionError(f"no link to {path} in the email")
    return token


def tokens_to(messages: list[EmailMessage], path: str) -> list[str]:
    """The tokens of every message linking to `path`, in arrival order."""
    return [token for token in (_token_in(m, path) for m in messages) if token is not None]


def totp_now(secret: str, when: float) -> str:
    return pyotp.TOTP(secret).at(when)


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).rsplit("/", 1)[-1]
