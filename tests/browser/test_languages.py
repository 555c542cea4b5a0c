"""Each language the interface ships in, in Chromium: no English left on the main pages, and screenshots of
inbox, thread, search results and compose at desktop and phone width (under tests/artifacts/screenshots)."""

from __future__ import annotations

import re
from pathlib import Path

import polib
import pytest

from tests.browser.test_mail_ui import frames_loaded, gmail_ui, sign_in  # noqa: F401 (gmail_ui: a fixture)
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LOCALE = Path(__file__).resolve().parents[2] / "locale"
LANGUAGES = {"zh-hans": "zh_Hans", "ru": "ru", "sv": "sv", "pt-br": "pt_BR", "es": "es"}
NON_LATIN = {"zh-hans", "ru"}
# Mail content, addresses and names, not interface text.
CONTENT = (
    ".senders, .subject, .snippet, .from, .message-head dd, .attachments a, .nav-account h3, .thread-head h1, "
    "#lang-select, code"
)
# The visible interface text of the page (mail content left out), with its labels, titles and placeholders.
CHROME_TEXT = f"""() => {{
  const chrome = (node) => !node.closest("{CONTENT}") && node.checkVisibility();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  while (walker.nextNode()) {{
    const parent = walker.currentNode.parentElement;
    if (parent && !parent.closest("script, style, noscript") && chrome(parent)) parts.push(walker.currentNode.data);
  }}
  document.querySelectorAll("[aria-label], [title], [placeholder]").forEach((node) => {{
    if (chrome(node)) ["aria-label", "title", "placeholder"].forEach((name) => parts.push(node.getAttribute(name)));
  }});
  return parts.filter(Boolean).join("\\n");
}}"""
# Names that stay as they are in every language.
PROPER_NAMES = {"Mailhub", "Gmail", "Google", "Microsoft", "Outlook", "IMAP", "SMTP", "OAuth", "Cc", "Bcc", "MB", "KB"}
EMAIL = re.compile(r"\S+@\S+")


def english_left(text: str, *, language: str) -> list[str]:
    """The interface's English messages (or, in a non-Latin script, any Latin word) still on the page."""
    text = EMAIL.sub(" ", text)
    catalogue = polib.pofile(str(LOCALE / LANGUAGES[language] / "LC_MESSAGES" / "django.po"))
    left = [
        entry.msgid
        for entry in catalogue
        if entry.msgstr != entry.msgid
        and len(entry.msgid) > 3
        and "%" not in entry.msgid
        and re.search(rf"(?<![\w-]){re.escape(entry.msgid)}(?![\w-])", text)
    ]
    if language in NON_LATIN:
        left += sorted({w for w in re.findall(r"[A-Za-z]{2,}", text) if w not in PROPER_NAMES})
    return left


def test_the_check_finds_english_left_on_a_page():
    assert english_left("Папки Compose", language="ru") == ["Compose", "Compose"]
    assert english_left("Buscar · Mark unread", language="es") == ["Mark unread"]
    assert english_left("Redactar Buscar bob@example.org", language="es") == []


def pages(live_server, gmail_ui) -> dict[str, str]:  # noqa: F811
    thread = gmail_ui["account"].threads.get(subject="Quarterly report")
    inbox = gmail_ui["account"].folders.get(role="inbox")
    return {
        "inbox": "/",
        "folder": f"/folder/{inbox.id}/",
        "thread": f"/thread/{thread.id}/",
        "search": "/search/?q=report",
        "compose": "/compose/",
        "drafts": "/drafts/",
        "outbox": "/outbox/",
        "accounts": "/accounts/",
    }


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_no_english_left_on_the_main_pages(page, live_server, alice, gmail_ui, language):  # noqa: F811
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    page.select_option("#lang-select", language)
    page.wait_for_load_state("networkidle")
    assert page.get_attribute("html", "lang") == language
    found = {}
    for name, path in pages(live_server, gmail_ui).items():
        page.goto(live_server.url + path)
        frames_loaded(page)
        left = english_left(page.evaluate(CHROME_TEXT), language=language)
        if left:
            found[name] = left
        if name in {"inbox", "thread", "search", "compose"}:
            screenshot(page, f"{name}-{language}")
            page.set_viewport_size({"width": 390, "height": 844})
            screenshot(page, f"{name}-{language}-phone")
            page.set_viewport_size({"width": 1280, "height": 860})
    assert not found, found
    guard.assert_clean()
