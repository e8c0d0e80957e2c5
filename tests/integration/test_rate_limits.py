"""Rate limits on the memory and Redis backends: exact counts, headers,
sliding, concurrency, keys, classes, WebSockets, and Redis failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request, WebSocket
from starlette.types import Receive, Scope, Send

from smilingsteps.app import create_app
from smilingsteps.platform.logging import captured_events
from smilingsteps.platform.ratelimit.limiter import RateLimiter
from smilingsteps.platform.ratelimit.middleware import PolicyResolver, RateLimitMiddleware, api_routes
from smilingsteps.platform.ratelimit.policies import build_policies, rate_limited
from smilingsteps.platform.runtime import Runtime
from tests.conftest import SettingsFactory, running
from tests.support.asgi_ws import websocket_handshake
from tests.support.clock import FakeClock
from tests.support.postgres import free_port
from tests.support.processes import start_server, stop_server, wait_for_line
from tests.support.redis_server import RedisServer

# The class of every production /api/v1 route. A new route must be added here
# with the class it should have: an auth or payment route left as "api" by
# mistake fails this test.
EXPECTED_CLASSES: dict[str, str] = {
    "GET /api/v1": "api",
    "GET /api/v1/openapi.json": "api",
    "GET /api/v1/docs": "api",
    "GET /api/v1/docs/assets/{name}": "api",
    # Anything that sends an email is "email" (also counted per recipient).
    "POST /api/v1/auth/register": "email",
    "POST /api/v1/auth/verify-email/resend": "email",
    "POST /api/v1/auth/password-reset/request": "email",
    # Anything that checks a password, a code or an emailed token is "auth" (failures count).
    "POST /api/v1/auth/login": "auth",
    "POST /api/v1/auth/login/mfa": "auth",
    "POST /api/v1/auth/verify-email": "auth",
    "POST /api/v1/auth/password-reset/confirm": "auth",
    "POST /api/v1/auth/password/change": "auth",
    "POST /api/v1/auth/mfa/totp/confirm": "auth",
    "POST /api/v1/auth/mfa/disable": "auth",
    "POST /api/v1/auth/mfa/recovery-codes": "auth",
    # Refresh happens every few minutes in every open tab: the general class.
    "POST /api/v1/auth/refresh": "api",
    "POST /api/v1/auth/logout": "api",
    "GET /api/v1/auth/sessions": "api",
    "DELETE /api/v1/auth/sessions/{session_id}": "api",
    "POST /api/v1/auth/mfa/totp/setup": "api",
    "GET /api/v1/users/me": "api",
    "PATCH /api/v1/users/me": "api",
    # Pages that guess, send email or read the directory count in the API's classes.
    "GET /therapists": "api",
    "GET /therapists/{therapist_id}": "api",
    "POST /sign-up": "email",
    "POST /verify-email": "auth",
    "POST /sign-in": "auth",
    "POST /sign-in/mfa": "auth",
    "POST /reset-password": "email",
    "POST /reset-password/confirm": "auth",
    "POST /account/verify-email/resend": "email",
    "POST /account/password": "auth",
    "POST /account/mfa/confirm": "auth",
    "POST /account/mfa/recovery-codes": "auth",
    "POST /account/mfa/disable": "auth",
    "POST /admin/therapists/{user_id}/review": "admin",
    "POST /admin/users/{user_id}/status": "admin",
    "POST /admin/bookings/{booking_id}/confirm": "admin",
    "GET /api/v1/admin/users": "admin",
    "GET /api/v1/admin/users/{user_id}": "admin",
    "PATCH /api/v1/admin/users/{user_id}": "admin",
    "GET /api/v1/admin/audit-log": "admin",
    "GET /api/v1/admin/therapists/{user_id}": "admin",
    "GET /api/v1/admin/bookings": "admin",
    "GET /api/v1/therapists": "api",
    "GET /api/v1/therapists/me": "api",
    "PUT /api/v1/therapists/me": "api",
    "GET /api/v1/therapists/me/availability": "api",
    "PUT /api/v1/therapists/me/availability": "api",
    "GET /api/v1/therapists/{therapist_id}": "api",
    "GET /api/v1/therapists/{therapist_id}/slots": "api",
    "POST /api/v1/bookings": "api",
    "GET /api/v1/bookings": "api",
    "GET /api/v1/bookings/{booking_id}": "api",
    "POST /api/v1/bookings/{booking_id}/cancel": "api",
    "POST /api/v1/bookings/{booking_id}/reschedule": "api",
    "POST /api/v1/bookings/{booking_id}/outcome": "api",
    "PUT /api/v1/bookings/{booking_id}/notes": "api",
    "GET /api/v1/bookings/{booking_id}/notes": "api",
    "POST /api/v1/admin/bookings/{booking_id}/confirm": "admin",
    # Starting a payment prompts a phone: its own class, page and API alike.
    "POST /api/v1/payments/mpesa/stk-push": "payments",
    "POST /bookings/{booking_id}/pay": "payments",
    "GET /api/v1/payments/{payment_id}": "api",
    # Safaricom's callbacks come from a few addresses; the per-attempt token is the credential.
    "POST /api/v1/payments/mpesa/callback/{token}": "exempt",
    "GET /api/v1/admin/payments": "admin",
    "GET /api/v1/admin/payments/{payment_id}": "admin",
    "POST /api/v1/admin/payments/{payment_id}/refund": "admin",
    "GET /admin/payments": "admin",
    "GET /admin/payments/{payment_id}": "admin",
    "POST /admin/payments/{payment_id}/refund": "admin",
}


@pytest.fixture(params=["memory", "redis"])
def limiter_settings(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix}


def add_limited_routes(app: FastAPI) -> FastAPI:
    @app.get("/api/v1/_test/thing/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @app.post("/api/v1/_test/login", openapi_extra=rate_limited("auth"))
    async def login(request: Request, email: str) -> dict[str, str]:
        runtime: Runtime = request.app.state.runtime
        await runtime.limiter.enforce("auth", f"account:{email.lower()}")
        return {"ok": email}

    @app.post("/api/v1/_test/callback", openapi_extra=rate_limited("exempt"))
    async def callback() -> dict[str, str]:
        return {}

    @app.websocket("/api/v1/_test/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def limited(
    make_settings: SettingsFactory, limiter_settings: dict[str, Any], clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(RATE_LIMIT_API="5/1m", **limiter_settings)
    app = add_limited_routes(create_app(settings, clock=clock))
    async with running(app) as client:
        yield client


async def test_exact_count_then_429_with_headers(limited: httpx.AsyncClient) -> None:
    remaining = []
    for _ in range(5):
        response = await limited.get("/api/v1")
        assert response.status_code == 200
        assert response.headers["ratelimit-policy"] == '"api";q=5;w=60'
        assert response.headers["x-ratelimit-limit"] == "5"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    denied = await limited.get("/api/v1")
    assert denied.status_code == 429
    assert denied.headers["content-type"] == "application/problem+json"
    body = denied.json()
    assert body["type"] == "/problems/rate-limited" and body["policy"] == "api"
    assert denied.headers["retry-after"] == "12"
    assert denied.headers["ratelimit"] == '"api";r=0;t=12'
    assert int(denied.headers["retry-after"]) >= int(denied.headers["x-ratelimit-reset"])
    assert "x-request-id" in denied.headers and "content-security-policy" in denied.headers


async def test_window_slides_with_the_clock(limited: httpx.AsyncClient, clock: FakeClock) -> None:
    for _ in range(5):
        await limited.get("/api/v1")
    assert (await limited.get("/api/v1")).status_code == 429
    clock.advance(11.9)
    assert (await limited.get("/api/v1")).status_code == 429
    clock.advance(0.1)
    regained = await limited.get("/api/v1")
    assert regained.status_code == 200 and regained.headers["x-ratelimit-remaining"] == "0"
    assert (await limited.get("/api/v1")).status_code == 429
    clock.advance(60)
    assert (await limited.get("/api/v1")).headers["x-ratelimit-remaining"] == "4"


async def test_concurrent_requests_allow_exactly_the_limit(
    make_settings: SettingsFactory, limiter_settings: dict[str, Any], clock: FakeClock
) -> None:
    app = create_app(make_settings(RATE_LIMIT_API="50/1h", **limiter_settings), clock=clock)
    async with running(app) as client:
        responses = await asyncio.gather(*(client.get("/api/v1") for _ in range(200)))
    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == 50 and statuses.count(429) == 150
    remaining = sorted(int(r.headers["x-ratelimit-remaining"]) for r in responses if r.status_code == 200)
    assert remaining == list(range(50))  # each answer is exact: no two saw the same count


async def test_keys_are_per_client_and_forged_forwarded_for_changes_nothing(
    make_settings: SettingsFactory, limiter_settings: dict[str, Any], clock: FakeClock
) -> None:
    app = create_app(make_settings(RATE_LIMIT_API="2/1h", **limiter_settings), clock=clock)
    async with running(app, client_addr=("198.51.100.1", 1000)) as first:
        for forged in ("1.1.1.1", "2.2.2.2"):
            assert (await first.get("/api/v1", headers={"x-forwarded-for": forged})).status_code == 200
        assert (await first.get("/api/v1", headers={"x-forwarded-for": "3.3.3.3"})).status_code == 429
    async with running(app, client_addr=("198.51.100.2", 1000)) as second:
        assert (await second.get("/api/v1")).status_code == 200


async def test_declared_classes_and_account_keys(
    make_settings: SettingsFactory, limiter_settings: dict[str, Any], clock: FakeClock
) -> None:
    app = add_limited_routes(create_app(make_settings(RATE_LIMIT_AUTH="3/15m", **limiter_settings), clock=clock))
    statuses = []
    # Three different addresses aim at one account: the account key stops the fourth try.
    for index in range(4):
        async with running(app, client_addr=(f"203.0.113.{index}", 1000)) as client:
            response = await client.post("/api/v1/_test/login", params={"email": "Wanjiku@Example.com"})
            statuses.append(response.status_code)
            if response.status_code == 200:
                assert response.headers["ratelimit-policy"] == '"auth";q=3;w=900'
    assert statuses == [200, 200, 200, 429]
    async with running(app) as client:
        for _ in range(20):
            assert (await client.post("/api/v1/_test/callback")).status_code == 200
            assert (await client.get("/health")).status_code == 200
        assert "ratelimit" not in (await client.get("/health")).headers


async def test_path_parameters_resolve_to_their_route(make_settings: SettingsFactory, clock: FakeClock) -> None:
    app = add_limited_routes(create_app(make_settings(RATE_LIMIT_API="2/1h"), clock=clock))
    async with running(app) as client:
        assert (await client.get("/api/v1/_test/thing/1")).status_code == 200
        assert (await client.get("/api/v1/_test/thing/2")).status_code == 200
        # Unknown paths count too: a scanner cannot probe for free.
        assert (await client.get("/api/v1/_test/nothing")).status_code == 429


async def test_rejections_are_logged_with_policy_and_hashed_key(
    make_settings: SettingsFactory, clock: FakeClock
) -> None:
    app = create_app(make_settings(RATE_LIMIT_API="1/1h"), clock=clock)
    with captured_events() as events:
        async with running(app, client_addr=("192.0.2.77", 1)) as client:
            await client.get("/api/v1")
            await client.get("/api/v1")
    rejections = [event for event in events if event["event"] == "rate_limited"]
    assert len(rejections) == 1
    assert rejections[0]["level"] == "warning" and rejections[0]["policy"] == "api"
    assert len(rejections[0]["key"]) == 32 and "192.0.2.77" not in str(rejections[0])


async def test_redis_keys_are_namespaced_and_hashed(
    make_settings: SettingsFactory, redis_url: str, redis_prefix: str
) -> None:
    app = create_app(make_settings(REDIS_URL=redis_url, REDIS_KEY_PREFIX=redis_prefix))
    async with running(app, client_addr=("192.0.2.55", 1)) as client:
        await client.get("/api/v1")
    direct = aioredis.Redis.from_url(redis_url)
    keys = [key.decode() async for key in direct.scan_iter(match=f"{redis_prefix}:*")]
    await direct.aclose()
    assert len(keys) == 1 and keys[0].startswith(f"{redis_prefix}:rl:api:")
    assert "192.0.2.55" not in keys[0]


@pytest.mark.parametrize("http_denial", [False, True])
async def test_websocket_handshakes_are_limited(make_settings: SettingsFactory, http_denial: bool) -> None:
    app = add_limited_routes(create_app(make_settings(RATE_LIMIT_API="2/1h")))
    async with running(app):
        for _ in range(2):
            accepted = await websocket_handshake(app, "/api/v1/_test/ws", http_denial=http_denial)
            assert [m["type"] for m in accepted] == ["websocket.accept", "websocket.send", "websocket.close"]
        refused = await websocket_handshake(app, "/api/v1/_test/ws", http_denial=http_denial)
    if http_denial:
        assert refused[0]["type"] == "websocket.http.response.start" and refused[0]["status"] == 429
        assert (b"retry-after", b"1800") in refused[0]["headers"]
    else:
        assert refused == [{"type": "websocket.close", "code": 1008, "reason": "rate limited"}]


def test_every_api_route_has_its_intended_class(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    found = {f"{method} {path}": policy for method, path, policy in api_routes(app.routes) if method != "HEAD"}
    assert found == EXPECTED_CLASSES
    assert PolicyResolver(app.routes).policy_for({"type": "http", "path": "/health", "method": "GET"}) is None


async def test_classes_declared_in_included_routers_apply(make_settings: SettingsFactory, clock: FakeClock) -> None:
    app = create_app(make_settings(RATE_LIMIT_UPLOADS="1/1h"), clock=clock)
    router = APIRouter(prefix="/api/v1/_test/files")

    @router.post("/{owner}/upload", openapi_extra=rate_limited("uploads"))
    async def upload(owner: str) -> dict[str, str]:
        return {"owner": owner}

    app.include_router(router)
    async with running(app) as client:
        first = await client.post("/api/v1/_test/files/me/upload")
        assert first.status_code == 200 and first.headers["ratelimit-policy"] == '"uploads";q=1;w=3600'
        assert (await client.post("/api/v1/_test/files/you/upload")).status_code == 429
        assert (await client.get("/api/v1")).status_code == 200


async def test_redis_outage_falls_back_to_memory_and_recovers(make_settings: SettingsFactory) -> None:
    server = RedisServer()
    server.start()
    try:
        app = create_app(make_settings(REDIS_URL=server.url, RATE_LIMIT_API="3/1h"))
        async with running(app) as client:
            runtime: Runtime = app.state.runtime
            runtime.limiter.probe_interval_s = 0  # probe Redis on every check
            assert (await client.get("/api/v1")).status_code == 200
            assert runtime.limiter.backend == "redis"

            server.stop()
            outage = [await client.get("/api/v1") for _ in range(4)]
            assert [r.status_code for r in outage] == [200, 200, 200, 429]  # memory counts afresh: still limited
            assert runtime.limiter.degraded and runtime.limiter.fallbacks == 1
            ready = await client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"]["rate_limiter"]["status"] == "degraded"
            assert ready.json()["checks"]["redis"]["status"] == "down"
            metrics = (await client.get("/metrics")).text
            assert "smilingsteps_rate_limit_degraded 1.0" in metrics
            assert "smilingsteps_rate_limit_fallbacks_total 1.0" in metrics

            server.start()
            back = await client.get("/api/v1")
            assert back.status_code == 200 and runtime.limiter.backend == "redis"
            assert (await client.get("/health/ready")).json()["checks"]["rate_limiter"]["status"] == "up"
    finally:
        server.close()


async def test_stalled_redis_costs_at_most_the_timeout(make_settings: SettingsFactory) -> None:
    server = RedisServer()
    server.start()
    try:
        app = create_app(make_settings(REDIS_URL=server.url, RATE_LIMIT_REDIS_TIMEOUT_MS=50))
        async with running(app) as client:
            assert (await client.get("/api/v1")).status_code == 200
            server.stall()
            async with asyncio.timeout(5):  # a guard against hanging, not a speed assertion
                stalled = await client.get("/api/v1")
            assert stalled.status_code == 200
            assert app.state.runtime.limiter.degraded
            server.resume()
    finally:
        server.close()


async def test_two_instances_sharing_redis_allow_exactly_the_limit_in_total(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    env = {
        "APP_ENV": "test",
        "SECRET_KEY": "s" * 48,
        "LOG_FORMAT": "json",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "RATE_LIMIT_API": "20/1h",
        # Generous: this test is about one shared count, not about slow-Redis fallback
        # (which it would otherwise hit when the machine is busy and counts per instance).
        "RATE_LIMIT_REDIS_TIMEOUT_MS": "2000",
        "SHUTDOWN_READINESS_DELAY": "0",
    }
    ports = [free_port(), free_port()]
    servers = []
    try:
        for index, port in enumerate(ports):
            home = tmp_path / f"instance{index}"
            home.mkdir()
            server = start_server(home, port, DATABASE_URL=f"sqlite+aiosqlite:///{home / 'db.sqlite'}", **env)
            servers.append(server)
            await asyncio.to_thread(wait_for_line, server, "Application startup complete", [])
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(client.get(f"http://127.0.0.1:{ports[i % 2]}/api/v1") for i in range(60))
            )
    finally:
        codes = [stop_server(server) for server in servers]
    statuses = [response.status_code for response in responses]
    # Each instance alone would allow 20 (40 in total): exactly 20 means one shared count.
    assert statuses.count(200) == 20 and statuses.count(429) == 40
    assert codes == [0, 0]


async def test_authenticated_requests_are_keyed_by_user_not_address(clock: FakeClock) -> None:
    """The `identify` hook (accounts supply it) makes the user the key: one user on two
    addresses shares a quota, two users on one address do not."""
    limiter = RateLimiter(build_policies({"api": "2/1h"}), clock=clock)

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def identify(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-test-user":
                return value.decode()
        return None

    app = RateLimitMiddleware(endpoint, limiter=limiter, routes=lambda: [], identify=identify)

    async def get(address: str, user: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(address, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/api/v1/x", headers={"x-test-user": user})).status_code

    assert [await get("198.51.100.1", "amina"), await get("198.51.100.2", "amina")] == [200, 200]
    assert await get("198.51.100.3", "amina") == 429
    assert await get("198.51.100.1", "baraka") == 200
