"""TOTP codes: accepted within one step of drift, never twice; recovery codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp

from smilingsteps.accounts import totp

NOW = datetime(2026, 11, 24, 12, 0, 10, tzinfo=UTC)


def code_at(secret: str, when: datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def test_the_current_code_is_accepted_once() -> None:
    secret = totp.new_secret()
    step = totp.matching_step(secret, code_at(secret, NOW), now=NOW, after_step=None)
    assert step is not None
    assert totp.matching_step(secret, code_at(secret, NOW), now=NOW, after_step=step) is None


def test_one_step_of_clock_drift_is_tolerated_two_are_not() -> None:
    secret = totp.new_secret()
    assert totp.matching_step(secret, code_at(secret, NOW - timedelta(seconds=30)), now=NOW, after_step=None)
    assert totp.matching_step(secret, code_at(secret, NOW + timedelta(seconds=30)), now=NOW, after_step=None)
    assert totp.matching_step(secret, code_at(secret, NOW - timedelta(seconds=90)), now=NOW, after_step=None) is None


def test_malformed_codes_never_match() -> None:
    secret = totp.new_secret()
    for code in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦"):
        assert totp.matching_step(secret, code, now=NOW, after_step=None) is None


def test_the_qr_code_is_an_svg_of_the_otpauth_uri() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), "ann@example.com")
    assert uri.startswith("otpauth://totp/Smiling%20Steps:ann%40example.com?secret=")
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")


def test_recovery_codes_are_unique_and_compared_loosely() -> None:
    codes = totp.new_recovery_codes()
    assert len(set(codes)) == 10
    first = codes[0]
    assert totp.recovery_code_hash(first) == totp.recovery_code_hash(first.upper().replace("-", " "))
