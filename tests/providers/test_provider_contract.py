"""One set of cases, run through the sync engine, write-back and outbox against every registered provider.

Each provider gets a :class:`RemoteMailbox`: the test's hands on the real server (the Gmail sandbox, Dovecot)
that can deliver, flag, move and delete mail there as another client would, and report what it holds. Every
case then compares the provider's mailbox with the local store through the same engine entry points
(``sync.account_sync``, ``writeback.messages_change``, ``outbox.outgoing_send``), so the providers are
checked the same way. A provider added to the registry without a RemoteMailbox here fails
``test_every_registered_provider_is_covered``.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from typing import Protocol

import pytest

from mailbox import outbox, store, sync, writeback
from mailbox.models import Message, OutgoingMessage, SyncState
from providers import registry
from providers.base import ChangeKind, MessageChange
from tests.fixtures.mail import raw_message

pytestmark = [pytest.mark.django_db, pytest.mark.dovecot]

PROJECTS = "Projects"
COMPARED_FOLDERS = {"INBOX", PROJECTS}  # what every provider has the same way (Gmail: labels)


@dataclass(frozen=True)
class Seen:
    folders: frozenset[str]
    read: bool
    starred: bool


View = dict[str, Seen]  # Message-ID (without <>) -> where it is and its flags


class RemoteMailbox(Protocol):
    account: object

    def deliver(self, raw: bytes, *, folder: str = "INBOX", read: bool = False, starred: bool = False) -> None: ...

    def delete(self, message_id: str) -> None: ...

    def mark(self, message_id: str, *, read: bool | None = None, starred: bool | None = None) -> None: ...

    def move(self, message_id: str, folder: str) -> None: ...

    def view(self) -> View: ...

    def prepare_send(self, settings) -> None:
        """Configure what differs between this test server and the real one for sending."""
        ...

    def delivered(self, message_id: str) -> int:
        """How many times the provider passed ``message_id`` on to its recipients."""
        ...

    def in_sent(self, message_id: str) -> int:
        """How many copies of ``message_id`` the provider's Sent folder holds."""
        ...

    def small_batches(self, monkeypatch, settings) -> None:
        """Make a first sync of a handful of messages store them in several steps (for the kill case)."""
        ...


def _message_id(raw: bytes) -> str:
    return email.message_from_bytes(raw, policy=policy.default)["Message-ID"].strip().strip("<>")


class GmailRemote:
    def __init__(self, account, sandbox_settings) -> None:
        self.account = account
        self.store = sandbox_settings.gmail
        self.email = account.email
        self.labels = {"INBOX": "INBOX", PROJECTS: self.store.create_label(self.email, PROJECTS)}

    def _id(self, message_id: str) -> str:
        (found,) = [m.id for m in self.store.messages(self.email) if _message_id(m.raw) == message_id]
        return found

    def deliver(self, raw: bytes, *, folder: str = "INBOX", read: bool = False, starred: bool = False) -> None:
        labels = [self.labels[folder]] + ["UNREAD"] * (not read) + ["STARRED"] * starred
        self.store.insert_message(self.email, raw, label_ids=labels)

    def delete(self, message_id: str) -> None:
        self.store.delete(self.email, self._id(message_id))

    def mark(self, message_id: str, *, read: bool | None = None, starred: bool | None = None) -> None:
        add, remove = [], []
        if read is not None:
            (remove if read else add).append("UNREAD")
        if starred is not None:
            (add if starred else remove).append("STARRED")
        self.store.modify(self.email, self._id(message_id), add=add, remove=remove)

    def move(self, message_id: str, folder: str) -> None:
        others = [label for name, label in self.labels.items() if name != folder]
        self.store.modify(self.email, self._id(message_id), add=[self.labels[folder]], remove=others)

    def view(self) -> View:
        names = {label: name for name, label in self.labels.items()}
        return {
            _message_id(m.raw): Seen(
                folders=frozenset(names[label] for label in m.label_ids if label in names),
                read="UNREAD" not in m.label_ids,
                starred="STARRED" in m.label_ids,
            )
            for m in self.store.messages(self.email)
            if "SENT" not in m.label_ids
        }

    def prepare_send(self, settings) -> None:
        """The sandbox keeps every sent message with the SENT label, as Gmail does."""

    def delivered(self, message_id: str) -> int:
        return sum(_message_id(m.raw) == message_id for m in self.store.sent_messages(self.email))

    def in_sent(self, message_id: str) -> int:
        return sum(_message_id(m.raw) == message_id and "SENT" in m.label_ids for m in self.store.messages(self.email))

    def small_batches(self, monkeypatch, settings) -> None:
        from providers.google import mail as gmail

        settings.GMAIL_QUOTA_UNITS_PER_SECOND = 0
        settings.GMAIL_BATCH_SIZE = 2
        settings.GMAIL_CONCURRENCY = 1
        monkeypatch.setattr(gmail, "STORE_GROUP", 2)


class ImapRemote:
    """Dovecot, reached as the account's owner through the harness's master user."""

    def __init__(self, account, dovecot, *, sent_folder: str) -> None:
        self.account = account
        self.dovecot = dovecot
        self.email = account.email
        self.sent_folder = sent_folder
        with self.dovecot.client(self.email) as imap:
            if not imap.folder_exists(PROJECTS):
                imap.create_folder(PROJECTS)

    def _where(self, message_id: str) -> tuple[str, int]:
        with self.dovecot.client(self.email) as imap:
            for folder in sorted(COMPARED_FOLDERS):
                imap.select_folder(folder)
                uids = imap.search(["HEADER", "Message-ID", message_id])
                if uids:
                    return folder, uids[0]
        raise LookupError(message_id)

    def deliver(self, raw: bytes, *, folder: str = "INBOX", read: bool = False, starred: bool = False) -> None:
        flags = [b"\\Seen"] * read + [b"\\Flagged"] * starred
        self.dovecot.append(self.email, raw, folder=folder, flags=flags)

    def delete(self, message_id: str) -> None:
        folder, uid = self._where(message_id)
        self.dovecot.expunge(self.email, folder, [uid])

    def mark(self, message_id: str, *, read: bool | None = None, starred: bool | None = None) -> None:
        folder, uid = self._where(message_id)
        for flag, on in ((b"\\Seen", read), (b"\\Flagged", starred)):
            if on is not None:
                self.dovecot.set_flags(self.email, folder, [uid], [flag], add=on)

    def move(self, message_id: str, folder: str) -> None:
        source, uid = self._where(message_id)
        with self.dovecot.client(self.email, folder=source) as imap:
            imap.move([uid], folder)

    def view(self) -> View:
        found: dict[str, tuple[set[str], bool, bool]] = {}
        with self.dovecot.client(self.email) as imap:
            for folder in sorted(COMPARED_FOLDERS):
                imap.select_folder(folder, readonly=True)
                uids = imap.search()
                answer = imap.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
                for item in answer.values():
                    message_id = _message_id(item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])
                    folders, _, _ = found.setdefault(message_id, (set(), False, False))
                    folders.add(folder)
                    found[message_id] = (folders, b"\\Seen" in item[b"FLAGS"], b"\\Flagged" in item[b"FLAGS"])
        return {mid: Seen(frozenset(folders), read, starred) for mid, (folders, read, starred) in found.items()}

    def prepare_send(self, settings) -> None:
        # Exchange files SMTP mail in Sent Items itself and Outlook's transport counts on it; Dovecot does not.
        settings.MICROSOFT_APPEND_SENT = True

    def delivered(self, message_id: str) -> int:
        return sum(m.message()["Message-ID"].strip("<>") == message_id for m in self.dovecot.sink.wait_for(0))

    def in_sent(self, message_id: str) -> int:
        with self.dovecot.client(self.email, folder=self.sent_folder) as imap:
            return len(imap.search(["HEADER", "Message-ID", message_id]))

    def small_batches(self, monkeypatch, settings) -> None:
        """Nothing to do: each folder's messages are stored in a step of their own."""


@pytest.fixture(params=sorted(registry.PROVIDERS))
def remote(request) -> Iterator[RemoteMailbox]:
    provider = request.param
    if provider == "google":
        account = request.getfixturevalue("gmail_account")
        yield GmailRemote(account, request.getfixturevalue("sandbox_settings"))
    elif provider == "microsoft":
        account = request.getfixturevalue("outlook_account")()
        yield ImapRemote(account, request.getfixturevalue("dovecot"), sent_folder="Sent Items")
    elif provider == "imap":
        account = request.getfixturevalue("imap_account")()
        yield ImapRemote(account, request.getfixturevalue("dovecot"), sent_folder="Sent Items")
    else:
        pytest.fail(f"No RemoteMailbox for the provider {provider!r}: add one to {__name__}")


def local_view(account) -> View:
    view = {}
    for message in Message.objects.filter(account=account).prefetch_related("folders"):
        names = {"INBOX" if f.role == "inbox" else f.name for f in message.folders.all()}
        view[message.message_id] = Seen(frozenset(names & COMPARED_FOLDERS), message.is_read, message.is_starred)
    return view


def synced(remote: RemoteMailbox) -> View:
    """Run the engine once; it must succeed and leave the store equal to the provider's mailbox."""
    assert sync.account_sync(account_id=remote.account.pk).outcome == "ok"
    local = local_view(remote.account)
    assert local == remote.view()
    assert Message.objects.filter(account=remote.account).count() == len(local)  # nothing stored twice
    return local


def seed(remote: RemoteMailbox) -> list[str]:
    """Four messages: unread, read, starred in the inbox, and one in Projects."""
    raws = [raw_message(subject=f"Contract {n}") for n in range(4)]
    remote.deliver(raws[0])
    remote.deliver(raws[1], read=True)
    remote.deliver(raws[2], starred=True)
    remote.deliver(raws[3], folder=PROJECTS, read=True)
    return [_message_id(raw) for raw in raws]


def test_every_registered_provider_is_covered(remote):
    assert remote.account.provider in registry.PROVIDERS


def test_full_sync_stores_everything_once_and_counts_it(remote):
    ids = seed(remote)
    local = synced(remote)
    assert set(local) == set(ids)
    state = SyncState.objects.get(account=remote.account)
    assert state.stage == SyncState.Stage.INCREMENTAL
    assert state.progress_done == state.progress_total == 4
    synced(remote)  # nothing changed: still equal, nothing added


def test_incremental_sync_brings_new_mail_flag_changes_moves_and_deletions(remote):
    ids = seed(remote)
    synced(remote)
    rows_before = dict(Message.objects.filter(account=remote.account).values_list("message_id", "pk"))

    new = raw_message(subject="Arrived later")
    remote.deliver(new)
    remote.mark(ids[0], read=True, starred=True)
    remote.mark(ids[2], starred=False)
    remote.move(ids[1], PROJECTS)
    remote.delete(ids[3])
    local = synced(remote)

    assert set(local) == {*ids[:3], _message_id(new)}
    assert local[ids[0]] == Seen(frozenset({"INBOX"}), read=True, starred=True)
    assert local[ids[1]].folders == {PROJECTS}
    # A moved message is the same row, not a new one (its id, links and notes stay).
    assert Message.objects.get(account=remote.account, message_id=ids[1]).pk == rows_before[ids[1]]


def test_local_changes_are_written_back(remote):
    ids = seed(remote)
    synced(remote)
    user = remote.account.user
    pks = dict(Message.objects.filter(account=remote.account).values_list("message_id", "pk"))
    projects = remote.account.folders.get(name=PROJECTS).remote_id
    for message_id, change in [
        (ids[0], MessageChange(ChangeKind.READ)),
        (ids[1], MessageChange(ChangeKind.STAR)),
        (ids[2], MessageChange(ChangeKind.MOVE, folder_remote_id=projects)),
    ]:
        assert writeback.messages_change(user=user, message_ids=[pks[message_id]], change=change) == 1
        applied = writeback.messages_change_apply(
            account_id=remote.account.pk, message_ids=[pks[message_id]], change=change
        )
        assert applied.outcome == "ok"
    there = remote.view()
    assert there[ids[0]].read and there[ids[1]].starred and there[ids[2]].folders == {PROJECTS}
    synced(remote)  # and the next sync agrees with both


class _Killed(BaseException):
    """Stands in for SIGKILL inside this process: no except clause of the engine catches it."""


def test_a_first_sync_killed_midway_resumes_without_losing_or_doubling(remote, monkeypatch, settings):
    remote.small_batches(monkeypatch, settings)
    ids = seed(remote)
    real, calls = store.messages_upsert, []

    def dying(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise _Killed
        return real(**kwargs)

    monkeypatch.setattr(store, "messages_upsert", dying)
    with pytest.raises(_Killed):
        sync.account_sync(account_id=remote.account.pk)
    monkeypatch.setattr(store, "messages_upsert", real)
    stored = Message.objects.filter(account=remote.account).count()
    assert 0 < stored < 4
    SyncState.objects.filter(account=remote.account).update(lock_owner="")  # as if its lock had lapsed
    local = synced(remote)
    assert set(local) == set(ids)
    state = SyncState.objects.get(account=remote.account)
    assert state.progress_done == state.progress_total == 4


def test_send_delivers_once_and_shows_in_sent(remote, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    remote.prepare_send(settings)
    synced(remote)
    outgoing = OutgoingMessage.objects.create(
        account=remote.account,
        to=[{"name": "Bob", "email": "bob@example.org"}],
        subject="Contract send",
        body_text="Hello Bob\n",
    )
    outbox.outgoing_queue(outgoing=outgoing)
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "nothing"  # a duplicate task sends nothing
    outgoing.refresh_from_db()
    assert remote.delivered(outgoing.message_id) == 1 and remote.in_sent(outgoing.message_id) == 1
    sent = Message.objects.get(account=remote.account, message_id=outgoing.message_id)
    assert {f.role for f in sent.folders.all()} == {"sent"}
    assert sync.account_sync(account_id=remote.account.pk).outcome == "ok"
    assert Message.objects.filter(account=remote.account, message_id=outgoing.message_id).count() == 1
    assert remote.in_sent(outgoing.message_id) == 1
