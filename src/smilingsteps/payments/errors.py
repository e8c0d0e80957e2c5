"""Errors the payments domain raises."""

from __future__ import annotations

from smilingsteps.platform.errors import ConflictError, ServiceUnavailableError


class PaymentStateError(ConflictError):
    slug, title = "payment-state", "Not possible in the payment's current state"


class ReceiptTakenError(ConflictError):
    slug, title = "receipt-taken", "That M-Pesa receipt is already recorded"
    default_detail = "That M-Pesa receipt number is already recorded for another payment or refund."


class MpesaUnavailableError(ServiceUnavailableError):
    slug, title = "mpesa-unavailable", "M-Pesa is unavailable"
    default_detail = "M-Pesa cannot be reached just now; try again in a minute."
