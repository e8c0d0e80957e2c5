"""One error model and one place that renders it (RFC 9457 problem details).

Services raise an `AppError` subclass; they never build response bodies. The
handlers below turn those, framework errors and anything unexpected into
`application/problem+json` with a stable `type`, the `request_id` and, for
validation failures, field `errors`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import structlog
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smilingsteps.platform.context import request_id_of

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "/problems/"

log = structlog.get_logger("smilingsteps.errors")


class AppError(Exception):
    """Base of every error a client may see; subclasses fix status, type and title."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    default_detail: ClassVar[str] = "Something went wrong on our side. It has been logged; please try again."

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(self.detail)

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_TYPE_BASE + cls.slug


class BadRequestError(AppError):
    status, slug, title = 400, "bad-request", "Bad request"
    default_detail = "The request could not be understood."


class MalformedJsonError(BadRequestError):
    slug, title = "malformed-json", "Malformed JSON"
    default_detail = "The request body is not valid JSON."


class UnauthorizedError(AppError):
    status, slug, title = 401, "unauthorized", "Authentication required"
    default_detail = "Sign in to continue."


class ForbiddenError(AppError):
    status, slug, title = 403, "forbidden", "Forbidden"
    default_detail = "You are not allowed to do this."


class NotFoundError(AppError):
    status, slug, title = 404, "not-found", "Not found"
    default_detail = "There is nothing here."


class MethodNotAllowedError(AppError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"
    default_detail = "This method is not allowed on this resource."


class ConflictError(AppError):
    status, slug, title = 409, "conflict", "Conflict"
    default_detail = "The request conflicts with the current state."


class GoneError(AppError):
    status, slug, title = 410, "gone", "Gone"
    default_detail = "This resource is no longer available."


class PayloadTooLargeError(AppError):
    status, slug, title = 413, "payload-too-large", "Payload too large"
    default_detail = "The request body is larger than allowed."


class UnsupportedMediaTypeError(AppError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"
    default_detail = "Send the body as application/json."


class ValidationFailedError(AppError):
    status, slug, title = 422, "validation-error", "Invalid request"
    default_detail = "Some fields are invalid; see errors."


class RateLimitedError(AppError):
    status, slug, title = 429, "rate-limited", "Too many requests"
    default_detail = "Too many requests; wait before trying again."


class ServiceUnavailableError(AppError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"
    default_detail = "The service is temporarily unavailable; try again shortly."

    def __init__(self, detail: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class ServerBusyError(ServiceUnavailableError):
    slug, title = "server-busy", "Server busy"
    default_detail = "The server is busy; try again in a moment."


class DatabaseUnavailableError(ServiceUnavailableError):
    slug = "database-unavailable"
    default_detail = "The database is temporarily unreachable; try again shortly."


class InternalError(AppError):
    """An unexpected failure; its detail never carries internals."""


_BY_STATUS: dict[int, type[AppError]] = {
    cls.status: cls
    for cls in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MethodNotAllowedError,
        ConflictError,
        GoneError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        ValidationFailedError,
        RateLimitedError,
        ServiceUnavailableError,
    )
}


def problem_body(error: AppError, *, request_id: str | None, instance: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": error.type_uri(),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance is not None:
        body["instance"] = instance
    if request_id is not None:
        body["request_id"] = request_id
    if error.errors is not None:
        body["errors"] = error.errors
    body.update(error.extra)
    return body


# Renders an error as an HTML page for a browser; the web domain installs one on the runtime
# (`Runtime.error_page`). Looked up through the app, so the platform never imports a domain.
ErrorPage = Callable[[AppError, Scope], Response]
_NOT_PAGES = ("/api/", "/health", "/metrics", "/static/")


def wants_html(scope: Scope) -> bool:
    """A browser asking for a page: Accept names text/html, outside the API and the operator endpoints."""
    path: str = scope.get("path", "")
    if path.startswith(_NOT_PAGES) or path == "/api":
        return False
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return b"text/html" in value
    return False


def _error_page_of(scope: Scope) -> ErrorPage | None:
    state = getattr(scope.get("app"), "state", None)
    page = getattr(getattr(state, "runtime", None), "error_page", None)
    return page if callable(page) else None


def problem_response(error: AppError, scope: Scope) -> Response:
    """The one renderer: an AppError as problem+json, or as a friendly page when a browser asks for one."""
    if wants_html(scope) and (page := _error_page_of(scope)) is not None:
        try:
            return page(error, scope)
        except Exception:
            # The page itself failed (a template bug): the problem document still answers.
            log.exception("error_page_failed", status=error.status)
    return problem_document(error, scope)


def problem_document(error: AppError, scope: Scope) -> Response:
    """An AppError as application/problem+json."""
    body = problem_body(error, request_id=request_id_of(scope), instance=scope.get("path"))
    return Response(
        content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=error.headers,
    )


def from_http_exception(exc: StarletteHTTPException) -> AppError:
    cls = _BY_STATUS.get(exc.status_code)
    if cls is None:
        cls = InternalError if exc.status_code >= 500 else BadRequestError
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail and exc.status_code < 500 else None
    if detail is not None and detail.lower() == cls.title.lower():
        detail = None  # Starlette's default detail only repeats the title.
    error = cls(detail)
    error.headers.update(exc.headers or {})
    return error


def from_validation_error(exc: RequestValidationError) -> AppError:
    raw = exc.errors()
    if any(item.get("type") == "json_invalid" for item in raw):
        return MalformedJsonError()
    return ValidationFailedError(errors=[_field_error(item) for item in raw])


def _field_error(item: Mapping[str, Any]) -> dict[str, str]:
    location = [str(part) for part in item.get("loc", ())]
    where = location[0] if location else "body"
    field = ".".join(location[1:]) or where
    message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
    return {"field": field, "location": where, "message": message}


async def handle_app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if exc.status >= 500:
        log.warning("request_failed", problem=exc.slug, status=exc.status)
    return problem_response(exc, request.scope)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error = from_http_exception(exc)
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; a path has a route per method.
        error.headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(error, request.scope)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path."""
    probe = {**request.scope, "method": "\x00"}  # no route serves it: a path match is PARTIAL
    methods: set[str] = set()
    for route in getattr(request.app, "routes", ()):
        match, _ = route.matches(probe)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(from_validation_error(exc), request.scope)


EXCEPTION_HANDLERS = {
    AppError: handle_app_error,
    StarletteHTTPException: handle_http_exception,
    RequestValidationError: handle_validation_error,
}


class ErrorHandlerMiddleware:
    """Innermost middleware: the last catch for anything the handlers did not take.

    Starlette renders unhandled exceptions in its outermost ServerErrorMiddleware,
    outside every user middleware, so those 500s would lose the security headers
    and request id. Catching here keeps them inside the stack.
    """

    def __init__(self, app: ASGIApp, *, classify: Callable[[BaseException], AppError | None] | None = None) -> None:
        self.app = app
        self.classify = classify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            error = self.classify(exc) if self.classify is not None else None
            if error is None:
                log.exception("unhandled_exception", method=scope.get("method"), path=scope.get("path"))
                error = InternalError()
            if started:
                # Headers are out; the only honest thing left is to drop the connection.
                raise
            await problem_response(error, scope)(scope, receive, send)
