"""Pure ASGI rate limiting for HTTP requests and WebSocket handshakes.

The route's class comes from its declaration (`rate_limited(...)` in
`openapi_extra`; `api` when none), resolved once per route table. The key is
the authenticated user when `identify` names one, else the client address
(after trusted-proxy resolution).

Every request is counted before it runs, so a burst of parallel attempts cannot
overspend a quota. In a class that counts failures only (auth), a request that
succeeds is given back before its headers are sent, and the headers say what is
left after the refund.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smilingsteps.platform.context import client_ip_of, set_route_template
from smilingsteps.platform.errors import problem_response
from smilingsteps.platform.ratelimit.limiter import RateLimiter, Verdict, rate_limit_headers
from smilingsteps.platform.ratelimit.policies import DEFAULT_POLICY, EXEMPT, POLICY_KEY
from smilingsteps.platform.versioning import API_PREFIX

Identify = Callable[[Scope], str | None]
WS_POLICY_VIOLATION = 1008


def declared_policy(route: object) -> str:
    extra: Any = getattr(route, "openapi_extra", None)
    if isinstance(extra, dict) and isinstance(extra.get(POLICY_KEY), str):
        return str(extra[POLICY_KEY])
    return DEFAULT_POLICY


def _declares_policy(route: object) -> bool:
    extra: Any = getattr(route, "openapi_extra", None)
    return isinstance(extra, dict) and POLICY_KEY in extra


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, str, str]]:
    """(method, effective path, policy) of every limited route, included routers flattened: every API
    route, and the pages that declare a class (a sign-in form guesses passwords as the API does)."""
    for context in iter_route_contexts(routes):
        path = context.path or ""
        if not path.startswith(API_PREFIX) and not _declares_policy(context.original_route):
            continue
        policy = declared_policy(context.original_route)
        for method in context.methods or {"WS"}:
            yield method, path, policy


class PolicyResolver:
    """Which policy a request falls under (None when it is not limited), and its route template."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.size = len(routes)
        self._static: dict[tuple[str, str], str] = {}
        # Dynamic paths, the API's and the pages' apart: a page or /health never scans the API's patterns.
        self._dynamic: dict[bool, list[tuple[str, re.Pattern[str], str, str]]] = {True: [], False: []}
        for method, path, policy in api_routes(routes):
            if "{" in path:
                entry = (method, compile_path(path)[0], policy, path)
                self._dynamic[path.startswith(API_PREFIX)].append(entry)
            else:
                self._static[(method, path)] = policy

    def policy_for(self, scope: Scope) -> str | None:
        return self.resolve(scope)[0]

    def resolve(self, scope: Scope) -> tuple[str | None, str | None]:
        """(policy or None when not limited, the matching route's template or None)."""
        path: str = scope["path"]
        method = scope.get("method", "WS")
        in_api = path.startswith(API_PREFIX)
        static = self._static.get((method, path))
        policy, template = (static, path) if static is not None else self._match_dynamic(method, path, in_api)
        if not in_api:
            return policy, template  # health, metrics, pages: limited only where a page declares a class
        policy = policy or DEFAULT_POLICY  # unknown paths count too: a scanner cannot probe for free
        return (None if policy == EXEMPT else policy), template

    def _match_dynamic(self, method: str, path: str, in_api: bool) -> tuple[str | None, str | None]:
        for route_method, pattern, policy, template in self._dynamic[in_api]:
            if route_method == method and pattern.match(path):
                return policy, template
        return None, None


def _no_identity(_: Scope) -> str | None:
    return None


def _raw_headers(verdict: Verdict) -> list[tuple[bytes, bytes]]:
    headers = rate_limit_headers(verdict.policy, verdict.decision)
    return [(name.lower().encode(), value.encode()) for name, value in headers]


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        routes: Callable[[], Sequence[BaseRoute]],
        identify: Identify = _no_identity,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.routes = routes
        self.identify = identify
        self._resolver: PolicyResolver | None = None

    def _resolve(self, scope: Scope) -> tuple[str | None, str | None]:
        routes = self.routes()
        if self._resolver is None or self._resolver.size != len(routes):
            self._resolver = PolicyResolver(routes)
        return self._resolver.resolve(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        policy_name, template = self._resolve(scope)
        if policy_name is None:
            await self.app(scope, receive, send)
            return
        user = self.identify(scope)
        identity = f"user:{user}" if user else f"ip:{client_ip_of(scope) or 'unknown'}"
        verdict = await self.limiter.check(policy_name, identity)
        if not verdict.allowed:
            if template is not None:
                set_route_template(scope, template)  # refused before routing: the access log still names it
            error = self.limiter.rejection(identity, verdict)
            if scope["type"] == "http":
                await problem_response(error, scope)(scope, receive, send)
            else:
                await self._refuse_websocket(scope, receive, send, error.headers)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Raw bytes appended to the message: this runs on every limited response.
        raw = _raw_headers(verdict)
        refund_success = verdict.policy.failures_only

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = raw
                if refund_success and message["status"] < 400:
                    headers = _raw_headers(await self.limiter.refund(policy_name, identity))
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """HTTP 429 before accept where the server supports it, else close 1008."""
        await receive()  # the websocket.connect message
        if "websocket.http.response" in scope.get("extensions", {}):
            raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
            raw.append((b"content-type", b"application/problem+json"))
            await send({"type": "websocket.http.response.start", "status": 429, "headers": raw})
            await send({"type": "websocket.http.response.body", "body": b'{"type":"/problems/rate-limited"}'})
        else:
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": "rate limited"})
