"""uvicorn's httptools protocol with bounds on what one client may cost the server.

uvicorn with httptools accepts request headers of any size and waits forever
for a client that sends nothing, or a byte now and then. `LimitedHttpProtocol`
adds, per connection:

* a byte budget for the request line and headers (`max_header_bytes`) and a
  cap on header lines (`max_headers`): over either, 431 and the connection is
  closed. Bytes are counted as they arrive, before the parser sees them, so no
  more than the budget is ever buffered (a read that ends one pipelined
  request and begins the next counts whole against the next: an over-estimate);
* a header deadline (`header_timeout`) from the connection's start, or on a
  kept-alive connection from the end of the previous response. A client that
  sent part of a request by then gets 408; one that sent nothing is closed
  without an answer (logged at debug only, `http_idle_closed`: browsers open
  spare connections). Between requests a silent connection is closed after
  `keepalive_timeout`, or the header deadline if that comes first;
* a body deadline: the longest pause between two pieces of a request body
  (`body_timeout`). On expiry the app's `receive()` returns `http.disconnect`,
  the client gets 408 if no response started, and the connection is closed.
  The clock stops while the server itself holds the client back (reading
  paused because the app has not read what came, or an `Expect: 100-continue`
  the app has not yet asked for): a client then gets up to twice the limit;
* concurrency (`max_connections`, uvicorn's `limit_concurrency`): a request
  that finds that many connections open (its own included) or requests in
  flight gets 503 with Retry-After, and its connection is closed.

Once the headers and body of a request are in, no timer runs until its
response is complete: a slow handler is never cut. Answers the server gives by
itself (400 for malformed HTTP, 408, 431, 503) are problem+json like the
app's, with its security headers and `Connection: close`; each refusal is
logged once at warning (`http_refused`, reason, status, client address; never
header contents). After a refusal the server shuts its side and drops what
the client still sends for a moment (`LINGER_SECONDS`, `LINGER_BYTES`), so
the client can read the answer instead of a connection reset.

Cost on the hot path: a length counter per read while headers arrive, one
comparison per header line, a clock read per request and per body read, and
one timer per connection, re-armed lazily (a request that ends before the
timer is due touches no timer at all). Measured in process on the protocol
alone: no measurable change per keep-alive request (< 1.5 µs, within noise),
about 5 µs more per new connection (the timer).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import structlog
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from smilingsteps.config import Settings
from smilingsteps.platform.errors import PROBLEM_MEDIA_TYPE, AppError, BadRequestError, problem_body

log = structlog.get_logger("smilingsteps.server")

LINGER_SECONDS = 2.0  # after a refusal, how long the client's further bytes are read and dropped
LINGER_BYTES = 65_536  # and how many at most, before the connection is closed regardless
RETRY_AFTER_OVERLOADED = 5
_TIMER_SLACK = 0.005  # a timer this close to its deadline counts as due (loop clocks tick in ms)

# What the one timer of a connection watches.
_NONE = 0  # a request is with the app (or the connection is closed, or upgraded): nothing
_HEAD = 1  # the next request's line and headers (and, before its first byte, idleness)
_BODY = 2  # the gap between two pieces of the current request's body

# How many refusals of each reason this process made (for metrics).
refused: Counter[str] = Counter()


class RequestTimeoutError(AppError):
    status, slug, title = 408, "request-timeout", "Request timeout"
    default_detail = "The request did not arrive in time."


class RequestHeadersTooLargeError(AppError):
    status, slug, title = 431, "request-header-fields-too-large", "Request header fields too large"
    default_detail = "The request line and headers are larger than this server accepts."


class OverloadedError(AppError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"
    default_detail = "The server is at its connection limit; try again shortly."


# Why a connection was refused -> what the client is told.
REFUSALS: dict[str, AppError] = {
    "malformed": BadRequestError("The request is not valid HTTP/1.1."),
    "header_bytes": RequestHeadersTooLargeError(),
    "header_count": RequestHeadersTooLargeError("The request has more header lines than this server accepts."),
    "header_timeout": RequestTimeoutError("The request line and headers did not arrive in time."),
    "body_timeout": RequestTimeoutError("The request body stopped arriving."),
}


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            max_header_bytes=settings.SERVER_MAX_HEADER_BYTES,
            max_headers=settings.SERVER_MAX_HEADERS,
            header_timeout=settings.SERVER_HEADER_TIMEOUT,
            body_timeout=settings.SERVER_BODY_TIMEOUT,
            keepalive_timeout=settings.SERVER_KEEPALIVE_TIMEOUT,
            max_connections=settings.SERVER_MAX_CONNECTIONS,
        )


class _TooManyHeadersError(Exception):
    """Raised from the parser's header callback to stop parsing at once."""


def _problem_json(error: AppError) -> bytes:
    body = problem_body(error, request_id=None, instance=None)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def _refusal_bytes(error: AppError, security_headers: list[tuple[bytes, bytes]]) -> bytes:
    """Everything of a refusal after the status line and uvicorn's default (Date) headers."""
    body = _problem_json(error)
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *security_headers,
    ]
    return _header_lines(headers) + b"\r\n" + body


class _Lingering(asyncio.Protocol):
    """A refused connection after its answer: our side is shut; read and drop what the client still
    sends for a moment, so that closing does not reset the connection before the client reads it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.budget = LINGER_BYTES
        self.timer = loop.call_later(LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        self.budget -= len(data)
        if self.budget < 0:
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; `configured()` makes the class to serve with."""

    # Set on the class `configured()` returns.
    limits: ClassVar[ServerLimits]
    refusal_bytes: ClassVar[dict[str, bytes]]
    overloaded_headers: ClassVar[list[tuple[bytes, bytes]]]
    overloaded_body: ClassVar[bytes]
    _max_header_bytes: ClassVar[int]
    _max_headers: ClassVar[int]
    _header_timeout: ClassVar[float]
    _body_timeout: ClassVar[float]
    _keepalive: ClassVar[float]  # idle between requests, never longer than the header deadline
    _max_concurrency: ClassVar[int]

    # Per-connection state. The starting values live on the class, so that a new connection
    # costs no more than uvicorn's; each connection's own values shadow them as they change.
    _timer: asyncio.TimerHandle | None = None
    _timer_at = 0.0
    _phase = _NONE
    _mark = 0.0  # when the watched phase began (HEAD) or the last body piece came (BODY)
    _idle = 0.0  # HEAD: how long a connection may stay silent
    _reading_head = True  # the bytes now arriving belong to a request line or headers
    _head_bytes = 0
    _heads = 0  # requests whose headers are complete
    _completed_headers: list[tuple[bytes, bytes]] | None = None  # the last of them's
    _refusal: str | None = None

    @classmethod
    def configured(
        cls, limits: ServerLimits, *, security_headers: list[tuple[bytes, bytes]]
    ) -> type[LimitedHttpProtocol]:
        """A subclass bound to `limits`; refusals carry `security_headers` (raw, as the app sends them).
        Serve it with uvicorn's `limit_concurrency` and `timeout_keep_alive` set from the same limits."""
        overloaded = OverloadedError()
        overloaded_body = _problem_json(overloaded)
        attributes: dict[str, Any] = {
            "limits": limits,
            "refusal_bytes": {reason: _refusal_bytes(error, security_headers) for reason, error in REFUSALS.items()},
            "overloaded_headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(overloaded_body)).encode()),
                (b"retry-after", str(RETRY_AFTER_OVERLOADED).encode()),
                (b"connection", b"close"),
                *security_headers,
            ],
            "overloaded_body": overloaded_body,
            "_max_header_bytes": limits.max_header_bytes,
            "_max_headers": limits.max_headers,
            "_header_timeout": limits.header_timeout,
            "_body_timeout": limits.body_timeout,
            "_keepalive": min(limits.keepalive_timeout, limits.header_timeout),
            "_max_concurrency": limits.max_connections,
        }
        return type(cls.__name__, (cls,), attributes)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own check would answer in plain text; on_headers_complete checks instead.
        self.limit_concurrency = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head(self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._stop_watching()
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes | memoryview) -> None:
        if self._reading_head:
            total = self._head_bytes + len(data)
            if total > self._max_header_bytes:
                self._over_budget(data)
                return
            self._head_bytes = total
            if not self._feed(data):
                return
        else:
            if not self._feed(data):
                return
            if self._next_request_begun():
                # This read ended one request and began the next (pipelining): count all of it
                # against the next one's headers, an over-estimate that keeps the bound.
                self._head_bytes = len(data)
                if self._head_bytes > self._max_header_bytes:
                    self._refuse("header_bytes")
                    return
        if self._phase == _BODY:
            self._mark = now = self.loop.time()
            if self._timer is None or self._timer_at > now + self._body_timeout:
                self._arm(now + self._body_timeout)

    def _feed(self, data: bytes | memoryview) -> bool:
        """Parse `data`; False when the connection is done with (refused or upgraded)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
                return False
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            self._refuse(self._refusal or "malformed")
            return False
        return True

    def _over_budget(self, data: bytes | memoryview) -> None:
        """A read that would take the headers past the budget: parse only up to it."""
        room = self._max_header_bytes - self._head_bytes
        heads = self._heads
        self._head_bytes = self._max_header_bytes
        if room > 0 and not self._feed(memoryview(data)[:room]):
            return
        if self._heads == heads:  # no headers ended within the budget
            self._refuse("header_bytes")
            return
        if self._reading_head:  # they did, and a pipelined request began: it gets the over-estimate
            self._head_bytes = room
        self.data_received(memoryview(data)[room:])

    def _next_request_begun(self) -> bool:
        """After a read that started in a body: did it also begin a request whose headers are still coming?"""
        # uvicorn's on_message_begin gives each request a new headers list.
        return self._reading_head and self.headers is not self._completed_headers

    # Parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined (it runs for every header line), plus the count.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers = self.headers
        headers.append((name, value))
        if len(headers) > self._max_headers:
            self._refusal = "header_count"
            raise _TooManyHeadersError

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._heads += 1
        self._completed_headers = self.headers
        self._phase = _BODY  # the body clock starts when this read has been parsed (data_received)
        limit = self._max_concurrency
        if len(self.connections) < limit and len(self.tasks) < limit:
            super().on_headers_complete()
            return
        if not (self.parser.should_upgrade() and self._should_upgrade()):  # WebSockets check their own
            self._log_refusal("overloaded", 503)
        app = self.app
        self.app = self._overloaded
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Answered before the body ended (or an upgrade request, which stops watching next):
            # the next request's headers are due from now.
            self._watch_head(self._keepalive)
        else:
            self._phase = _NONE
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, with our timer in place of its keep-alive timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == _NONE:  # the request was read to its end: wait for the next
            self._watch_head(self._keepalive)

    def send_400_response(self, msg: str) -> None:
        self._refuse("malformed")

    # The timer

    def _watch_head(self, idle: float) -> None:
        self._phase = _HEAD
        self._mark = now = self.loop.time()
        self._idle = idle
        if self._timer is None or self._timer_at > now + idle:
            self._arm(now + idle)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _stop_watching(self) -> None:
        self._phase = _NONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        phase = self._phase
        if phase == _NONE or self.transport.is_closing():
            return
        now = self.loop.time()
        if phase == _HEAD:
            deadline = self._mark + (self._header_timeout if self._head_bytes else self._idle)
        else:
            cycle = self.cycle
            if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                self._mark = now  # the server is holding the client back, not the other way round
            deadline = self._mark + self._body_timeout
        if deadline - now > _TIMER_SLACK:
            self._arm(deadline)
        elif phase == _BODY:
            self._refuse("body_timeout")
        elif self._head_bytes:
            self._refuse("header_timeout")
        else:
            log.debug("http_idle_closed", client=self._client_host())
            self._stop_watching()
            self.transport.close()

    # Refusals

    def _refuse(self, reason: str) -> None:
        """Answer (unless a response already started), end the request the app may be in, and close."""
        cycle = self.cycle
        in_flight = cycle is not None and not cycle.response_complete
        answer = not (in_flight and cycle.response_started)
        self._log_refusal(reason, REFUSALS[reason].status if answer else None)
        self._stop_watching()
        self._reading_head = False
        if in_flight:
            # The app's receive() now returns http.disconnect and its sends are dropped.
            cycle.disconnected = True
            cycle.keep_alive = False
            cycle.message_event.set()
        transport = self.transport
        if transport.is_closing():
            return
        if answer:
            status = REFUSALS[reason].status
            transport.write(
                STATUS_LINE[status] + _header_lines(self.server_state.default_headers) + self.refusal_bytes[reason]
            )
        # From here on the connection is the lingering protocol's, no longer uvicorn's.
        self.connections.discard(self)
        self.flow.resume_writing()
        self.flow.resume_reading()
        try:
            transport.write_eof()
        except (NotImplementedError, OSError, RuntimeError):  # e.g. TLS: no half-close
            transport.close()
            return
        transport.set_protocol(_Lingering(transport, self.loop))

    def _log_refusal(self, reason: str, status: int | None) -> None:
        refused[reason] += 1
        log.warning("http_refused", reason=reason, status=status, client=self._client_host())

    def _client_host(self) -> str | None:
        return self.client[0] if self.client else None

    async def _overloaded(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": self.overloaded_headers})
        await send({"type": "http.response.body", "body": self.overloaded_body, "more_body": False})
