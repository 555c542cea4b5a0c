"""Drafts in an IMAP mailbox's Drafts folder (the RFC 6154 ``\\Drafts`` folder, else one named Drafts).

A draft is named by its Message-ID; one that has none is named by its UID (``uid:<n>``). Saving APPENDs the new
version (``\\Draft \\Seen``) and only then deletes the older versions, so a crash or a lost answer in between
leaves two versions, never none; listing shows the newest (highest UID) of each, and the next save removes the
rest. A version is ``<UIDVALIDITY>:<UID>``: every save gets a new one.
"""

from __future__ import annotations

import email
import email.policy
import re
from typing import TYPE_CHECKING

from django.utils import timezone
from imapclient import IMAPClient

from providers.base import DraftContent, LocalFolder, RemoteDraft
from providers.errors import ProviderError
from providers.imap import connection as imap
from providers.imap.writeback import uids_expunge

if TYPE_CHECKING:
    from providers.imap.client import ImapMailClient

_MESSAGE_ID_FIELD = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
_UID_NAME = "uid:"


def message_id_of(header: bytes) -> str:
    """The Message-ID (without <>) a header block names, or ""."""
    value = email.message_from_bytes(header, policy=email.policy.compat32).get("Message-ID") or ""
    return str(value).strip().strip("<>").strip()


def _drafts_folder(client: ImapMailClient) -> LocalFolder | None:
    def find() -> LocalFolder | None:
        return next((f for f in client.local.folders().values() if f.role == "drafts" and f.is_selectable), None)

    folder = find()
    if folder is None:
        client._folders_refresh()
        folder = find()
    return folder


def _uids_of(c: IMAPClient, draft_id: str) -> list[int]:
    if draft_id.startswith(_UID_NAME):
        wanted = int(draft_id.removeprefix(_UID_NAME))
        return [uid for uid in c.search(["UID", str(wanted), "NOT", "DELETED"]) if uid == wanted]
    return list(c.search(["HEADER", "Message-ID", f"<{draft_id}>", "NOT", "DELETED"]))


def drafts_list(client: ImapMailClient) -> list[RemoteDraft] | None:
    """The newest version of each draft in Drafts (one SEARCH and one FETCH of Message-IDs)."""
    with client.session as session:
        folder = _drafts_folder(client)
        if folder is None:
            return None

        def listing(c: IMAPClient) -> tuple[int, dict[int, dict]]:
            status = session.select(folder.remote_id)
            uids = c.search(["NOT", "DELETED"])
            return status.uidvalidity, (c.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {})

        uidvalidity, fetched = session.run(listing)
    newest: dict[str, int] = {}
    for uid, item in fetched.items():
        draft_id = message_id_of(bytes(item.get(_MESSAGE_ID_FIELD) or b"")) or f"{_UID_NAME}{uid}"
        newest[draft_id] = max(newest.get(draft_id, 0), uid)
    return [RemoteDraft(draft_id, f"{uidvalidity}:{uid}") for draft_id, uid in newest.items()]


def draft_get(client: ImapMailClient, *, draft_id: str) -> DraftContent | None:
    with client.session as session:
        folder = _drafts_folder(client)
        if folder is None:
            return None

        def read(c: IMAPClient) -> tuple[int, int, bytes] | None:
            status = session.select(folder.remote_id)
            uids = _uids_of(c, draft_id)
            if not uids:
                return None
            uid = max(uids)
            body = c.fetch([uid], [b"BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
            return None if body is None else (status.uidvalidity, uid, bytes(body))

        found = session.run(read)
    if found is None:
        return None
    uidvalidity, uid, raw = found
    return DraftContent(RemoteDraft(draft_id, f"{uidvalidity}:{uid}"), raw)


def draft_save(client: ImapMailClient, *, raw: bytes, draft_id: str | None) -> RemoteDraft:
    """APPEND ``raw`` (which must carry a Message-ID: it names the draft) and delete the versions it replaces."""
    new_id = message_id_of(imap.header_block(raw))
    if not new_id:
        raise ValueError("a draft saved to an IMAP server needs a Message-ID")
    with client.session as session:
        folder = _drafts_folder(client)
        if folder is None:
            raise ProviderError(f"{client.transport.name} has no Drafts folder to save the draft in.")

        def append(c: IMAPClient) -> tuple[int, int] | None:
            response = c.append(folder.remote_id, raw, flags=[b"\\Draft", b"\\Seen"], msg_time=timezone.now())
            match = re.search(rb"APPENDUID (\d+) (\d+)", response if isinstance(response, bytes) else b"")
            return (int(match.group(1)), int(match.group(2))) if match else None

        appended = session.run(append, repeatable=False)  # a lost answer: the next save removes any extra copy

        def replace(c: IMAPClient) -> tuple[int, int]:
            status = session.select(folder.remote_id, readonly=False)
            uids = _uids_of(c, new_id)
            uid = appended[1] if appended and appended[0] == status.uidvalidity else max(uids, default=0)
            older = [u for u in uids if u != uid]
            if draft_id and draft_id != new_id:
                older += _uids_of(c, draft_id)
            if older:
                uids_expunge(session, c, folder, older)
            return status.uidvalidity, uid

        uidvalidity, uid = session.run(replace)
    return RemoteDraft(new_id, f"{uidvalidity}:{uid}")


def draft_delete(client: ImapMailClient, *, draft_id: str) -> None:
    with client.session as session:
        folder = _drafts_folder(client)
        if folder is None:
            return

        def delete(c: IMAPClient) -> None:
            session.select(folder.remote_id, readonly=False)
            uids = _uids_of(c, draft_id)
            if uids:
                uids_expunge(session, c, folder, uids)

        session.run(delete)
