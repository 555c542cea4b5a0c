"""Outlook sync over IMAP against a real Dovecot (XOAUTH2 checked at the sandbox's introspection endpoint)."""

from __future__ import annotations

import email.utils

import pytest

from mailbox.models import Folder, Message, MessageFolder, SyncState
from providers.microsoft.mail import OutlookClient
from sandbox.corpus import generate_messages

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def seed(dovecot, address: str, n: int, *, folder: str = "INBOX", seed: int = 0, start=None) -> list[int]:
    """APPEND ``n`` generated messages (every third one read, every fifth flagged); returns their UIDs."""
    items = []
    for index, raw in enumerate(generate_messages(n, to_address=address, seed=seed, start=start)):
        head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        date = email.utils.parsedate_to_datetime(email.message_from_string(head + "\r\n\r\n")["Date"])
        flags = [b"\\Seen"] * (index % 3 == 0) + [b"\\Flagged"] * (index % 5 == 0)
        items.append((raw, flags, date))
    return dovecot.append_many(address, items, folder=folder)


def db_view(account, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
    """UID -> flags as stored locally for ``folder`` (the shape of ``DovecotServer.snapshot``)."""
    rows = MessageFolder.objects.filter(folder__account=account, folder__remote_id=folder).select_related("message")
    view = {}
    for row in rows:
        m = row.message
        flags = [b"\\Seen"] * m.is_read + [b"\\Flagged"] * m.is_starred + [b"\\Draft"] * m.is_draft
        view[row.uid] = tuple(sorted(flags))
    return view


def server_view(dovecot, email: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
    keep = {b"\\Seen", b"\\Flagged", b"\\Draft"}
    return {uid: tuple(sorted(f for f in flags if f in keep)) for uid, flags in dovecot.snapshot(email, folder).items()}


def test_full_sync_stores_every_message_with_flags_folders_and_state(dovecot, outlook_account):
    account = outlook_account()
    uids = seed(dovecot, account.email, 60)
    client = OutlookClient(account, chunk_size=25)
    client.full_sync()

    assert Message.objects.filter(account=account).count() == 60
    assert db_view(account) == server_view(dovecot, account.email)
    inbox = Folder.objects.get(account=account, remote_id="INBOX")
    roles = dict(Folder.objects.filter(account=account).values_list("remote_id", "role"))
    assert roles["Sent Items"] == "sent" and roles["Deleted Items"] == "trash" and roles["Junk Email"] == "spam"
    assert inbox.role == "inbox" and inbox.uidvalidity == dovecot.uidvalidity(account.email)
    assert inbox.uidnext == uids[-1] + 1 and inbox.highestmodseq
    state = SyncState.objects.get(account=account)
    assert (state.progress_done, state.progress_total) == (60, 60)
    # Threads come from headers: replies share their parent's thread.
    replies = Message.objects.filter(account=account).exclude(in_reply_to="")
    assert replies.exists()
    for reply in replies:
        parent = Message.objects.filter(account=account, message_id=reply.in_reply_to).first()
        if parent:
            assert parent.thread_id == reply.thread_id
    # Syncing never marks anything on the server.
    assert server_view(dovecot, account.email) == db_view(account)

    client.full_sync()  # idempotent
    assert Message.objects.filter(account=account).count() == 60
