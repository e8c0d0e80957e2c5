"""Request id: taken from a well-formed X-Request-ID or generated, echoed back,
and bound to every log line written while the request runs."""

from __future__ import annotations

import itertools
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smilingsteps.platform.context import set_request_id
from smilingsteps.platform.logging import bound_log_context

HEADER = "x-request-id"
# Anything else (too long, odd characters, newlines) is replaced rather than
# trusted, so a client cannot inject text into our logs through it.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class _RequestIds:
    """Unique ids without a syscall per request: a random per-process prefix
    (renewed in forked children) and a counter."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = os.urandom(10).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


_ids = _RequestIds()


def new_request_id() -> str:
    return _ids.next()


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if _VALID.fullmatch(text) else None
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or new_request_id()
        set_request_id(scope, request_id)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with bound_log_context(request_id=request_id):
            await self.app(scope, receive, send_with_id)
