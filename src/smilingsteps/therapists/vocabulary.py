"""The fixed vocabularies therapists describe themselves with.

Extend by adding a member: stored values are these codes, so existing ones never change meaning.
"""

from __future__ import annotations

from enum import StrEnum


class Specialty(StrEnum):
    ANXIETY = "anxiety"
    DEPRESSION = "depression"
    TRAUMA = "trauma"
    GRIEF = "grief"
    RELATIONSHIPS = "relationships"
    FAMILY = "family"
    PARENTING = "parenting"
    CHILD_ADOLESCENT = "child_adolescent"
    ADDICTION = "addiction"
    STRESS = "stress"
    SLEEP = "sleep"
    EATING_DISORDERS = "eating_disorders"
    OCD = "ocd"
    BIPOLAR = "bipolar"
    LGBTQ = "lgbtq"
    CAREER = "career"


class Language(StrEnum):
    """ISO 639 codes of the languages sessions can be held in."""

    ENGLISH = "en"
    SWAHILI = "sw"
    KIKUYU = "ki"
    LUO = "luo"
    KAMBA = "kam"
    LUHYA = "luy"
    KALENJIN = "kln"
    SOMALI = "so"
    AMHARIC = "am"
    ARABIC = "ar"
    FRENCH = "fr"
    GERMAN = "de"
    SPANISH = "es"
    PORTUGUESE = "pt"
    HINDI = "hi"
    CHINESE = "zh"
