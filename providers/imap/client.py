"""Mail over IMAP (sync, write-back) and SMTP (send), for any provider that gives a :class:`Transport`:
Outlook (XOAUTH2, see ``providers.microsoft``) and any IMAP/SMTP server with a password (``providers.imap``).

Storage identity: when two IMAP messages are one row.

- A message's ``remote_id`` is :func:`imap.content_remote_id` of its bytes: ``sha256:`` and the SHA-256 of
  exactly what the server returns for ``BODY.PEEK[]``. Two messages are one row only when their bytes are
  identical. Message-ID and Date are never compared: list copies, resends and broken mailers share both.
  The same mail in two folders (COPY and MOVE keep the bytes) is one row with one ``MessageFolder`` per
  folder, each holding that folder's UID. Byte-identical copies inside one folder are one row too (its
  membership holds the UID seen last).
- Which stored row a folder's UID is, is known without downloading it in two cases only:

  1. *Held UID*: a membership of that folder holds the UID, under the folder's stored UIDVALIDITY (a
     server never gives a UID to another message while UIDVALIDITY stays).
  2. *Pending membership re-linked*: the store lists the row in that folder but does not know its UID
     there (``MessageFolder.uid`` is NULL) because the folder's UIDVALIDITY changed, our own write-back
     moved or copied the message there, or the ``imap_content_keys`` migration re-keyed the rows. A UID
     of the folder that no membership holds is that row when its ``RFC822.SIZE`` equals the stored
     length, its ``INTERNALDATE`` equals the stored date, the SHA-256 of its ``BODY.PEEK[HEADER]`` (the
     whole header block, byte for byte) equals that of the same number of leading stored bytes, and the
     pairing is one-to-one: no other unheld UID of the folder matches that row and no other pending row
     of the folder matches that UID. The only thing this cannot tell apart is a different message with
     the same header block, size and arrival time that replaced the original in the same folder while
     its UID was unknown.

  Every other UID is downloaded and keyed by its bytes: new mail, mail another client moved or copied
  (its key finds the stored row, so the row and its id stay; one download), and UIDs whose re-link
  was ambiguous. A pending membership that nothing pairs with or downloads onto is dropped at the end
  of its folder's pass. A row left in no folder is deleted at the end of the sync, once every folder
  has been seen, so a message moved between two folders is never deleted and stored again.
- EMAILID (RFC 8474 OBJECTID) would prove identity across folders without a download, but neither
  Exchange Online nor the Dovecot 2.3 the tests run advertises OBJECTID, so it is not used.
- A folder's first sync downloads its bodies in one pass (``RFC822.SIZE``, then ``BODY.PEEK[]`` in
  byte-bounded batches), with no header pass: its UIDs are unknown and its messages new.

Sync state: per folder UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ on ``Folder``; while a full sync runs,
``SyncState.resume`` records per folder the last UID stored (a killed worker resumes from there).
Nothing here marks or deletes anything on the server except on the user's explicit action.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any, TypeVar

from django.utils import timezone
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from providers.base import (
    Account,
    DraftContent,
    Flags,
    LocalFolder,
    LocalMailbox,
    LocalMessage,
    MailboxWatch,
    MessageChange,
    Outgoing,
    Pending,
    RemoteDraft,
    RemoteFolder,
    RemoteMessage,
    SenderIdentity,
)
from providers.errors import ProviderError
from providers.imap import connection as imap
from providers.imap.connection import CONNECTION_ERRORS, FolderStatus
from providers.imap.transport import OAuth2Login, PasswordLogin, Transport

logger = logging.getLogger(__name__)
T = TypeVar("T")

RECONNECT_DELAYS = (0.2, 1.0, 3.0, 8.0)  # seconds between attempts after a dropped connection
DEFAULT_CHUNK = 500  # messages per UID FETCH
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024  # body bytes per UID FETCH (RFC822.SIZE tells us beforehand)
SIZE_ITEMS = ["UID", "RFC822.SIZE"]
FLAG_ITEMS = ["UID", "FLAGS"]
BODY_ITEMS = ["UID", "FLAGS", "INTERNALDATE", "BODY.PEEK[]"]
# The re-link of pending memberships (rule 2 above): arrival and size first, the header block only for UIDs
# whose arrival and size match a pending row.
ARRIVAL_ITEMS = ["UID", "INTERNALDATE", "RFC822.SIZE"]
HEADER_ITEMS = ["UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODY.PEEK[HEADER]"]
RELINK_CHUNK = 1000  # UIDs per FETCH in the re-link pass (a few hundred bytes of answer each)


@dataclass
class _Seen:
    """One message as a FETCH saw it in a folder."""

    uid: int
    flags: frozenset[bytes]
    internal_date: datetime | None
    size: int
    header_sha256: bytes = b""  # of BODY[HEADER], when the FETCH asked for it
    header_length: int = 0


class Session:
    """One IMAP connection that logs in as the transport says and comes back after a drop."""

    def __init__(self, account: Account, transport: Transport) -> None:
        self.account = account
        self.transport = transport
        self.client: IMAPClient | None = None
        self.selected: tuple[str, bool] | None = None
        self.capabilities: set[bytes] = set()
        self.commands = [0]
        self.connections = 0
        self.bodies = 0  # messages whose BODY.PEEK[] was downloaded
        self.seconds = 0.0  # wall time spent talking to the server (the benchmark splits IMAP from storing)

    @property
    def condstore(self) -> bool:
        return b"CONDSTORE" in self.capabilities or b"QRESYNC" in self.capabilities

    @property
    def qresync(self) -> bool:
        return b"QRESYNC" in self.capabilities

    def open(self) -> IMAPClient:
        if self.client is not None:
            return self.client
        client = imap.imap_connect(self.transport.imap, name=self.transport.name)
        counter = imap.command_counter(client)
        counter[0] = self.commands[0]
        self.commands = counter
        client.normalise_times = False
        try:
            self._login(client)
            self.capabilities = set(client.capabilities())
            if self.qresync:
                client.enable("QRESYNC")
            elif self.condstore:
                client.enable("CONDSTORE")
        except BaseException:
            imap.imap_close(client)
            raise
        self.client = client
        self.connections += 1
        if self.selected:
            remote_id, readonly = self.selected
            self.selected = None
            self.select(remote_id, readonly=readonly)
        return client

    def _login(self, client: IMAPClient) -> None:
        login = self.transport.login
        if isinstance(login, OAuth2Login):
            try:
                imap.imap_login(client, login=login, access_token=login.access_token())
                return
            except LoginError:
                pass
            # Expired or revoked although we thought it valid: refresh once (the token callable raises when
            # the grant is dead). A fresh token that is still refused means what the provider says it means.
            token = login.access_token(force_refresh=True)
        else:
            token = ""
        try:
            imap.imap_login(client, login=login, access_token=token)
        except LoginError as exc:
            if isinstance(login, PasswordLogin):
                self._login_unavailable(exc)
            raise self.transport.login_refused("imap") from None

    def _login_unavailable(self, exc: LoginError) -> None:
        """Raise ProviderError (retried later) when the server refused a password for now, not for good.

        Not for XOAUTH2: Dovecot's oauth2 passdb answers an expired token with [UNAVAILABLE], and a refused
        token is refreshed once anyway.
        """
        if imap.login_refusal_is_temporary(exc):
            raise ProviderError(
                f"{self.transport.name}'s mail server could not check the sign-in just now; the sync will be retried."
            ) from None

    def close(self) -> None:
        if self.client is not None:
            imap.imap_close(self.client)
        self.client = None

    def drop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # the socket is already broken
                self.client.shutdown()
        self.client = None

    def select(self, remote_id: str, *, readonly: bool = True) -> FolderStatus:
        status = imap.folder_select(self.open(), remote_id, readonly=readonly)
        self.selected = (remote_id, readonly)
        return status

    def run(self, operation: Callable[[IMAPClient], T], *, repeatable: bool = True) -> T:
        """Run ``operation`` with the connection, reconnecting (with backoff) if it drops meanwhile.

        ``operation`` must be safe to repeat (the sync's writes are idempotent); one that is not (an APPEND)
        passes ``repeatable=False``: it runs at most once, and a dropped connection raises ProviderError.
        """
        for attempt, delay in enumerate((*RECONNECT_DELAYS, None) if repeatable else (None,)):
            started = time.perf_counter()
            try:
                return operation(self.open())
            except CONNECTION_ERRORS as exc:
                self.drop()
                if delay is None:
                    raise ProviderError(
                        f"{self.transport.name}'s mail server keeps closing the connection; "
                        "the sync will be retried later."
                    ) from None
                logger.info(
                    "IMAP connection of account %s dropped (%s); reconnect #%d",
                    self.account.pk,
                    type(exc).__name__,
                    attempt + 1,
                )
                time.sleep(delay)
            except IMAPClientError as exc:
                raise ProviderError(f"{self.transport.name}'s mail server refused a command ({_short(exc)}).") from None
            finally:
                self.seconds += time.perf_counter() - started
        raise AssertionError("unreachable")

    def __enter__(self) -> Session:
        self.run(lambda client: None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(exc: BaseException) -> str:
    return str(exc).replace("\r", " ").replace("\n", " ")[:160]


class ImapMailClient:
    """Mailhub's MailClient over IMAP and SMTP: Outlook's (XOAUTH2) and any server's (a password)."""

    def __init__(
        self,
        account: Account,
        *,
        transport: Transport,
        local: LocalMailbox,
        chunk_size: int = DEFAULT_CHUNK,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.account = account
        self.transport = transport
        self.local = local
        self.chunk_size = chunk_size
        self.chunk_bytes = chunk_bytes
        self.session = Session(account, transport)
        self._remaining: dict[str, int] = {}  # full sync: messages left per folder, for the progress total

    @property
    def commands_sent(self) -> int:
        return self.session.commands[0]

    @property
    def bodies_fetched(self) -> int:
        """How many message bodies (BODY.PEEK[]) this client has downloaded."""
        return self.session.bodies

    # -- sync -------------------------------------------------------------------------------------

    def full_sync(self) -> None:
        """Store every message since the account's start date from every folder; resumable."""
        started = timezone.now()
        sync_position = self.local.position()
        since = sync_position.since
        resume: dict[str, Any] = sync_position.resume
        resume.setdefault("folders", {})
        with self.session:
            folders = self._folders_refresh()
            self._remaining = self._progress_remaining(folders, since=since, resume=resume)
            self._full_progress(resume=resume)
            for folder in folders:
                position = resume["folders"].get(folder.remote_id, {})
                if position.get("finished"):
                    continue
                self._folder_full(folder, since=since, resume=resume, total=None)
            self.local.orphans_delete(before=started, everywhere=True)
            self._remaining = {}
            self._full_progress(resume=resume)  # done == total == what is stored

    def incremental_sync(self) -> None:
        """New mail, flag changes and expunges since the last sync; cost independent of mailbox size."""
        started = timezone.now()
        since = self.local.position().since
        with self.session:
            folders = self._folders_refresh()
            pending = self.local.folders_with_pending()
            for folder in folders:
                if folder.uidvalidity is None:  # a folder that appeared since the last sync
                    self._folder_full(folder, since=since, resume=None, total=None)
                else:
                    self._folder_incremental(folder, since=since, pending=folder.remote_id in pending)
            self.local.orphans_delete(before=started, everywhere=False)

    def _folders_refresh(self) -> list[LocalFolder]:
        """Store the server's folders (a folder gone from it is forgotten); returns the selectable ones."""
        remote = self.session.run(imap.folders_list)
        listed = [RemoteFolder(f.remote_id, f.name, f.role, f.is_selectable, f.delimiter) for f in remote]
        return [folder for folder in self.local.folders_replace(listed).values() if folder.is_selectable]

    def _progress_remaining(self, folders: list[LocalFolder], *, since: date | None, resume: dict) -> dict[str, int]:
        """Per folder, the messages in range the full sync has still to go through (after its resume point)."""

        def count(client: IMAPClient) -> dict[str, int]:
            remaining = {}
            for folder in folders:
                position = resume["folders"].get(folder.remote_id) or {}
                if position.get("finished"):
                    continue
                self.session.select(folder.remote_id)
                after = int(position.get("after", 0))
                remaining[folder.remote_id] = sum(
                    1 for uid in client.search(["SINCE", since] if since else "ALL") if uid > after
                )
            return remaining

        return self.session.run(count)

    def _full_progress(self, *, resume: dict) -> None:
        """Report a full sync's progress: done = messages stored; total = done + what is left to go through.

        Counting stored rows (not UIDs seen) keeps done from going back after a resume and makes the same
        mail in two folders count once; total is an upper bound that settles on done at the end.
        """
        done = self.local.count()
        self.local.progress(done=done, total=done + sum(self._remaining.values()), resume=resume)

    def _folder_full(self, folder: LocalFolder, *, since: date | None, resume: dict | None, total: int | None) -> None:
        """Fetch the folder from scratch (or from where a killed run stopped), in bounded chunks."""
        status = self.session.run(lambda c: self.session.select(folder.remote_id))
        position = (resume or {}).get("folders", {}).get(folder.remote_id) or {}
        if position.get("uidvalidity") != status.uidvalidity:
            position = {
                "uidvalidity": status.uidvalidity,
                "uidnext": status.uidnext,
                "modseq": status.highestmodseq,
                "after": 0,
                "done": 0,
            }
            if folder.uidvalidity is not None and folder.uidvalidity != status.uidvalidity:
                # The UIDs we know in this folder mean nothing now: its memberships become pending (rule 2).
                self.local.folder_uids_forget(folder.remote_id)
        uids = self.session.run(lambda c: imap.uids_search(c, since=since, after_uid=position["after"]))
        seen_before = folder.uidvalidity is not None  # then most of its messages are probably stored
        linked: set[int] = set()
        pending = self.local.pending(folder.remote_id)
        if pending:
            linked = self._relink(folder, self.session.run(lambda c: c.search("ALL")), pending=pending)
        if resume is not None:
            self._remaining[folder.remote_id] = len(uids)
        for start in range(0, len(uids), self.chunk_size):
            chunk = uids[start : start + self.chunk_size]
            self._chunk_store(folder, [uid for uid in chunk if uid not in linked], refresh_known=seen_before)
            position["after"] = chunk[-1]
            position["done"] = position.get("done", 0) + len(chunk)
            if resume is not None:
                resume["folders"][folder.remote_id] = position
                self._remaining[folder.remote_id] -= len(chunk)
                self._full_progress(resume=resume)
        # Anything we hold for this folder that the server no longer has (or whose UID is still unknown) goes.
        server_uids = set(self.session.run(lambda c: c.search("ALL")))
        stale = [uid for uid in self.local.uids(folder.remote_id) if uid not in server_uids]
        self.local.memberships_remove(folder.remote_id, uids=stale, pending=True)
        self.local.folder_passed(
            folder.remote_id,
            uidvalidity=status.uidvalidity,
            uidnext=max(position["uidnext"], (uids[-1] + 1) if uids else 0),
            highestmodseq=position["modseq"],
        )
        if resume is not None:
            position["finished"] = True
            resume["folders"][folder.remote_id] = position
            self.local.progress(resume=resume)

    def _folder_incremental(self, folder: LocalFolder, *, since: date | None, pending: bool = False) -> None:
        """New mail, flag changes and expunges of one folder; ``pending``: it has memberships without a UID."""
        session = self.session
        status = session.run(lambda c: imap.folder_status(c, folder.remote_id, condstore=session.condstore))
        if status.uidvalidity != folder.uidvalidity:
            logger.info(
                "UIDVALIDITY of folder %r of account %s changed; resyncing it", folder.remote_id, self.account.pk
            )
            self._folder_full(folder, since=since, resume=None, total=None)
            return
        unchanged_modseq = status.highestmodseq is not None and status.highestmodseq == folder.highestmodseq
        if session.condstore and status.uidnext == folder.uidnext and unchanged_modseq and not pending:
            return  # nothing new, changed or expunged: no SELECT at all
        selected = session.run(lambda c: session.select(folder.remote_id))
        if selected.uidvalidity != folder.uidvalidity:
            self._folder_full(folder, since=since, resume=None, total=None)
            return
        known_next = folder.uidnext or 1
        if session.condstore and folder.highestmodseq:
            self._changes_since(folder, modseq=folder.highestmodseq, below_uid=known_next)
        else:
            self._flags_refresh(folder, below_uid=known_next)
        server: list[int] | None = None
        if not session.qresync or pending:
            server = sorted(session.run(lambda c: c.search("ALL")))
            on_server = set(server)
            gone = [uid for uid in self.local.uids(folder.remote_id) if uid not in on_server]
            self.local.memberships_remove(folder.remote_id, uids=gone)
        if pending and server is not None:
            new = self._pending_resolve(folder, server=server, known_next=known_next, since=since)
        else:
            new = session.run(lambda c: imap.uids_search(c, after_uid=known_next - 1))
            for start in range(0, len(new), self.chunk_size):
                self._chunk_store(folder, new[start : start + self.chunk_size], refresh_known=False)
        self.local.folder_passed(
            folder.remote_id,
            uidvalidity=selected.uidvalidity,
            uidnext=max(selected.uidnext, (new[-1] + 1) if new else 0, known_next),
            highestmodseq=selected.highestmodseq,
        )

    def _pending_resolve(
        self, folder: LocalFolder, *, server: list[int], known_next: int, since: date | None
    ) -> list[int]:
        """Re-link the folder's pending memberships (rule 2), download the UIDs still unheld that the sync
        covers (new ones, and older ones within the sync range), drop the pending memberships left over.
        Returns the new UIDs (at or above ``known_next``)."""
        linked = self._relink(folder, server, pending=self.local.pending(folder.remote_id))
        held = self.local.uids(folder.remote_id)
        in_range = set(server) if since is None else set(self.session.run(lambda c: imap.uids_search(c, since=since)))
        todo = [u for u in server if u not in held and u not in linked and (u >= known_next or u in in_range)]
        for start in range(0, len(todo), self.chunk_size):
            self._chunk_store(folder, todo[start : start + self.chunk_size], refresh_known=False)
        self.local.memberships_remove(folder.remote_id, uids=[], pending=True)
        return [uid for uid in server if uid >= known_next]

    def _changes_since(self, folder: LocalFolder, *, modseq: int, below_uid: int) -> None:
        """Flag changes (CONDSTORE) and expunges (QRESYNC VANISHED) since ``modseq``, in one command."""
        modifiers = [f"CHANGEDSINCE {modseq}"] + (["VANISHED"] if self.session.qresync else [])
        changed, vanished = self.session.run(lambda c: imap.fetch(c, "1:*", ["UID", "FLAGS"], modifiers=modifiers))
        flags = {
            int(data[b"UID"]): frozenset(data.get(b"FLAGS", ()))
            for data in changed.values()
            if b"UID" in data and int(data[b"UID"]) < below_uid
        }
        self._flags_apply(folder, flags)
        ranges = list(imap.uid_ranges(vanished))
        if ranges:
            held = self.local.uids(folder.remote_id, below=max(high for _, high in ranges) + 1)
            gone = [uid for uid in held if any(low <= uid <= high for low, high in ranges)]
            self.local.memberships_remove(folder.remote_id, uids=gone)

    def _flags_refresh(self, folder: LocalFolder, *, below_uid: int) -> None:
        """Without CONDSTORE: read the flags of the messages we hold, a chunk at a time."""
        uids = sorted(self.local.uids(folder.remote_id, below=below_uid))
        for start in range(0, len(uids), 1000):
            chunk = uids[start : start + 1000]
            data, _ = self.session.run(partial(imap.fetch, uid_set=imap.uid_set(chunk), items=["UID", "FLAGS"]))
            self._flags_apply(folder, {int(d[b"UID"]): frozenset(d.get(b"FLAGS", ())) for d in data.values()})

    def _flags_apply(self, folder: LocalFolder, flags_by_uid: dict[int, frozenset[bytes]]) -> None:
        if not flags_by_uid:
            return
        remote_by_uid = self.local.uids(folder.remote_id, among=flags_by_uid)
        groups: dict[Flags, list[str]] = defaultdict(list)
        for uid, server_flags in flags_by_uid.items():
            if uid in remote_by_uid:
                groups[_flags(server_flags)].append(remote_by_uid[uid])
        for flags, remote_ids in groups.items():
            self.local.flags_set(
                remote_ids, is_read=flags.is_read, is_starred=flags.is_starred, is_draft=flags.is_draft
            )

    def _chunk_store(self, folder: LocalFolder, uids: list[int], *, refresh_known: bool) -> None:
        """Store one chunk of a folder's UIDs (idempotent).

        A UID a membership of the folder already holds is that row (rule 1): only its flags are read, and
        only with ``refresh_known``. Every other UID is downloaded and keyed by its bytes; a key already
        stored (the same mail in another folder, or moved) gets this folder's membership instead of a row.
        On a folder's first sync no UID is held, so this is the one-pass download.
        """
        if not uids:
            return
        known = set(self.local.uids(folder.remote_id, among=uids))
        if known and refresh_known:
            held = sorted(known)
            data, _ = self.session.run(lambda c: imap.fetch(c, imap.uid_set(held), FLAG_ITEMS))
            self._flags_apply(folder, {int(d[b"UID"]): frozenset(d.get(b"FLAGS", ())) for d in data.values()})
        todo = [uid for uid in uids if uid not in known]
        if not todo:
            return
        data, _ = self.session.run(lambda c: imap.fetch(c, imap.uid_set(todo), SIZE_ITEMS))
        need_body = sorted((_seen(item) for item in data.values() if b"UID" in item), key=lambda s: s.uid)
        for fetched in self._bodies(need_body):
            keyed = [(item, imap.content_remote_id(raw), raw) for item, raw in fetched]
            stored = self.local.stored(r for _, r, _ in keyed)
            existing: dict[str, _Seen] = {}
            incoming = []
            for item, remote_id, raw in keyed:
                if remote_id in stored:
                    existing[remote_id] = item
                    continue
                flags = _flags(item.flags)
                incoming.append(
                    RemoteMessage(
                        remote_id=remote_id,
                        raw=raw,
                        folders=[folder.remote_id],
                        is_read=flags.is_read,
                        is_starred=flags.is_starred,
                        is_draft=flags.is_draft,
                        internal_date=item.internal_date,
                        uids={folder.remote_id: item.uid},
                    )
                )
            self.local.messages_save(incoming)
            if existing:
                self._memberships_add(folder, existing)

    def _relink(self, folder: LocalFolder, uids: Sequence[int], *, pending: list[Pending]) -> set[int]:
        """Give the folder's pending memberships their UIDs where rule 2 proves which UID is which row.

        ``uids``: the folder's UIDs on the server; those a membership holds are skipped. Returns the UIDs
        linked (their flags are stored too). Costs one small FETCH per thousand unheld UIDs, the header
        blocks of those whose size and arrival match a pending row, and reading those rows' stored bytes.
        """
        held = self.local.uids(folder.remote_id)
        unheld = sorted(uid for uid in uids if uid not in held)
        if not pending or not unheld:
            return set()
        rows_by_arrival: dict[_Arrival, list[Pending]] = defaultdict(list)
        for row in pending:
            rows_by_arrival[_arrival(row.size, row.date)].append(row)
        candidates: list[int] = []
        for start in range(0, len(unheld), RELINK_CHUNK):
            chunk = unheld[start : start + RELINK_CHUNK]
            data, _ = self.session.run(partial(imap.fetch, uid_set=imap.uid_set(chunk), items=ARRIVAL_ITEMS))
            arrived = map(_seen, data.values())
            candidates += [s.uid for s in arrived if _arrival(s.size, s.internal_date) in rows_by_arrival]
        seen_by_arrival: dict[_Arrival, list[_Seen]] = defaultdict(list)
        for start in range(0, len(candidates), RELINK_CHUNK):
            chunk = sorted(candidates[start : start + RELINK_CHUNK])
            data, _ = self.session.run(partial(imap.fetch, uid_set=imap.uid_set(chunk), items=HEADER_ITEMS))
            for seen in map(_seen, data.values()):
                seen_by_arrival[_arrival(seen.size, seen.internal_date)].append(seen)
        rows_by_uid: dict[int, list[Pending]] = defaultdict(list)
        uids_by_row: dict[str, list[_Seen]] = defaultdict(list)
        wanted = {row.remote_id: row for key in seen_by_arrival for row in rows_by_arrival.get(key, ())}
        lengths = {
            remote_id: max(seen.header_length for seen in seen_by_arrival[_arrival(row.size, row.date)])
            for remote_id, row in wanted.items()
        }
        for remote_id, head in self.local.raw_heads(lengths).items():
            row = wanted[remote_id]
            for seen in seen_by_arrival[_arrival(row.size, row.date)]:
                if hashlib.sha256(head[: seen.header_length]).digest() == seen.header_sha256:
                    rows_by_uid[seen.uid].append(row)
                    uids_by_row[remote_id].append(seen)
        pairs = {
            rows[0].remote_id: uids_by_row[rows[0].remote_id][0]
            for rows in rows_by_uid.values()
            if len(rows) == 1 and len(uids_by_row[rows[0].remote_id]) == 1
        }
        if pairs:
            self._memberships_add(folder, pairs)
        return {seen.uid for seen in pairs.values()}

    def _bodies(self, items: list[_Seen]) -> Iterator[list[tuple[_Seen, bytes]]]:
        """Fetch BODY.PEEK[] for ``items`` in sub-chunks bounded by their announced size."""
        batch: list[_Seen] = []
        size = 0
        for item in items:
            if batch and size + item.size > self.chunk_bytes:
                yield self._bodies_fetch(batch)
                batch, size = [], 0
            batch.append(item)
            size += item.size
        if batch:
            yield self._bodies_fetch(batch)

    def _bodies_fetch(self, batch: list[_Seen]) -> list[tuple[_Seen, bytes]]:
        """The bodies of ``batch``, each with its flags and date as fetched along with it."""
        uids = [item.uid for item in batch]
        data, _ = self.session.run(lambda c: imap.fetch(c, imap.uid_set(uids), BODY_ITEMS))
        by_uid = {int(d[b"UID"]): d for d in data.values() if b"UID" in d and d.get(b"BODY[]") is not None}
        self.session.bodies += len(by_uid)
        # A UID expunged between the two fetches is simply skipped (the next sync sees it gone).
        return [(_seen(by_uid[item.uid]), bytes(by_uid[item.uid][b"BODY[]"])) for item in batch if item.uid in by_uid]

    def _memberships_add(self, folder: LocalFolder, seen: dict[str, _Seen]) -> None:
        """Messages we already hold, seen (again) in ``folder``: add the membership and UID, take its flags."""
        self.local.seen_in(
            folder.remote_id, {remote_id: (item.uid, _flags(item.flags)) for remote_id, item in seen.items()}
        )

    # -- write-back -------------------------------------------------------------------------------

    def apply_changes(self, *, messages: Sequence[LocalMessage], change: MessageChange) -> None:
        """Write a user's action to the server: flags with STORE, moves with MOVE (or COPY + UID EXPUNGE)."""
        if not messages:
            return
        from providers.imap.writeback import changes_apply

        with self.session:
            changes_apply(session=self.session, local=self.local, messages=messages, change=change)

    # -- send -------------------------------------------------------------------------------------

    @property
    def keeps_sent_copy(self) -> bool:
        """Exchange files what SMTP accepted in Sent Items itself; a server we APPEND to for it does not."""
        return not self.transport.append_sent

    def identities(self) -> list[SenderIdentity]:
        """IMAP has no list of aliases: the mailbox sends from its own address (the app keeps the name)."""
        return [SenderIdentity(address=self.account.email, is_primary=True, is_default=True)]

    def watch(self) -> MailboxWatch:
        from providers.imap.watch import InboxWatch

        return InboxWatch(Session(self.account, self.transport))

    # -- drafts -----------------------------------------------------------------------------------

    def drafts(self) -> list[RemoteDraft] | None:
        from providers.imap import drafts

        return drafts.drafts_list(self)

    def draft_get(self, *, draft_id: str) -> DraftContent | None:
        from providers.imap import drafts

        return drafts.draft_get(self, draft_id=draft_id)

    def draft_save(self, *, raw: bytes, draft_id: str | None, thread_key: str = "") -> RemoteDraft:
        from providers.imap import drafts

        return drafts.draft_save(self, raw=raw, draft_id=draft_id)

    def draft_delete(self, *, draft_id: str) -> None:
        from providers.imap import drafts

        drafts.draft_delete(self, draft_id=draft_id)

    # -- folders ----------------------------------------------------------------------------------

    def folder_create(self, *, name: str) -> RemoteFolder:
        from providers.imap import folders

        return folders.folder_create(self, name=name)

    def folder_rename(self, *, folder: LocalFolder, name: str) -> RemoteFolder:
        from providers.imap import folders

        return folders.folder_rename(self, folder=folder, name=name)

    def folder_delete(self, *, folder: LocalFolder) -> None:
        from providers.imap import folders

        folders.folder_delete(self, folder=folder)

    def send(self, *, outgoing: Outgoing, handoff: Callable[[], None]) -> str:
        from providers.imap.smtp import outgoing_send_smtp

        return outgoing_send_smtp(client=self, outgoing=outgoing, handoff=handoff)

    def find_sent(self, *, outgoing: Outgoing) -> str | None:
        """The remote id of ``outgoing`` if it is already in Sent (an interrupted send may have gone)."""
        from providers.imap.smtp import sent_find

        return sent_find(client=self, outgoing=outgoing)

    def file_sent(self, *, outgoing: Outgoing, remote_id: str) -> None:
        from providers.imap.smtp import sent_file

        sent_file(client=self, outgoing=outgoing, remote_id=remote_id)


_Arrival = tuple[int, datetime | None]


def _arrival(size: int, internal_date: datetime | None) -> _Arrival:
    """What a pending row and an unheld UID must share before their header blocks are compared (rule 2)."""
    return size, internal_date


def _seen(item: dict[bytes, Any]) -> _Seen:
    """A FETCH response as a _Seen (with the digest of its header block if the FETCH asked for it)."""
    header = item.get(b"BODY[HEADER]")
    header_bytes = bytes(header) if header is not None else b""
    return _Seen(
        uid=int(item[b"UID"]),
        flags=frozenset(item.get(b"FLAGS", ())),
        internal_date=item.get(b"INTERNALDATE"),
        size=int(item.get(b"RFC822.SIZE", 0)),
        header_sha256=hashlib.sha256(header_bytes).digest() if header is not None else b"",
        header_length=len(header_bytes),
    )


def _flags(flags: frozenset[bytes]) -> Flags:
    lowered = {f.lower() for f in flags}
    return Flags(is_read=b"\\seen" in lowered, is_starred=b"\\flagged" in lowered, is_draft=b"\\draft" in lowered)
