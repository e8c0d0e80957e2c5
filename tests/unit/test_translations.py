"""Every message shown to people (pages and emails) has its Kiswahili translation, and the catalogue is in step
with the code: a string marked in a template or module but missing from the catalogue, or
present but untranslated or fuzzy, fails here (run ./scripts/translations, then translate)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from smilingsteps.platform.i18n import Language, catalogue_path, translations

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _marked() -> set[str]:
    """Every msgid the code and templates mark, as `pybabel extract -F babel.cfg -k N_` finds them."""
    method_map = [
        ("smilingsteps/**.py", "python"),
        ("smilingsteps/**/templates/**.html", "jinja2"),
        ("smilingsteps/**/templates/**.txt", "jinja2"),
    ]
    jinja = {"extensions": "jinja2.ext.i18n"}
    options = {"smilingsteps/**/templates/**.html": jinja, "smilingsteps/**/templates/**.txt": jinja}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found: set[str] = set()
    for _, _, message, _, _ in extract_from_dir(ROOT / "src", method_map, options, keywords=keywords):
        found.update(message if isinstance(message, tuple) else (message,))
    return {message for message in found if message}


def _catalogue(language: Language) -> Catalog:
    with catalogue_path(language).open("rb") as po:
        return read_po(po, locale=language.value)


@pytest.mark.parametrize("language", [Language.KISWAHILI])
def test_every_marked_message_is_translated(language: Language) -> None:
    catalogue = _catalogue(language)
    translated = {
        ident
        for message in catalogue
        if message.id
        and not message.fuzzy
        and all(message.string if isinstance(message.string, tuple) else [message.string])
        for ident in (message.id if isinstance(message.id, tuple) else (message.id,))
    }
    missing = sorted(_marked() - translated)
    assert not missing, f"{len(missing)} messages have no {language.name.title()} translation:\n" + "\n".join(missing)


@pytest.mark.parametrize("language", [Language.KISWAHILI])
def test_translations_keep_every_placeholder(language: Language) -> None:
    wrong = []
    for message in _catalogue(language):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            if string and set(PLACEHOLDER.findall(string)) != wanted | ({"num"} & set(PLACEHOLDER.findall(string))):
                wrong.append(f"{ids[0]!r} -> {string!r}")
    assert not wrong, "placeholders differ:\n" + "\n".join(wrong)


def test_the_catalogue_compiles_and_translates() -> None:
    swahili = translations(Language.KISWAHILI)
    assert swahili.gettext("Sign in") != "Sign in"
    assert translations(Language.ENGLISH).gettext("Sign in") == "Sign in"
