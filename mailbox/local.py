"""The mailbox's side of the provider boundary: :class:`StoredMailbox`, the ``providers.base.LocalMailbox``
a provider's client syncs into, and :func:`account_client`, which builds a client with one.

Providers hand over plain data (``RemoteFolder``, ``RemoteMessage``, ``RemoteState``; folders by remote id);
this module turns it into writes through :mod:`mailbox.store` and keeps progress, resume points and cursors
in the account's SyncState under the running sync's lock (:mod:`mailbox.sync`).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time

from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import MailAccount
from accounts.services import account_mail_client
from mailbox import store, synclock
from mailbox.models import Folder, Message, MessageFolder, OutgoingMessage, SyncState
from providers.base import (
    Flags,
    LocalFolder,
    LocalMessage,
    MailClient,
    Outgoing,
    Pending,
    RemoteFolder,
    RemoteMessage,
    RemoteState,
    SyncPosition,
)

_CHUNK = 500  # remote ids or UIDs per query


def account_client(account: MailAccount) -> MailClient:
    """The provider's client for ``account``, syncing into the account's stored mailbox."""
    return account_mail_client(account=account, local=StoredMailbox(account))


def local_messages(messages: Iterable[Message]) -> list[LocalMessage]:
    """Stored messages as write-back sees them: where the store has each (folder remote id -> UID or None)."""
    messages = list(messages)
    folders: dict[int, dict[str, int | None]] = defaultdict(dict)
    for message_id, folder, uid in MessageFolder.objects.filter(
        message__in=messages, folder__is_selectable=True
    ).values_list("message_id", "folder__remote_id", "uid"):
        folders[message_id][folder] = uid
    return [
        LocalMessage(
            remote_id=m.remote_id, message_id=m.message_id, date=m.date, size=m.size, folders=dict(folders[m.pk])
        )
        for m in messages
    ]


def outgoing_of(row: OutgoingMessage) -> Outgoing:
    """An outbox row as a provider sends it (a reply carries the provider's key of its thread, where it has one)."""
    source = row.source
    in_thread = source is not None and row.kind in ("reply", "reply_all", "forward") and bool(row.in_reply_to)
    thread_key = store.thread_provider_key(source.thread) if in_thread and source is not None else None
    return Outgoing(
        id=row.pk,
        raw=row.raw_bytes(),
        message_id=row.message_id,
        reply_thread_key=thread_key or "",
        from_alias=row.from_alias,
    )


def _day_start(day: date) -> datetime:
    return datetime.combine(day, dt_time.min, tzinfo=UTC)


class StoredMailbox:
    """``providers.base.LocalMailbox`` over the store, for one account (one instance per client)."""

    def __init__(self, account: MailAccount) -> None:
        self.account = account
        self._folder_ids: dict[str, int] | None = None
        self._left: set[int] = set()  # rows that lost a membership through this instance (maybe in none now)

    # -- reading ------------------------------------------------------------------------------------

    def position(self) -> SyncPosition:
        state = synclock.sync_state_get(account=self.account)
        return SyncPosition(
            since=state.sync_since,
            cursor=state.cursor,
            resume=dict(state.resume or {}),
            progress_total=state.progress_total,
        )

    def folders(self) -> dict[str, LocalFolder]:
        rows = Folder.objects.filter(account=self.account).order_by("pk")
        self._folder_ids = {f.remote_id: f.pk for f in rows}
        return {f.remote_id: local_folder_of(f) for f in rows}

    def stored(self, remote_ids: Iterable[str]) -> set[str]:
        wanted, found = list(remote_ids), set()
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            found |= set(self._messages().filter(remote_id__in=chunk).values_list("remote_id", flat=True))
        return found

    def count(self, *, since: date | None = None) -> int:
        return self._messages(since=since).count()

    def remote_ids(self, *, since: date | None = None) -> set[str]:
        return set(self._messages(since=since).values_list("remote_id", flat=True))

    def uids(self, folder: str, *, among: Iterable[int] | None = None, below: int | None = None) -> dict[int, str]:
        rows = self._memberships(folder).filter(uid__isnull=False)
        if below is not None:
            rows = rows.filter(uid__lt=below)
        if among is None:
            return {uid: remote_id for uid, remote_id in rows.values_list("uid", "message__remote_id") if uid}
        wanted, found = sorted(set(among)), {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = rows.filter(uid__in=wanted[start : start + _CHUNK]).values_list("uid", "message__remote_id")
            found.update({uid: remote_id for uid, remote_id in chunk if uid})
        return found

    def pending(self, folder: str) -> list[Pending]:
        rows = self._memberships(folder).filter(uid__isnull=True)
        return [
            Pending(remote_id=remote_id, size=size, date=when)
            for remote_id, size, when in rows.values_list("message__remote_id", "message__size", "message__date")
        ]

    def folders_with_pending(self) -> set[str]:
        rows = MessageFolder.objects.filter(folder__account=self.account, uid__isnull=True)
        return set(rows.values_list("folder__remote_id", flat=True).distinct())

    def raw_heads(self, lengths: Mapping[str, int]) -> dict[str, bytes]:
        """The first ``lengths[remote_id]`` bytes of each stored message (decompressing no further)."""
        ids, heads = sorted(lengths), {}
        for start in range(0, len(ids), 200):
            rows = self._messages().filter(remote_id__in=ids[start : start + 200])
            for remote_id, compressed in rows.values_list("remote_id", "raw_compressed"):
                heads[remote_id] = zlib.decompressobj().decompress(bytes(compressed), lengths[remote_id])
        return heads

    def raw(self, remote_id: str) -> bytes:
        message = self._messages().filter(remote_id=remote_id).only("raw_compressed").first()
        return message.raw if message is not None else b""

    def recent_sends(self, *, seconds: float, exclude: Iterable[int]) -> list[datetime]:
        rows = OutgoingMessage.objects.filter(
            account=self.account,
            status=OutgoingMessage.Status.SENT,
            sent_at__gt=timezone.now() - timedelta(seconds=seconds),
        ).exclude(pk__in=list(exclude))
        return [sent for sent in rows.values_list("sent_at", flat=True) if sent is not None]

    # -- writing ------------------------------------------------------------------------------------

    def folders_replace(self, folders: Sequence[RemoteFolder]) -> dict[str, LocalFolder]:
        stored = {f.remote_id: f for f in Folder.objects.filter(account=self.account)}
        listed = {f.remote_id for f in folders}
        for folder in folders:
            store.folder_upsert(
                account=self.account,
                remote_id=folder.remote_id,
                name=folder.name,
                role=folder.role,
                is_selectable=folder.is_selectable,
                delimiter=folder.delimiter,
            )
        for remote_id in set(stored) - listed:  # its messages that live nowhere else go with the orphans
            self._left.update(
                MessageFolder.objects.filter(folder=stored[remote_id]).values_list("message_id", flat=True)
            )
            store.folder_delete(account=self.account, remote_id=remote_id)
        current = self.folders()
        return {remote_id: current[remote_id] for remote_id in dict.fromkeys(f.remote_id for f in folders)}

    def folder_passed(self, folder: str, *, uidvalidity: int, uidnext: int, highestmodseq: int | None) -> None:
        Folder.objects.filter(account=self.account, remote_id=folder).update(
            uidvalidity=uidvalidity, uidnext=uidnext, highestmodseq=highestmodseq
        )

    def folder_uids_forget(self, folder: str) -> None:
        self._memberships(folder).update(uid=None)

    def messages_save(self, items: Sequence[RemoteMessage]) -> None:
        store.messages_upsert(account=self.account, items=[self._incoming(item) for item in items])

    def states_save(self, states: Mapping[str, RemoteState]) -> None:
        store.messages_state_set(
            account=self.account, states={remote_id: self._state(state) for remote_id, state in states.items()}
        )

    def seen_in(self, folder: str, seen: Mapping[str, tuple[int, Flags]]) -> None:
        folder_id = self._folder_id(folder)
        current: dict[str, dict[int, int | None]] = defaultdict(dict)
        for remote_id, folder_pk, uid in MessageFolder.objects.filter(
            message__account=self.account, message__remote_id__in=list(seen)
        ).values_list("message__remote_id", "folder_id", "uid"):
            current[remote_id][folder_pk] = uid
        states = {}
        for remote_id, (uid, flags) in seen.items():
            memberships = current.get(remote_id, {})
            memberships[folder_id] = uid
            states[remote_id] = store.MessageState(
                folders=list(memberships),
                is_read=flags.is_read,
                is_starred=flags.is_starred,
                is_draft=flags.is_draft,
                uid_by_folder={f: u for f, u in memberships.items() if u is not None},
            )
        store.messages_state_set(account=self.account, states=states)

    def flags_set(
        self,
        remote_ids: Iterable[str],
        *,
        is_read: bool | None = None,
        is_starred: bool | None = None,
        is_draft: bool | None = None,
    ) -> None:
        store.message_flags_update(
            account=self.account, remote_ids=remote_ids, is_read=is_read, is_starred=is_starred, is_draft=is_draft
        )

    def folders_change(self, remote_ids: Iterable[str], *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        store.message_folders_change(
            account=self.account,
            remote_ids=remote_ids,
            add=self._known_folder_ids(add),
            remove=self._known_folder_ids(remove),
        )

    def memberships_remove(self, folder: str, *, uids: Iterable[int], pending: bool = False) -> None:
        """The server no longer has these UIDs in ``folder`` (``pending``: nor the memberships without one).

        Rows left in no folder stay until :meth:`orphans_delete`: a message moved to a folder synced later
        is found there by its bytes and keeps its row.
        """
        uids = list(uids)
        if not uids and not pending:
            return
        query = Q(uid__in=uids)
        if pending:
            query |= Q(uid__isnull=True)
        rows = list(self._memberships(folder).filter(query).values_list("message_id", "message__remote_id"))
        if rows:
            self._left.update(message_id for message_id, _ in rows)
            self.folders_change([remote_id for _, remote_id in rows], remove=[folder])

    def messages_delete(self, remote_ids: Iterable[str]) -> None:
        store.messages_delete(account=self.account, remote_ids=remote_ids)

    def orphans_delete(self, *, before: datetime, everywhere: bool) -> None:
        """``everywhere``: a full sync reads every row anyway, and this also clears what a killed sync left;
        else only the rows that lost a membership here, so an incremental sync's cost does not grow with the
        mailbox. Only rows stored before ``before``: a message the outbox filed meanwhile is left alone."""
        orphans = self._messages().filter(messagefolder__isnull=True, created_at__lt=before)
        if everywhere:
            remote_ids = list(orphans.values_list("remote_id", flat=True))
        else:
            ids, remote_ids = sorted(self._left), []
            for start in range(0, len(ids), _CHUNK):
                remote_ids += orphans.filter(pk__in=ids[start : start + _CHUNK]).values_list("remote_id", flat=True)
        self._left = set()
        store.messages_delete(account=self.account, remote_ids=remote_ids)

    def progress(self, *, done: int | None = None, total: int | None = None, resume: dict | None = None) -> None:
        synclock.sync_state_progress(account=self.account, done=done, total=total, resume=resume)

    def cursor_save(self, cursor: str) -> None:
        synclock.sync_state_progress(account=self.account, cursor=cursor)

    def full_sync_finished(self, *, cursor: str, done: int) -> None:
        SyncState.objects.filter(account=self.account).update(
            cursor=cursor, stage=SyncState.Stage.INCREMENTAL, resume={}, progress_done=done, progress_total=done
        )

    def full_sync_restart(self) -> None:
        SyncState.objects.filter(account=self.account).update(
            stage=SyncState.Stage.FULL, resume={}, progress_done=0, progress_total=0
        )

    def heartbeat(self) -> None:
        synclock.sync_lock_heartbeat(account=self.account)

    # -- helpers ------------------------------------------------------------------------------------

    def _messages(self, *, since: date | None = None) -> QuerySet[Message]:
        rows = Message.objects.filter(account=self.account)
        return rows if since is None else rows.filter(date__gte=_day_start(since))

    def _memberships(self, folder: str) -> QuerySet[MessageFolder]:
        return MessageFolder.objects.filter(folder__account=self.account, folder__remote_id=folder)

    def _folder_id(self, remote_id: str) -> int:
        if self._folder_ids is None or remote_id not in self._folder_ids:
            self.folders()
        assert self._folder_ids is not None
        return self._folder_ids[remote_id]

    def _known_folder_ids(self, remote_ids: Iterable[str]) -> list[int]:
        if self._folder_ids is None or any(r not in self._folder_ids for r in remote_ids):
            self.folders()
        assert self._folder_ids is not None
        return [self._folder_ids[r] for r in remote_ids if r in self._folder_ids]

    def _incoming(self, item: RemoteMessage) -> store.IncomingMessage:
        return store.IncomingMessage(
            remote_id=item.remote_id,
            raw=item.raw,
            folders=self._known_folder_ids(item.folders),
            is_read=item.is_read,
            is_starred=item.is_starred,
            is_draft=item.is_draft,
            thread_key=item.thread_key,
            internal_date=item.internal_date,
            uid_by_folder={self._folder_id(f): uid for f, uid in item.uids.items()},
        )

    def _state(self, state: RemoteState) -> store.MessageState:
        return store.MessageState(
            folders=self._known_folder_ids(state.folders),
            is_read=state.is_read,
            is_starred=state.is_starred,
            is_draft=state.is_draft,
            uid_by_folder={self._folder_id(f): uid for f, uid in state.uids.items()},
        )


def local_folder_of(folder: Folder) -> LocalFolder:
    return LocalFolder(
        remote_id=folder.remote_id,
        name=folder.name,
        role=folder.role,
        is_selectable=folder.is_selectable,
        delimiter=folder.delimiter,
        uidvalidity=folder.uidvalidity,
        uidnext=folder.uidnext,
        highestmodseq=folder.highestmodseq,
    )
