"""What the payment pages and the booking page share: how a number and a payment are shown to a
person, and the booking page's payment panel (pay, follow the payment, or the receipt).

Only the client who pays sees any of it: a therapist's view of a booking never reads payments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.bookings.models import Booking, BookingStatus
from smilingsteps.payments import service as payments
from smilingsteps.payments.models import PaymentAttempt
from smilingsteps.payments.states import LIVE, PAID, FailureReason, PaymentStatus
from smilingsteps.platform.i18n import Language, gettext_in
from smilingsteps.web.forms import N_

# Why no money was taken, one plain sentence each (OTHER adds M-Pesa's own words when it gave some).
REASONS: dict[FailureReason, str] = {
    FailureReason.INSUFFICIENT_FUNDS: N_("There was not enough money in the M-Pesa account."),
    FailureReason.CANCELLED_BY_USER: N_("The request was cancelled on the phone."),
    FailureReason.EXPIRED: N_("The request on the phone expired before the PIN was entered."),
    FailureReason.WRONG_PIN: N_("The M-Pesa PIN entered was wrong."),
    FailureReason.UNREACHABLE: N_("The phone could not be reached: it may be off or out of network."),
    FailureReason.ANOTHER_SESSION: N_("Another M-Pesa payment was in progress on that phone."),
    FailureReason.MPESA_UNAVAILABLE: N_("M-Pesa was unavailable."),
    FailureReason.PUSH_ERROR: N_("M-Pesa could not send the request to the phone."),
    FailureReason.REFUSED: N_("M-Pesa refused the request."),
    FailureReason.NO_ANSWER: N_("M-Pesa did not answer in time."),
    FailureReason.OTHER: N_("M-Pesa could not complete the payment."),
}
STATUS_WORDS: dict[PaymentStatus, str] = {
    PaymentStatus.INITIATED: N_("Sending the request to the phone"),
    PaymentStatus.PENDING: N_("Waiting for the PIN on the phone"),
    PaymentStatus.SUCCEEDED: N_("Paid"),
    PaymentStatus.FAILED: N_("Failed"),
    PaymentStatus.CANCELLED: N_("Cancelled"),
    PaymentStatus.TIMED_OUT: N_("No answer in time"),
    PaymentStatus.REFUND_DUE: N_("Paid: refund due"),
    PaymentStatus.REFUNDED: N_("Refunded"),
}


@lru_cache(maxsize=len(Language))
def payment_words(language: Language) -> dict[PaymentStatus, str]:
    """Each payment status in words, in `language` (shared: callers must not change it)."""
    gettext = gettext_in(language)
    return {status: gettext(words) for status, words in STATUS_WORDS.items()}


def reason_of(attempt: PaymentAttempt, language: Language) -> str:
    """Why `attempt` took no money, in one sentence (M-Pesa's own description for a reason we do not know)."""
    gettext = gettext_in(language)
    sentence = gettext(REASONS[attempt.reason or FailureReason.OTHER])
    if attempt.reason in (None, FailureReason.OTHER) and attempt.result_desc:
        return gettext(N_("M-Pesa said: %(description)s")) % {"description": attempt.result_desc}
    return sentence


def local_phone(msisdn: str) -> str:
    """2547XXXXXXXX as Kenyans write it: 07XX XXX XXX (anything else as it is)."""
    if len(msisdn) == 12 and msisdn.startswith("254") and msisdn.isdigit():
        local = "0" + msisdn[3:]
        return f"{local[:4]} {local[4:7]} {local[7:]}"
    return msisdn


def masked_phone(msisdn: str) -> str:
    """Enough of the number to recognise one's own: 07XX XXX 678."""
    if len(msisdn) == 12 and msisdn.isdigit():
        return f"0{msisdn[3]}XX XXX {msisdn[-3:]}"
    return "…"


def payable_now(booking: Booking, now: datetime) -> bool:
    """Whether the client may start paying for `booking` now (held, its hold not run out)."""
    expires = booking.hold_expires_at
    return booking.status is BookingStatus.HELD and expires is not None and expires > now


@dataclass(frozen=True)
class PayPanel:
    """The booking page's payment part, for the client: at most one of these applies."""

    can_pay: bool  # the pay form
    live: PaymentAttempt | None  # a payment waiting for the PIN: link to follow it
    paid: PaymentAttempt | None  # money taken: its receipt
    last: PaymentAttempt | None  # the newest attempt, whatever it became
    phone: str  # what the pay form offers: the last number tried, else the account's

    @property
    def last_failed(self) -> bool:
        return self.last is not None and self.last.status not in (*LIVE, *PAID)


NO_PANEL = PayPanel(can_pay=False, live=None, paid=None, last=None, phone="")


async def pay_panel(
    session: AsyncSession, client_id: uuid.UUID, booking: Booking, *, account_phone: str, now: datetime
) -> PayPanel:
    last = await payments.latest_for_booking(session, client_id, booking.id)
    status = last.status if last is not None else None
    return PayPanel(
        can_pay=payable_now(booking, now) and status not in LIVE,
        live=last if status in LIVE else None,
        paid=last if status in PAID else None,
        last=last,
        phone=local_phone(last.phone if last is not None else account_phone),
    )
