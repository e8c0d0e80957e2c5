"""A small, typed Daraja client over httpx: OAuth, STK push, STK query.

- TLS is always verified (httpx's default; nothing here, and no setting, turns it off).
- Connect and read timeouts are bounded; idempotent calls (OAuth, STK query) are retried
  with full-jitter backoff. An STK push is retried only when the connection never
  opened (nothing was sent), never after it may have reached Safaricom: a second push
  would be a second prompt, and possibly a second charge.
- The access token is cached until a minute before it expires, and only one refresh runs
  at a time; a 401 drops it and the call is made once more with a new one.
- Daraja's error bodies (`requestId`, `errorCode`, `errorMessage`) become `DarajaRefusedError`
  (Daraja said no: nothing was started) or `DarajaUnavailableError` (no usable answer:
  5xx, timeouts, garbage, so the outcome of a push is unknown).
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import structlog

from smilingsteps.payments.mpesa import protocol
from smilingsteps.platform.db import backoff_delay

log = structlog.get_logger("smilingsteps.payments.daraja")
TOKEN_MARGIN_S = 60.0
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class DarajaConfig:
    base_url: str
    consumer_key: str
    consumer_secret: str
    shortcode: str
    passkey: str
    transaction_type: str = protocol.PAY_BILL
    # The receiving till for Buy Goods; for Pay Bill it is the shortcode itself.
    party_b: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 2


class DarajaError(Exception):
    """Daraja did not do what was asked; `detail` is safe to log and to show to an administrator."""

    def __init__(
        self, detail: str, *, status: int | None = None, error_code: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error_code = error_code
        self.request_id = request_id


class DarajaRefusedError(DarajaError):
    """A definite no: the request was refused (4xx, or a non-zero ResponseCode), nothing was started."""


class DarajaUnavailableError(DarajaError):
    """No usable answer (5xx, timeout, garbage): for an STK push, whether a prompt went out is unknown."""


@dataclass(frozen=True)
class StkPushAccepted:
    merchant_request_id: str
    checkout_request_id: str
    customer_message: str


@dataclass(frozen=True)
class StkQueryAnswer:
    """The STK query's answer: a result code, or `still_processing` (ask again later)."""

    result_code: int | None
    result_desc: str
    still_processing: bool = False


Sleep = Callable[[float], Awaitable[None]]


class DarajaClient:
    def __init__(
        self,
        config: DarajaConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            transport=transport,
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )
        self._sleep = sleep
        self._monotonic = monotonic
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    # ---- OAuth -------------------------------------------------------------------

    async def token(self) -> str:
        """A valid access token: the cached one, or one fresh refresh shared by every waiting caller."""
        if self._token is not None and self._monotonic() < self._token_expires:
            return self._token
        async with self._token_lock:
            if self._token is not None and self._monotonic() < self._token_expires:
                return self._token
            self._token, lifetime = await self._fetch_token()
            self._token_expires = self._monotonic() + max(0.0, lifetime - TOKEN_MARGIN_S)
            return self._token

    def forget_token(self) -> None:
        self._token = None
        self._token_expires = 0.0

    async def _fetch_token(self) -> tuple[str, float]:
        basic = base64.b64encode(f"{self.config.consumer_key}:{self.config.consumer_secret}".encode()).decode()
        body = await self._call(
            "GET",
            protocol.OAUTH_PATH,
            params={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
            idempotent=True,
        )
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token:
            raise DarajaUnavailableError("Daraja's OAuth answer has no access_token")
        try:
            lifetime = float(str(expires_in))  # "3599": a string in Daraja's answer
        except ValueError:
            raise DarajaUnavailableError("Daraja's OAuth answer has no usable expires_in") from None
        return token, lifetime

    # ---- STK push and query ------------------------------------------------------------

    def _credentials(self, now: datetime) -> dict[str, str]:
        timestamp = protocol.nairobi_timestamp(now)
        return {
            "BusinessShortCode": self.config.shortcode,
            "Password": protocol.stk_password(self.config.shortcode, self.config.passkey, timestamp),
            "Timestamp": timestamp,
        }

    async def stk_push(
        self, *, amount: int, phone: str, account_reference: str, callback_url: str, now: datetime
    ) -> StkPushAccepted:
        """Ask M-Pesa to prompt `phone` for `amount` KES; Daraja's acknowledgement, or a DarajaError."""
        if len(account_reference) > protocol.ACCOUNT_REFERENCE_MAX:
            raise ValueError("AccountReference longer than 12 characters reaches no phone")
        payload = {
            **self._credentials(now),
            "TransactionType": self.config.transaction_type,
            "Amount": int(amount),
            "PartyA": phone,
            "PartyB": self.config.party_b or self.config.shortcode,
            "PhoneNumber": phone,
            "CallBackURL": callback_url,
            "AccountReference": account_reference,
            "TransactionDesc": protocol.TRANSACTION_DESC,
        }
        body = await self._authorised("POST", protocol.STK_PUSH_PATH, payload, idempotent=False)
        if str(body.get("ResponseCode")) != "0":
            raise DarajaRefusedError(
                protocol.plain_text(body.get("ResponseDescription") or body.get("errorMessage") or "STK push refused"),
                error_code=str(body.get("ResponseCode")),
            )
        merchant, checkout = body.get("MerchantRequestID"), body.get("CheckoutRequestID")
        if not isinstance(merchant, str) or not isinstance(checkout, str) or not checkout or len(checkout) > 64:
            raise DarajaUnavailableError("Daraja accepted the STK push without usable request ids")
        return StkPushAccepted(merchant, checkout, protocol.plain_text(body.get("CustomerMessage")))

    async def stk_query(self, checkout_request_id: str, *, now: datetime) -> StkQueryAnswer:
        """Where M-Pesa is with this push: its result code, or still processing."""
        payload = {**self._credentials(now), "CheckoutRequestID": checkout_request_id}
        try:
            body = await self._authorised("POST", protocol.STK_QUERY_PATH, payload, idempotent=True)
        except DarajaError as exc:
            if protocol.is_still_processing(exc.error_code, exc.detail):
                return StkQueryAnswer(None, exc.detail, still_processing=True)
            raise
        try:
            code = int(str(body.get("ResultCode")))  # a string in the query's answer
        except ValueError:
            raise DarajaUnavailableError("Daraja's STK query answer has no ResultCode") from None
        return StkQueryAnswer(code, protocol.plain_text(body.get("ResultDesc")))

    # ---- transport -------------------------------------------------------------------

    async def _authorised(self, method: str, path: str, payload: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        for attempt in range(2):
            token = await self.token()
            try:
                return await self._call(
                    method, path, json=payload, headers={"Authorization": f"Bearer {token}"}, idempotent=idempotent
                )
            except DarajaRefusedError as exc:
                if exc.status != 401 or attempt:
                    raise
                self.forget_token()  # revoked or expired early: one more try with a new token
        raise AssertionError("unreachable")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        for attempt in range(self.config.retries + 1):
            try:
                return await self._once(method, path, json=json, params=params, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error: DarajaError = DarajaUnavailableError(f"cannot connect to Daraja: {type(exc).__name__}")
                retry = True  # the connection never opened: nothing was sent
            except httpx.HTTPError as exc:
                error = DarajaUnavailableError(f"Daraja did not answer: {type(exc).__name__}")
                retry = idempotent
            except DarajaUnavailableError as exc:
                # "Still processing" is an answer, not a failure: asking again at once changes nothing.
                error, retry = exc, idempotent and not protocol.is_still_processing(exc.error_code, exc.detail)
            if not retry or attempt >= self.config.retries:
                if not protocol.is_still_processing(error.error_code, error.detail):
                    log.warning("daraja_call_failed", path=path, error=error.detail, attempts=attempt + 1)
                raise error
            await self._sleep(backoff_delay(attempt, base=0.25, cap=2.0))
        raise AssertionError("unreachable")

    async def _once(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
    ) -> dict[str, Any]:
        async with self._http.stream(method, path, json=json, params=params, headers=headers) as response:
            raw = bytearray()
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_BODY_BYTES:
                    raise DarajaUnavailableError("Daraja's answer is too large")
        body = _json_object(bytes(raw))
        if response.status_code >= 500 and not _is_error_body(body):
            raise DarajaUnavailableError(f"Daraja answered {response.status_code}", status=response.status_code)
        if response.status_code >= 400 or _is_error_body(body):
            error = DarajaUnavailableError if response.status_code >= 500 else DarajaRefusedError
            raise error(
                protocol.plain_text((body or {}).get("errorMessage") or f"Daraja answered {response.status_code}"),
                status=response.status_code,
                error_code=_str_or_none((body or {}).get("errorCode")),
                request_id=_str_or_none((body or {}).get("requestId")),
            )
        if body is None:
            raise DarajaUnavailableError(f"Daraja answered {response.status_code} without a JSON object")
        return body


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = jsonlib.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_error_body(body: dict[str, Any] | None) -> bool:
    return body is not None and "errorCode" in body


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)[:100]
