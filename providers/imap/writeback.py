"""Write a user's actions back to an IMAP mailbox: \\Seen and \\Flagged with STORE, moves with MOVE
(or COPY + \\Deleted + UID EXPUNGE), "delete" as a move to Trash, "delete forever" as \\Deleted + UID
EXPUNGE in Trash.

The local store has usually been changed already (``mailbox.writeback.messages_change``), so a message's
place on the server is found again by Message-ID (``UID SEARCH HEADER``) where its local UID is gone, and
each hit is checked to be that message (other mail may share its Message-ID). The target folder's new
membership stays without a UID until the next sync re-links it (see :mod:`providers.imap.client`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from imapclient import IMAPClient

from providers.base import ChangeKind, LocalFolder, LocalMailbox, LocalMessage, MessageChange
from providers.errors import ProviderError
from providers.imap import connection as imap

if TYPE_CHECKING:
    from providers.imap.client import Session

FLAG_KINDS = {
    ChangeKind.READ: (b"\\Seen", True),
    ChangeKind.UNREAD: (b"\\Seen", False),
    ChangeKind.STAR: (b"\\Flagged", True),
    ChangeKind.UNSTAR: (b"\\Flagged", False),
}
# Where a message may be when the user moves it (besides the folders the store still lists for it).
MOVE_SOURCES = ("inbox", "spam", "archive", "trash")


def changes_apply(
    *, session: Session, local: LocalMailbox, messages: Sequence[LocalMessage], change: MessageChange
) -> None:
    folders = {remote_id: f for remote_id, f in local.folders().items() if f.is_selectable}  # in creation order
    by_role: dict[str, LocalFolder] = {}
    for folder in folders.values():
        by_role.setdefault(folder.role, folder)
    stored = _stored_folders(messages, folders)
    kind = ChangeKind(change.kind)
    if kind in FLAG_KINDS:
        flag, on = FLAG_KINDS[kind]
        for folder, uids in _locate(session, local, messages, stored or _present(by_role.get("inbox"))).items():
            session.run(partial(_store_flag, session, folder=folder, uids=uids, flag=flag, on=on))
        return
    target = _target(kind, change, folders, by_role)
    if kind in (ChangeKind.REMOVE_LABEL, ChangeKind.DELETE_FOREVER):
        found = _locate(session, local, messages, [target])
        for folder, uids in found.items():
            session.run(partial(uids_expunge, session, folder=folder, uids=uids))
        return
    if kind == ChangeKind.ADD_LABEL:  # IMAP has no labels: a copy in the target folder
        candidates = [f for f in stored if f != target] or _present(by_role.get("inbox"))
        copied: set[str] = set()
        for folder, pairs in _locate(session, local, messages, candidates, want_remote_ids=True).items():
            uids = [uid for uid, remote_id in pairs if remote_id not in copied]
            copied |= {remote_id for _, remote_id in pairs}
            if uids:
                session.run(partial(_copy, session, folder=folder, uids=uids, target=target))
        return
    if kind == ChangeKind.UNTRASH:
        sources = _present(by_role.get("trash"))
    elif kind == ChangeKind.UNARCHIVE:
        sources = _present(by_role.get("archive"))
    elif kind == ChangeKind.ARCHIVE:
        sources = _present(by_role.get("inbox"))
    else:
        sources = [f for role in MOVE_SOURCES for f in _present(by_role.get(role))] + stored
    sources = [f for f in dict.fromkeys(sources) if f != target]
    moved: dict[str, list[str]] = defaultdict(list)  # source folder -> remote ids moved from it
    located = _locate(session, local, messages, sources, want_remote_ids=True)
    for folder, pairs in located.items():
        uids = [uid for uid, _ in pairs]
        session.run(partial(_move, session, folder=folder, uids=uids, target=target))
        moved[folder.remote_id] += [remote_id for _, remote_id in pairs]
    for source, remote_ids in moved.items():
        # The UID in the target is learnt by the next sync, which re-links the pending membership.
        local.folders_change(remote_ids, add=[target.remote_id], remove=[source])


def _present(folder: LocalFolder | None) -> list[LocalFolder]:
    return [] if folder is None else [folder]


def _target(
    kind: ChangeKind, change: MessageChange, folders: dict[str, LocalFolder], by_role: dict[str, LocalFolder]
) -> LocalFolder:
    if kind in (ChangeKind.MOVE, ChangeKind.ADD_LABEL, ChangeKind.REMOVE_LABEL):
        target = folders.get(change.folder_remote_id)
        if target is None:
            raise ProviderError("That folder no longer exists in the mailbox.")
        return target
    role = {
        ChangeKind.ARCHIVE: "archive",
        ChangeKind.TRASH: "trash",
        ChangeKind.UNTRASH: "inbox",
        ChangeKind.UNARCHIVE: "inbox",
        ChangeKind.DELETE_FOREVER: "trash",
    }[kind]
    target = by_role.get(role)
    if target is None:
        raise ProviderError(f"This mailbox has no {role} folder to move the messages to.")
    return target


def _stored_folders(messages: Sequence[LocalMessage], folders: dict[str, LocalFolder]) -> list[LocalFolder]:
    """The selectable folders the store lists any of ``messages`` in, in the order of ``folders``."""
    listed = {remote_id for message in messages for remote_id in message.folders}
    return [folder for remote_id, folder in folders.items() if remote_id in listed]


def _locate(
    session: Session,
    local: LocalMailbox,
    messages: Sequence[LocalMessage],
    folders: Sequence[LocalFolder],
    *,
    want_remote_ids: bool = False,
) -> dict[LocalFolder, list]:
    """Where each message is on the server now: {folder: [uid, ...]} (or [(uid, remote_id)]).

    A UID the store holds for the message in that folder is used as it is. Otherwise the folder is searched
    by the message's Message-ID, and a hit counts only when it is that very message (see
    :func:`_same_messages`): other messages sharing the Message-ID are never touched.
    """
    found: dict[LocalFolder, list] = {}
    for folder in folders:

        def search(client: IMAPClient, folder: LocalFolder = folder) -> list:
            session.select(folder.remote_id, readonly=True)
            hits = []
            for message in messages:
                uids: list[int] = []
                uid = message.folders.get(folder.remote_id)
                if uid is not None:
                    uids = client.search(["UID", str(uid)])
                elif message.message_id:
                    same = client.search(["HEADER", "Message-ID", f"<{message.message_id}>"])
                    uids = _same_messages(client, same, message, raw=local.raw(message.remote_id) if same else b"")
                hits += [(uid, message.remote_id) if want_remote_ids else uid for uid in uids]
            return hits

        hits = session.run(search)
        if hits:
            found[folder] = hits
    return found


HEADER = "BODY.PEEK[HEADER]"


def _same_messages(client: IMAPClient, uids: list[int], message: LocalMessage, *, raw: bytes) -> list[int]:
    """Those of ``uids`` (in the selected folder) that are ``message`` by the sync's identity rule.

    One hit with the stored size, arrival time and header block is taken as it is (the re-link rule of
    :mod:`providers.imap.client`); anything less clear is downloaded and compared by its bytes.
    """
    if not uids:
        return []
    data, _ = imap.fetch(client, imap.uid_set(sorted(uids)), ["UID", "INTERNALDATE", "RFC822.SIZE", HEADER])
    plausible = [
        uid
        for uid, item in data.items()
        if int(item.get(b"RFC822.SIZE", -1)) == len(raw)
        and item.get(b"INTERNALDATE") == message.date
        and raw.startswith(bytes(item.get(b"BODY[HEADER]") or b"\0"))
    ]
    if len(plausible) == 1:
        return plausible
    bodies, _ = imap.fetch(client, imap.uid_set(sorted(uids)), ["UID", "BODY.PEEK[]"])
    return sorted(
        uid
        for uid, item in bodies.items()
        if item.get(b"BODY[]") is not None and imap.content_remote_id(bytes(item[b"BODY[]"])) == message.remote_id
    )


def _store_flag(
    session: Session, client: IMAPClient, folder: LocalFolder, uids: list[int], flag: bytes, on: bool
) -> None:
    session.select(folder.remote_id, readonly=False)
    (client.add_flags if on else client.remove_flags)(uids, [flag], silent=True)


def _copy(session: Session, client: IMAPClient, folder: LocalFolder, uids: list[int], target: LocalFolder) -> None:
    session.select(folder.remote_id, readonly=False)
    client.copy(uids, target.remote_id)


def _move(session: Session, client: IMAPClient, folder: LocalFolder, uids: list[int], target: LocalFolder) -> None:
    session.select(folder.remote_id, readonly=False)
    if b"MOVE" in session.capabilities:
        client.move(uids, target.remote_id)
        return
    client.copy(uids, target.remote_id)
    uids_expunge(session, client, folder, uids)


def uids_expunge(session: Session, client: IMAPClient, folder: LocalFolder, uids: list[int]) -> None:
    session.select(folder.remote_id, readonly=False)
    client.add_flags(uids, [b"\\Deleted"], silent=True)
    if b"UIDPLUS" in session.capabilities:
        client.uid_expunge(uids)
    else:
        client.expunge()
