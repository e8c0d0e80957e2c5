"""The OpenAPI document, made to tell the truth about what the API answers.

FastAPI documents a route's success and a 422 in its own shape. Every /api/v1
operation can also answer with a problem (RFC 9457, `application/problem+json`):
this adds to each operation the problems it can answer — from what the route is
(a JSON body: 400, 413, 415, 422; path or query parameters: 422; path parameters: 404;
signed in: 401, 403; rate limited: 429; every operation: 503 while the database is
unreachable) and from what it declares itself (`problems(409)` in its `responses`) —
replaces FastAPI's 422 schema with ours, and describes how to authenticate: a bearer
access token, or the session cookie (with the CSRF header on unsafe methods).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from smilingsteps.platform.errors import PROBLEM_MEDIA_TYPE
from smilingsteps.platform.ratelimit.policies import EXEMPT, POLICY_KEY
from smilingsteps.platform.versioning import API_PREFIX

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_DESCRIPTIONS = {
    400: "Malformed JSON, or a token or link that is invalid or expired (`type` says which).",
    401: "Not signed in, or the access token is invalid, expired or revoked.",
    403: "Signed in but not allowed: a missing CSRF token or Origin, the wrong role, no second factor.",
    404: "No such resource, or one that belongs to someone else.",
    409: "Conflicts with the current state (`type` says which).",
    410: "No longer available.",
    413: "The body is larger than MAX_REQUEST_BODY_BYTES.",
    415: "The body is not application/json.",
    422: "Invalid input: `errors` lists each field (`field`, `location`, `message`).",
    429: "Over the rate limit (`policy` names the class); retry after `Retry-After` seconds.",
    503: "A dependency (the database) is unavailable; retry after `Retry-After` seconds.",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `type` is stable, `detail` is for people.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable URI reference, e.g. /problems/slot-taken"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "location", "message"],
                "properties": {
                    "field": {"type": "string"},
                    "location": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        "policy": {"type": "string", "description": "The rate-limit class, on 429"},
    },
    "additionalProperties": True,
}

_SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The access token from POST /auth/login with `client: native`.",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "ss_access",
        "description": "Browsers: the access cookie set at sign-in (`__Host-ss_access` over HTTPS).",
    },
    "csrfHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": "With the cookie, on unsafe methods: the value of the CSRF cookie.",
    },
}

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """For a route's `responses=`: the problems only it knows it can answer (a 409, a 400…)."""
    return {status: _problem(status) for status in statuses}


def _problem(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS.get(status, "A problem"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in (429, 503):
        response["headers"] = dict(_RETRY_AFTER)
    return response


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and (context.path or "").startswith(API_PREFIX):
            yield context.path or route.path, route


def build_openapi(app: FastAPI, *, authenticating: Iterable[Callable[..., Any]]) -> dict[str, Any]:
    """The document for `app`; a route is "signed in" when it depends on one of `authenticating`."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
    gates = set(authenticating)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = _SECURITY_SCHEMES
    for path, route in _api_routes(app):
        secured = any(call in gates for call in _calls(route.dependant))
        for method in route.methods or ():
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is not None:
                _complete(operation, route, method, secured=secured)
    app.openapi_schema = document
    return document


def _complete(operation: dict[str, Any], route: APIRoute, method: str, *, secured: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    statuses = {503}
    has_body = "requestBody" in operation
    if has_body:
        statuses |= {400, 413, 415, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if any(parameter.get("in") == "path" for parameter in operation.get("parameters", ())):
        statuses.add(404)
    if secured:
        statuses |= {401, 403}
        operation["security"] = [{"bearerAuth": []}, _cookie_security(method)]
    if (route.openapi_extra or {}).get(POLICY_KEY) != EXEMPT:
        statuses.add(429)
    for status in sorted(statuses):
        responses.setdefault(str(status), _problem(status))


def _cookie_security(method: str) -> dict[str, list[str]]:
    return {"sessionCookie": [], "csrfHeader": []} if method in UNSAFE else {"sessionCookie": []}
