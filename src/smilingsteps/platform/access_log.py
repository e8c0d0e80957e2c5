"""One access-log line per request: method, route template, status, duration, client."""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smilingsteps.platform.context import client_ip_of
from smilingsteps.platform.logging import ACCESS_LOGGER, log_request

log = structlog.get_logger(ACCESS_LOGGER)


def route_template(scope: Scope) -> str:
    """The matched route's path template (never the raw path, which may hold ids or tokens)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return str(scope.get("root_path", "")) + path
    return "<unmatched>"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500 if scope["type"] == "http" else 101

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "websocket.close":
                status = 1000 if message.get("code") is None else int(message["code"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            fields = {
                "method": scope.get("method", "WS"),
                "route": route_template(scope),
                "status": status,
                "duration_ms": duration_ms,
                "client": client_ip_of(scope),
            }
            if scope["type"] == "http" and status >= 500:
                log.warning("request", **fields)  # server errors stand out at warning
            else:
                log_request(**fields)
