"""Locale formatting and language negotiation (platform/i18n.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from babel.numbers import format_currency

from smilingsteps.platform.i18n import Language, kes, negotiate, when

LOCALES = {Language.ENGLISH: "en_KE", Language.KISWAHILI: "sw_KE"}


@pytest.mark.parametrize("language", list(Language))
@pytest.mark.parametrize("amount", [0, 100, 2500, 1_000_000, 12_345_678])
def test_shillings_are_written_as_babel_writes_them_for_the_locale(language: Language, amount: int) -> None:
    expected = format_currency(amount, "KES", format="¤\u00a0#,##0", currency_digits=False, locale=LOCALES[language])
    assert kes(amount, language) == expected


def test_a_moment_is_written_in_the_readers_zone_and_language_with_the_zone_named() -> None:
    moment = datetime(2027, 1, 18, 14, 30, tzinfo=UTC)
    assert when(moment, "Africa/Nairobi", Language.ENGLISH) == "Monday 18 January 2027, 17:30 (Africa/Nairobi)"
    assert when(moment, "Europe/London", Language.KISWAHILI) == "Jumatatu 18 Januari 2027, 14:30 (Europe/London)"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("sw-KE,sw;q=0.9,en;q=0.8", Language.KISWAHILI),
        ("en-GB,en;q=0.9,sw;q=0.8", Language.ENGLISH),
        ("fr-FR,sw;q=0.5", Language.KISWAHILI),
        ("fr-FR", Language.ENGLISH),
        ("sw;q=0", Language.ENGLISH),
        ("", Language.ENGLISH),
        (None, Language.ENGLISH),
        ("sw;q=abc,en", Language.ENGLISH),
        ("*", Language.ENGLISH),
        ("x" * 5000, Language.ENGLISH),
    ],
)
def test_the_browsers_languages_pick_ours_by_weight(header: str | None, expected: Language) -> None:
    assert negotiate(header) is expected
