"""Normalising what people type: emails, Kenyan phone numbers, time zones."""

from __future__ import annotations

import pytest

from smilingsteps.accounts.schemas import normalise_email, normalise_phone
from smilingsteps.platform.schemas import valid_timezone


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("0712345678", "254712345678"),
        ("0112345678", "254112345678"),
        ("+254 712 345 678", "254712345678"),
        ("254712-345-678", "254712345678"),
        ("(0712) 345678", "254712345678"),
    ],
)
def test_kenyan_numbers_are_stored_as_msisdn(typed: str, stored: str) -> None:
    assert normalise_phone(typed) == stored


@pytest.mark.parametrize("typed", ["0812345678", "25471234567", "+1 212 555 0100", "07123456789", "abc", ""])
def test_other_numbers_are_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="Kenyan mobile number"):
        normalise_phone(typed)


def test_emails_are_normalised_and_lower_cased() -> None:
    assert normalise_email("Ann.Wanjiru@Example.COM") == "ann.wanjiru@example.com"


@pytest.mark.parametrize("typed", ["not-an-email", "a@b", "a@@example.com", "someone@localhost"])
def test_bad_emails_are_refused(typed: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        normalise_email(typed)


def test_time_zones_must_be_iana_names() -> None:
    assert valid_timezone("America/New_York") == "America/New_York"
    for bad in ("Mars/Olympus", "../../etc/passwd", "localtime", "EAT"):
        with pytest.raises(ValueError, match="IANA"):
            valid_timezone(bad)
