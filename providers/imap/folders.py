"""Creating, renaming and deleting IMAP folders (CREATE, RENAME, DELETE), for the user's own folders.

Names are full paths in the server's hierarchy (levels joined by its delimiter), sent in modified UTF-7 (the
connection keeps folder names raw: they are the folders' remote ids). RENAME moves the folders inside with it.
A refusal (a name in use, a forbidden character) raises ActionRequired with the server's words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imapclient import IMAPClient, imap_utf7
from imapclient.exceptions import IMAPClientError

from providers.base import LocalFolder, RemoteFolder
from providers.errors import ActionRequired, ErrorCode
from providers.imap import connection as imap

if TYPE_CHECKING:
    from providers.imap.client import ImapMailClient


def _refused(client: ImapMailClient, exc: IMAPClientError) -> ActionRequired:
    said = str(exc).replace("\r", " ").replace("\n", " ")[:200]
    return ActionRequired(
        f"{client.transport.name}'s mail server refused: {said}", code=ErrorCode.FOLDER_REFUSED, detail=said
    )


def _wire(name: str) -> bytes:
    return imap_utf7.encode(name)


def _listed(c: IMAPClient, name: str) -> RemoteFolder:
    """The folder ``name`` (a display name) as LIST shows it, with its raw remote id and delimiter."""
    for folder in imap.folders_list(c, pattern=_wire(name)):
        return RemoteFolder(folder.remote_id, folder.name, folder.role, folder.is_selectable, folder.delimiter)
    return RemoteFolder(_wire(name).decode("ascii"), name)


def _leave(client: ImapMailClient, folder: LocalFolder) -> None:
    """Select INBOX instead of ``folder`` before it is renamed or deleted (not every server allows it selected)."""
    if client.session.selected and client.session.selected[0] == folder.remote_id:
        client.session.select("INBOX")


def folder_create(client: ImapMailClient, *, name: str) -> RemoteFolder:
    def create(c: IMAPClient) -> RemoteFolder:
        try:
            c.create_folder(_wire(name))
        except IMAPClientError as exc:
            raise _refused(client, exc) from None
        if b"LIST-EXTENDED" not in client.session.capabilities:
            c.subscribe_folder(_wire(name))
        return _listed(c, name)

    with client.session as session:
        return session.run(create, repeatable=False)


def folder_rename(client: ImapMailClient, *, folder: LocalFolder, name: str) -> RemoteFolder:
    def rename(c: IMAPClient) -> RemoteFolder:
        _leave(client, folder)
        try:
            c.rename_folder(folder.remote_id.encode("ascii"), _wire(name))
        except IMAPClientError as exc:
            raise _refused(client, exc) from None
        return _listed(c, name)

    with client.session as session:
        return session.run(rename, repeatable=False)


def folder_delete(client: ImapMailClient, *, folder: LocalFolder) -> None:
    def delete(c: IMAPClient) -> None:
        _leave(client, folder)
        try:
            c.delete_folder(folder.remote_id.encode("ascii"))
        except IMAPClientError as exc:
            if "nonexistent" in str(exc).lower():
                return  # gone already
            raise _refused(client, exc) from None

    with client.session as session:
        session.run(delete, repeatable=False)
