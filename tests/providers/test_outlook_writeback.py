"""Reading, starring, moving and deleting in Mailhub reach the Outlook (Dovecot) mailbox, and come back."""

from __future__ import annotations

import pytest

from mailbox.models import Folder, Message
from mailbox.writeback import messages_change, messages_change_apply, undo_plan
from providers.base import ChangeKind, MessageChange
from tests.fixtures.dovecot import outlook_client
from tests.providers.test_outlook_sync import db_view, seed, server_view

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def change(account, messages, kind: ChangeKind, folder: str = "") -> None:
    """What the UI does: the local change at once, then the write-back task's service."""
    ids = [m.pk for m in messages]
    assert messages_change(user=account.user, message_ids=ids, change=MessageChange(kind, folder)) == len(ids)
    result = messages_change_apply(account_id=account.pk, message_ids=ids, change=MessageChange(kind, folder))
    assert result.outcome == "ok"


@pytest.fixture
def synced(dovecot, outlook_account):
    account = outlook_account()
    seed(dovecot, account.email, 10)
    outlook_client(account).full_sync()
    return account


def by_uid(account, folder="INBOX"):
    return {
        mf.uid: mf.message
        for mf in Message.folders.through.objects.filter(
            folder__account=account, folder__remote_id=folder
        ).select_related("message")
    }


def test_read_and_star_reach_the_server(dovecot, synced):
    account = synced
    messages = by_uid(account)
    unread = [m for m in messages.values() if not m.is_read][:2]
    change(account, unread, ChangeKind.READ)
    change(account, unread[:1], ChangeKind.STAR)
    change(account, [m for m in messages.values() if m.is_read and m not in unread][:1], ChangeKind.UNREAD)

    outlook_client(account).incremental_sync()
    assert db_view(account) == server_view(dovecot, account.email)
    server = server_view(dovecot, account.email)
    uid = next(u for u, m in messages.items() if m.pk == unread[0].pk)
    assert server[uid] == (b"\\Flagged", b"\\Seen")


def test_move_archive_and_delete_to_trash_reach_the_server(dovecot, synced):
    account = synced
    messages = list(by_uid(account).values())
    change(account, messages[:2], ChangeKind.TRASH)
    change(account, messages[2:3], ChangeKind.ARCHIVE)
    change(account, messages[3:4], ChangeKind.MOVE, "Junk Email")

    assert len(dovecot.uids(account.email, "INBOX")) == 6
    assert len(dovecot.uids(account.email, "Deleted Items")) == 2
    assert len(dovecot.uids(account.email, "Archive")) == 1
    assert len(dovecot.uids(account.email, "Junk Email")) == 1

    outlook_client(account).incremental_sync()
    for folder in ("INBOX", "Deleted Items", "Archive", "Junk Email"):
        assert db_view(account, folder) == server_view(dovecot, account.email, folder), folder
    trash = Folder.objects.get(account=account, remote_id="Deleted Items")
    assert set(trash.messages.values_list("pk", flat=True)) == {m.pk for m in messages[:2]}  # same rows
    assert Message.objects.filter(account=account).count() == 10

    change(account, messages[:1], ChangeKind.UNTRASH)
    outlook_client(account).incremental_sync()
    assert len(dovecot.uids(account.email, "INBOX")) == 7
    assert db_view(account) == server_view(dovecot, account.email)


def test_delete_forever_from_trash_expunges_on_the_server_and_drops_the_rows(dovecot, synced):
    account = synced
    messages = list(by_uid(account).values())
    change(account, messages[:3], ChangeKind.TRASH)
    outlook_client(account).incremental_sync()  # the trashed copies get their UIDs in Deleted Items
    assert len(dovecot.uids(account.email, "Deleted Items")) == 3

    change(account, messages[:2], ChangeKind.DELETE_FOREVER)
    assert len(dovecot.uids(account.email, "Deleted Items")) == 1  # expunged for good, not moved anywhere
    assert len(dovecot.uids(account.email, "INBOX")) == 7
    assert not Message.objects.filter(pk__in=[m.pk for m in messages[:2]]).exists()
    assert Message.objects.filter(account=account).count() == 8

    outlook_client(account).incremental_sync()  # nothing comes back
    assert Message.objects.filter(account=account).count() == 8
    for folder in ("INBOX", "Deleted Items"):
        assert db_view(account, folder) == server_view(dovecot, account.email, folder), folder


def test_delete_forever_right_after_delete_finds_the_message_without_its_uid(dovecot, synced):
    """Trash, then Delete forever before any sync learnt the Trash UID: located by Message-ID and bytes."""
    account = synced
    message = next(iter(by_uid(account).values()))
    change(account, [message], ChangeKind.TRASH)
    change(account, [message], ChangeKind.DELETE_FOREVER)
    assert dovecot.uids(account.email, "Deleted Items") == []
    assert not Message.objects.filter(pk=message.pk).exists()


def test_undo_of_archive_brings_the_messages_back_to_the_inbox_on_the_server(dovecot, synced):
    account = synced
    messages = list(by_uid(account).values())[:2]
    change(account, messages, ChangeKind.ARCHIVE)
    assert len(dovecot.uids(account.email, "Archive")) == 2
    change(account, messages, ChangeKind.UNARCHIVE)
    assert dovecot.uids(account.email, "Archive") == []
    assert len(dovecot.uids(account.email, "INBOX")) == 10
    outlook_client(account).incremental_sync()
    assert db_view(account) == server_view(dovecot, account.email)
    assert Message.objects.filter(account=account).count() == 10


def test_undo_of_a_move_brings_the_messages_back_on_the_server(dovecot, synced):
    account = synced
    messages = list(by_uid(account).values())[:2]
    inbox = Folder.objects.get(account=account, remote_id="INBOX")
    move = MessageChange(ChangeKind.MOVE, "Archive")
    plan = undo_plan(user=account.user, message_ids=[m.pk for m in messages], change=move, origin=inbox)
    assert [c.kind for c in plan.changes] == [ChangeKind.MOVE]  # IMAP: one move back, no second write-back
    change(account, messages, ChangeKind.MOVE, "Archive")
    assert len(dovecot.uids(account.email, "Archive")) == 2
    for back in plan.changes:
        change(account, messages, back.kind, back.folder_remote_id)
    assert dovecot.uids(account.email, "Archive") == []
    assert len(dovecot.uids(account.email, "INBOX")) == 10
    outlook_client(account).incremental_sync()
    assert db_view(account) == server_view(dovecot, account.email)
    assert Message.objects.filter(account=account).count() == 10
