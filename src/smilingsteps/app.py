"""create_app(settings): the one place that wires the platform together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.types import Scope

from smilingsteps import __version__
from smilingsteps import domains as registry
from smilingsteps.accounts.auth import current_user, is_admin_request, rate_limit_identity
from smilingsteps.accounts.security import AuthKit, auth_kit_of
from smilingsteps.config import Settings
from smilingsteps.platform import docs, health, metrics
from smilingsteps.platform.access_log import AccessLogMiddleware
from smilingsteps.platform.body_limit import BodyLimitMiddleware
from smilingsteps.platform.clock import Clock, system_clock
from smilingsteps.platform.context import request_id_of
from smilingsteps.platform.cors import CorsMiddleware
from smilingsteps.platform.db import Database
from smilingsteps.platform.errors import (
    EXCEPTION_HANDLERS,
    AppError,
    ErrorHandlerMiddleware,
    InternalError,
    problem_response,
)
from smilingsteps.platform.jobs import JobRunner
from smilingsteps.platform.logging import log_unhandled_loop_exception
from smilingsteps.platform.openapi import build_openapi
from smilingsteps.platform.proxy import TrustedProxyMiddleware
from smilingsteps.platform.ratelimit.limiter import RateLimiter
from smilingsteps.platform.ratelimit.middleware import RateLimitMiddleware
from smilingsteps.platform.ratelimit.policies import build_policies
from smilingsteps.platform.ratelimit.redis_backend import RedisBackend
from smilingsteps.platform.request_id import RequestIdMiddleware
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.platform.runtime import Runtime, build_encryptor
from smilingsteps.platform.security_headers import SecurityHeadersMiddleware
from smilingsteps.platform.versioning import API_PREFIX

log = structlog.get_logger("smilingsteps.app")
EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy", "Deprecation", "Sunset", "Link"]


def build_api_router() -> APIRouter:
    """Every /api/v1 route: each registered domain's router, in registry order."""
    api = APIRouter(prefix=API_PREFIX, route_class=ApiRoute)
    for router in registry.api_routers():
        api.include_router(router)

    @api.get("", summary="API index", tags=["meta"])
    async def api_index() -> dict[str, Any]:
        return {"name": "Smiling Steps API", "version": "v1", "openapi": f"{API_PREFIX}/openapi.json"}

    return api


def build_limiter(settings: Settings, clock: Clock | None = None) -> RateLimiter:
    redis = None
    if settings.REDIS_URL is not None:
        redis = RedisBackend(
            settings.REDIS_URL.get_secret_value(), timeout_s=settings.RATE_LIMIT_REDIS_TIMEOUT_MS / 1000
        )
    return RateLimiter(
        build_policies(settings.rate_limits),
        redis=redis,
        prefix=settings.REDIS_KEY_PREFIX,
        clock=clock,
        instances=settings.RATE_LIMIT_INSTANCES,
        enabled=settings.RATE_LIMITS_ENABLED,
    )


def build_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    """The app's state: nothing connects until the lifespan starts."""
    return Runtime(
        settings=settings,
        db=Database(settings),
        limiter=build_limiter(settings, clock),
        encryptor=build_encryptor(settings),
        clock=clock or system_clock,
    )


def _lifespan(runtime: Runtime) -> Any:
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_exception_handler(log_unhandled_loop_exception(log.error))
        runtime.mark_started()
        # One quick attempt inline so a healthy start is ready at once; the
        # monitor keeps retrying in the background when the database is down.
        await runtime.db.connect_with_retry(max_retries=0)
        runtime.tasks.spawn(runtime.db.monitor(), name="database-monitor")
        for part in runtime.parts.values():
            await part.start(runtime)
        # Development runs the periodic jobs here; deployments run `smilingsteps worker`.
        if settings.jobs_in_process:
            jobs = registry.periodic_jobs(settings, runtime.db, runtime.clock)
            runtime.jobs = JobRunner(jobs, grace_s=settings.SMTP_TIMEOUT + 5)
            runtime.jobs.start(runtime.tasks)
        log.info("app_started", version=__version__, environment=settings.APP_ENV.value, database=runtime.db.backend)
        try:
            yield
        finally:
            runtime.start_draining()
            if runtime.jobs is not None:
                await runtime.jobs.stop()
                runtime.jobs = None
            await runtime.tasks.cancel_all()
            for part in runtime.parts.values():
                await part.stop()
            await runtime.db.dispose()
            await runtime.limiter.close()
            log.info("app_stopped")

    return lifespan


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The whole application for `settings`; `clock` (epoch seconds) drives expiry and rate limits in tests."""
    runtime = build_runtime(settings, clock)
    registry.install_parts(runtime)
    auth = auth_kit_of(runtime)
    app = FastAPI(
        title="Smiling Steps",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json" if settings.docs_enabled else None,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(runtime),
        exception_handlers=dict(EXCEPTION_HANDLERS),  # type: ignore[arg-type]
    )
    app.state.runtime = runtime
    app.openapi = lambda: build_openapi(app, authenticating=[current_user])  # type: ignore[method-assign]
    health.install(app, operator=_operator_check(auth))
    metrics.install(app)
    app.include_router(build_api_router())
    for pages in registry.page_routers():
        app.include_router(pages)
    if settings.docs_enabled:
        docs.install(app, openapi_url=f"{API_PREFIX}/openapi.json", title="Smiling Steps API")

    security = SecurityHeadersMiddleware(app.router, production=settings.is_production)

    def classify(exc: BaseException) -> AppError | None:
        return runtime.db.classify(exc)

    async def last_resort(request: Request, exc: Exception) -> Response:
        # Reached only if a middleware itself fails; it still answers in our format.
        log.error("middleware_failure", exc_info=exc)
        response = problem_response(InternalError(), request.scope)
        _apply_headers(response, security, request.scope)
        return response

    app.add_exception_handler(Exception, last_resort)
    # Added innermost first: the last one added is the outermost.
    app.add_middleware(ErrorHandlerMiddleware, classify=classify)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.MAX_REQUEST_BODY_BYTES)
    if settings.RATE_LIMITS_ENABLED:
        app.add_middleware(
            RateLimitMiddleware,
            limiter=runtime.limiter,
            routes=lambda: app.routes,
            identify=rate_limit_identity(auth, runtime.now),
        )
    app.add_middleware(
        CorsMiddleware,
        origins=settings.origins,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        headers=["Authorization", "Content-Type", "X-CSRF-Token", "X-Request-ID"],
        expose=EXPOSED_HEADERS,
        max_age=600,
    )
    app.add_middleware(SecurityHeadersMiddleware, production=settings.is_production)
    app.add_middleware(AccessLogMiddleware)
    if settings.TRUSTED_PROXIES:
        app.add_middleware(TrustedProxyMiddleware, trusted=settings.TRUSTED_PROXIES)
    app.add_middleware(RequestIdMiddleware)
    return app


def _operator_check(auth: AuthKit) -> health.OperatorCheck:
    """Who sees /health's details: loopback, the metrics token, or a signed-in administrator."""

    def operator(request: Request) -> bool:
        return (
            metrics.loopback_client(request)
            or metrics.presents_metrics_token(request)
            or is_admin_request(request, auth)
        )

    return operator


def _apply_headers(response: Response, security: SecurityHeadersMiddleware, scope: Scope) -> None:
    response.raw_headers[:] = security.secure(response.raw_headers, is_api=scope["path"].startswith("/api/"))
    request_id = request_id_of(scope)
    if request_id:
        response.headers["X-Request-ID"] = request_id
