"""Outlook sync over IMAP against a real Dovecot (XOAUTH2 checked at the sandbox's introspection endpoint)."""

from __future__ import annotations

import pytest

from mailbox.models import Folder, Message, MessageFolder, SyncState
from tests.fixtures.dovecot import outlook_client

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def seed(dovecot, address: str, n: int, *, folder: str = "INBOX", seed: int = 0, start=None) -> list[int]:
    """APPEND ``n`` generated messages (every third one read, every fifth flagged); returns their UIDs."""
    return dovecot.seed(address, n, folder=folder, seed=seed, start=start)


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
    client = outlook_client(account, chunk_size=25)
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


def test_incremental_sync_new_mail_flag_changes_and_expunges(dovecot, outlook_account):
    account = outlook_account()
    uids = seed(dovecot, account.email, 20)
    client = outlook_client(account)
    client.full_sync()

    dovecot.set_flags(account.email, "INBOX", uids[1:3], [b"\\Seen", b"\\Flagged"])  # another client reads
    dovecot.set_flags(account.email, "INBOX", [uids[0]], [b"\\Seen"], add=False)
    dovecot.expunge(account.email, "INBOX", uids[5:8])
    new = seed(dovecot, account.email, 3, seed=7)
    client = outlook_client(account)
    client.incremental_sync()

    assert db_view(account) == server_view(dovecot, account.email)
    assert Message.objects.filter(account=account).count() == 20 - 3 + 3
    inbox = Folder.objects.get(account=account, remote_id="INBOX")
    assert inbox.uidnext == new[-1] + 1

    # Nothing changed: no folder is even selected, only LIST and one STATUS per folder.
    client = outlook_client(account)
    client.incremental_sync()
    folders = Folder.objects.filter(account=account).count()
    assert client.commands_sent <= 3 + folders  # AUTHENTICATE, CAPABILITY, ENABLE + LIST + STATUS each
    assert db_view(account) == server_view(dovecot, account.email)


def test_first_sync_stores_mail_held_in_two_folders_once_with_both_memberships(dovecot, outlook_account):
    account = outlook_account()
    seed(dovecot, account.email, 12, seed=4)
    seed(dovecot, account.email, 12, folder="Archive", seed=4)  # the very same messages again
    outlook_client(account, chunk_size=5).full_sync()

    assert Message.objects.filter(account=account).count() == 12
    for message in Message.objects.filter(account=account):
        assert set(message.folders.values_list("remote_id", flat=True)) == {"INBOX", "Archive"}
    assert db_view(account, "Archive") == server_view(dovecot, account.email, "Archive")
    assert db_view(account) == server_view(dovecot, account.email)


def test_uidvalidity_change_resyncs_the_folder_without_duplicates(dovecot, outlook_account):
    account = outlook_account()
    seed(dovecot, account.email, 30)
    outlook_client(account).full_sync()
    ids_before = set(Message.objects.filter(account=account).values_list("pk", flat=True))

    new_validity = dovecot.renumber(account.email)
    outlook_client(account, chunk_size=7).incremental_sync()

    assert Folder.objects.get(account=account, remote_id="INBOX").uidvalidity == new_validity
    assert set(Message.objects.filter(account=account).values_list("pk", flat=True)) == ids_before
    assert db_view(account) == server_view(dovecot, account.email)


def test_connection_dropped_mid_fetch_reconnects_and_loses_nothing(dovecot, outlook_account, settings):
    account = outlook_account()
    seed(dovecot, account.email, 40)
    settings.MICROSOFT_IMAP_PORT = dovecot.proxy.port
    dovecot.proxy.cut_after(60_000)  # well inside the first chunk of bodies
    client = outlook_client(account, chunk_size=20)
    client.full_sync()

    assert dovecot.proxy.cuts == 1 and client.session.connections >= 2
    assert db_view(account) == server_view(dovecot, account.email)
    assert Message.objects.filter(account=account).count() == 40


def test_only_messages_since_the_start_date_are_synced(dovecot, outlook_account):
    import datetime as dt

    account = outlook_account()
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    seed(dovecot, account.email, 20, start=start)  # spread over two years from 2024-01-01
    SyncState.objects.filter(account=account).update(sync_since=dt.date(2025, 1, 1))
    outlook_client(account).full_sync()

    stored = Message.objects.filter(account=account)
    assert 0 < stored.count() < 20
    assert all(m.date.date() >= dt.date(2024, 12, 31) for m in stored)


def test_awkward_mime_corpus_is_stored_whole(dovecot, outlook_account):
    account = outlook_account()
    uids = list(dovecot.seed_awkward(account.email).values())
    outlook_client(account, chunk_size=5).full_sync()

    # Every message on the server is in the store (the two sharing a Message-ID stay two), byte for byte.
    assert sorted(db_view(account)) == sorted(uids)
    with dovecot.client(account.email, folder="INBOX") as imap:
        server_raw = {uid: d[b"BODY[]"] for uid, d in imap.fetch(uids, ["BODY.PEEK[]"]).items()}
    for row in MessageFolder.objects.filter(folder__account=account).select_related("message"):
        assert row.message.raw == server_raw[row.uid]
    duplicate = Message.objects.filter(account=account, message_id="duplicate@corpus.example")
    assert duplicate.count() == 2
    # One row per distinct message of the corpus, as the Gmail sync keeps them (test_gmail_corpus).
    from sandbox.corpus import awkward_corpus

    assert Message.objects.filter(account=account).count() == len({raw for _, raw in awkward_corpus()}) == len(uids)


def test_user_folders_with_non_ascii_names_and_folders_deleted_on_the_server(dovecot, outlook_account):
    account = outlook_account()
    seed(dovecot, account.email, 4, folder="Bücher/Übersicht")
    seed(dovecot, account.email, 3, folder="Projekte", seed=5)
    outlook_client(account).full_sync()

    folder = Folder.objects.get(account=account, name="Bücher/Übersicht")  # decoded from modified UTF-7
    assert folder.remote_id == "B&APw-cher/&ANw-bersicht" and folder.role == "user"
    assert folder.messages.count() == 4
    assert db_view(account, folder.remote_id) == server_view(dovecot, account.email, "Bücher/Übersicht")

    with dovecot.client(account.email) as imap:
        imap.delete_folder("Projekte")
    outlook_client(account).incremental_sync()
    assert not Folder.objects.filter(account=account, remote_id="Projekte").exists()
    assert Message.objects.filter(account=account).count() == 4  # its messages lived nowhere else


def test_server_without_condstore_qresync_or_move_uses_the_fallbacks(plain_imap_settings, outlook_account):
    from mailbox.writeback import messages_change, messages_change_apply
    from providers.base import ChangeKind, MessageChange

    server = plain_imap_settings
    account = outlook_account()
    uids = seed(server, account.email, 15)
    client = outlook_client(account)
    client.full_sync()
    assert b"CONDSTORE" not in client.session.capabilities and b"MOVE" not in client.session.capabilities
    assert Folder.objects.get(account=account, remote_id="INBOX").highestmodseq is None

    server.set_flags(account.email, "INBOX", uids[:4], [b"\\Flagged"])  # bounded flag refresh
    server.expunge(account.email, "INBOX", uids[10:12])  # UID set comparison
    seed(server, account.email, 2, seed=9)
    outlook_client(account).incremental_sync()
    assert db_view(account) == server_view(server, account.email)

    moved = list(Message.objects.filter(account=account, messagefolder__uid=uids[0]))
    change = MessageChange(ChangeKind.MOVE, "Archive")
    messages_change(user=account.user, message_ids=[m.pk for m in moved], change=change)
    assert messages_change_apply(account_id=account.pk, message_ids=[moved[0].pk], change=change).outcome == "ok"
    assert uids[0] not in server.uids(account.email) and len(server.uids(account.email, "Archive")) == 1  # COPY+EXPUNGE
    outlook_client(account).incremental_sync()
    assert db_view(account, "Archive") == server_view(server, account.email, "Archive")
    assert db_view(account) == server_view(server, account.email)
