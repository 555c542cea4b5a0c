"""Storage identity of IMAP messages against a real Dovecot: one row per distinct byte string, memberships per folder.

The rule is in the docstring of ``providers.imap.client``. Every test compares the whole store with what
the server holds (``assert_store_equals_server``): for each folder, UID -> key of the bytes the server
returns, and for the account, key -> bytes.
"""

from __future__ import annotations

import datetime as dt
import importlib

import pytest

from mailbox.models import Folder, Message, MessageFolder
from providers.imap.connection import content_remote_id
from tests.fixtures.dovecot import outlook_client

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]

ARRIVED = dt.datetime(2024, 3, 5, 10, 0, 7, tzinfo=dt.UTC)


def mail(
    *,
    subject: str = "Quarterly report",
    body: str = "The total is 1200 EUR.",
    extra: str = "",
    message_id: str = "<report-2024q1@example.org>",
    date: str = "Tue, 05 Mar 2024 10:00:00 +0000",
) -> bytes:
    return (
        f"From: Sam Sender <sam@example.org>\r\nTo: Alice <alice@example.org>\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: {message_id}\r\n{extra}MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


# Different messages sharing Message-ID and Date, as list copies, resends and broken mailers make them.
ORIGINAL = mail()
BODY_ONLY = mail(body="The total is 2100 EUR.")  # same headers, same size: only the body differs
LONGER_BODY = mail(body="The total is 1200 EUR. Corrected figures attached.")
LIST_COPY = mail(extra="List-Id: Finance team <finance.example.org>\r\n")
RESENT = mail(subject="Quarterly report (resent)")
SHARED = [ORIGINAL, BODY_ONLY, LONGER_BODY, LIST_COPY, RESENT]
COPIED = mail(subject="Lunch on Friday?", message_id="<lunch@example.org>", body="Pizza or sushi?")


def server_bytes(dovecot, email: str, folder: str) -> dict[int, bytes]:
    """UID -> the bytes the server returns for BODY.PEEK[], for every message in ``folder``."""
    with dovecot.client(email) as imap:
        imap.select_folder(folder, readonly=True)
        uids = imap.search("ALL")
        data = imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return {uid: bytes(item[b"BODY[]"]) for uid, item in data.items()}


def memberships(account, folder: str) -> dict[int | None, str]:
    rows = MessageFolder.objects.filter(folder__account=account, folder__remote_id=folder)
    return dict(rows.values_list("uid", "message__remote_id"))


def assert_store_equals_server(dovecot, account, folders=("INBOX", "Archive")) -> None:
    expected: dict[str, bytes] = {}
    for folder in folders:
        server = server_bytes(dovecot, account.email, folder)
        assert memberships(account, folder) == {uid: content_remote_id(raw) for uid, raw in server.items()}, folder
        expected.update({content_remote_id(raw): raw for raw in server.values()})
    stored = {m.remote_id: m.raw for m in Message.objects.filter(account=account)}
    assert set(stored) == set(expected)
    assert stored == expected


def seed_shared_and_copied(dovecot, email: str) -> dict[str, int]:
    """INBOX: the five messages sharing Message-ID and Date, and COPIED, which is also COPYed to Archive."""
    uids = dovecot.append_many(email, [(raw, (), ARRIVED) for raw in SHARED], folder="INBOX")
    copied = dovecot.append(email, COPIED, flags=[b"\\Seen"], date=ARRIVED)
    with dovecot.client(email, folder="INBOX") as imap:
        imap.copy([copied], "Archive")
    [archived] = dovecot.uids(email, "Archive")
    return {"original": uids[0], "body_only": uids[1], "copied": copied, "archived": archived}


def test_messages_sharing_message_id_and_date_are_one_row_per_distinct_bytes(dovecot, outlook_account):
    account = outlook_account()
    uids = seed_shared_and_copied(dovecot, account.email)
    client = outlook_client(account, chunk_size=3)
    client.full_sync()

    assert Message.objects.filter(account=account).count() == len(SHARED) + 1
    assert Message.objects.filter(account=account, message_id="report-2024q1@example.org").count() == len(SHARED)
    assert_store_equals_server(dovecot, account)
    body_only = Message.objects.get(account=account, remote_id=content_remote_id(BODY_ONLY))
    assert "2100 EUR" in body_only.body_text
    # The copy in two folders is one row with both memberships, each with that folder's UID.
    copied = Message.objects.get(account=account, message_id="lunch@example.org")
    assert dict(copied.messagefolder_set.values_list("folder__remote_id", "uid")) == {
        "INBOX": uids["copied"],
        "Archive": uids["archived"],
    }
    assert copied.is_read
    assert b"OBJECTID" not in client.session.capabilities  # so nothing here can rely on EMAILID

    again = outlook_client(account)
    again.incremental_sync()
    assert again.bodies_fetched == 0
    assert_store_equals_server(dovecot, account)


def test_a_move_by_another_client_keeps_the_row_and_its_id(dovecot, outlook_account):
    account = outlook_account()
    uids = seed_shared_and_copied(dovecot, account.email)
    only_archived = mail(subject="Minutes", message_id="<minutes@example.org>", body="Nothing decided.")
    archived = dovecot.append(account.email, only_archived, folder="Archive", date=ARRIVED)
    outlook_client(account).full_sync()
    ids = dict(Message.objects.filter(account=account).values_list("remote_id", "pk"))

    with dovecot.client(account.email, folder="INBOX") as imap:  # INBOX is synced first: the row is in
        imap.move([uids["original"]], "Archive")  # no folder for a while and must survive that
    with dovecot.client(account.email, folder="Archive") as imap:  # and the other way round
        imap.move([archived], "INBOX")
    client = outlook_client(account)
    client.incremental_sync()

    assert dict(Message.objects.filter(account=account).values_list("remote_id", "pk")) == ids
    assert_store_equals_server(dovecot, account)
    original = Message.objects.get(pk=ids[content_remote_id(ORIGINAL)])
    assert list(original.folders.values_list("remote_id", flat=True)) == ["Archive"]
    # Without OBJECTID a message moved by another client is proved by its bytes: one download each.
    assert client.bodies_fetched == 2


def test_a_move_by_mailhub_keeps_the_row_without_downloading_it_again(dovecot, outlook_account):
    from mailbox.writeback import messages_change, messages_change_apply
    from providers.base import ChangeKind, MessageChange

    account = outlook_account()
    seed_shared_and_copied(dovecot, account.email)
    dovecot.seed(account.email, 10)
    outlook_client(account).full_sync()
    ids = dict(Message.objects.filter(account=account).values_list("remote_id", "pk"))
    moved = Message.objects.get(account=account, remote_id=content_remote_id(LIST_COPY))

    change = MessageChange(ChangeKind.MOVE, "Archive")
    messages_change(user=account.user, message_ids=[moved.pk], change=change)
    assert messages_change_apply(account_id=account.pk, message_ids=[moved.pk], change=change).outcome == "ok"
    assert MessageFolder.objects.get(message=moved).uid is None  # pending: the next sync learns the UID
    client = outlook_client(account)
    client.incremental_sync()

    assert client.bodies_fetched == 0
    assert dict(Message.objects.filter(account=account).values_list("remote_id", "pk")) == ids
    assert_store_equals_server(dovecot, account)
    assert list(moved.folders.values_list("remote_id", flat=True)) == ["Archive"]


def test_uidvalidity_change_relinks_by_size_date_and_headers_without_downloading(dovecot, outlook_account):
    account = outlook_account()
    seed_shared_and_copied(dovecot, account.email)
    dovecot.seed(account.email, 40)
    outlook_client(account, chunk_size=7).full_sync()
    ids = dict(Message.objects.filter(account=account).values_list("remote_id", "pk"))
    flags_before = dict(Message.objects.filter(account=account).values_list("remote_id", "is_read"))

    new_validity = dovecot.renumber(account.email)
    client = outlook_client(account, chunk_size=7)
    client.incremental_sync()

    assert Folder.objects.get(account=account, remote_id="INBOX").uidvalidity == new_validity
    assert dict(Message.objects.filter(account=account).values_list("remote_id", "pk")) == ids
    assert dict(Message.objects.filter(account=account).values_list("remote_id", "is_read")) == flags_before
    assert_store_equals_server(dovecot, account)
    # Only ORIGINAL and BODY_ONLY share size, arrival and header block: that pair is ambiguous, so it is
    # downloaded and told apart by its bytes. The 44 others are re-linked from their headers alone.
    assert client.bodies_fetched == 2

    plain = outlook_account()
    dovecot.seed(plain.email, 40)
    outlook_client(plain).full_sync()
    dovecot.renumber(plain.email)
    client = outlook_client(plain)
    client.incremental_sync()
    assert client.bodies_fetched == 0
    assert_store_equals_server(dovecot, plain, folders=("INBOX",))


def test_a_message_replaced_while_its_uid_was_unknown_is_not_taken_for_the_stored_one(dovecot, outlook_account):
    """Rule 2 needs size, arrival and header block all equal: a replacement that differs in any one of
    them is downloaded, and the stored message it replaced goes."""
    account = outlook_account()
    same_size_other_header = mail(subject="Quarterly report B")  # as long as "Quarterly report A"
    same_header_other_arrival = BODY_ONLY  # same size and header block as ORIGINAL
    [first, second] = dovecot.append_many(
        account.email, [(mail(subject="Quarterly report A"), (), ARRIVED), (ORIGINAL, (), ARRIVED)]
    )
    outlook_client(account).full_sync()
    ids = dict(Message.objects.filter(account=account).values_list("remote_id", "pk"))

    dovecot.expunge(account.email, "INBOX", [first, second])
    dovecot.append_many(
        account.email,
        [(same_size_other_header, (), ARRIVED), (same_header_other_arrival, (), ARRIVED + dt.timedelta(minutes=3))],
    )
    dovecot.renumber(account.email)
    client = outlook_client(account)
    client.incremental_sync()

    assert_store_equals_server(dovecot, account, folders=("INBOX",))
    assert client.bodies_fetched == 2
    assert not set(ids) & set(Message.objects.filter(account=account).values_list("remote_id", flat=True))


def test_a_pending_membership_nothing_on_the_server_matches_is_dropped(dovecot, outlook_account):
    account = outlook_account()
    dovecot.seed(account.email, 5)
    outlook_client(account).full_sync()
    # A UID-less membership the server cannot back (as the outbox files a sent copy the server rewrote).
    row = Message.objects.filter(account=account).first()
    archive = Folder.objects.get(account=account, remote_id="Archive")
    MessageFolder.objects.create(message=row, folder=archive, uid=None)
    outlook_client(account).incremental_sync()

    assert not MessageFolder.objects.filter(message=row, folder=archive).exists()
    assert_store_equals_server(dovecot, account)


def test_rekey_migration_keeps_rows_and_the_next_sync_restores_what_the_old_keys_merged(
    dovecot, outlook_account, mail_account
):
    """Rows as the Message-ID + Date keys left them (one row for the five messages sharing both, holding
    another one's UID) are re-keyed by their bytes; the next sync gives the merged messages their rows."""
    import hashlib

    from django.apps import apps

    from mailbox import store
    from mailbox.models import OutgoingMessage

    account = outlook_account()
    uids = seed_shared_and_copied(dovecot, account.email)
    dovecot.seed(account.email, 12)
    outlook_client(account).full_sync()

    # What the old sync left: of the five sharing Message-ID and Date only ORIGINAL has a row, and its
    # membership holds the UID of another of them; every row is keyed by its Message-ID (and Date).
    merged_away = [content_remote_id(raw) for raw in SHARED[1:]]
    Message.objects.filter(account=account, remote_id__in=merged_away).delete()
    original = Message.objects.get(account=account, remote_id=content_remote_id(ORIGINAL))
    MessageFolder.objects.filter(message=original).update(uid=uids["body_only"])
    for pk, message_id in Message.objects.filter(account=account).values_list("pk", "message_id"):
        old_key = "msgid:" + hashlib.sha256(f"{message_id}\n{pk}".encode()).hexdigest()[:48]
        Message.objects.filter(pk=pk).update(remote_id=old_key)
    sent = OutgoingMessage.objects.create(
        account=account, status=OutgoingMessage.Status.SENT, raw=COPIED, remote_id="msgid:old"
    )
    gmail = store.message_upsert(account=mail_account, remote_id="18c0ffee0001", raw=ORIGINAL)
    kept = set(Message.objects.filter(account=account).values_list("pk", flat=True))

    migration = importlib.import_module("mailbox.migrations.0008_imap_content_keys")
    migration.imap_messages_rekey(apps, None)

    rekeyed = Message.objects.filter(account=account)
    assert set(rekeyed.values_list("pk", flat=True)) == kept
    assert all(m.remote_id == content_remote_id(m.raw) for m in rekeyed)
    assert not MessageFolder.objects.filter(folder__account=account, uid__isnull=False).exists()
    assert OutgoingMessage.objects.get(pk=sent.pk).remote_id == content_remote_id(COPIED)
    assert Message.objects.get(pk=gmail.pk).remote_id == "18c0ffee0001"  # Gmail keys are Gmail's ids
    assert migration.content_key(ORIGINAL) == content_remote_id(ORIGINAL)

    client = outlook_client(account)
    client.incremental_sync()
    assert_store_equals_server(dovecot, account)
    assert kept <= set(Message.objects.filter(account=account).values_list("pk", flat=True))
    # Downloaded: the four messages the old keys had merged away, and ORIGINAL, whose twin BODY_ONLY
    # (same size, arrival and header block) makes its re-link ambiguous. The rest re-linked from headers.
    assert client.bodies_fetched == 5
