"""Search: subject, participants and body, with every filter; PostgreSQL full text or SQLite FTS5 underneath."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from mailbox.models import Message
from mailbox.search import SQLITE_BACKWARD, SearchQuery, _sqlite_has_fts, fts5_query, messages_search, threads_search
from tests.fixtures.ui import message_add, raw_text_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _subjects(user, **query) -> set[str]:
    return set(threads_search(user=user, query=SearchQuery(**query)).values_list("subject", flat=True))


def test_index_is_in_place():
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'mailbox_message_search'")
            assert "gin" in cursor.fetchone()[0].lower()
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM sqlite_master WHERE name = 'mailbox_message_fts'")
            assert cursor.fetchone() is not None


def test_by_subject_sender_recipient_and_body(alice, ui_mail):
    assert _subjects(alice, text="quarterly") == {"Quarterly report"}
    assert _subjects(alice, text="Carol") == {"Lunch on Friday?"}  # sender name
    assert _subjects(alice, text="carol@example.org") == {"Lunch on Friday?"}  # sender address
    assert _subjects(alice, text="agenda") == {"Project kickoff"}  # body of the reply
    assert _subjects(alice, text="alice@outlook.example") == {"Project kickoff"}  # recipient
    assert _subjects(alice, text="lunch noon") == {"Lunch on Friday?"}  # every word must match
    assert _subjects(alice, text="lunch agenda") == set()


def test_only_the_users_own_mail(alice, bob, ui_mail):
    assert _subjects(alice, text="private") == set()
    assert _subjects(bob, text="private") == {"Bob's private mail"}
    assert _subjects(bob, text="quarterly") == set()


def test_filters(alice, ui_mail):
    gmail, outlook = ui_mail.alice_gmail, ui_mail.alice_outlook
    label = ui_mail.folders[gmail.email]["Label_1"]
    assert _subjects(alice, account_id=outlook.id) == {"Project kickoff"}
    assert _subjects(alice, folder_id=label.id) == {"Quarterly report"}
    assert _subjects(alice, unread=True) == {"Quarterly report", "Project kickoff"}
    assert _subjects(alice, has_attachment=True) == {"Quarterly report"}
    today = timezone.localdate()
    assert _subjects(alice, date_from=today + timedelta(days=1)) == set()
    old_when = timezone.now() - timedelta(days=40)
    raw, _ = raw_text_message(subject="Old news", body="Archive me", when=old_when)
    message_add(gmail, raw, folders=[ui_mail.folders[gmail.email]["INBOX"]], when=old_when)
    assert _subjects(alice, date_to=today - timedelta(days=30)) == {"Old news"}
    assert "Old news" not in _subjects(alice, date_from=today - timedelta(days=30))
    assert _subjects(alice, text="news", account_id=outlook.id) == set()


def test_index_follows_updates_and_deletes(alice, ui_mail):
    Message.objects.filter(pk=ui_mail.plain.pk).update(subject="Dinner on Saturday?")
    assert _subjects(alice, text="lunch") == set()
    assert messages_search(user=alice, query=SearchQuery(text="saturday")).count() == 1
    Message.objects.filter(pk=ui_mail.plain.pk).delete()
    assert messages_search(user=alice, query=SearchQuery(text="saturday")).count() == 0


def test_hostile_query_text_is_just_words(alice, ui_mail):
    for text in ['"', "NEAR(", "subject:*", "a OR b) --", "' OR 1=1 --", "*", "中文 查询", "<script>"]:
        assert messages_search(user=alice, query=SearchQuery(text=text)).count() >= 0
    assert fts5_query('foo" OR bar*') == '"foo"* AND "OR"* AND "bar"*'


def test_unicode_and_prefix(alice, ui_mail):
    raw, _ = raw_text_message(subject="Café meeting 会议", body="Réunion demain", sender="Zoë <zoe@example.org>")
    message_add(ui_mail.alice_gmail, raw, folders=[ui_mail.folders[ui_mail.alice_gmail.email]["INBOX"]])
    assert _subjects(alice, text="café") == {"Café meeting 会议"}
    assert _subjects(alice, text="会议") == {"Café meeting 会议"}


def test_search_page(client, alice, ui_mail):
    client.force_login(alice)
    label = ui_mail.folders[ui_mail.alice_gmail.email]["Label_1"]
    body = client.get(reverse("mailbox:search") + f"?q=report&folder={label.id}&attachment=on").content.decode()
    assert "Quarterly <mark>report</mark>" in body and "Lunch on Friday?" not in body
    assert f'<option value="{label.id}" selected>' in body
    empty = client.get(reverse("mailbox:search") + "?q=nothingmatchesthis").content.decode()
    assert "No conversations match." in empty
    assert client.get(reverse("mailbox:search") + "?after=not-a-date").status_code == 200


@pytest.mark.parametrize(
    "fields,empty",
    [
        ({}, True),
        ({"text": "  \t"}, True),
        ({"text": "x"}, False),
        ({"account_id": 1}, False),
        ({"folder_id": 1}, False),
        ({"unread": True}, False),
        ({"has_attachment": True}, False),
        ({"date_from": date(2024, 1, 1)}, False),
        ({"date_to": date(2024, 1, 1)}, False),
    ],
)
def test_a_query_is_empty_only_without_words_and_filters(fields, empty):
    assert SearchQuery(**fields).is_empty is empty
    assert {SearchQuery(**fields), SearchQuery(**fields)} == {SearchQuery(**fields)}  # a value: equal, hashable


def _local(day: date, hour: int, minute: int) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(hour, minute)))


def test_date_range_takes_whole_local_days_at_both_ends(alice, ui_mail):
    gmail, inbox = ui_mail.alice_gmail, ui_mail.folders[ui_mail.alice_gmail.email]["INBOX"]
    first = timezone.localdate() - timedelta(days=10)
    for subject, when in [
        ("Before", _local(first - timedelta(days=1), 23, 59)),
        ("Start", _local(first, 0, 0)),
        ("End", _local(first + timedelta(days=1), 23, 59)),
        ("After", _local(first + timedelta(days=2), 0, 0)),
    ]:
        raw, _ = raw_text_message(subject=subject, body="Dated mail", when=when)
        message_add(gmail, raw, folders=[inbox], when=when)
    last = first + timedelta(days=1)
    assert _subjects(alice, date_from=first, date_to=last) == {"Start", "End"}
    assert _subjects(alice, date_from=last, date_to=last) == {"End"}
    assert _subjects(alice, date_to=first - timedelta(days=1)) == {"Before"}
    assert _subjects(alice, text="dated", date_from=first + timedelta(days=2)) == {"After"}


def test_text_without_any_word_matches_nothing_rather_than_everything(alice, ui_mail):
    everything = _subjects(alice)
    assert len(everything) == 3
    assert _subjects(alice, text="") == _subjects(alice, text="   ") == everything  # no text: no text filter
    for symbols in ("%", "_", "%%", "*** -- ()", '""', "-"):
        assert _subjects(alice, text=symbols) == set(), symbols
        assert _subjects(alice, text=symbols, unread=True) == set(), symbols
    assert _subjects(alice, text="' = 1; --") == set()  # "1" is a word no message has


def _fts_drop() -> None:
    with connection.cursor() as cursor:
        for sql in SQLITE_BACKWARD:
            cursor.execute(sql)


def test_without_fts5_search_scans_subject_sender_and_body(alice, ui_mail):
    """An SQLite built without FTS5 has no index table: search still finds words, with LIKE."""
    if connection.vendor != "sqlite":
        pytest.skip("the FTS5 fallback is SQLite's")
    raw, _ = raw_text_message(subject="Mailer notice", body="Undeliverable", sender="Zed <postmaster-x@example.org>")
    message_add(ui_mail.alice_gmail, raw, folders=[ui_mail.folders[ui_mail.alice_gmail.email]["INBOX"]])
    _fts_drop()  # rolled back with the test's transaction
    _sqlite_has_fts.cache_clear()
    try:
        assert _subjects(alice, text="friday") == {"Lunch on Friday?"}  # subject only
        assert _subjects(alice, text="jones") == {"Lunch on Friday?"}  # sender name only
        assert _subjects(alice, text="postmaster") == {"Mailer notice"}  # sender address only
        assert _subjects(alice, text="noon") == {"Lunch on Friday?"}  # body only
        assert _subjects(alice, text="LUNCH noon") == {"Lunch on Friday?"}  # every word, any case
        assert _subjects(alice, text="lunch agenda") == set()
    finally:
        _sqlite_has_fts.cache_clear()


def test_sqlite_triggers_come_back_after_migrate(alice, ui_mail):
    """SQLite drops a table's triggers when a migration rebuilds it; every migrate puts them back."""
    if connection.vendor != "sqlite":
        pytest.skip("the FTS5 triggers are SQLite's")
    triggers = {"mailbox_message_fts_ai", "mailbox_message_fts_au", "mailbox_message_fts_ad"}
    with connection.cursor() as cursor:
        for name in triggers:
            cursor.execute(f"DROP TRIGGER {name}")
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'mailbox_message_fts%'")
        assert {row[0] for row in cursor.fetchall()} == triggers
    Message.objects.filter(pk=ui_mail.plain.pk).update(subject="Dinner on Saturday?")
    assert _subjects(alice, text="saturday") == {"Lunch on Friday?"}  # the thread keeps its subject


@pytest.mark.django_db(transaction=True)
def test_the_search_migration_reverses_and_reapplies(alice):
    call_command("migrate", "mailbox", "0001", verbosity=0)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'mailbox_message_search'")
        else:
            cursor.execute("SELECT 1 FROM sqlite_master WHERE name LIKE 'mailbox_message_fts%'")
        assert cursor.fetchone() is None
    call_command("migrate", "mailbox", verbosity=0)
    _sqlite_has_fts.cache_clear()
    test_index_is_in_place()


@pytest.mark.django_db(transaction=True)
def test_migration_0013_makes_stored_attachment_names_searchable_and_back(alice, ui_mail):
    """Rows stored before 0013 get their attachments' names indexed; migrating back leaves search working."""
    from django.db.migrations.executor import MigrationExecutor

    Message.objects.filter(pk=ui_mail.html.pk).update(attachment_names="")  # as a row from before 0013
    executor = MigrationExecutor(connection)
    executor.migrate([("mailbox", "0012_outgoing_error_code")])
    executor.loader.build_graph()
    assert not _subjects(alice, text="pdf")  # the old index holds no file names
    assert _subjects(alice, text="quarterly") == {"Quarterly report"}
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert set(Message.objects.get(pk=ui_mail.html.pk).attachment_names.split()) == {"logo.png", "report.pdf"}
    assert _subjects(alice, text="pdf") == {"Quarterly report"}
    assert _subjects(alice, text="report.pdf") == {"Quarterly report"}


@pytest.mark.parametrize("few_matches", [0, 1000], ids=["per mailbox", "gathered once"])
def test_search_pages_list_the_same_threads_gathered_once_or_per_mailbox(alice, ui_mail, monkeypatch, few_matches):
    """Few matches are gathered with one scan, many are read per mailbox and merged: the same pages either way."""
    from mailbox import search, selectors

    base = timezone.now() - timedelta(days=3)
    for i in range(7):
        account = ui_mail.alice_gmail if i % 2 else ui_mail.alice_outlook
        when = base + timedelta(minutes=i // 2)  # ties across the two mailboxes
        raw, _ = raw_text_message(subject=f"Invoice {i}", body="please pay", when=when)
        message_add(account, raw, folders=[], when=when)
    monkeypatch.setattr(search, "FEW_MATCHES", few_matches)
    query = SearchQuery(text="invoice")
    expected = list(
        threads_search(user=alice, query=query).order_by("-last_message_at", "-id").values_list("id", flat=True)
    )
    parts = search.threads_search_by_account(user=alice, query=query)
    assert len(parts) == (1 if few_matches else 2)
    first = selectors.thread_page(threads=parts, cursor=None, limit=4)
    second = selectors.thread_page(threads=parts, cursor=first.next_cursor, limit=4)
    assert [t.id for t in first.threads + second.threads] == expected and len(expected) == 7
    assert {t.account.user_id for t in first.threads} == {alice.id}
