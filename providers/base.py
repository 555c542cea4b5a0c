"""The one interface `accounts` and `mailbox` use to talk to a mail provider.

Each provider sub-package implements :class:`Provider` and is listed in ``providers.registry``.
Provider code never renders anything, never changes state on failure (it raises one of
``providers.errors``) and never puts a secret in an exception message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    from providers.models import ProviderApp


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_at: datetime
    refresh_token: str | None = None  # None when the provider did not issue (or rotate) one
    scopes: tuple[str, ...] = ()
    email: str = ""  # set on the first grant (from the id_token / userinfo)
    name: str = ""


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the user, and what the callback needs (JSON-serialisable, kept in the session)."""

    url: str
    flow: dict[str, Any] = field(default_factory=dict)


class ChangeKind(StrEnum):
    READ = "read"
    UNREAD = "unread"
    STAR = "star"
    UNSTAR = "unstar"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"  # back to the inbox (undo of archive)
    TRASH = "trash"
    UNTRASH = "untrash"
    MOVE = "move"  # to ``folder_remote_id``
    ADD_LABEL = "add_label"
    REMOVE_LABEL = "remove_label"
    DELETE_FOREVER = "delete_forever"  # from Trash; only where the provider's ``deletes_forever``


@dataclass(frozen=True)
class MessageChange:
    """One user action on messages, to write back to the provider."""

    kind: ChangeKind
    folder_remote_id: str = ""  # the target folder or label, for MOVE / ADD_LABEL / REMOVE_LABEL


# --- The boundary: what a provider gets from the mailbox and gives back ------------------------------
#
# Beat fires ``accounts_sync_due`` -> ``mailbox.sync.account_sync`` takes the account's lock and builds the
# provider's MailClient with a ``LocalMailbox`` (``mailbox.local``) -> the client talks its protocol (Gmail API,
# IMAP) and hands what it saw to the LocalMailbox as the plain data below -> the LocalMailbox writes it
# through ``mailbox.store``, and keeps progress, resume points and cursors in the account's SyncState.
# Providers never import ``mailbox`` or ``accounts.models``.


class Account(Protocol):
    """What every provider reads of a connected account (``accounts.models.MailAccount`` is one)."""

    pk: Any
    email: str


@dataclass(frozen=True)
class RemoteFolder:
    """A folder (IMAP) or label (Gmail) as the provider lists it; ``role`` is a ``mailbox.models.Folder.Role``."""

    remote_id: str
    name: str
    role: str = "user"
    is_selectable: bool = True
    delimiter: str = "/"  # between the levels of a nested folder's name ("" where the server has no hierarchy)


@dataclass(frozen=True)
class LocalFolder(RemoteFolder):
    """A stored folder, with what an IMAP sync recorded of it when it last finished a pass over it."""

    uidvalidity: int | None = None
    uidnext: int | None = None
    highestmodseq: int | None = None


@dataclass
class RemoteMessage:
    """One message as the provider has it: its bytes, where it is and its flags. Folders by remote id."""

    remote_id: str
    raw: bytes
    folders: Sequence[str] = ()
    is_read: bool = False
    is_starred: bool = False
    is_draft: bool = False
    thread_key: str | None = None  # the provider's thread id (Gmail); None: the store threads by headers
    internal_date: datetime | None = None  # when the provider received it
    uids: Mapping[str, int] = field(default_factory=dict)  # folder remote id -> IMAP UID


@dataclass(frozen=True)
class Flags:
    is_read: bool = False
    is_starred: bool = False
    is_draft: bool = False


@dataclass
class RemoteState:
    """A stored message's flags and folders at the provider (everything but its bytes)."""

    folders: Sequence[str]
    is_read: bool
    is_starred: bool
    is_draft: bool = False
    uids: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Pending:
    """A stored message the store lists in a folder without knowing its IMAP UID there."""

    remote_id: str
    size: int
    date: datetime | None


@dataclass(frozen=True)
class SyncPosition:
    """Where the account's sync stands: how far back it syncs, the provider's cursor, a full sync's resume point."""

    since: date | None
    cursor: str
    resume: dict
    progress_total: int


@dataclass(frozen=True)
class LocalMessage:
    """A stored message a user acted on, for write-back: where the store has it (folder -> UID or None)."""

    remote_id: str
    message_id: str
    date: datetime | None
    size: int
    folders: Mapping[str, int | None]


@dataclass(frozen=True)
class Outgoing:
    """A message the outbox sends: its frozen bytes, its Message-ID and, for a reply, the thread it belongs to."""

    id: int
    raw: bytes
    message_id: str
    reply_thread_key: str = ""  # the provider's key of the replied-to thread ("" if none: new, or threaded by us)
    from_alias: str = ""  # the address it is sent from when that is not the mailbox's own


@dataclass(frozen=True)
class RemoteDraft:
    """A draft in the mailbox's Drafts at the provider. ``draft_id`` names it across saves (Gmail's draft id; the
    Message-ID of an IMAP draft), ``version`` changes with every save (Gmail's message id; an IMAP draft's UID)."""

    draft_id: str
    version: str


@dataclass(frozen=True)
class DraftContent:
    draft: RemoteDraft
    raw: bytes


@dataclass(frozen=True)
class SenderIdentity:
    """An address the mailbox may send from, with the name recipients see: its own (``is_primary``), or a
    "Send mail as" alias the provider has verified."""

    address: str
    name: str = ""
    is_primary: bool = False
    is_default: bool = False  # the provider's default From
    reply_to: str = ""


class LocalMailbox(Protocol):
    """The account's local copy, as a provider sees it: read what is stored, hand over what the provider has.

    Every write is idempotent (keyed by remote ids) and commits on its own: a sync killed between two calls
    loses nothing stored and resumes from the last ``progress(resume=...)``. Writes raise
    ``mailbox.sync.SyncLockLost`` once another worker has taken the sync over.
    """

    # reading
    def position(self) -> SyncPosition: ...
    def folders(self) -> dict[str, LocalFolder]: ...
    def stored(self, remote_ids: Iterable[str]) -> set[str]: ...
    def count(self, *, since: date | None = None) -> int: ...
    def remote_ids(self, *, since: date | None = None) -> set[str]: ...
    def uids(self, folder: str, *, among: Iterable[int] | None = None, below: int | None = None) -> dict[int, str]:
        """UID -> remote id of the messages the store holds a UID for in ``folder``."""
        ...

    def pending(self, folder: str) -> list[Pending]: ...
    def folders_with_pending(self) -> set[str]: ...
    def raw_heads(self, lengths: Mapping[str, int]) -> dict[str, bytes]: ...
    def raw(self, remote_id: str) -> bytes: ...
    def recent_sends(self, *, seconds: float, exclude: Iterable[int]) -> list[datetime]: ...

    # writing
    def folders_replace(self, folders: Sequence[RemoteFolder]) -> dict[str, LocalFolder]:
        """Store these folders and forget the others (their messages stay while they are in another)."""
        ...

    def folder_passed(self, folder: str, *, uidvalidity: int, uidnext: int, highestmodseq: int | None) -> None: ...
    def folder_uids_forget(self, folder: str) -> None: ...
    def messages_save(self, items: Sequence[RemoteMessage]) -> None: ...
    def states_save(self, states: Mapping[str, RemoteState]) -> None: ...
    def seen_in(self, folder: str, seen: Mapping[str, tuple[int, Flags]]) -> None:
        """Stored messages seen in ``folder`` under a UID: add that membership, take their flags."""
        ...

    def flags_set(
        self,
        remote_ids: Iterable[str],
        *,
        is_read: bool | None = None,
        is_starred: bool | None = None,
        is_draft: bool | None = None,
    ) -> None: ...
    def folders_change(
        self, remote_ids: Iterable[str], *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None: ...
    def memberships_remove(self, folder: str, *, uids: Iterable[int], pending: bool = False) -> None: ...
    def messages_delete(self, remote_ids: Iterable[str]) -> None: ...
    def orphans_delete(self, *, before: datetime, everywhere: bool) -> None:
        """Delete the messages stored before ``before`` that are in no folder now (``everywhere``: any of them,
        else those that left a folder through this LocalMailbox)."""
        ...

    def progress(self, *, done: int | None = None, total: int | None = None, resume: dict | None = None) -> None: ...
    def cursor_save(self, cursor: str) -> None: ...
    def full_sync_finished(self, *, cursor: str, done: int) -> None: ...
    def full_sync_restart(self) -> None:
        """The provider's cursor expired: the next pass is a full sync from the start."""
        ...

    def heartbeat(self) -> None:
        """Stop (raise) if this sync lost its lock meanwhile; for a provider in a long wait."""
        ...


class MailboxWatch(Protocol):
    """Tells cheaply, between syncs, that a mailbox changed at the provider (new mail first).

    A watcher (``mailbox.watch``) holds many at once in one thread: it waits until ``fileno()`` is readable (a
    held connection, e.g. IMAP IDLE) or ``check_at()`` has come, then calls ``changed()``. Raises ProviderError
    (ReconnectRequired when the grant is dead) when the provider cannot be watched now; the watcher closes it
    and opens it again later.
    """

    def open(self) -> None: ...

    def fileno(self) -> int | None:
        """The socket to wait on; None for a watch that only polls."""
        ...

    def check_at(self) -> float:
        """When (``time.monotonic()``) ``changed()`` must be called even if the socket says nothing."""
        ...

    def changed(self) -> bool:
        """Read what the provider said (or ask it); True when the mailbox changed since the last call."""
        ...

    def close(self) -> None: ...


class MailClient(Protocol):
    """Keeps an account's LocalMailbox in step with its mailbox at the provider (implemented per provider).

    Sync methods raise ``providers.errors`` errors and change no account or sync state themselves.
    Sending (see ``mailbox.outbox``) never retries by itself: ``send`` makes one attempt and calls
    ``handoff()`` immediately before the bytes leave; ``find_sent`` tells whether an attempt went.
    """

    @property
    def keeps_sent_copy(self) -> bool:
        """The provider keeps a copy of every message it accepted where ``find_sent`` looks (Gmail; Exchange's
        Sent Items), so "not found" after the settle time proves the message did not go. Read only."""
        ...

    def full_sync(self) -> None: ...

    def incremental_sync(self) -> None: ...

    def apply_changes(self, *, messages: Sequence[LocalMessage], change: MessageChange) -> None: ...

    def identities(self) -> list[SenderIdentity]:
        """The addresses the mailbox may send from: its own first, then verified aliases (none at most providers)."""
        ...

    def drafts(self) -> list[RemoteDraft] | None:
        """The drafts in the mailbox's Drafts (the newest version of each); None: the mailbox has no Drafts."""
        ...

    def draft_get(self, *, draft_id: str) -> DraftContent | None:
        """The draft's current version and bytes; None when it is no longer there (sent or deleted)."""
        ...

    def draft_save(self, *, raw: bytes, draft_id: str | None, thread_key: str = "") -> RemoteDraft:
        """Save ``raw`` as a new draft (``draft_id`` None) or as the new version of that draft (created again if it
        is gone); ``thread_key``: the provider's thread of a reply. The draft's id may differ from ``draft_id``."""
        ...

    def draft_delete(self, *, draft_id: str) -> None:
        """Delete every version of the draft; nothing when it is gone already."""
        ...

    def watch(self) -> MailboxWatch:
        """A watch on the mailbox (not yet open), for a watcher to learn of new mail within seconds."""
        ...

    def folder_create(self, *, name: str) -> RemoteFolder:
        """Create a folder (Gmail: a label) named ``name``, a full path whose levels are joined by the mailbox's
        delimiter. Raises ActionRequired (FOLDER_REFUSED, with the provider's reason) when it is refused."""
        ...

    def folder_rename(self, *, folder: LocalFolder, name: str) -> RemoteFolder:
        """Give ``folder`` the full path ``name``; returns it as the provider now has it (an IMAP folder's remote
        id is its name, a Gmail label keeps its id). The folders inside it move with it."""
        ...

    def folder_delete(self, *, folder: LocalFolder) -> None:
        """Delete ``folder`` (Gmail: the label; its mail stays. IMAP: the folder and the mail in it)."""
        ...

    def send(self, *, outgoing: Outgoing, handoff: Callable[[], None]) -> str:
        """Send ``outgoing.raw`` once; return the provider's id for the sent message.

        Raises SendUncertain when the answer was lost after ``handoff()``; any other ProviderError means
        the message did not go (ActionRequired: not until a person acts; ALIAS_REFUSED: ``from_alias`` is not an
        address the mailbox may send from, where the provider would otherwise send from another silently).
        """
        ...

    def find_sent(self, *, outgoing: Outgoing) -> str | None:
        """The provider's id of ``outgoing`` (by its Message-ID) if the provider has it, else None."""
        ...

    def file_sent(self, *, outgoing: Outgoing, remote_id: str) -> None:
        """Put the sent message in the mailbox's Sent folder where the server does not, and in the local store."""
        ...


class Provider(ABC):
    id: str  # its key in ``providers.registry.PROVIDERS``, which also holds its display name
    #: ProviderApp fields the Mail settings page shows for this provider besides enabled, client id and secret.
    extra_settings: tuple[str, ...] = ()
    #: Whether an administrator registers an OAuth app (client id and secret) for it; if not, Mail settings only
    #: switches it on or off, with ``enable_help`` saying what that allows.
    oauth_app: bool = True
    enable_help: StrOrPromise = ""  # a lazy translation
    #: Whether mail in Trash can be deleted for good through Mailhub (Gmail's needs a scope we do not ask for).
    deletes_forever: bool = True
    #: Whether folders are labels (Gmail): a message is in several at once, and moving it back from a folder
    #: means taking that label off as well.
    folders_are_labels: bool = False

    def send_interval(self, *, email: str) -> float:
        """Seconds between two messages of a batch from ``email``, to stay within the provider's sending limits
        (Outlook: 30 messages a minute; an SMTP server's own limit is the administrator's setting)."""
        return 60.0 / float(getattr(settings, "MAILHUB_BATCH_PER_MINUTE", 30))

    @property
    def name(self) -> str:
        from providers import registry

        return registry.name(self.id)

    def setting_clean(self, field: str, value: str) -> str:
        """Normalise one Mail settings value, or raise ValueError with a message for the administrator."""
        return value

    @abstractmethod
    def begin_authorization(self, *, app: ProviderApp, redirect_uri: str, state: str) -> AuthorizationRequest:
        """Build the consent URL (PKCE S256, offline access) for ``state``."""

    @abstractmethod
    def complete_authorization(
        self, *, app: ProviderApp, redirect_uri: str, flow: dict[str, Any], params: dict[str, str]
    ) -> TokenGrant:
        """Exchange the callback's code for tokens; raise AuthorizationDenied/InvalidGrant/ProviderError."""

    @abstractmethod
    def refresh(self, *, app: ProviderApp, refresh_token: str) -> TokenGrant:
        """Use a refresh token; raise InvalidGrant when it is dead."""

    @abstractmethod
    def revoke(self, *, app: ProviderApp, token: str) -> None:
        """Revoke a token at the provider, where it has an endpoint for that (best effort)."""

    @abstractmethod
    def mail_client(self, *, account: Any, access_token: Callable[..., str], local: LocalMailbox) -> MailClient:
        """A client that syncs and sends ``account`` (an :class:`Account`, with the provider's own fields) into
        ``local``.

        ``access_token(force_refresh=False)`` gives a valid OAuth access token (``True``: a new one); a provider
        uses it, and the account's plain fields, rather than reaching into ``accounts`` itself.
        """
