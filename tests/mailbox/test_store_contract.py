"""The store's contract, through its public functions only (its internals are being reworked).

Thread names, and what a write does when another writer got there first or a folder vanished meanwhile.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError, connection

from mailbox import store
from mailbox.models import AttachmentBlob, Folder, Message, MessageFolder, Thread
from tests.fixtures.mail import raw_message

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def incoming(
    remote_id: str,
    *,
    subject: str = "Hello",
    reply_to: str | None = None,
    hours: int = 0,
    thread_key: str | None = None,
    folders=(),
    sender: str = "Sam Sender <sam@example.org>",
    **flags,
) -> store.IncomingMessage:
    raw = raw_message(
        subject=subject,
        message_id=f"{remote_id}@example.org",
        sender=sender,
        in_reply_to=f"{reply_to}@example.org" if reply_to else None,
    )
    return store.IncomingMessage(
        remote_id=remote_id,
        raw=raw,
        folders=folders,
        thread_key=thread_key,
        internal_date=T0 + timedelta(hours=hours),
        **flags,
    )


def thread_of(account, remote_id: str) -> Thread:
    return Thread.objects.get(pk=Message.objects.get(account=account, remote_id=remote_id).thread_id)


# --- Thread names ----------------------------------------------------------------------------------------

BY_PROVIDER_OR_HEADERS = pytest.mark.parametrize("thread_key", ["gmail-thread-1", None], ids=["gmail", "headers"])


@BY_PROVIDER_OR_HEADERS
@pytest.mark.parametrize("parent_first", [True, False], ids=["parent-first", "reply-first"])
def test_a_thread_stored_in_one_batch_is_named_after_its_first_message(mail_account, thread_key, parent_first):
    """An IMAP first sync stores a conversation oldest first in one batch: the reply must not rename it."""
    parent = incoming("p", subject="Plan for Q3", thread_key=thread_key)
    reply = incoming(
        "r",
        subject="Re: Plan for Q3 (new dates)",
        reply_to="p",
        hours=2,
        thread_key=thread_key,
        sender="Frank Peer <frank@example.org>",
    )
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
            theirs.append(
                store.message_upsert(account=mail_account, remote_id="x", raw=items[0].raw, thread_key="t").pk
            )
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
def test_a_message_filed_in_a_folder_deleted_meanwhile_fails_and_the_retry_stores_each_once(mail_account, inbox, batch):
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_a_label_another_writer_added_meanwhile_is_kept_once(mail_account, inbox):
    """The sync brings a message's labels to Gmail's while the user's label change lands on another connection,
    between the sync's read of the memberships and its INSERT: both meant the same label, one membership."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one writer in at a time: no other writer can get between the read and the INSERT")
    work = store.folder_upsert(account=mail_account, remote_id="Work", name="Work")
    store.messages_upsert(account=mail_account, items=[incoming("a", folders=[inbox])])
    theirs: list[int] = []

    def other_writer() -> None:
        try:
            theirs.append(store.message_folders_change(account=mail_account, remote_ids=["a"], add=[work]))
        finally:
            connection.close()

    def race(execute, sql, params, many, context):
        if not theirs and sql.startswith("INSERT INTO") and '"mailbox_messagefolder" (' in sql:
            writer = threading.Thread(target=other_writer)
            writer.start()
            writer.join(30)
            assert theirs, "the other writer did not add its label"
        return execute(sql, params, many, context)

    state = store.MessageState(folders=[inbox, work], is_read=False, is_starred=False)
    with connection.execute_wrapper(race):
        assert store.messages_state_set(account=mail_account, states={"a": state}) == 1
    assert theirs == [1]
    assert _rows(mail_account) == {"a": (False, False, ["INBOX", "Work"])}


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_a_large_attachment_another_writer_stored_meanwhile_is_kept_once(mail_account, settings):
    """Two syncs store the same big attachment at once: one blob row, one file; the loser's file is removed."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one writer in at a time: no other writer can get between the read and the INSERT")
    data = os.urandom(store.INLINE_BLOB_MAX + 1)
    raw = raw_message(attachments=[("big.bin", "application/octet-stream", data)])
    theirs: list[int] = []

    def other_writer() -> None:
        try:
            theirs.append(store.blob_store(content=data).pk)
        finally:
            connection.close()

    def race(execute, sql, params, many, context):
        if not theirs and sql.startswith("INSERT INTO") and '"mailbox_attachmentblob" (' in sql:
            writer = threading.Thread(target=other_writer)
            writer.start()
            writer.join(30)
            assert theirs, "the other writer did not store its blob"
        return execute(sql, params, many, context)

    with connection.execute_wrapper(race):
        store.messages_upsert(account=mail_account, items=[store.IncomingMessage(remote_id="x", raw=raw)])
    blob = AttachmentBlob.objects.get()
    assert blob.pk == theirs[0] and Message.objects.get(remote_id="x").attachments.get().blob_id == blob.pk
    with blob.open() as handle:
        assert handle.read() == data
    assert len([f for f in Path(settings.MEDIA_ROOT).rglob("*") if f.is_file()]) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_a_blob_another_writer_stored_meanwhile_is_the_one_returned(mail_account, settings):
    """Two uploads of the same big file at once (compose attachments): both get the one blob, one file is kept."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one writer in at a time: no other writer can get between the read and the INSERT")
    data = os.urandom(store.INLINE_BLOB_MAX + 1)
    theirs: list[int] = []

    def other_writer() -> None:
        try:
            theirs.append(store.blob_store(content=data).pk)
        finally:
            connection.close()

    def race(execute, sql, params, many, context):
        if not theirs and sql.startswith("INSERT INTO") and '"mailbox_attachmentblob" (' in sql:
            writer = threading.Thread(target=other_writer)
            writer.start()
            writer.join(30)
            assert theirs, "the other writer did not store its blob"
        return execute(sql, params, many, context)

    with connection.execute_wrapper(race):
        mine = store.blob_store(content=data)
    assert mine.pk == theirs[0] and AttachmentBlob.objects.count() == 1
    with mine.open() as handle:
        assert handle.read() == data
    assert len([f for f in Path(settings.MEDIA_ROOT).rglob("*") if f.is_file()]) == 1


# --- What a stored message holds -------------------------------------------------------------------------


def test_a_new_message_is_stored_with_its_headers_body_and_state(mail_account, inbox):
    raw = raw_message(
        subject="Numbers",
        sender="Dana Report <dana@example.org>",
        to="Alice <alice@example.org>",
        body="Figures attached.",
        message_id="n1@example.org",
        in_reply_to="n0@example.org",
        references="<root@example.org> <n0@example.org>",
    )
    ids = store.messages_upsert(
        account=mail_account,
        items=[
            store.IncomingMessage(
                remote_id="n1",
                raw=raw,
                folders=[inbox],
                is_read=True,
                is_starred=True,
                is_draft=True,
                internal_date=T0,
                uid_by_folder={inbox.pk: 41},
            )
        ],
    )
    m = Message.objects.get(pk=ids["n1"])
    assert (m.remote_id, m.message_id, m.in_reply_to) == ("n1", "n1@example.org", "n0@example.org")
    assert m.references == "<root@example.org> <n0@example.org>"
    assert (m.subject, m.from_name, m.from_address) == ("Numbers", "Dana Report", "dana@example.org")
    assert m.to == [{"name": "Alice", "email": "alice@example.org"}] and m.cc == []
    assert m.body_text.strip() == "Figures attached." and m.snippet == "Figures attached."
    assert (m.date, m.size, m.raw) == (T0, len(raw), raw)
    assert (m.is_read, m.is_starred, m.is_draft, m.has_attachments, m.parse_error) == (True, True, True, False, "")
    assert list(MessageFolder.objects.filter(message=m).values_list("folder_id", "uid")) == [(inbox.pk, 41)]


def test_the_date_is_the_providers_then_the_headers_then_now(mail_account):
    before = datetime.now(UTC)
    raw = raw_message(subject="no date")
    no_date = raw.replace(b"Date:", b"X-Old-Date:", 1)
    store.messages_upsert(
        account=mail_account,
        items=[
            store.IncomingMessage(remote_id="header", raw=raw),
            store.IncomingMessage(remote_id="none", raw=no_date),
            store.IncomingMessage(remote_id="provider", raw=raw, internal_date=T0),
        ],
    )
    dates = dict(Message.objects.values_list("remote_id", "date"))
    assert dates["provider"] == T0
    assert abs(dates["header"] - before) < timedelta(seconds=60) and dates["header"].microsecond == 0
    assert before <= dates["none"] <= datetime.now(UTC)


def test_overlong_sender_fields_are_cut_to_the_column(mail_account):
    name, local = "N" * 300, "a" * 64
    domain = ".".join(["d" * 60] * 5) + ".org"
    raw = raw_message(sender=f"{name} <{local}@{domain}>")
    m = store.message_upsert(account=mail_account, remote_id="long", raw=raw)
    m.refresh_from_db()
    assert m.from_name == "N" * 255
    assert m.from_address == f"{local}@{domain}"[:320] and len(m.from_address) == 320


def test_the_last_sighting_of_a_remote_id_in_a_batch_wins(mail_account, inbox):
    first = incoming("x", folders=[], is_read=False)
    last = incoming("x", folders=[inbox], is_read=True)
    ids = store.messages_upsert(account=mail_account, items=[first, last])
    assert list(ids) == ["x"] and _rows(mail_account) == {"x": (True, False, ["INBOX"])}
    assert store.messages_upsert(account=mail_account, items=[]) == {}


def test_a_message_without_any_message_id_threads_alone(mail_account):
    raw = raw_message(subject="anonymous")
    bare = b"\n".join(line for line in raw.split(b"\n") if not line.startswith(b"Message-ID"))
    store.messages_upsert(
        account=mail_account,
        items=[
            store.IncomingMessage(remote_id="u1", raw=bare),
            store.IncomingMessage(remote_id="u2", raw=bare),
        ],
    )
    t1, t2 = thread_of(mail_account, "u1"), thread_of(mail_account, "u2")
    assert t1 != t2 and {t1.remote_id, t2.remote_id} == {"remote:u1", "remote:u2"}


def _without_message_id(raw: bytes) -> bytes:
    return b"\n".join(line for line in raw.split(b"\n") if not line.startswith(b"Message-ID"))


def test_thread_keys_longer_than_the_column_are_cut_to_it(mail_account):
    long_key, long_remote_id = "T" * 300, "R" * 255
    store.messages_upsert(
        account=mail_account,
        items=[
            incoming("a", thread_key=long_key),
            incoming("b", hours=1, thread_key=long_key),
            store.IncomingMessage(remote_id=long_remote_id, raw=_without_message_id(raw_message(subject="anonymous"))),
        ],
    )
    assert thread_of(mail_account, "a") == thread_of(mail_account, "b")
    assert thread_of(mail_account, "a").remote_id == "T" * 255
    assert thread_of(mail_account, long_remote_id).remote_id == f"remote:{long_remote_id}"[:255]


def test_a_reply_without_a_message_id_joins_its_stored_parents_thread(mail_account):
    """Found by its In-Reply-To alone: the parent's thread is keyed on an older message that was never stored."""
    parent = raw_message(message_id="p@example.org", references="<never-stored@example.org>")
    store.messages_upsert(account=mail_account, items=[store.IncomingMessage(remote_id="p", raw=parent)])
    reply = _without_message_id(raw_message(in_reply_to="p@example.org"))
    store.messages_upsert(account=mail_account, items=[store.IncomingMessage(remote_id="r", raw=reply)])
    assert thread_of(mail_account, "r") == thread_of(mail_account, "p") and Thread.objects.count() == 1


def test_a_batch_threads_a_reply_to_a_stored_message_and_the_new_ones_after_it(mail_account):
    store.messages_upsert(account=mail_account, items=[incoming("p")])
    ids = store.messages_upsert(
        account=mail_account, items=[incoming("r", reply_to="p", hours=1), incoming("n", subject="Other", hours=2)]
    )
    assert set(ids) == {"r", "n"}
    assert thread_of(mail_account, "r") == thread_of(mail_account, "p") != thread_of(mail_account, "n")


def test_a_reply_in_the_same_batch_joins_its_parents_thread_whatever_that_is_keyed_on(mail_account):
    """The parent answers a message never stored (its thread is keyed on that one); the reply names only the parent."""
    parent = raw_message(message_id="a@example.org", references="<gone@example.org>", subject="Plan")
    reply = raw_message(message_id="b@example.org", in_reply_to="a@example.org", subject="Re: Plan")
    store.messages_upsert(
        account=mail_account,
        items=[store.IncomingMessage(remote_id="a", raw=parent), store.IncomingMessage(remote_id="b", raw=reply)],
    )
    assert thread_of(mail_account, "a") == thread_of(mail_account, "b") and Thread.objects.count() == 1


def test_header_threads_key_on_the_root_message_id(mail_account):
    import hashlib

    store.messages_upsert(account=mail_account, items=[incoming("root"), incoming("child", reply_to="root")])
    key = "mid:" + hashlib.sha1(b"root@example.org").hexdigest()  # noqa: S324 - the store's documented key
    assert thread_of(mail_account, "root").remote_id == key == thread_of(mail_account, "child").remote_id


def test_a_late_parent_never_merges_a_providers_own_threads(mail_account):
    """Gmail said which thread a message is in: a parent arriving later does not pull it elsewhere."""
    store.messages_upsert(account=mail_account, items=[incoming("child", reply_to="root", thread_key="gmail-A")])
    store.messages_upsert(account=mail_account, items=[incoming("root")])  # threaded by headers
    assert thread_of(mail_account, "child").remote_id == "gmail-A"
    assert thread_of(mail_account, "root").remote_id.startswith("mid:")


def test_a_late_parent_pulls_header_threaded_replies_in_and_drops_their_thread(mail_account):
    # "c" answers "b" (no References): its thread is keyed on "b"; "b", arriving later, answers "a".
    store.messages_upsert(account=mail_account, items=[incoming("c", reply_to="b", hours=2)])
    orphan_thread = thread_of(mail_account, "c").pk
    store.messages_upsert(account=mail_account, items=[incoming("b", reply_to="a", hours=1)])
    thread = thread_of(mail_account, "b")
    assert thread_of(mail_account, "c") == thread and thread.pk != orphan_thread
    assert thread.message_count == 2 and thread.last_message_at == T0 + timedelta(hours=2)
    assert not Thread.objects.filter(pk=orphan_thread).exists()


# --- Summaries -------------------------------------------------------------------------------------------


def test_summary_follows_the_newest_message_and_lists_three_senders_newest_first(mail_account):
    senders = ["Ann <ann@x.org>", "Bob <bob@x.org>", "Ann <ann@x.org>", "<nameless@x.org>", "Dee <dee@x.org>"]
    items = [incoming(f"m{n}", hours=n, thread_key="t", sender=s) for n, s in enumerate(senders)]
    items[2] = store.IncomingMessage(
        remote_id="m2",
        raw=raw_message(sender=senders[2], body="Newest words here"),
        thread_key="t",
        internal_date=T0 + timedelta(hours=9),
    )
    store.messages_upsert(account=mail_account, items=items)
    thread = Thread.objects.get(remote_id="t")
    assert thread.snippet == "Newest words here"  # m2 is the newest by date
    assert thread.senders == "Ann, Dee, nameless@x.org"
    assert thread.last_message_at == T0 + timedelta(hours=9)


def test_summary_flags_rise_and_fall_with_the_messages(mail_account, inbox):
    pdf = raw_message(subject="with pdf", attachments=[("a.pdf", "application/pdf", b"%PDF-1")])
    store.messages_upsert(
        account=mail_account,
        items=[
            store.IncomingMessage(remote_id="a", raw=pdf, thread_key="t", is_starred=True),
            incoming("b", thread_key="t", is_read=True),
        ],
    )
    thread = Thread.objects.get(remote_id="t")
    assert (thread.is_starred, thread.has_attachments, thread.unread_count, thread.message_count) == (True, True, 1, 2)
    store.message_flags_update(account=mail_account, remote_ids=["a"], is_starred=False, is_read=True)
    thread.refresh_from_db()
    assert (thread.is_starred, thread.unread_count) == (False, 0)
    store.messages_delete(account=mail_account, remote_ids=["a"])
    thread.refresh_from_db()
    assert (thread.has_attachments, thread.message_count) == (False, 1)


# --- Flags and folders -----------------------------------------------------------------------------------


def test_flag_updates_touch_only_the_flags_given(mail_account):
    store.messages_upsert(
        account=mail_account,
        items=[
            incoming("a", thread_key="t", is_starred=True),
            incoming("b", thread_key="t", is_draft=True),
        ],
    )
    assert store.message_flags_update(account=mail_account, remote_ids=["a", "b", "nope"], is_read=True) == 2
    assert dict(Message.objects.values_list("remote_id", "is_starred")) == {"a": True, "b": False}
    assert dict(Message.objects.values_list("remote_id", "is_draft")) == {"a": False, "b": True}
    assert store.message_flags_update(account=mail_account, remote_ids=["a"], is_draft=True) == 1
    assert Message.objects.get(remote_id="a").is_draft
    assert store.message_flags_update(account=mail_account, remote_ids=["a"]) == 0
    assert store.message_flags_update(account=mail_account, remote_ids=[], is_read=False) == 0
    assert Message.objects.filter(is_read=True).count() == 2


def test_state_set_brings_flags_folders_and_uids_to_the_providers(mail_account, inbox):
    work = store.folder_upsert(account=mail_account, remote_id="Work", name="Work")
    store.messages_upsert(
        account=mail_account,
        items=[
            incoming("a", thread_key="t", folders=[inbox], uid_by_folder={inbox.pk: 1}),
            incoming("b", thread_key="t", folders=[inbox]),
        ],
    )
    found = store.messages_state_set(
        account=mail_account,
        states={
            "a": store.MessageState(
                folders=[inbox, work.pk], is_read=True, is_starred=False, uid_by_folder={inbox.pk: 7, work.pk: 3}
            ),
            "b": store.MessageState(folders=[], is_read=False, is_starred=True, is_draft=True),
            "gone": store.MessageState(folders=[inbox], is_read=True, is_starred=True),
        },
    )
    assert found == 2 and not Message.objects.filter(remote_id="gone").exists()
    assert _rows(mail_account) == {"a": (True, False, ["INBOX", "Work"]), "b": (False, True, [])}
    assert Message.objects.get(remote_id="b").is_draft
    assert not Message.objects.get(remote_id="a").is_draft  # a state that does not say "draft" is not one
    uids = set(MessageFolder.objects.filter(message__remote_id="a").values_list("folder__remote_id", "uid"))
    assert uids == {("INBOX", 7), ("Work", 3)}
    thread = Thread.objects.get(remote_id="t")
    assert (thread.unread_count, thread.is_starred) == (1, True)
    assert store.messages_state_set(account=mail_account, states={}) == 0
    # A state that names no UID keeps the one stored.
    store.messages_state_set(
        account=mail_account,
        states={
            "a": store.MessageState(folders=[inbox], is_read=True, is_starred=False),
        },
    )
    assert set(MessageFolder.objects.filter(message__remote_id="a").values_list("folder__remote_id", "uid")) == {
        ("INBOX", 7)
    }


def test_folders_set_makes_them_exactly_the_messages(mail_account, inbox):
    work = store.folder_upsert(account=mail_account, remote_id="Work", name="Work")
    store.messages_upsert(account=mail_account, items=[incoming("a", folders=[inbox], is_read=True)])
    assert store.message_folders_set(account=mail_account, remote_id="a", folders=[work], uid_by_folder={work.pk: 9})
    assert list(MessageFolder.objects.values_list("folder__remote_id", "uid")) == [("Work", 9)]
    assert Message.objects.get(remote_id="a").is_read  # flags untouched
    assert not store.message_folders_set(account=mail_account, remote_id="nope", folders=[inbox])


def test_folders_change_adds_and_removes_labels(mail_account, inbox):
    work = store.folder_upsert(account=mail_account, remote_id="Work", name="Work")
    store.messages_upsert(account=mail_account, items=[incoming("a", folders=[inbox]), incoming("b", folders=[inbox])])
    assert store.message_folders_change(account=mail_account, remote_ids=["a", "b"], add=[work.pk]) == 2
    assert store.message_folders_change(account=mail_account, remote_ids=["a"], remove=[inbox]) == 1
    assert _rows(mail_account) == {"a": (False, False, ["Work"]), "b": (False, False, ["INBOX", "Work"])}
    assert store.message_folders_change(account=mail_account, remote_ids=["a"]) == 0
    assert store.message_folders_change(account=mail_account, remote_ids=[], add=[inbox]) == 0


def test_folder_upsert_updates_name_role_and_selectable(mail_account):
    folder = store.folder_upsert(account=mail_account, remote_id="Archive", name="Archive")
    assert (folder.role, folder.is_selectable) == (Folder.Role.USER, True)
    store.folder_upsert(account=mail_account, remote_id="Archive", name="Archive", role=Folder.Role.ARCHIVE)
    store.folder_upsert(
        account=mail_account, remote_id="Archive", name="Archive", role=Folder.Role.ARCHIVE, is_selectable=False
    )
    stored = Folder.objects.get(pk=folder.pk)
    assert (stored.role, stored.is_selectable) == (Folder.Role.ARCHIVE, False)
    assert list(Folder.objects.filter(account=mail_account)) == [stored]


def test_deleting_a_folder_keeps_its_messages(mail_account, inbox):
    store.messages_upsert(account=mail_account, items=[incoming("a", folders=[inbox])])
    store.folder_delete(account=mail_account, remote_id="nope")  # unknown: nothing happens
    store.folder_delete(account=mail_account, remote_id="INBOX")
    assert _rows(mail_account) == {"a": (False, False, [])}
    assert thread_of(mail_account, "a").message_count == 1
    assert set(Message.objects.filter(account=mail_account).values_list("remote_id", flat=True)) == {"a"}
    assert store.messages_delete(account=mail_account, remote_ids=[]) == 0


# --- Attachments -----------------------------------------------------------------------------------------


def test_attachments_keep_their_names_types_and_inline_marks(mail_account):
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "a@x.org", "b@x.org", "files", "<f@x.org>"
    msg.set_content("see files")
    msg.add_alternative("<p><img src='cid:logo@x'></p>", subtype="html")
    msg.get_payload()[-1].add_related(b"PNGDATA", maintype="image", subtype="png", cid="<logo@x>")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="R" * 300 + ".pdf")
    m = store.message_upsert(account=mail_account, remote_id="f", raw=msg.as_bytes())
    rows = {a.content_type: a for a in m.attachments.all()}
    logo, pdf = rows["image/png"], rows["application/pdf"]
    assert (logo.content_id, logo.is_inline, logo.size) == ("logo@x", True, 7)
    assert (pdf.filename, pdf.is_inline, pdf.size) == (("R" * 300 + ".pdf")[:255], False, 8)
    assert bytes(pdf.blob.content) == b"%PDF-1.4"
    assert store.blob_store(content=b"%PDF-1.4").pk == pdf.blob_id  # stored once per content


@pytest.mark.parametrize(("size", "in_row"), [(64 * 1024, True), (64 * 1024 + 1, False)])
def test_attachments_up_to_64_kib_stay_in_the_database_row(mail_account, size, in_row):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    raw = raw_message(attachments=[("a.bin", "application/octet-stream", data)])
    m = store.message_upsert(account=mail_account, remote_id="a", raw=raw)
    blob = m.attachments.get().blob
    assert (blob.content is not None, bool(blob.file), blob.size) == (in_row, not in_row, size)
    with blob.open() as handle:
        assert handle.read() == data


def test_a_message_stored_without_flags_is_unread_unstarred_and_not_a_draft(mail_account):
    m = store.message_upsert(account=mail_account, remote_id="plain", raw=raw_message())
    m.refresh_from_db()
    assert (m.is_read, m.is_starred, m.is_draft, m.thread.unread_count) == (False, False, False, 1)
    assert not MessageFolder.objects.filter(message=m).exists()


def test_a_batch_of_known_and_new_messages_refreshes_both_threads(mail_account, inbox):
    store.messages_upsert(account=mail_account, items=[incoming("old", thread_key="t1", folders=[inbox])])
    assert Thread.objects.get(remote_id="t1").unread_count == 1
    store.messages_upsert(
        account=mail_account,
        items=[
            incoming("old", thread_key="t1", folders=[inbox], is_read=True, is_starred=True),
            incoming("new", thread_key="t2", folders=[inbox]),
        ],
    )
    old_thread, new_thread = Thread.objects.get(remote_id="t1"), Thread.objects.get(remote_id="t2")
    assert (old_thread.unread_count, old_thread.is_starred) == (0, True)
    assert (new_thread.unread_count, new_thread.message_count) == (1, 1)


def test_dates_in_other_time_zones_compare_as_instants(mail_account):
    """Header dates keep their offset (+02:00): the newest message is the latest instant, not the largest text."""
    from datetime import timezone as tz

    paris = tz(timedelta(hours=2))
    earlier = store.IncomingMessage(
        remote_id="paris",
        raw=raw_message(body="Sent from Paris"),
        thread_key="t",
        internal_date=datetime(2025, 3, 1, 10, 30, tzinfo=paris),
    )  # 08:30 UTC
    later = store.IncomingMessage(
        remote_id="utc",
        raw=raw_message(body="Sent in UTC"),
        thread_key="t",
        internal_date=datetime(2025, 3, 1, 9, 0, tzinfo=UTC),
    )
    store.messages_upsert(account=mail_account, items=[earlier, later])
    thread = Thread.objects.get(remote_id="t")
    assert (thread.last_message_at, thread.snippet) == (datetime(2025, 3, 1, 9, 0, tzinfo=UTC), "Sent in UTC")
    assert Message.objects.get(remote_id="paris").date == datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
    assert list(Message.objects.filter(thread=thread).order_by("-date").values_list("remote_id", flat=True)) == [
        "utc",
        "paris",
    ]


def test_state_set_removes_memberships_from_every_message_at_once(mail_account, inbox):
    work = store.folder_upsert(account=mail_account, remote_id="Work", name="Work")
    store.messages_upsert(
        account=mail_account, items=[incoming(name, folders=[inbox, work]) for name in ("a", "b", "c")]
    )
    store.messages_state_set(
        account=mail_account,
        states={
            "a": store.MessageState(folders=[inbox], is_read=False, is_starred=False),
            "b": store.MessageState(folders=[work], is_read=False, is_starred=False),
            "c": store.MessageState(folders=[], is_read=False, is_starred=False),
        },
    )
    assert {r: f for r, (_, _, f) in _rows(mail_account).items()} == {"a": ["INBOX"], "b": ["Work"], "c": []}


def test_adding_a_label_a_message_already_has_changes_nothing(mail_account, inbox):
    store.messages_upsert(account=mail_account, items=[incoming("a", folders=[inbox])])
    assert store.message_folders_change(account=mail_account, remote_ids=["a"], add=[inbox]) == 1
    assert _rows(mail_account) == {"a": (False, False, ["INBOX"])}


def test_deleting_more_than_one_query_of_ids_counts_every_row(mail_account):
    store.messages_upsert(account=mail_account, items=[incoming("first"), incoming("last", hours=1)])
    ids = ["first", *(f"unknown-{n}" for n in range(499)), "last", *(f"unknown-{n}" for n in range(499, 600))]
    assert ids.index("last") == 500  # the first id of the second query
    assert store.messages_delete(account=mail_account, remote_ids=ids) == 2
    assert not Message.objects.exists() and not Thread.objects.exists()


def test_a_batch_touching_more_than_500_threads_summarises_each(mail_account):
    items = [
        store.IncomingMessage(remote_id=f"m{n}", raw=raw_message(subject=f"s{n}"), thread_key=f"t{n}")
        for n in range(501)
    ]
    store.messages_upsert(account=mail_account, items=items)
    assert Thread.objects.count() == 501 and not Thread.objects.exclude(message_count=1).exists()


def test_a_message_that_changes_every_summary_field_shows_in_the_summary(mail_account):
    """A read, unstarred note without a subject, then a starred reply with a subject, an attachment, another sender."""
    note = raw_message(subject="", body="first words")
    store.messages_upsert(
        account=mail_account,
        items=[store.IncomingMessage(remote_id="p", raw=note, thread_key="t", is_read=True, internal_date=T0)],
    )
    reply = raw_message(
        subject="Re: lunch",
        sender="Frank Peer <frank@example.org>",
        body="later words",
        attachments=[("menu.pdf", "application/pdf", b"%PDF")],
    )
    later = T0 + timedelta(hours=1)
    store.messages_upsert(
        account=mail_account,
        items=[store.IncomingMessage(remote_id="r", raw=reply, thread_key="t", is_starred=True, internal_date=later)],
    )
    thread = Thread.objects.get(remote_id="t")
    summary = (thread.subject, thread.message_count, thread.unread_count, thread.last_message_at, thread.senders)
    assert summary == ("Re: lunch", 2, 1, later, "Frank Peer, Sam Sender")
    assert thread.is_starred and thread.has_attachments and thread.snippet.startswith("later words")


def test_a_message_with_a_known_attachment_and_a_new_one_stores_both(mail_account):
    known, new = os.urandom(100), os.urandom(100)
    first = raw_message(attachments=[("known.bin", "application/octet-stream", known)])
    second = raw_message(
        attachments=[("known.bin", "application/octet-stream", known), ("new.bin", "application/octet-stream", new)]
    )
    store.messages_upsert(account=mail_account, items=[store.IncomingMessage(remote_id="1", raw=first)])
    store.messages_upsert(account=mail_account, items=[store.IncomingMessage(remote_id="2", raw=second)])
    assert AttachmentBlob.objects.count() == 2
    stored = Message.objects.get(remote_id="2").attachments.select_related("blob").order_by("filename")
    assert [(a.filename, bytes(a.blob.content)) for a in stored] == [("known.bin", known), ("new.bin", new)]


def test_more_than_500_late_parents_in_one_batch_each_pull_their_reply_in(mail_account):
    replies = [
        store.IncomingMessage(
            remote_id=f"r{n}",
            raw=raw_message(
                message_id=f"r{n}@example.org",
                in_reply_to=f"p{n}@example.org",
                references=f"<g{n}@example.org> <p{n}@example.org>",  # threaded on g{n}, never stored
            ),
        )
        for n in range(501)
    ]
    store.messages_upsert(account=mail_account, items=replies)
    parents = [
        store.IncomingMessage(remote_id=f"p{n}", raw=raw_message(message_id=f"p{n}@example.org")) for n in range(501)
    ]
    store.messages_upsert(account=mail_account, items=parents)
    assert Thread.objects.count() == 501 and not Thread.objects.exclude(message_count=2).exists()


def test_only_a_providers_own_thread_key_is_given_back_to_it(mail_account):
    store.messages_upsert(account=mail_account, items=[incoming("g", thread_key="gmail-thread-1"), incoming("h")])
    assert store.thread_provider_key(thread_of(mail_account, "g")) == "gmail-thread-1"
    assert thread_of(mail_account, "h").remote_id.startswith("mid:")
    assert store.thread_provider_key(thread_of(mail_account, "h")) is None
    lone = Thread(account=mail_account, remote_id="remote:r1")  # a message without any Message-ID
    assert store.thread_provider_key(lone) is None
