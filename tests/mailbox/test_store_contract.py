"""The store's contract, through its public functions only (its internals are being reworked).

Thread names, and what a write does when another writer got there first or a folder vanished meanwhile.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection

from mailbox import store
from mailbox.models import Folder, Message, MessageFolder, Thread
from tests.fixtures.mail import raw_message

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def incoming(remote_id: str, *, subject: str = "Hello", reply_to: str | None = None, hours: int = 0,
             thread_key: str | None = None, folders=(), sender: str = "Sam Sender <sam@example.org>",
             **flags) -> store.IncomingMessage:
    raw = raw_message(subject=subject, message_id=f"{remote_id}@example.org", sender=sender,
                      in_reply_to=f"{reply_to}@example.org" if reply_to else None)
    return store.IncomingMessage(remote_id=remote_id, raw=raw, folders=folders, thread_key=thread_key,
                                 internal_date=T0 + timedelta(hours=hours), **flags)


def thread_of(account, remote_id: str) -> Thread:
    return Thread.objects.get(pk=Message.objects.get(account=account, remote_id=remote_id).thread_id)


# --- Thread names ----------------------------------------------------------------------------------------

BY_PROVIDER_OR_HEADERS = pytest.mark.parametrize("thread_key", ["gmail-thread-1", None], ids=["gmail", "headers"])


@BY_PROVIDER_OR_HEADERS
@pytest.mark.parametrize("parent_first", [True, False], ids=["parent-first", "reply-first"])
def test_a_thread_stored_in_one_batch_is_named_after_its_first_message(mail_account, thread_key, parent_first):
    """An IMAP first sync stores a conversation oldest first in one batch: the reply must not rename it."""
    parent = incoming("p", subject="Plan for Q3", thread_key=thread_key)
    reply = incoming("r", subject="Re: Plan for Q3 (new dates)", reply_to="p", hours=2, thread_key=thread_key,
                     sender="Frank Peer <frank@example.org>")
    store.messages_upsert(account=mail_account, items=[parent, reply] if parent_first else [reply, parent])
    thread = thread_of(mail_account, "p")
    assert Thread.objects.count() == 1 and thread_of(mail_account, "r") == thread
    assert (thread.subject, thread.message_count, thread.last_message_at) == ("Plan for Q3", 2, T0 + timedelta(hours=2))
    assert thread.senders == "Frank Peer, Sam Sender"  # newest first


@BY_PROVIDER_OR_HEADERS
def test_a_later_reply_does_not_rename_the_thread(mail_account, thread_key):
    store.messages_upsert(account=mail_account, items=[incoming("p", subject="Plan for Q3", thread_key=thread_key)])
    reply = incoming("r", subject="Re: Plan for Q3 (new dates)", reply_to="p", hours=2, thread_key=thread_key)
    store.messages_upsert(account=mail_account, items=[reply])
    thread = thread_of(mail_account, "r")
    assert (thread.subject, thread.message_count) == ("Plan for Q3", 2)
    store.message_flags_update(account=mail_account, remote_ids=["r"], is_read=True)  # any later summary refresh
    assert Thread.objects.get(pk=thread.pk).subject == "Plan for Q3"


def test_a_thread_without_a_subject_takes_the_first_one_that_arrives(mail_account):
    store.messages_upsert(account=mail_account, items=[incoming("p", subject="", thread_key="t")])
    assert thread_of(mail_account, "p").subject == ""
    store.messages_upsert(account=mail_account, items=[incoming("r", subject="Re: lunch", hours=1, thread_key="t")])
    store.messages_upsert(account=mail_account, items=[incoming("s", subject="Re: dinner", hours=2, thread_key="t")])
    assert thread_of(mail_account, "p").subject == "Re: lunch"


# --- Conflicts --------------------------------------------------------------------------------------------


@pytest.fixture
def inbox(mail_account):
    return store.folder_upsert(account=mail_account, remote_id="INBOX", name="Inbox", role=Folder.Role.INBOX)


def _rows(account) -> dict[str, tuple[bool, bool, list[str]]]:
    return {
        m.remote_id: (m.is_read, m.is_starred, sorted(f.remote_id for f in m.folders.all()))
        for m in Message.objects.filter(account=account).prefetch_related("folders")
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch", [1, 2])
def test_a_message_another_writer_stored_meanwhile_is_updated_not_duplicated(mail_account, inbox, batch):
    """The outbox files a sent message while the sync stores the same one: one row, the sync's state on it.

    The other writer runs on its own connection, started at the moment the sync's INSERT is about to run
    (after the sync looked for existing rows). SQLite serialises writers (transactions begin IMMEDIATE),
    so there the race cannot happen; PostgreSQL is where it does.
    """
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one writer in at a time: no other writer can get between the read and the INSERT")
    store.messages_upsert(account=mail_account, items=[incoming("first", thread_key="t")])  # the thread exists
    items = [incoming("x", hours=1, thread_key="t", folders=[inbox], is_read=True, is_starred=True)]
    if batch == 2:
        items.append(incoming("y", hours=2, thread_key="t", folders=[inbox.pk]))
    theirs: list[int] = []

    def other_writer() -> None:
        try:
            theirs.append(store.message_upsert(account=mail_account, remote_id="x", raw=items[0].raw,
                                               thread_key="t").pk)
        finally:
            connection.close()

    def race(execute, sql, params, many, context):
        if not theirs and sql.startswith("INSERT INTO") and '"mailbox_message" (' in sql:
            writer = threading.Thread(target=other_writer)
            writer.start()
            writer.join(30)
            assert theirs, "the other writer did not store its copy"
        return execute(sql, params, many, context)

    with connection.execute_wrapper(race):
        ids = store.messages_upsert(account=mail_account, items=items)
    assert theirs and ids["x"] == theirs[0]  # their row, kept
    expected = {"first": (False, False, []), "x": (True, True, ["INBOX"])}
    if batch == 2:
        expected["y"] = (False, False, ["INBOX"])
    assert _rows(mail_account) == expected
    thread = Thread.objects.get(remote_id="t")
    assert (thread.message_count, thread.unread_count, thread.is_starred) == (batch + 1, batch, True)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch", [1, 3])
def test_a_message_filed_in_a_folder_deleted_meanwhile_fails_and_the_retry_stores_each_once(
    mail_account, inbox, batch
):
    """A label removed upstream (and locally) while the sync still files mail in it: the write fails, bounded,
    instead of retrying without end, and the sync's next pass stores every message once."""
    label = store.folder_upsert(account=mail_account, remote_id="Label_9", name="Gone soon")
    store.folder_delete(account=mail_account, remote_id="Label_9")
    middle = incoming("b", hours=1, folders=[label.pk])
    items = [middle]
    if batch == 3:
        items = [incoming("a", folders=[inbox]), middle, incoming("c", hours=2, folders=[inbox])]
    with pytest.raises(IntegrityError):
        store.messages_upsert(account=mail_account, items=items)
    assert not Folder.objects.filter(pk=label.pk).exists()
    assert not MessageFolder.objects.filter(folder_id=label.pk).exists()
    stored_before_retry = set(_rows(mail_account))
    assert stored_before_retry <= {"a"}  # nothing after the failing message, nothing of it

    middle.folders = [inbox]
    ids = store.messages_upsert(account=mail_account, items=items)
    assert set(ids) == {i.remote_id for i in items}
    assert _rows(mail_account) == {i.remote_id: (False, False, ["INBOX"]) for i in items}
    assert Message.objects.filter(account=mail_account).count() == len(items)
