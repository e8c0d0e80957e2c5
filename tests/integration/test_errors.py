"""Every error a client can provoke is problem+json, with security headers and
the request id, and never leaks internals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from smilingsteps.app import create_app
from smilingsteps.platform.logging import captured_events
from tests.conftest import SettingsFactory, running
from tests.support.routes import SECRET_IN_EXCEPTION, add_test_routes

SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "x-request-id",
)


@pytest.fixture
async def web(make_settings: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    app = add_test_routes(create_app(make_settings(MAX_REQUEST_BODY_BYTES=2048)))
    async with running(app) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    for header in SECURITY_HEADERS:
        assert header in response.headers, f"{header} missing on {status}"
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["instance"] == response.request.url.path
    return body  # type: ignore[no-any-return]


async def test_unknown_path_is_404_problem(web: httpx.AsyncClient) -> None:
    assert_problem(await web.get("/api/v1/no-such-thing"), 404, "not-found")


async def test_wrong_method_is_405_problem_with_allow(web: httpx.AsyncClient) -> None:
    response = await web.delete("/health")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET"


async def test_malformed_json_is_400(web: httpx.AsyncClient) -> None:
    response = await web.post("/api/v1/_test/echo", content=b'{"name": ', headers={"content-type": "application/json"})
    assert_problem(response, 400, "malformed-json")


async def test_validation_failure_is_422_with_field_errors(web: httpx.AsyncClient) -> None:
    response = await web.post("/api/v1/_test/echo", json={"name": "x" * 51, "count": "many", "extra": 1})
    body = assert_problem(response, 422, "validation-error")
    fields = {(error["field"], error["location"]) for error in body["errors"]}  # type: ignore[attr-defined]
    assert fields == {("name", "body"), ("count", "body"), ("extra", "body")}


async def test_wrong_content_type_is_415(web: httpx.AsyncClient) -> None:
    response = await web.post("/api/v1/_test/echo", content=b"name=x", headers={"content-type": "text/plain"})
    assert_problem(response, 415, "unsupported-media-type")


async def test_declared_oversized_body_is_413(web: httpx.AsyncClient) -> None:
    response = await web.post("/api/v1/_test/echo", json={"name": "x", "note": "y" * 5000})
    assert_problem(response, 413, "payload-too-large")


async def test_streamed_oversized_body_is_413(web: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "x", "note": "'
        for _ in range(10):
            yield b"y" * 512
        yield b'"}'

    response = await web.post("/api/v1/_test/echo", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(response, 413, "payload-too-large")


async def test_rate_limited_is_429_with_retry_after(web: httpx.AsyncClient) -> None:
    response = await web.get("/api/v1/_test/limited")
    assert_problem(response, 429, "rate-limited")
    assert response.headers["retry-after"] == "42"


async def test_unexpected_exception_is_generic_500_and_logged_with_trace(web: httpx.AsyncClient) -> None:
    with captured_events() as events:
        response = await web.get("/api/v1/_test/boom")
    body = assert_problem(response, 500, "internal-error")
    assert SECRET_IN_EXCEPTION not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text
    logged = [event for event in events if event["event"] == "unhandled_exception"]
    assert len(logged) == 1 and logged[0]["request_id"] == body["request_id"]
    assert "Traceback" in logged[0]["exception"] and "RuntimeError" in logged[0]["exception"]
    assert "hunter2" not in logged[0]["exception"]  # the planted secret is masked in the trace too


async def test_problem_detail_never_echoes_html(web: httpx.AsyncClient) -> None:
    response = await web.post("/api/v1/_test/echo", json={"name": "<script>alert(1)</script>" * 3})
    assert "<script>" not in response.text


async def test_a_failing_middleware_still_answers_problem_json_with_headers(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())

    class Broken:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/api/v1/broken-middleware":
                raise RuntimeError("middleware bug")
            await self.app(scope, receive, send)

    # Added last, so outermost: only Starlette's server-error middleware is outside it.
    app.add_middleware(Broken)
    async with running(app, raise_app_exceptions=False) as client:
        response = await client.get("/api/v1/broken-middleware")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/internal-error"
    assert "middleware bug" not in response.text
    for header in ("content-security-policy", "x-content-type-options", "permissions-policy"):
        assert header in response.headers
