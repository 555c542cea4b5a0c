"""The imap_content_keys migration, run by Django's migration executor on historical models (as ``migrate`` does).

What the next sync then does with the re-keyed rows is tested against Dovecot in
``tests/providers/test_outlook_identity.py``.
"""

from __future__ import annotations

import hashlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from mailbox import store
from mailbox.models import Folder, Message, MessageFolder, OutgoingMessage, Thread
from providers.imap.connection import content_remote_id

pytestmark = pytest.mark.django_db(transaction=True)

MIGRATION = "0008_imap_content_keys"


def raw(n: int, *, body: str = "Same words.") -> bytes:
    return (
        f"From: sam@example.org\r\nSubject: Report\r\nDate: Tue, 05 Mar 2024 10:00:00 +0000\r\n"
        f"Message-ID: <report@example.org>\r\n\r\n{body} {n}\r\n"
    ).encode()


def test_existing_imap_rows_get_content_keys_and_pending_memberships_gmail_rows_stay(alice):
    from accounts.models import MailAccount

    outlook = MailAccount.objects.create(user=alice, provider="microsoft", email="a@contoso.example")
    gmail = MailAccount.objects.create(user=alice, provider="google", email="a@gmail.example")
    inbox = store.folder_upsert(account=outlook, remote_id="INBOX", name="Inbox", role=Folder.Role.INBOX)
    label = store.folder_upsert(account=gmail, remote_id="INBOX", name="Inbox", role=Folder.Role.INBOX)
    old_keys = {}
    for n in range(3):
        old_key = "msgid:" + hashlib.sha256(f"report@example.org\n{n}".encode()).hexdigest()[:48]
        store.message_upsert(
            account=outlook, remote_id=old_key, raw=raw(n), folders=[inbox], uid_by_folder={inbox.pk: 10 + n}
        )
        old_keys[old_key] = raw(n)
    # Two old rows with the very same bytes (should not exist): one row keeps both memberships.
    archive = store.folder_upsert(account=outlook, remote_id="Archive", name="Archive", role=Folder.Role.ARCHIVE)
    store.message_upsert(
        account=outlook, remote_id="sha256:" + "0" * 48, raw=raw(0), folders=[archive], uid_by_folder={archive.pk: 7}
    )
    store.message_upsert(account=gmail, remote_id="18c0ffee", raw=raw(0), folders=[label], uid_by_folder={label.pk: 3})
    sent = OutgoingMessage.objects.create(
        account=outlook, status=OutgoingMessage.Status.SENT, raw=raw(1), remote_id="msgid:sent"
    )
    kept = Message.objects.get(account=outlook, remote_id=next(iter(old_keys))).pk

    executor = MigrationExecutor(connection)
    [before] = executor.loader.get_migration("mailbox", MIGRATION).dependencies[-1:]
    executor.migrate([before])
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    rows = {m.remote_id: m for m in Message.objects.filter(account=outlook)}
    assert set(rows) == {content_remote_id(r) for r in old_keys.values()}
    assert rows[content_remote_id(raw(0))].pk == kept  # the oldest row of identical bytes stays
    assert set(rows[content_remote_id(raw(0))].folders.values_list("remote_id", flat=True)) == {"INBOX", "Archive"}
    for thread in Thread.objects.filter(account=outlook):
        assert thread.message_count == Message.objects.filter(thread=thread).count()
    assert not MessageFolder.objects.filter(folder__account=outlook, uid__isnull=False).exists()
    assert OutgoingMessage.objects.get(pk=sent.pk).remote_id == content_remote_id(raw(1))
    gmail_row = Message.objects.get(account=gmail)
    assert gmail_row.remote_id == "18c0ffee" and gmail_row.messagefolder_set.get().uid == 3
