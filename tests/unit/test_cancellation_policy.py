"""The cancellation policy's money rules (bookings/policy.py): only money taken is ever refunded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from smilingsteps.bookings.policy import Cancellation, cancellation
from smilingsteps.platform.i18n import Language

FREE_HOURS = 24
EARLY, EXACTLY, LATE = (
    timedelta(days=3),
    timedelta(hours=FREE_HOURS),
    timedelta(hours=FREE_HOURS) - timedelta(seconds=1),
)


@pytest.mark.parametrize("by_therapist", [False, True])
@pytest.mark.parametrize("notice", [EARLY, EXACTLY, LATE, -timedelta(hours=1)])
def test_nothing_paid_refunds_nothing_and_says_nothing_about_money(by_therapist: bool, notice: timedelta) -> None:
    outcome = cancellation(paid_kes=0, by_therapist=by_therapist, notice=notice, free_hours=FREE_HOURS)
    assert outcome == Cancellation(paid_kes=0, refund_kes=0, free_hours=FREE_HOURS)
    assert outcome.note() == outcome.note(Language.KISWAHILI) == ""


@pytest.mark.parametrize(("notice", "refund"), [(EARLY, 2500), (EXACTLY, 2500), (LATE, 0)])
def test_a_client_is_refunded_what_was_paid_until_the_free_cancellation_limit(notice: timedelta, refund: int) -> None:
    outcome = cancellation(paid_kes=2500, by_therapist=False, notice=notice, free_hours=FREE_HOURS)
    assert (outcome.paid_kes, outcome.refund_kes) == (2500, refund)


@pytest.mark.parametrize("notice", [EARLY, LATE, -timedelta(hours=1)])
def test_a_therapist_who_cancels_refunds_everything_paid(notice: timedelta) -> None:
    assert cancellation(paid_kes=1800, by_therapist=True, notice=notice, free_hours=FREE_HOURS).refund_kes == 1800


def test_the_refund_is_what_was_paid_not_the_price() -> None:
    # A partial payment (say, a promotion) is what comes back, never more.
    assert cancellation(paid_kes=1200, by_therapist=True, notice=EARLY, free_hours=FREE_HOURS).refund_kes == 1200


def test_the_wording_follows_the_money() -> None:
    refunded = cancellation(paid_kes=12500, by_therapist=False, notice=EARLY, free_hours=FREE_HOURS)
    assert refunded.note() == "Ksh\u00a012,500 will be refunded to the M-Pesa number that paid."
    assert "12,500" in refunded.note(Language.KISWAHILI) and "M-Pesa" in refunded.note(Language.KISWAHILI)
    assert refunded.note(Language.KISWAHILI) != refunded.note()
    kept = cancellation(paid_kes=2500, by_therapist=False, notice=LATE, free_hours=FREE_HOURS)
    assert kept.note() == "As the cancellation came less than 24 hours before the session, the fee is not refunded."
    assert "24" in kept.note(Language.KISWAHILI) and kept.note(Language.KISWAHILI) != kept.note()


def test_a_negative_payment_is_a_bug() -> None:
    with pytest.raises(ValueError, match="paid_kes"):
        cancellation(paid_kes=-1, by_therapist=True, notice=EARLY, free_hours=FREE_HOURS)
