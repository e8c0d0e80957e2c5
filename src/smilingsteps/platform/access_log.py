"""One access-log line per request: method, route template, status, duration, client."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smilingsteps.platform.context import client_ip_of, route_template_of
from smilingsteps.platform.logging import ACCESS_LOGGER, log_request

log = structlog.get_logger(ACCESS_LOGGER)


class RouteTemplates:
    """The full path template of a matched route (never the raw path, which may hold ids or tokens).

    A route inside an included router only knows its own path (`/users/me`);
    the app's route table flattened (`iter_route_contexts`) gives the full one.
    """

    def __init__(self) -> None:
        self._table: tuple[int, int] = (0, -1)  # (id, length) of the route list the cache was built from
        self._paths: dict[int, str] = {}

    def _rebuild(self, routes: Sequence[BaseRoute]) -> None:
        paths: dict[int, str] = {}
        for context in iter_route_contexts(routes):
            if context.path is not None:
                paths.setdefault(id(context.original_route), context.path)
        self._paths, self._table = paths, (id(routes), len(routes))

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return route_template_of(scope) or "<unmatched>"
        routes = getattr(scope.get("app"), "routes", None)
        if routes is not None and (id(routes), len(routes)) != self._table:
            self._rebuild(routes)
        path = self._paths.get(id(route)) or getattr(route, "path", None)
        if isinstance(path, str):
            return str(scope.get("root_path", "")) + path
        return "<unmatched>"


route_template = RouteTemplates()


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
