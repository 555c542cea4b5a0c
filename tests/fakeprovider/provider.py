"""The in-memory provider: no OAuth app, mail in :data:`SERVERS`; its client syncs through ``LocalMailbox``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.base import (
    Account,
    AuthorizationRequest,
    DraftContent,
    LocalFolder,
    LocalMailbox,
    LocalMessage,
    MessageChange,
    Outgoing,
    Provider,
    RemoteDraft,
    RemoteFolder,
    RemoteMessage,
    RemoteState,
    SenderIdentity,
    TokenGrant,
)
from providers.errors import ActionRequired, ErrorCode, ProviderError


@dataclass
class Stored:
    raw: bytes
    folders: set[str]
    read: bool = False


@dataclass
class Server:
    """One mailbox at the fake provider: messages by id, and a version that every change moves on."""

    messages: dict[str, Stored] = field(default_factory=dict)
    version: int = 0

    def put(self, message_id: str, raw: bytes, *, folders: Sequence[str] = ("INBOX",), read: bool = False) -> None:
        self.messages[message_id] = Stored(raw=raw, folders=set(folders), read=read)
        self.version += 1


SERVERS: dict[str, Server] = {}  # by account address
FOLDERS = (RemoteFolder("INBOX", "Inbox", "inbox"), RemoteFolder("Sent", "Sent", "sent"))


class MemoryClient:
    keeps_sent_copy = True

    def __init__(self, server: Server, local: LocalMailbox) -> None:
        self.server = server
        self.local = local

    def full_sync(self) -> None:
        self._mirror()
        self.local.full_sync_finished(cursor=str(self.server.version), done=len(self.server.messages))

    def incremental_sync(self) -> None:
        if self.local.position().cursor != str(self.server.version):
            self._mirror()
            self.local.cursor_save(str(self.server.version))

    def _mirror(self) -> None:
        self.local.folders_replace(FOLDERS)
        stored = self.local.stored(self.server.messages)
        self.local.messages_save(
            [
                RemoteMessage(remote_id=i, raw=m.raw, folders=sorted(m.folders), is_read=m.read)
                for i, m in self.server.messages.items()
                if i not in stored
            ]
        )
        self.local.states_save(
            {
                i: RemoteState(folders=sorted(m.folders), is_read=m.read, is_starred=False)
                for i, m in self.server.messages.items()
                if i in stored
            }
        )
        self.local.messages_delete(self.local.remote_ids() - set(self.server.messages))

    def apply_changes(self, *, messages: Sequence[LocalMessage], change: MessageChange) -> None:
        for message in messages:
            self.server.messages[message.remote_id].read = change.kind == "read"
        self.server.version += 1

    def identities(self) -> list[SenderIdentity]:
        return []  # nothing known beyond the account's own address

    def drafts(self) -> list[RemoteDraft] | None:
        return None  # no Drafts folder: drafts stay in Mailhub

    def draft_get(self, *, draft_id: str) -> DraftContent | None:
        return None

    def draft_save(self, *, raw: bytes, draft_id: str | None, thread_key: str = "") -> RemoteDraft:
        raise ActionRequired("The in-memory provider keeps no drafts.")

    def draft_delete(self, *, draft_id: str) -> None:
        """Nothing to delete: it never keeps a draft."""

    def folder_create(self, *, name: str) -> RemoteFolder:
        raise ActionRequired("The in-memory provider has fixed folders.", code=ErrorCode.FOLDER_REFUSED)

    def folder_rename(self, *, folder: LocalFolder, name: str) -> RemoteFolder:
        raise ActionRequired("The in-memory provider has fixed folders.", code=ErrorCode.FOLDER_REFUSED)

    def folder_delete(self, *, folder: LocalFolder) -> None:
        raise ActionRequired("The in-memory provider has fixed folders.", code=ErrorCode.FOLDER_REFUSED)

    def send(self, *, outgoing: Outgoing, handoff: Callable[[], None]) -> str:
        handoff()
        remote_id = f"sent-{outgoing.id}"
        self.server.put(remote_id, outgoing.raw, folders=["Sent"], read=True)
        return remote_id

    def find_sent(self, *, outgoing: Outgoing) -> str | None:
        remote_id = f"sent-{outgoing.id}"
        return remote_id if remote_id in self.server.messages else None

    def file_sent(self, *, outgoing: Outgoing, remote_id: str) -> None:
        """The fake provider files what it sends; the next sync brings it in."""


class MemoryProvider(Provider):
    id = "memory"
    oauth_app = False

    def begin_authorization(self, *, app: Any, redirect_uri: str, state: str) -> AuthorizationRequest:
        raise ProviderError("The in-memory provider has no sign-in.")

    def complete_authorization(self, *, app: Any, redirect_uri: str, flow: dict, params: dict) -> TokenGrant:
        raise ProviderError("The in-memory provider has no sign-in.")

    def refresh(self, *, app: Any, refresh_token: str) -> TokenGrant:
        raise ProviderError("The in-memory provider has no tokens.")

    def revoke(self, *, app: Any, token: str) -> None:
        return None

    def mail_client(self, *, account: Account, access_token: Callable[..., str], local: LocalMailbox) -> MemoryClient:
        return MemoryClient(SERVERS.setdefault(account.email, Server()), local)
