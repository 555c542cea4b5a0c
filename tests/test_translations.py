"""Every message of the interface is translated into each shipped language, none left fuzzy, and the compiled
catalogue the app loads says the same as the one translators edit."""

from __future__ import annotations

import gettext
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.utils.translation import to_locale

LOCALE = Path(__file__).resolve().parent.parent / "locale"
TRANSLATED = [to_locale(code) for code, _ in settings.LANGUAGES if code != "en"]


def catalogue(locale: str) -> polib.POFile:
    return polib.pofile(str(LOCALE / locale / "LC_MESSAGES" / "django.po"))


def untranslated(entry: polib.POEntry) -> bool:
    if "fuzzy" in entry.flags:
        return True
    if entry.msgid_plural:
        return not entry.msgstr_plural or not all(entry.msgstr_plural.values())
    return not entry.msgstr


def test_the_six_languages_of_the_seeds_are_offered():
    assert {code for code, _ in settings.LANGUAGES} == {"en", "zh-hans", "ru", "sv", "pt-br", "es"}


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_message_is_translated(locale):
    missing = [entry.msgid for entry in catalogue(locale) if not entry.obsolete and untranslated(entry)]
    assert not missing, missing


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_plural_has_the_forms_its_language_needs(locale):
    po = catalogue(locale)
    forms = int(po.metadata["Plural-Forms"].split("nplurals=")[1].split(";")[0])
    short = [e.msgid for e in po if e.msgid_plural and not e.obsolete and len(e.msgstr_plural) != forms]
    assert not short, short


@pytest.mark.parametrize("locale", TRANSLATED)
def test_the_compiled_catalogue_matches_the_source(locale):
    """A .po edited without `compilemessages` would ship the old text."""
    with (LOCALE / locale / "LC_MESSAGES" / "django.mo").open("rb") as compiled:
        loaded = gettext.GNUTranslations(compiled)
    stale = []
    for entry in catalogue(locale):
        if entry.obsolete or entry.msgid_plural:
            continue
        shown = loaded.pgettext(entry.msgctxt, entry.msgid) if entry.msgctxt else loaded.gettext(entry.msgid)
        if shown != entry.msgstr:
            stale.append(entry.msgid)
    assert not stale, stale


def test_the_check_sees_an_untranslated_and_a_fuzzy_entry():
    assert untranslated(polib.POEntry(msgid="Hello", msgstr=""))
    assert untranslated(polib.POEntry(msgid="Hello", msgstr="你好", flags=["fuzzy"]))
    assert untranslated(polib.POEntry(msgid="a", msgid_plural="b", msgstr_plural={0: "x", 1: ""}))
    assert not untranslated(polib.POEntry(msgid="Hello", msgstr="你好"))
