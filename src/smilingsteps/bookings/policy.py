"""The cancellation policy as pure rules: what a cancellation gives back, and how the email says so.

No database, no clock: the service passes in what was paid, who cancels and how long before the
start. Each rule is tested in ``tests/unit/test_cancellation_policy.py``.

- A refund is only ever money the platform took: nothing paid, nothing refunded, and the email
  says nothing about money at all. A confirmed booking can be unpaid (payments do not exist yet,
  or an administrator confirmed it after a payment made outside the platform, which is settled
  outside it too), so "no payment was taken" could be false as well.
- The therapist cancels: everything paid is refunded.
- The client cancels at least ``free_hours`` before the start: everything paid is refunded; later,
  nothing is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from smilingsteps.platform.i18n import DEFAULT_LANGUAGE, N_, Language, gettext_in, kes

REFUNDED = N_("%(amount)s will be refunded to the M-Pesa number that paid.")
NOT_REFUNDED = N_("As the cancellation came less than %(hours)s hours before the session, the fee is not refunded.")


@dataclass(frozen=True)
class Cancellation:
    """What cancelling a booking means for its money, and the sentence the cancellation email ends with."""

    paid_kes: int
    refund_kes: int
    free_hours: int

    def note(self, language: Language = DEFAULT_LANGUAGE) -> str:
        """The cancellation email's last sentence in `language`; empty when nothing was paid."""
        if not self.paid_kes:
            return ""
        gettext = gettext_in(language)
        if self.refund_kes:
            return gettext(REFUNDED) % {"amount": kes(self.refund_kes, language)}
        return gettext(NOT_REFUNDED) % {"hours": self.free_hours}


def cancellation(*, paid_kes: int, by_therapist: bool, notice: timedelta, free_hours: int) -> Cancellation:
    """The outcome of cancelling `notice` before the start, after `paid_kes` was taken."""
    if paid_kes < 0:
        raise ValueError("paid_kes must not be negative")
    refunded = by_therapist or notice >= timedelta(hours=free_hours)
    refund = paid_kes if refunded else 0
    return Cancellation(paid_kes=paid_kes, refund_kes=refund, free_hours=free_hours)
