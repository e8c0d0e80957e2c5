"""Payments' request bodies and answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field

from smilingsteps.accounts.schemas import Phone
from smilingsteps.payments.models import PaymentAttempt
from smilingsteps.payments.mpesa.protocol import masked_phone
from smilingsteps.payments.states import FailureReason, PaymentStatus
from smilingsteps.platform.schemas import RequestModel, ResponseModel

# M-Pesa receipt numbers: ten capital letters and digits (e.g. SGR7T3X9QA).
MpesaReceipt = Annotated[str, Field(pattern=r"^[A-Z0-9]{10}$", description="an M-Pesa receipt number")]


class StkPushIn(RequestModel):
    booking_id: uuid.UUID
    phone: Phone = Field(description="the M-Pesa number to prompt: 07XX…, 01XX…, +2547… or 2541…")


class RefundIn(RequestModel):
    receipt: MpesaReceipt = Field(description="the M-Pesa receipt of the refund sent to the client")


class PaymentOut(ResponseModel):
    id: uuid.UUID
    booking_id: uuid.UUID
    status: PaymentStatus
    amount_kes: int
    phone: str = Field(description="the prompted number, partly hidden")
    reason: FailureReason | None = Field(description="why no money was taken (failed, cancelled, timed out)")
    result_desc: str | None = Field(description="M-Pesa's own words about the outcome")
    mpesa_receipt: str | None
    paid_at: datetime | None
    refund_kes: int
    refund_receipt: str | None
    refunded_at: datetime | None
    created_at: datetime
    settled_at: datetime | None

    @classmethod
    def of(cls, attempt: PaymentAttempt) -> PaymentOut:
        columns = {name: getattr(attempt, name) for name in cls.model_fields if name != "phone"}
        return cls.model_validate({**columns, "phone": masked_phone(attempt.phone)})


class AdminPaymentOut(PaymentOut):
    client_id: uuid.UUID
    full_phone: str = Field(description="the paying number in full: where a refund is sent")
    checkout_request_id: str | None
    merchant_request_id: str | None
    result_code: int | None
    checks: int

    @classmethod
    def of(cls, attempt: PaymentAttempt) -> AdminPaymentOut:
        base = PaymentOut.of(attempt).model_dump()
        extra = {name: getattr(attempt, name) for name in cls.model_fields if name not in base and name != "full_phone"}
        return cls.model_validate({**base, **extra, "full_phone": attempt.phone})


class PaymentPage(ResponseModel):
    items: list[AdminPaymentOut]
    total: int
