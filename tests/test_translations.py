"""Every message of the interface has its Chinese (Simplified) translation, none left fuzzy."""

from __future__ import annotations

import re
from pathlib import Path

PO = Path(__file__).resolve().parent.parent / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


def entries(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if "msgid" in e and not e.lstrip().startswith("#~")]


def untranslated(entry: str) -> bool:
    if 'msgid ""\nmsgstr ""\n"Project-Id' in entry:  # the header
        return False
    if "#, fuzzy" in entry or re.search(r"^#,.*\bfuzzy\b", entry, re.M):
        return True
    if "msgid_plural" in entry:
        return bool(re.search(r'^msgstr\[\d\] ""\s*$', entry, re.M))
    return bool(re.search(r'^msgstr ""\s*\Z', entry.strip() + "\n", re.M))


def test_every_zh_hans_message_is_translated():
    missing = [e.split("msgid", 1)[1][:80] for e in entries(PO.read_text()) if untranslated(e)]
    assert not missing, missing


def test_the_check_sees_an_untranslated_and_a_fuzzy_entry():
    assert untranslated('#: x.py:1\nmsgid "Hello"\nmsgstr ""')
    assert untranslated('#: x.py:1\n#, fuzzy\nmsgid "Hello"\nmsgstr "你好"')
    assert not untranslated('#: x.py:1\nmsgid "Hello"\nmsgstr "你好"')
