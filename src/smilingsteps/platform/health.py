"""Liveness (`/health`) and readiness (`/health/ready`).

Liveness never touches a dependency: a live process with a dead database is
still alive (restarting it would not help). Readiness checks each dependency
for real and answers 503 while any required one is down or the process drains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from smilingsteps import __version__
from smilingsteps.platform.ratelimit.redis_backend import BackendError
from smilingsteps.platform.runtime import runtime_of

_process = psutil.Process()


# Whether the caller may see the details (version, uptime, memory, latencies): operators only.
OperatorCheck = Callable[[Request], bool]


def install(app: FastAPI, *, operator: OperatorCheck) -> None:
    """Health routes go directly on the app, not through an included router:
    probes call them constantly, and an included router adds a level of
    matching to every request.

    Anyone gets the status (and readiness its status code); the details go to `operator`s
    (loopback, the metrics token, or a signed-in administrator), so an anonymous caller
    learns nothing about the version, the environment or the dependencies."""

    async def health(request: Request) -> dict[str, Any]:
        return liveness(request, details=operator(request))

    async def ready(request: Request) -> JSONResponse:
        return await readiness(request, details=operator(request))

    app.add_api_route("/health", health, methods=["GET"], tags=["health"], summary="Liveness: the process is up")
    app.add_api_route(
        "/health/ready",
        ready,
        methods=["GET"],
        tags=["health"],
        summary="Readiness: dependencies answer and the process is not draining",
        response_class=JSONResponse,
    )


def liveness(request: Request, *, details: bool) -> dict[str, Any]:
    runtime = runtime_of(request)
    if not details:
        return {"status": "draining" if runtime.draining else "ok"}
    status = runtime.db.status
    return {
        "status": "draining" if runtime.draining else "ok",
        "version": __version__,
        "environment": runtime.settings.APP_ENV.value,
        "uptime_seconds": round(time.monotonic() - runtime.started_monotonic, 1),
        "memory": {"rss_bytes": _process.memory_info().rss},
        "database": {
            "status": "up" if status.available else "down",
            "backend": runtime.db.backend,
            "latency_ms": status.latency_ms,
            "checked_at": status.checked_at,
        },
    }


async def readiness(request: Request, *, details: bool) -> JSONResponse:
    runtime = runtime_of(request)
    checks: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        latency = await runtime.db.ping()
        checks["database"] = {"status": "up", "required": True, "latency_ms": latency}
    except Exception as exc:
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        checks["database"] = {"status": "down", "required": True, "latency_ms": elapsed, "error": type(exc).__name__}
    limiter = runtime.limiter
    if limiter.redis is not None:
        try:
            checks["redis"] = {"status": "up", "required": False, "latency_ms": await limiter.redis.ping()}
        except BackendError as exc:
            checks["redis"] = {"status": "down", "required": False, "error": str(exc)}
    checks["rate_limiter"] = {
        "status": "degraded" if limiter.degraded else "up",
        "required": False,
        "backend": limiter.backend,
    }
    required_down = [name for name, check in checks.items() if check["required"] and check["status"] != "up"]
    if runtime.draining:
        status = "draining"
    elif required_down:
        status = "not_ready"
    else:
        status = "ready"
    code = 200 if status == "ready" else 503
    headers = {"Retry-After": str(runtime.db.retry_after)} if code == 503 else None
    body: dict[str, Any] = {"status": status, "checks": checks} if details else {"status": status}
    return JSONResponse(body, status_code=code, headers=headers)
