"""Payments HTTP: pay for a booking, follow the payment, Safaricom's callback, and the admin's view.

The callback route has no session and no CSRF check (Safaricom is not a browser) and no rate
limit (every callback comes from a few Safaricom addresses); its token is the credential.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import BaseModel

from smilingsteps.accounts.auth import AdminUser, CurrentUser, VerifiedUser
from smilingsteps.payments import callbacks, service
from smilingsteps.payments.jobs import RECONCILIATION
from smilingsteps.payments.processing import push_after_commit
from smilingsteps.payments.schemas import AdminPaymentOut, PaymentOut, PaymentPage, RefundIn, StkPushIn
from smilingsteps.payments.states import PaymentStatus
from smilingsteps.platform.dependencies import Client, DbSession, Now, RuntimeDep
from smilingsteps.platform.errors import BadRequestError, ForbiddenError, PayloadTooLargeError
from smilingsteps.platform.openapi import problems
from smilingsteps.platform.ratelimit.policies import EXEMPT, rate_limited
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.platform.runtime import Runtime
from smilingsteps.platform.schemas import UtcDatetime
from smilingsteps.platform.security_events import security_event

PAYMENTS = rate_limited("payments")
ADMIN = rate_limited("admin")
# Daraja's acknowledgement, serialised once (every callback answers it).
ACCEPTED_BODY = b'{"ResultCode":0,"ResultDesc":"Accepted"}'
CallbackToken = Annotated[str, Path(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]
# Audit rows for callbacks with an unknown token: at most one per source address per window.
UNKNOWN_TOKEN_AUDIT_WINDOW_S = 60.0


class CallbackAck(BaseModel):
    ResultCode: int
    ResultDesc: str


CALLBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            'Daraja\'s STK callback, `{"Body": {"stkCallback": {…}}}`. Any JSON is stored as received (at most '
            "16 KiB) and acknowledged: what is not a callback of this attempt changes nothing and is recorded "
            "as a security event. A request without a body is refused."
        ),
        "content": {"application/json": {"schema": {}}},
    }
}


class _UnknownTokenThrottle:
    """Which unknown-token callbacks get an audit row: the first from an address in each window."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def allow(self, source: str | None) -> bool:
        now = time.monotonic()
        key = source or "?"
        if len(self._last) > 10_000:
            self._last = {k: v for k, v in self._last.items() if now - v < UNKNOWN_TOKEN_AUDIT_WINDOW_S}
        if now - self._last.get(key, -UNKNOWN_TOKEN_AUDIT_WINDOW_S) < UNKNOWN_TOKEN_AUDIT_WINDOW_S:
            return False
        self._last[key] = now
        return True


def _source_allowed(runtime: Runtime, ip: str | None) -> bool:
    allowed = runtime.settings.MPESA_CALLBACK_ALLOWED_IPS
    if not allowed:
        return True
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowed)


async def _bounded_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > callbacks.CALLBACK_MAX_BYTES:
            raise PayloadTooLargeError(f"A callback is at most {callbacks.CALLBACK_MAX_BYTES} bytes.")
    return bytes(body)


def build_router() -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["payments"])
    throttle = _UnknownTokenThrottle()

    @router.post(
        "/payments/mpesa/stk-push",
        status_code=status.HTTP_202_ACCEPTED,
        openapi_extra=PAYMENTS,
        responses=problems(404, 409),
    )
    async def stk_push(
        *,
        body: StkPushIn,
        user: VerifiedUser,
        session: DbSession,
        runtime: RuntimeDep,
        now: Now,
        client: Client,
    ) -> PaymentOut:
        """Pay for a held booking with M-Pesa Express: the phone gets a prompt for the PIN.

        202 with the attempt; follow it with `GET /payments/{id}`. While an attempt is live the same
        attempt is answered again (no second prompt or charge).
        """
        started = await service.start(
            session,
            runtime.settings,
            client_id=user.user_id,
            booking_id=body.booking_id,
            phone=body.phone,
            now=now,
            audit=client.audit(user.user_id),
        )
        push_after_commit(session, runtime, started.push)
        return PaymentOut.of(started.attempt)

    @router.get("/payments/{payment_id}")
    async def get_payment(*, payment_id: uuid.UUID, user: CurrentUser, session: DbSession) -> PaymentOut:
        return PaymentOut.of(await service.payment_of(session, user.user_id, payment_id))

    @router.post(
        "/payments/mpesa/callback/{token}",
        openapi_extra={**rate_limited(EXEMPT), **CALLBACK_BODY},
        response_class=Response,
        responses={200: {"model": CallbackAck, "description": "stored and acknowledged"}, **problems(400, 403, 413)},
    )
    async def mpesa_callback(
        *, token: CallbackToken, request: Request, runtime: RuntimeDep, now: Now, client: Client
    ) -> Response:
        """Safaricom's STK callback; acknowledged once stored, whatever it says (replays change nothing)."""
        if not _source_allowed(runtime, client.ip):
            security_event(request, "mpesa_callback_source")
            raise ForbiddenError("Callbacks are accepted from Safaricom's addresses only.")
        body = await _bounded_body(request)
        if not body:
            raise BadRequestError("A callback has a JSON body (Body.stkCallback).")
        result = None
        if runtime.db.backend == "postgresql":
            result = await callbacks.receive_callback_fast(
                runtime.db, token=token, body=body, source_ip=client.ip, now=now
            )
        if result is None:
            async with runtime.db.session() as session:
                result = await callbacks.receive_callback(
                    session,
                    runtime.settings,
                    token=token,
                    body=body,
                    source_ip=client.ip,
                    now=now,
                    audit=client.audit(None),
                    audit_unknown=throttle.allow(client.ip),
                )
        if result.outcome in ("unknown_token", "malformed", "mismatch"):
            security_event(request, f"mpesa_callback_{result.outcome}")
        if result.verify and runtime.jobs is not None:
            # The STK query that confirms it is the checks job's (the worker's when deployed, so this
            # answer stays cheap under a burst); a process running the jobs itself starts it now.
            runtime.jobs.wake(RECONCILIATION)
        return Response(ACCEPTED_BODY, media_type="application/json")

    _admin_routes(router)
    return router


def _admin_routes(router: APIRouter) -> None:
    @router.get("/admin/payments", openapi_extra=ADMIN, tags=["admin"])
    async def list_payments(
        *,
        admin: AdminUser,
        session: DbSession,
        status_: Annotated[PaymentStatus | None, Query(alias="status")] = None,
        booking_id: uuid.UUID | None = None,
        client_id: uuid.UUID | None = None,
        created_from: Annotated[UtcDatetime | None, Query(alias="from")] = None,
        created_to: Annotated[UtcDatetime | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> PaymentPage:
        found, total = await service.search(
            session,
            status=status_,
            booking_id=booking_id,
            client_id=client_id,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
            offset=offset,
        )
        return PaymentPage(items=[AdminPaymentOut.of(p) for p in found], total=total)

    @router.get("/admin/payments/{payment_id}", openapi_extra=ADMIN, tags=["admin"])
    async def get_payment(*, payment_id: uuid.UUID, admin: AdminUser, session: DbSession) -> AdminPaymentOut:
        return AdminPaymentOut.of(await service.payment_by_id(session, payment_id))

    @router.post("/admin/payments/{payment_id}/refund", openapi_extra=ADMIN, tags=["admin"], responses=problems(409))
    async def record_refund(
        *, payment_id: uuid.UUID, body: RefundIn, admin: AdminUser, session: DbSession, now: Now, client: Client
    ) -> AdminPaymentOut:
        """Record the refund an administrator sent to the client's M-Pesa number (refund_due → refunded)."""
        attempt = await service.record_refund(
            session, payment_id, body.receipt, now=now, audit=client.audit(admin.user_id)
        )
        return AdminPaymentOut.of(attempt)
