"""Gmail's search syntax, one parser for SQLite and PostgreSQL: the parser alone, then the same queries run
against the database (this file runs on both in ``make test``)."""

from __future__ import annotations

from datetime import date

import pytest

from mailbox.search import SearchQuery, messages_search
from mailbox.search_syntax import Condition, FieldMatch, ParsedSearch, Words, search_parse

TODAY = date(2026, 11, 29)


def test_operators_words_phrases_and_exclusions_parse():
    parsed = search_parse(
        'Invoice -"old draft" from:"Ann Lee" -to:bob IS:Unread has:attachment in:anywhere in:"Project X" '
        "filename:q3.pdf older_than:2w after:2026/01/31",
        today=TODAY,
    )
    assert parsed.words == (
        Words(("invoice",), text="invoice"),
        Words(("old", "draft"), phrase=True, negated=True, text="old draft"),
    )
    assert parsed.fields == (
        FieldMatch("from", "Ann Lee"),
        FieldMatch("to", "bob", negated=True),
        FieldMatch("filename", "q3.pdf"),
    )
    assert parsed.conditions == (Condition("unread"), Condition("attachment"), Condition("in", "Project X"))
    assert (parsed.after, parsed.before) == (date(2026, 1, 31), date(2026, 11, 15))


@pytest.mark.parametrize(
    ("text", "after", "before"),
    [
        ("after:2026-11-01 after:2026-11-05", date(2026, 11, 5), None),  # the stricter bound wins
        ("before:2026-11-05 before:2026-11-01", None, date(2026, 11, 1)),
        ("-after:2026-11-05", None, date(2026, 11, 5)),  # not after the 5th: before it
        ("newer_than:3d -older_than:1y", date(2026, 11, 26), None),
        ("older_than:1m", None, date(2026, 10, 30)),
    ],
)
def test_dates_and_ages(text, after, before):
    parsed = search_parse(text, today=TODAY)
    assert (parsed.after, parsed.before) == (after, before)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("after:yesterday", (Words(("after", "yesterday"), text="after:yesterday"),)),  # not a date: words
        ("colour:red", (Words(("colour", "red"), text="colour:red"),)),  # an unknown operator: words
        ("has:wings", (Words(("has", "wings"), text="has:wings"),)),
        ("from:", (Words(("from",), text="from:"),)),  # an operator without a value
        ("e-mail", (Words(("e", "mail"), text="e-mail"),)),  # every word must appear
        ("-foo.bar", (Words(("foo", "bar"), phrase=True, negated=True, text="foo.bar"),)),  # excluded as a whole
        ('"unclosed phrase', (Words(("unclosed", "phrase"), phrase=True, text="unclosed phrase"),)),
        ("ÜBER Straße", (Words(("über",), text="über"), Words(("straße",), text="straße"))),
        ("東京 foo_bar", (Words(("東京",), text="東京"), Words(("foo", "bar"), text="foo_bar"))),
    ],
)
def test_what_is_not_an_operator_is_searched_as_words(text, words):
    assert search_parse(text, today=TODAY).words == words


@pytest.mark.parametrize("text", ["%", "_", "%_%", "*** -- ()", '""', "-", "in:anywhere"])
def test_text_with_nothing_to_search_by(text):
    parsed = search_parse(text, today=TODAY)
    assert parsed == ParsedSearch(unsearchable=True) and not parsed.is_empty


def test_no_text_is_no_search():
    assert search_parse("   ", today=TODAY).is_empty


def _found(user, text: str) -> set[str]:
    return set(messages_search(user=user, query=SearchQuery(text=text)).values_list("subject", flat=True))


LUNCH, REPORT, KICKOFF, REPLY = "Lunch on Friday?", "Quarterly report", "Project kickoff", "Re: Project kickoff"
ALL = {LUNCH, REPORT, KICKOFF, REPLY}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kick", {KICKOFF, REPLY}),  # a word prefix, on PostgreSQL too
        ("KICKOFF monday", {KICKOFF, REPLY}),
        ("kickoff -agenda", {KICKOFF}),
        ("-kickoff", {LUNCH, REPORT}),
        ('"is on monday"', {KICKOFF, REPLY}),
        ('"monday on"', set()),  # a phrase keeps its order
        ('-"agenda attached"', {LUNCH, REPORT, KICKOFF}),
        ("from:carol", {LUNCH}),
        ("carol@example.org", {LUNCH}),  # PostgreSQL keeps an address as one lexeme too
        ("carol@exam", {LUNCH}),
        ("report.pdf", {REPORT}),  # attachment names are in the text index too
        ("pdf", {REPORT}),
        ("-report.pdf", {LUNCH, KICKOFF, REPLY}),
        ('from:"Dana Report"', {REPORT}),
        ("-from:carol -from:dana", {KICKOFF, REPLY}),
        ("to:outlook.example", {KICKOFF, REPLY}),
        ("-to:outlook", {LUNCH, REPORT}),
        ("subject:kickoff", {KICKOFF, REPLY}),
        ("has:attachment", {REPORT}),
        ("-has:attachment quarterly", set()),
        ("filename:REPORT.pdf", {REPORT}),
        ("filename:xls", set()),
        ("is:unread", {REPORT, REPLY}),
        ("is:read -is:starred", {LUNCH, KICKOFF}),
        ("is:starred", set()),
        ("in:inbox", ALL),
        ("in:receipts", {REPORT}),  # by the folder's name
        ("-in:receipts", {LUNCH, KICKOFF, REPLY}),
        ("newer_than:1d", ALL),
        ("older_than:1d", set()),
        ("after:2000-01-01 before:2100-01-01", ALL),
        ("before:2000/01/01", set()),
        # No wildcard: % and _ are characters like any other (no message has them in these fields).
        ("%", set()),
        ("_", set()),
        ("to:%", set()),
        ("from:_", set()),
        ("subject:%kick%", set()),
        ("colour:red", set()),
    ],
)
def test_the_same_query_finds_the_same_mail_on_each_database(alice, ui_mail, text, expected):
    assert _found(alice, text) == expected


def test_another_users_mail_is_never_found(alice, bob, ui_mail):
    assert _found(alice, "private") == set() and _found(bob, "private") == {"Bob's private mail"}
    assert _found(alice, "-private") == ALL


def test_the_search_page_takes_the_syntax_and_shows_how(client, alice, ui_mail):
    from django.urls import reverse

    client.force_login(alice)
    page = client.get(reverse("mailbox:search"), {"q": "from:carol -is:unread"}).content.decode()
    assert LUNCH in page and REPORT not in page and KICKOFF not in page
    assert "<code>has:attachment</code>" in page
    assert REPORT not in client.get(reverse("mailbox:search"), {"q": "%"}).content.decode()
