"""A local Daraja: the subset M-Pesa Express uses, over real HTTP, with outcomes chosen by phone number.

`smilingsteps mpesa-simulator` runs it on its own; the embedded default runs it inside the
app (started on first use, on a loopback port), so a paid booking works with
`./scripts/serve` alone; the tests use it as a real HTTP peer.

It checks what Daraja checks (Basic auth for OAuth, the bearer token, the STK password
for its timestamp, field formats, AccountReference ≤ 12) and answers as Daraja does
(string `ResponseCode`, `expires_in` as a string, error bodies with `requestId`,
`errorCode`, `errorMessage`, "The transaction is being processed" until a payment is
decided). After `delay` seconds it calls the push's CallBackURL with the outcome the
last digit of the phone number chooses:

| last digit | outcome |
| --- | --- |
| 0 | success |
| 1 | insufficient funds (ResultCode 1) |
| 2 | cancelled by the user (1032) |
| 3 | success, but the callback never comes (reconciliation finds it) |
| 4 | success, called back twice |
| 5 | success, but the callback states the wrong amount |
| 6 | the prompt expired (1019) |
| 7 | wrong PIN (2001) |
| 8 | phone unreachable (1037) |
| 9 | never decided: every query answers "being processed", no callback |

Faults for tests: `fail_next("garbage" | "html" | "server_error" | "refuse" | "slow")`
makes the next STK push or query answer that way once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import socket
import string
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from smilingsteps.payments.mpesa import protocol

log = structlog.get_logger("smilingsteps.payments.simulator")
TOKEN_LIFETIME_S = 3599
DEFAULT_KEY = "simulator-key"
DEFAULT_SECRET = "simulator-secret"  # noqa: S105 (the simulator's published development credential)
DEFAULT_SHORTCODE = "174379"
DEFAULT_PASSKEY = "simulator-passkey"


@dataclass(frozen=True)
class Behaviour:
    result_code: int
    result_desc: str
    callbacks: int = 1
    amount_offset: int = 0
    decided: bool = True


SUCCESS_DESC = "The service request is processed successfully."
BEHAVIOURS: dict[str, Behaviour] = {
    "0": Behaviour(0, SUCCESS_DESC),
    "1": Behaviour(1, "The balance is insufficient for the transaction."),
    "2": Behaviour(1032, "Request cancelled by user"),
    "3": Behaviour(0, SUCCESS_DESC, callbacks=0),
    "4": Behaviour(0, SUCCESS_DESC, callbacks=2),
    "5": Behaviour(0, SUCCESS_DESC, amount_offset=1),
    "6": Behaviour(1019, "Transaction has expired"),
    "7": Behaviour(2001, "The initiator information is invalid."),
    "8": Behaviour(1037, "DS timeout user cannot be reached"),
    "9": Behaviour(0, SUCCESS_DESC, callbacks=0, decided=False),
}


@dataclass
class Push:
    merchant_request_id: str
    checkout_request_id: str
    phone: str
    amount: int
    callback_url: str
    behaviour: Behaviour
    decided_at: float
    receipt: str
    callbacks_delivered: list[int] = field(default_factory=list)


def _receipt() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "S" + "".join(secrets.choice(alphabet) for _ in range(9))


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "requestId": f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(10**8)}-1",
            "errorCode": code,
            "errorMessage": message,
        },
        status_code=status,
    )


def _bad_request(what: str) -> JSONResponse:
    return _error(400, "400.002.02", f"Bad Request - Invalid {what}")


class DarajaSimulator:
    def __init__(
        self,
        *,
        consumer_key: str = DEFAULT_KEY,
        consumer_secret: str = DEFAULT_SECRET,
        shortcode: str = DEFAULT_SHORTCODE,
        passkey: str = DEFAULT_PASSKEY,
        delay: float = 3.0,
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.shortcode = shortcode
        self.passkey = passkey
        self.delay = delay
        self.pushes: dict[str, Push] = {}
        self.faults: deque[str] = deque()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._tokens: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        self.app = Starlette(
            routes=[
                Route(protocol.OAUTH_PATH, self.oauth, methods=["GET"]),
                Route(protocol.STK_PUSH_PATH, self.stk_push, methods=["POST"]),
                Route(protocol.STK_QUERY_PATH, self.stk_query, methods=["POST"]),
            ]
        )

    # ---- test controls -------------------------------------------------------------------

    def fail_next(self, fault: str) -> None:
        """The next STK push or query answers with this fault (once)."""
        self.faults.append(fault)

    def push_for(self, phone: str) -> Push:
        """The latest push to `phone`."""
        found = [push for push in self.pushes.values() if push.phone == phone]
        if not found:
            raise LookupError(f"no STK push to {phone}")
        return found[-1]

    async def delivered(self, checkout_request_id: str, count: int = 1, *, within: float = 15.0) -> list[int]:
        """Wait until `count` callbacks for this push were answered (`within` bounds a hang, it is not a delay)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(
                lambda: (
                    len(self.pushes[checkout_request_id].callbacks_delivered) >= count
                    if checkout_request_id in self.pushes
                    else False
                )
            )
        return self.pushes[checkout_request_id].callbacks_delivered

    def release(self) -> None:
        """Let every held ("slow") answer go, so the server can stop."""
        self._released.set()

    async def close(self) -> None:
        self.release()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    # ---- Daraja ------------------------------------------------------------------------

    async def oauth(self, request: Request) -> Response:
        if request.query_params.get("grant_type") != "client_credentials":
            return _error(400, "400.008.02", "Invalid grant type passed")
        expected = base64.b64encode(f"{self.consumer_key}:{self.consumer_secret}".encode()).decode()
        if not secrets.compare_digest(request.headers.get("authorization", ""), f"Basic {expected}"):
            return _error(400, "400.008.01", "Invalid Authentication passed")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + TOKEN_LIFETIME_S
        return JSONResponse({"access_token": token, "expires_in": str(TOKEN_LIFETIME_S)})

    def _authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and self._tokens.get(token, 0.0) > time.monotonic()

    async def _body(self, request: Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _password_ok(self, body: dict[str, Any]) -> bool:
        timestamp = body.get("Timestamp")
        if not isinstance(timestamp, str) or len(timestamp) != 14 or not timestamp.isdigit():
            return False
        expected = protocol.stk_password(self.shortcode, self.passkey, timestamp)
        return body.get("BusinessShortCode") == self.shortcode and body.get("Password") == expected

    async def _fault(self) -> Response | None:
        if not self.faults:
            return None
        fault = self.faults.popleft()
        if fault == "garbage":
            return Response(b"\x00\xffnot json", media_type="application/json")
        if fault == "html":
            return PlainTextResponse("<html><body>502 Bad Gateway</body></html>", status_code=502)
        if fault == "server_error":
            return _error(503, "503.001.01", "Service is currently unavailable")
        if fault == "refuse":
            return _error(400, "400.002.02", "Bad Request - Invalid PartyB")
        if fault == "slow":
            await self._released.wait()  # until the simulator stops: longer than any client waits
        raise ValueError(f"unknown fault {fault!r}")

    async def stk_push(self, request: Request) -> Response:
        if not self._authorised(request):
            return _error(401, "404.001.03", "Invalid Access Token")
        body = await self._body(request)
        if body is None:
            return _bad_request("JSON")
        self.requests.append((protocol.STK_PUSH_PATH, body))
        if (fault := await self._fault()) is not None:
            return fault
        problem = self._push_problem(body)
        if problem is not None:
            return _bad_request(problem)
        phone, amount = str(body["PhoneNumber"]), int(body["Amount"])
        behaviour = BEHAVIOURS[phone[-1]]
        push = Push(
            merchant_request_id=f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(10**8)}-1",
            checkout_request_id=f"ws_CO_{datetime.now(UTC):%d%m%Y%H%M%S}{uuid.uuid4().hex[:12]}",
            phone=phone,
            amount=amount,
            callback_url=str(body["CallBackURL"]),
            behaviour=behaviour,
            decided_at=time.monotonic() + self.delay if behaviour.decided else float("inf"),
            receipt=_receipt(),
        )
        self.pushes[push.checkout_request_id] = push
        if behaviour.callbacks:
            task = asyncio.create_task(self._call_back(push), name=f"simulator-callback-{push.checkout_request_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log.info("simulator_stk_push", checkout_request_id=push.checkout_request_id, outcome=behaviour.result_code)
        return JSONResponse(
            {
                "MerchantRequestID": push.merchant_request_id,
                "CheckoutRequestID": push.checkout_request_id,
                "ResponseCode": "0",
                "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing",
            }
        )

    def _push_problem(self, body: dict[str, Any]) -> str | None:
        """What Daraja would call invalid in this STK push, or None."""
        if not self._password_ok(body):
            return "Password"
        if body.get("TransactionType") not in (protocol.PAY_BILL, protocol.BUY_GOODS):
            return "TransactionType"
        amount = body.get("Amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= 250_000:
            return "Amount"
        for name in ("PartyA", "PhoneNumber"):
            value = str(body.get(name, ""))
            if len(value) != 12 or not value.isdigit() or not value.startswith(("2547", "2541")):
                return name
        if not str(body.get("PartyB", "")).isdigit():
            return "PartyB"
        callback = body.get("CallBackURL")
        if not isinstance(callback, str) or not callback.startswith(("http://", "https://")):
            return "CallBackURL"
        reference = body.get("AccountReference")
        if not isinstance(reference, str) or not 1 <= len(reference) <= protocol.ACCOUNT_REFERENCE_MAX:
            return "AccountReference"
        description = body.get("TransactionDesc")
        if not isinstance(description, str) or not 1 <= len(description) <= 13:
            return "TransactionDesc"
        return None

    async def stk_query(self, request: Request) -> Response:
        if not self._authorised(request):
            return _error(401, "404.001.03", "Invalid Access Token")
        body = await self._body(request)
        if body is None:
            return _bad_request("JSON")
        self.requests.append((protocol.STK_QUERY_PATH, body))
        if (fault := await self._fault()) is not None:
            return fault
        if not self._password_ok(body):
            return _bad_request("Password")
        push = self.pushes.get(str(body.get("CheckoutRequestID")))
        if push is None:
            return _bad_request("CheckoutRequestID")
        if time.monotonic() < push.decided_at:
            return _error(500, protocol.STILL_PROCESSING_CODE, protocol.STILL_PROCESSING_MESSAGE)
        return JSONResponse(
            {
                "ResponseCode": "0",
                "ResponseDescription": "The service request has been accepted successsfully",
                "MerchantRequestID": push.merchant_request_id,
                "CheckoutRequestID": push.checkout_request_id,
                "ResultCode": str(push.behaviour.result_code),
                "ResultDesc": push.behaviour.result_desc,
            }
        )

    # ---- the callback ---------------------------------------------------------------------

    def callback_body(self, push: Push) -> dict[str, Any]:
        behaviour = push.behaviour
        return protocol.callback_payload(
            merchant_request_id=push.merchant_request_id,
            checkout_request_id=push.checkout_request_id,
            result_code=behaviour.result_code,
            result_desc=behaviour.result_desc,
            amount=float(push.amount + behaviour.amount_offset),
            receipt=push.receipt,
            phone=push.phone,
        )

    async def _call_back(self, push: Push) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        for _ in range(push.behaviour.callbacks):
            try:
                response = await self._http.post(push.callback_url, json=self.callback_body(push))
                status = response.status_code
            except httpx.HTTPError as exc:
                log.warning("simulator_callback_failed", url=push.callback_url, error=type(exc).__name__)
                status = 0
            async with self._changed:
                push.callbacks_delivered.append(status)
                self._changed.notify_all()


def loopback_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket on `host` (loopback unless told): a free port when `port` is 0."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: inside the app (or a test) the host process owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving_asgi(app: Any, sock: socket.socket, *, embedded: bool = True) -> AsyncIterator[str]:
    """Serve an ASGI app on this event loop from a bound socket; yields its base URL."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=5)
    server = _EmbeddedServer(config) if embedded else uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http-server-{port}")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.asynccontextmanager
async def serving(simulator: DarajaSimulator, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `simulator` on this event loop; yields its base URL (a free port when `port` is 0)."""
    try:
        async with serving_asgi(simulator.app, loopback_socket(host, port)) as url:
            try:
                yield url
            finally:
                simulator.release()
    finally:
        await simulator.close()


async def run_forever(simulator: DarajaSimulator, *, host: str, port: int) -> None:
    """`smilingsteps mpesa-simulator`: serve until SIGINT or SIGTERM (uvicorn's own handlers)."""
    sock = loopback_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(simulator.app, lifespan="off", log_config=None, access_log=False))
    bound = sock.getsockname()[1]
    log.info("simulator_started", url=f"http://{host}:{bound}", delay_s=simulator.delay, shortcode=simulator.shortcode)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await simulator.close()
