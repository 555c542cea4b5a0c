"""The one interface `accounts` and `mailbox` use to talk to a mail provider.

Each provider sub-package implements :class:`Provider` and is listed in ``providers.registry``.
Provider code never renders anything, never changes state on failure (it raises one of
``providers.errors``) and never puts a secret in an exception message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    from accounts.models import MailAccount
    from mailbox.models import Message, OutgoingMessage
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
    TRASH = "trash"
    UNTRASH = "untrash"
    MOVE = "move"  # to ``folder_remote_id``
    ADD_LABEL = "add_label"
    REMOVE_LABEL = "remove_label"


@dataclass(frozen=True)
class MessageChange:
    """One user action on messages, to write back to the provider."""

    kind: ChangeKind
    folder_remote_id: str = ""  # the target folder or label, for MOVE / ADD_LABEL / REMOVE_LABEL


class MailClient(Protocol):
    """Keeps the local store in step with one connected mailbox (implemented per provider).

    Sync methods write through ``mailbox.store`` and record progress in the account's SyncState;
    they raise ``providers.errors`` errors and change no account or sync state themselves.

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

    def apply_changes(self, *, messages: Sequence[Message], change: MessageChange) -> None: ...

    def send(self, *, outgoing: OutgoingMessage, handoff: Callable[[], None]) -> str:
        """Send ``outgoing.raw`` once; return the provider's id for the sent message.

        Raises SendUncertain when the answer was lost after ``handoff()``; any other ProviderError means
        the message did not go (ActionRequired: not until a person acts).
        """
        ...

    def find_sent(self, *, outgoing: OutgoingMessage) -> str | None:
        """The provider's id of ``outgoing`` (by its Message-ID) if the provider has it, else None."""
        ...

    def file_sent(self, *, outgoing: OutgoingMessage, remote_id: str) -> None:
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
    def mail_client(self, *, account: MailAccount, access_token: Callable[..., str]) -> MailClient:
        """A client that syncs and sends for ``account``.

        ``access_token(force_refresh=False)`` gives a valid OAuth access token (``True``: a new one); a provider
        uses it, and the account's plain fields, rather than reaching into ``accounts`` itself.
        """
