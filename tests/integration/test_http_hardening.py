"""Security headers, CORS, request ids, trusted proxies, API surface and the
shared request-body rules."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from smilingsteps.app import create_app
from smilingsteps.platform.logging import log_context
from smilingsteps.platform.security_headers import CONTENT_SECURITY_POLICY
from smilingsteps.platform.versioning import deprecated
from tests.conftest import SettingsFactory, running
from tests.support.routes import add_test_routes

ORIGIN = "https://app.smilingsteps.example"


@pytest.fixture
async def web(make_settings: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    app = add_test_routes(create_app(make_settings(ALLOWED_ORIGINS=ORIGIN, TRUSTED_PROXIES="10.0.0.0/8")))
    async with running(app) as client:
        yield client


def production_app(make_settings: SettingsFactory, **overrides: Any) -> FastAPI:
    values: dict[str, Any] = {
        "APP_ENV": "production",
        "ALLOWED_ORIGINS": ORIGIN,
        "PUBLIC_BASE_URL": ORIGIN,
    }
    values.update(overrides)
    return create_app(make_settings(**values))


async def test_csp_forbids_inline_and_eval_and_framing(web: httpx.AsyncClient) -> None:
    for path in ("/health", "/api/v1", "/api/v1/missing", "/api/v1/openapi.json", "/api/v1/docs"):
        csp = (await web.get(path)).headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        for directive in ("object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'"):
            assert directive in csp, (path, directive)
        assert "default-src 'self'" in csp


async def test_baseline_headers(web: httpx.AsyncClient) -> None:
    headers = (await web.get("/health")).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-resource-policy"] == "same-origin"
    assert "camera=()" in headers["permissions-policy"] and "microphone=()" in headers["permissions-policy"]
    assert "geolocation=()" in headers["permissions-policy"]
    assert "server" not in headers
    assert "strict-transport-security" not in headers  # only in production


async def test_hsts_in_production(make_settings: SettingsFactory) -> None:
    async with running(production_app(make_settings)) as client:
        headers = (await client.get("/health")).headers
    max_age = int(headers["strict-transport-security"].split("max-age=")[1].split(";")[0])
    assert max_age >= 31_536_000 and "includeSubDomains" in headers["strict-transport-security"]


async def test_docs_are_self_hosted_under_the_strict_policy_with_integrity(web: httpx.AsyncClient) -> None:
    docs = await web.get("/api/v1/docs")
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "<script>" not in docs.text and "style=" not in docs.text and "//" not in docs.text.replace("<!", "")
    assets = re.findall(r'(?:src|href)="(/api/v1/docs/assets/[^"]+)" integrity="sha384-([^"]+)"', docs.text)
    assert {path.rsplit("/", 1)[1] for path, _ in assets} == {"swagger-ui.css", "swagger-ui-bundle.js", "docs-init.js"}
    for path, integrity in assets:
        served = await web.get(path)
        assert served.status_code == 200, path
        assert base64.b64encode(hashlib.sha384(served.content).digest()).decode() == integrity
        assert served.headers["content-type"].startswith(("text/css", "text/javascript"))
    assert (await web.get("/api/v1/docs/assets/index.html")).status_code == 404


async def test_docs_only_outside_production(web: httpx.AsyncClient, make_settings: SettingsFactory) -> None:
    assert (await web.get("/api/v1/docs")).status_code == 200
    async with running(production_app(make_settings)) as client:
        assert (await client.get("/api/v1/docs")).status_code == 404
        # Production publishes the document with the release instead of serving it.
        assert (await client.get("/api/v1/openapi.json")).status_code == 404
    async with running(production_app(make_settings, API_DOCS_ENABLED=True)) as client:
        assert (await client.get("/api/v1/openapi.json")).status_code == 200
        assert (await client.get("/api/v1/docs")).status_code == 200


async def test_permissions_policy_can_be_widened_per_route(web: httpx.AsyncClient) -> None:
    policy = (await web.get("/api/v1/_test/call-page")).headers["permissions-policy"]
    assert "camera=(self)" in policy and "microphone=(self)" in policy and "geolocation=()" in policy


async def test_api_responses_are_not_cached(web: httpx.AsyncClient) -> None:
    assert (await web.get("/api/v1")).headers["cache-control"] == "no-store"
    assert (await web.get("/api/v1/nothing")).headers["cache-control"] == "no-store"


async def test_cors_allows_only_listed_origin_with_credentials(web: httpx.AsyncClient) -> None:
    allowed = await web.get("/api/v1", headers={"origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    for origin in ("https://evil.example", ORIGIN + ".evil.example", "null", "http://app.smilingsteps.example"):
        denied = await web.get("/api/v1", headers={"origin": origin})
        assert "access-control-allow-origin" not in denied.headers, origin
    preflight = await web.options(
        "/api/v1/_test/echo",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    assert preflight.headers["content-type"] == "application/problem+json"
    good = await web.options(
        "/api/v1/_test/echo",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-csrf-token",
        },
    )
    assert good.status_code == 204 and good.headers["access-control-allow-origin"] == ORIGIN
    assert good.headers["access-control-allow-credentials"] == "true" and good.headers["vary"] == "Origin"
    assert "POST" in good.headers["access-control-allow-methods"]
    for refused in (
        {"access-control-request-method": "TRACE"},
        {"access-control-request-method": "POST", "access-control-request-headers": "x-evil"},
    ):
        response = await web.options("/api/v1/_test/echo", headers={"origin": ORIGIN, **refused})
        assert response.status_code == 403 and "access-control-allow-origin" not in response.headers
    assert allowed.headers["vary"] == "Origin"


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("abc-123_DEF.4:5", True), ("x" * 129, False), ("bad id", False), ("evil\r\nX-Injected: 1", False), ("", False)],
)
async def test_request_id_echoed_only_when_well_formed(web: httpx.AsyncClient, incoming: str, kept: bool) -> None:
    headers = {"x-request-id": incoming} if "\r" not in incoming else {}
    response = await web.get("/health", headers=headers)
    echoed = response.headers["x-request-id"]
    assert (echoed == incoming) is kept
    assert len(echoed) <= 128 and echoed.isprintable()


async def test_request_id_is_bound_to_log_lines(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    seen: dict[str, Any] = {}

    @app.get("/api/v1/_test/context")
    async def context(request: Request) -> dict[str, str]:
        seen.update(log_context())
        return {}

    async with running(app) as client:
        response = await client.get("/api/v1/_test/context", headers={"x-request-id": "trace-1"})
    assert response.headers["x-request-id"] == "trace-1" and seen["request_id"] == "trace-1"


async def test_forwarded_for_trusted_only_from_configured_proxies(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(TRUSTED_PROXIES="10.0.0.0/8"))
    seen: list[str] = []

    @app.get("/api/v1/_test/ip")
    async def ip(request: Request) -> dict[str, str]:
        assert request.client is not None
        seen.append(request.client.host)
        return {}

    forwarded = {"x-forwarded-for": "6.6.6.6, 203.0.113.9, 10.1.1.1"}
    async with running(app, client_addr=("10.0.0.5", 1234)) as via_proxy:
        await via_proxy.get("/api/v1/_test/ip", headers=forwarded)
        await via_proxy.get("/api/v1/_test/ip", headers={"x-forwarded-for": "not-an-ip"})
    async with running(app, client_addr=("198.51.100.7", 1234)) as direct:
        await direct.get("/api/v1/_test/ip", headers=forwarded)
    # The right-most untrusted hop, never the forged left end; a garbled chain and an
    # untrusted peer both leave the real peer address.
    assert seen == ["203.0.113.9", "10.0.0.5", "198.51.100.7"]


async def test_openapi_lives_under_api_v1(web: httpx.AsyncClient) -> None:
    document = (await web.get("/api/v1/openapi.json")).json()
    assert document["info"]["title"] == "Smiling Steps"
    assert "/health" in document["paths"] and "/api/v1/_test/old" in document["paths"]
    assert document["paths"]["/api/v1/_test/old"]["get"]["deprecated"] is True


async def test_deprecated_route_announces_sunset_and_successor(web: httpx.AsyncClient) -> None:
    response = await web.get("/api/v1/_test/old")
    assert response.status_code == 200
    assert response.headers["deprecation"] == "@1767225600"
    assert response.headers["sunset"] == "Fri, 01 Jan 2027 00:00:00 GMT"
    assert response.headers["link"] == '</api/v2/_test/new>; rel="successor-version"'
    assert "deprecation" not in (await web.get("/api/v1")).headers


async def test_route_past_its_sunset_is_gone(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())

    @app.get(
        "/api/v1/_test/retired",
        dependencies=[
            deprecated(
                deprecated_at=datetime(2025, 1, 1, tzinfo=UTC),
                sunset_at=datetime(2026, 1, 1, tzinfo=UTC),
                successor="/api/v2/_test/new",
            )
        ],
    )
    async def retired() -> dict[str, str]:
        return {}

    async with running(app) as client:
        response = await client.get("/api/v1/_test/retired")
    assert response.status_code == 410
    assert response.json()["type"] == "/problems/gone"
    assert response.headers["link"] == '</api/v2/_test/new>; rel="successor-version"'


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\u0000b"}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"name": "bidi \u202e trick"}, "name"),
        ({"name": "ok", "tags": ["fine", "tab\there"]}, "tags"),
        ({"name": "ok", "note": "bell \u0007"}, "note"),
    ],
)
async def test_control_characters_are_refused(web: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    response = await web.post("/api/v1/_test/echo", json=body)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_lone_surrogate_is_refused_not_a_500(web: httpx.AsyncClient) -> None:
    response = await web.post(
        "/api/v1/_test/echo", content=b'{"name": "\\ud800"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_text_is_nfc_normalised_and_multiline_allowed_where_declared(web: httpx.AsyncClient) -> None:
    decomposed = "Nai\u0308robi"  # i + combining diaeresis
    response = await web.post("/api/v1/_test/echo", json={"name": decomposed, "note": "one\r\ntwo\tthree"})
    assert response.status_code == 200
    assert response.json()["name"] == "Na\u00efrobi"
    assert response.json()["note"] == "one\ntwo\tthree"


async def test_unknown_fields_and_overlong_strings_are_refused(web: httpx.AsyncClient) -> None:
    response = await web.post("/api/v1/_test/echo", json={"name": "ok", "role": "admin"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "role"
    response = await web.post("/api/v1/_test/echo", json={"name": "ok", "note": "n" * 10_001})
    assert response.status_code in (413, 422)


async def test_body_at_the_limit_is_accepted(make_settings: SettingsFactory) -> None:
    app = add_test_routes(create_app(make_settings(MAX_REQUEST_BODY_BYTES=4096)))
    body = b'{"name": "ok", "note": "' + b"n" * (4096 - 26) + b'"}'
    assert len(body) == 4096
    async with running(app) as client:
        response = await client.post("/api/v1/_test/echo", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200


async def test_access_log_names_the_full_route_template_never_the_raw_path(web: httpx.AsyncClient) -> None:
    from smilingsteps.platform.logging import captured_events

    session_id = "4c7e0a4e-6d0f-4f55-9a61-4c1f1c0bb6b1"
    with captured_events() as events:
        await web.get("/api/v1/users/me")
        await web.delete(f"/api/v1/auth/sessions/{session_id}")
        await web.get("/api/v1/nowhere")
    routes = [e["route"] for e in events if e.get("event") == "request"]
    assert routes == ["/api/v1/users/me", "/api/v1/auth/sessions/{session_id}", "<unmatched>"]
