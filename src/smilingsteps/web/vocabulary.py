"""How the therapists' vocabularies read in each language: specialties from our catalogue,
session languages from CLDR's names (Babel), so 'ki' reads 'Kikuyu' or 'Kikuyu' as each locale writes it."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from smilingsteps.platform.i18n import Language, locale_of, translations
from smilingsteps.therapists.vocabulary import Language as SessionLanguage
from smilingsteps.therapists.vocabulary import Specialty
from smilingsteps.web.forms import N_

SPECIALTY_NAMES: dict[Specialty, str] = {
    Specialty.ANXIETY: N_("Anxiety"),
    Specialty.DEPRESSION: N_("Depression"),
    Specialty.TRAUMA: N_("Trauma"),
    Specialty.GRIEF: N_("Grief and loss"),
    Specialty.RELATIONSHIPS: N_("Relationships"),
    Specialty.FAMILY: N_("Family"),
    Specialty.PARENTING: N_("Parenting"),
    Specialty.CHILD_ADOLESCENT: N_("Children and adolescents"),
    Specialty.ADDICTION: N_("Addiction"),
    Specialty.STRESS: N_("Stress"),
    Specialty.SLEEP: N_("Sleep"),
    Specialty.EATING_DISORDERS: N_("Eating disorders"),
    Specialty.OCD: N_("Obsessive-compulsive disorder"),
    Specialty.BIPOLAR: N_("Bipolar disorder"),
    Specialty.LGBTQ: N_("LGBTQ+ support"),
    Specialty.CAREER: N_("Work and career"),
}


def specialty_namer(language: Language) -> Callable[[str], str]:
    gettext = translations(language).gettext

    def name(code: str) -> str:
        try:
            return gettext(SPECIALTY_NAMES[Specialty(code)])
        except ValueError:
            return code

    return name


def language_namer(language: Language) -> Callable[[str], str]:
    names = locale_of(language).languages

    def name(code: str) -> str:
        found = names.get(code)
        return found[:1].upper() + found[1:] if found else code

    return name


@lru_cache(maxsize=len(Language))
def specialties(language: Language) -> list[tuple[str, str]]:
    """(code, name) sorted by name in `language` (the same list for every page: callers must not change it)."""
    name = specialty_namer(language)
    return sorted(((item.value, name(item.value)) for item in Specialty), key=lambda pair: pair[1])


@lru_cache(maxsize=len(Language))
def session_languages(language: Language) -> list[tuple[str, str]]:
    name = language_namer(language)
    return sorted(((item.value, name(item.value)) for item in SessionLanguage), key=lambda pair: pair[1])
