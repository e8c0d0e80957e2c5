"""The subset of Daraja that M-Pesa Express uses, as pure functions shared by the client and the simulator.

Facts that bite (checked against Daraja's documentation and its users' threads):
- OAuth answers `expires_in` as a string ("3599").
- The STK push `Password` is base64(shortcode + passkey + timestamp) and `Timestamp` is
  YYYYMMDDHHmmss in Africa/Nairobi time, whatever the server's zone.
- `AccountReference` longer than 12 characters is "accepted" but no prompt reaches the phone.
- Synchronous replies carry `ResponseCode` as a string; the STK query's `ResultCode` is a
  string too, while the callback's `ResultCode` is an integer.
- While a payment is still open the STK query answers an error body with `errorCode`
  "500.001.1001" and `errorMessage` "The transaction is being processed"; Daraja uses the
  same code for other errors, so the message decides.
- In a callback `CallbackMetadata` is absent on failure; its items are found by `Name`
  (their order is not promised), `Balance` may have no `Value`, `Amount` may be `1` or
  `1.0`, and `PhoneNumber` and `TransactionDate` are numbers.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")
OAUTH_PATH = "/oauth/v1/generate"
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
BASE_URLS = {"sandbox": "https://sandbox.safaricom.co.ke", "production": "https://api.safaricom.co.ke"}
PAY_BILL = "CustomerPayBillOnline"
BUY_GOODS = "CustomerBuyGoodsOnline"
STILL_PROCESSING_CODE = "500.001.1001"
STILL_PROCESSING_MESSAGE = "The transaction is being processed"
ACCOUNT_REFERENCE_MAX = 12
TRANSACTION_DESC = "Session"


def nairobi_timestamp(moment: datetime) -> str:
    """Daraja's `Timestamp`: YYYYMMDDHHmmss in Nairobi time (the server's own zone does not matter)."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return moment.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def from_nairobi_timestamp(value: int | str) -> datetime:
    """A callback's `TransactionDate` (20191219102115, Nairobi time) as aware UTC."""
    local = datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    return local.astimezone(UTC)


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def masked_phone(phone: str) -> str:
    """For people and logs: 2547…678 shows enough to recognise one's own number."""
    return f"{phone[:4]}…{phone[-3:]}" if len(phone) > 7 else "…"


def account_reference(booking_id: str) -> str:
    """At most 12 letters and digits: longer references get no prompt to the phone."""
    reference = "SS" + re.sub(r"[^0-9A-Za-z]", "", booking_id)[: ACCOUNT_REFERENCE_MAX - 2].upper()
    return reference[:ACCOUNT_REFERENCE_MAX]


def is_still_processing(error_code: object, error_message: object) -> bool:
    """Daraja's "ask again later" answer to an STK query (the code alone is shared with other errors)."""
    return (
        str(error_code) == STILL_PROCESSING_CODE
        and isinstance(error_message, str)
        and "being processed" in error_message.lower()
    )


class MalformedCallbackError(ValueError):
    """A callback body that is not an STK callback as Daraja sends it."""


@dataclass(frozen=True)
class StkCallback:
    merchant_request_id: str
    checkout_request_id: str
    result_code: int
    result_desc: str
    amount: Decimal | None = None
    receipt: str | None = None
    transaction_date: int | None = None
    phone: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result_code == 0


def _text(value: object, name: str, *, limit: int = 64) -> str:
    """An identifier: printable ASCII only (Daraja's are; a NUL or a bidi control is an attack)."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedCallbackError(f"{name} must be a non-empty string of at most {limit} characters")
    if not (value.isascii() and value.isprintable()):
        raise MalformedCallbackError(f"{name} must be printable ASCII")
    return value


def plain_text(value: object, *, limit: int = 300) -> str:
    """Free text from Daraja (a ResultDesc), without control characters, at most `limit` characters."""
    if not isinstance(value, str):
        return ""
    return "".join(c if c.isprintable() else " " for c in value[:limit]).strip()


def _integer(value: object, name: str) -> int:
    # bool is an int in Python; a JSON true is not a number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedCallbackError(f"{name} must be an integer")
    return value


def _number_text(value: object, name: str) -> str:
    """PhoneNumber and TransactionDate: numbers in the JSON (a digit string is tolerated)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedCallbackError(f"{name} must be a number")
    text = str(value)
    if not text.isdigit() or len(text) > 20:
        raise MalformedCallbackError(f"{name} must be a number")
    return text


def _amount(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedCallbackError("Amount must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise MalformedCallbackError("Amount must be a number") from None
    if not amount.is_finite() or amount <= 0 or amount > 1_000_000:
        raise MalformedCallbackError("Amount is out of range")
    return amount


def _metadata(items: object) -> dict[str, object]:
    """The metadata items by Name (their order is not promised); an item may lack `Value`."""
    if not isinstance(items, list) or len(items) > 20:
        raise MalformedCallbackError("CallbackMetadata.Item must be a short list")
    found: dict[str, object] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("Name"), str):
            raise MalformedCallbackError("each CallbackMetadata item needs a Name")
        found[item["Name"]] = item.get("Value")
    return found


def parse_callback(payload: Any) -> StkCallback:
    """The STK callback in `payload` (parsed JSON); MalformedCallbackError when it is not one."""
    body = payload.get("Body") if isinstance(payload, dict) else None
    callback = body.get("stkCallback") if isinstance(body, dict) else None
    if not isinstance(callback, dict):
        raise MalformedCallbackError("Body.stkCallback is missing")
    result_code = _integer(callback.get("ResultCode"), "ResultCode")
    desc = callback.get("ResultDesc")
    parsed = StkCallback(
        merchant_request_id=_text(callback.get("MerchantRequestID"), "MerchantRequestID"),
        checkout_request_id=_text(callback.get("CheckoutRequestID"), "CheckoutRequestID"),
        result_code=result_code,
        result_desc=plain_text(desc),
    )
    metadata = callback.get("CallbackMetadata")
    if result_code != 0:
        return parsed  # a failure carries no metadata (and any it has is not needed)
    if not isinstance(metadata, dict):
        raise MalformedCallbackError("a successful callback needs CallbackMetadata")
    items = _metadata(metadata.get("Item"))
    for required in ("Amount", "MpesaReceiptNumber", "PhoneNumber"):
        if items.get(required) is None:
            raise MalformedCallbackError(f"a successful callback needs {required}")
    date = items.get("TransactionDate")
    return StkCallback(
        merchant_request_id=parsed.merchant_request_id,
        checkout_request_id=parsed.checkout_request_id,
        result_code=0,
        result_desc=parsed.result_desc,
        amount=_amount(items["Amount"]),
        receipt=_text(items["MpesaReceiptNumber"], "MpesaReceiptNumber", limit=32),
        transaction_date=None if date is None else int(_number_text(date, "TransactionDate")),
        phone=_number_text(items["PhoneNumber"], "PhoneNumber"),
    )


def callback_payload(
    *,
    merchant_request_id: str,
    checkout_request_id: str,
    result_code: int,
    result_desc: str,
    amount: int | float | None = None,
    receipt: str | None = None,
    phone: str | None = None,
    transaction_date: datetime | None = None,
) -> dict[str, Any]:
    """A callback body as Daraja sends it (the simulator's, and tests')."""
    callback: dict[str, Any] = {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_request_id,
        "ResultCode": result_code,
        "ResultDesc": result_desc,
    }
    if result_code == 0:
        moment = transaction_date or datetime.now(UTC)
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": amount},
                {"Name": "MpesaReceiptNumber", "Value": receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(nairobi_timestamp(moment))},
                {"Name": "PhoneNumber", "Value": int(phone) if phone and phone.isdigit() else phone},
            ]
        }
    return {"Body": {"stkCallback": callback}}
