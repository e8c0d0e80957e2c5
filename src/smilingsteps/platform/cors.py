"""CORS with exact origin matching; credentials only for listed origins.

Pure ASGI and cheap on the common path: a request without an Origin header
(same-origin pages, servers, health checks) passes straight through. Such a
response carries no Access-Control-* headers, so a cache that serves it to a
cross-origin caller fails closed; every response that does carry them also
carries `Vary: Origin`.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smilingsteps.platform.errors import ForbiddenError, problem_response

Header = tuple[bytes, bytes]


def _find(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


class CorsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Iterable[str],
        methods: Iterable[str],
        headers: Iterable[str],
        expose: Iterable[str],
        max_age: int = 600,
    ) -> None:
        self.app = app
        self.origins = frozenset(origin.encode() for origin in origins)
        self.methods = frozenset(method.upper() for method in methods)
        self.allowed_headers = frozenset(header.lower() for header in headers)
        self._simple: list[Header] = [
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", ", ".join(expose).encode()),
            (b"vary", b"Origin"),
        ]
        self._preflight: list[Header] = [
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", ", ".join(sorted(self.methods)).encode()),
            (b"access-control-allow-headers", ", ".join(headers).encode()),
            (b"access-control-max-age", str(max_age).encode()),
            (b"vary", b"Origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _find(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _find(scope, b"access-control-request-method") is not None:
            await self._preflight_response(scope, receive, send, origin)
            return
        extra = [(b"access-control-allow-origin", origin), *self._simple] if origin in self.origins else None

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *(extra or [(b"vary", b"Origin")])]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight_response(self, scope: Scope, receive: Receive, send: Send, origin: bytes) -> None:
        method = (_find(scope, b"access-control-request-method") or b"").decode("latin-1").upper()
        requested = (_find(scope, b"access-control-request-headers") or b"").decode("latin-1")
        names = {name.strip().lower() for name in requested.split(",") if name.strip()}
        if origin not in self.origins:
            refusal = "origin is not allowed"
        elif method not in self.methods:
            refusal = f"method {method} is not allowed"
        elif not names <= self.allowed_headers:
            refusal = "a requested header is not allowed"
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [(b"access-control-allow-origin", origin), *self._preflight, (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        response = problem_response(ForbiddenError(f"CORS preflight refused: {refusal}."), scope)
        response.raw_headers.append((b"vary", b"Origin"))
        await response(scope, receive, send)
