"""The database itself refuses what the store's raw-SQL and bulk writes could otherwise let through."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from mailbox import store
from mailbox.models import Message, MessageFolder
from tests.fixtures.mail import raw_message

pytestmark = pytest.mark.django_db


def test_a_message_without_a_remote_id_is_refused(mail_account):
    with pytest.raises(IntegrityError), transaction.atomic():
        store.messages_upsert(account=mail_account, items=[store.IncomingMessage(remote_id="", raw=raw_message())])
    assert not Message.objects.filter(account=mail_account).exists()


def test_a_thread_key_that_is_empty_threads_by_headers_instead(mail_account):
    """An empty provider thread id is "no thread id", never a thread row with an empty key."""
    stored = store.message_upsert(account=mail_account, remote_id="a", raw=raw_message(), thread_key="")
    assert stored.thread.remote_id != ""


@pytest.mark.parametrize("uid", [0, -5])
def test_a_membership_with_an_impossible_uid_is_refused(mail_account, uid):
    inbox = store.folder_upsert(account=mail_account, remote_id="INBOX", name="Inbox", role="inbox")
    message = store.message_upsert(account=mail_account, remote_id="a", raw=raw_message())
    with pytest.raises(IntegrityError), transaction.atomic():
        MessageFolder.objects.bulk_create([MessageFolder(message=message, folder=inbox, uid=uid)])
    MessageFolder.objects.bulk_create([MessageFolder(message=message, folder=inbox, uid=None)])  # unknown: fine
