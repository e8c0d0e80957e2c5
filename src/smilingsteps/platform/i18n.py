"""Languages: the two the platform speaks, their message catalogues, and locale-aware formatting.

Messages are written in English in the code and templates (gettext's msgid); the Kiswahili
catalogue is `smilingsteps/locale/sw/LC_MESSAGES/messages.po`, kept in the repository as
text and compiled when first used, so no generated binary is committed. A test fails when
a marked string has no Kiswahili translation (`tests/unit/test_translations.py`).

Dates and amounts are formatted with Babel's data for Kenya (`en_KE`, `sw_KE`), times in
the viewer's own time zone, always with the zone named.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

from babel import Locale, negotiate_locale
from babel.dates import format_date, format_datetime, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations

DOMAIN = "messages"


class Language(StrEnum):
    ENGLISH = "en"
    KISWAHILI = "sw"


DEFAULT_LANGUAGE = Language.ENGLISH
# Each language's own name, as a switch shows it (never translated: a reader looks for their own).
LANGUAGE_NAMES = {Language.ENGLISH: "English", Language.KISWAHILI: "Kiswahili"}
_LOCALES = {Language.ENGLISH: "en_KE", Language.KISWAHILI: "sw_KE"}


def N_(message: str) -> str:  # noqa: N802 (gettext's name for "mark for translation, translate later")
    """Marks `message` for the catalogue where it is defined; it is translated where it is shown."""
    return message


def gettext_in(language: Language) -> Callable[[str], str]:
    return translations(language).gettext


def catalogue_path(language: Language) -> resources.abc.Traversable:
    return resources.files("smilingsteps") / "locale" / language.value / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=len(Language))
def translations(language: Language) -> NullTranslations:
    """The compiled catalogue for `language` (English is the source: no catalogue)."""
    if language is DEFAULT_LANGUAGE:
        return NullTranslations()
    with catalogue_path(language).open("rb") as po:
        catalog = read_po(po, locale=language.value, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def language_or_none(value: str | None) -> Language | None:
    if value is None:
        return None
    try:
        return Language(value.strip().lower())
    except ValueError:
        return None


def negotiate(accept_language: str | None) -> Language:
    """The best of our languages for an Accept-Language header (RFC 9110 weights), English if none fits."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    wanted: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and weight > 0:
            wanted.append((-weight, position, tag.strip().replace("-", "_")))
    preferred = [tag for _, _, tag in sorted(wanted)]
    found = negotiate_locale(preferred, [language.value for language in Language], sep="_")
    return language_or_none(found) or DEFAULT_LANGUAGE


def locale_of(language: Language) -> Locale:
    return Locale.parse(_LOCALES[language])


def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def when(moment: datetime, zone: str, language: Language) -> str:
    """'Monday 18 January 2027, 17:30 (Africa/Nairobi)': a moment in a viewer's zone, the zone named."""
    text = format_datetime(moment, "EEEE d MMMM y, HH:mm", tzinfo=_zone(zone), locale=_LOCALES[language])
    return f"{text} ({zone})"


def day(value: date, language: Language) -> str:
    return format_date(value, "EEEE d MMMM y", locale=_LOCALES[language])


def clock_time(moment: datetime, zone: str, language: Language) -> str:
    return format_time(moment, "HH:mm", tzinfo=_zone(zone), locale=_LOCALES[language])


@lru_cache(maxsize=len(Language))
def _shillings(language: Language) -> tuple[str, str]:
    """The locale's shilling sign and digit-group separator, looked up once (pages show many prices)."""
    sample = format_currency(1000, "KES", format="¤\u00a0#,##0", currency_digits=False, locale=_LOCALES[language])
    sign, _, digits = sample.rpartition("\u00a0")
    return sign, digits[1:-3]


def kes(amount: int, language: Language) -> str:
    """Whole shillings, as Kenyans write them: 'Ksh 2,500' (Babel's sign and grouping for the locale)."""
    sign, group = _shillings(language)
    return f"{sign}\u00a0{amount:,}".replace(",", group) if group != "," else f"{sign}\u00a0{amount:,}"


def number(value: int, language: Language) -> str:
    return format_decimal(value, locale=_LOCALES[language])
