"""Errors the payments domain raises."""

from __future__ import annotations

from smilingsteps.platform.errors import ConflictError


class PaymentStateError(ConflictError):
    slug, title = "payment-state", "Not possible in the payment's current state"


class ReceiptTakenError(ConflictError):
    slug, title = "receipt-taken", "That M-Pesa receipt is already recorded"
    default_detail = "That M-Pesa receipt number is already recorded for another payment or refund."
