"""The generic IMAP/SMTP provider: any mailbox reached with a username and a password (or app password).

No OAuth: a user enters the address, the sign-in and the servers (pre-filled from an administrator's
preset, ``providers.models.MailServerPreset``); :func:`providers.imap.check.servers_check` tries them
before anything is saved. Sync, write-back and send are Outlook's transport (``providers.imap.client``)
with a password instead of XOAUTH2. A password the server later refuses puts the account into the
"Reconnect" state, where the user enters the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from providers.base import Account, AuthorizationRequest, LocalMailbox, MailClient, Provider, TokenGrant
from providers.errors import ErrorCode, InvalidGrant, ProviderError, ReconnectRequired
from providers.imap.transport import MailServer, PasswordLogin, Protocol, Transport

if TYPE_CHECKING:
    from providers.models import ProviderApp

PASSWORD_REFUSED_MESSAGE = (
    "The mail server no longer accepts the password stored for this mailbox (was it changed?). "  # noqa: S105
    "Reconnect and enter the new password to resume syncing."
)
NOT_OAUTH = "The IMAP/SMTP provider connects with a password, not by signing in at a provider."


class ImapAccount(Account, TypingProtocol):
    """What this provider reads of an account: where its mailbox is and how to sign in."""

    username: str
    password: str
    imap_host: str
    imap_port: int | None
    imap_security: str
    smtp_host: str
    smtp_port: int | None
    smtp_security: str


class ImapProvider(Provider):
    id = "imap"
    oauth_app = False
    extra_settings = ("custom_servers_allowed",)
    enable_help = _("Users may connect any IMAP/SMTP mailbox with its username and password.")

    def begin_authorization(self, *, app: ProviderApp, redirect_uri: str, state: str) -> AuthorizationRequest:
        raise ProviderError(NOT_OAUTH)

    def complete_authorization(
        self, *, app: ProviderApp, redirect_uri: str, flow: dict[str, Any], params: dict[str, str]
    ) -> TokenGrant:
        raise ProviderError(NOT_OAUTH)

    def refresh(self, *, app: ProviderApp, refresh_token: str) -> TokenGrant:
        raise InvalidGrant(NOT_OAUTH)

    def revoke(self, *, app: ProviderApp, token: str) -> None:
        return None  # nothing was granted; deleting the stored password is all there is

    def mail_client(self, *, account: ImapAccount, access_token: Callable[..., str], local: LocalMailbox) -> MailClient:
        from providers.imap.client import ImapMailClient

        return ImapMailClient(account, transport=password_transport(account=account), local=local)


def mail_server(*, host: str, port: int, security: str, protocol: Protocol) -> MailServer:
    """A server a user (or a preset) named, checked against IMAP_CA_BUNDLE (empty: the system's trust store).

    It must be on the internet unless an administrator named that host in a preset (or allowed private servers).
    """
    label = "IMAP security" if protocol == "imap" else "SMTP security"
    return MailServer(
        host=host,
        port=port,
        security=security,
        ca_bundle=settings.IMAP_CA_BUNDLE,
        setting=label,
        public_only=not preset_names_host(host),
    )


def preset_names_host(host: str) -> bool:
    from providers.models import MailServerPreset

    host = host.strip().lower()
    return MailServerPreset.objects.filter(models.Q(imap_host__iexact=host) | models.Q(smtp_host__iexact=host)).exists()


def display_name(email: str) -> str:
    """What messages call the provider: the address's domain ("example.com's mail server")."""
    return email.rpartition("@")[2] or "The"


def password_transport(*, account: ImapAccount) -> Transport:
    """The transport for a generic IMAP/SMTP account: its servers and its username and password."""

    def login_refused(protocol: Protocol) -> Exception:
        return ReconnectRequired(PASSWORD_REFUSED_MESSAGE, code=ErrorCode.PASSWORD_REFUSED)

    return Transport(
        name=display_name(account.email),
        imap=mail_server(
            host=account.imap_host, port=account.imap_port or 993, security=account.imap_security, protocol="imap"
        ),
        smtp=mail_server(
            host=account.smtp_host, port=account.smtp_port or 587, security=account.smtp_security, protocol="smtp"
        ),
        login=PasswordLogin(username=account.username or account.email, password=account.password),
        login_refused=login_refused,
        # Most IMAP servers (Dovecot, Fastmail, most hosting) do not file SMTP-sent mail themselves.
        append_sent=True,
    )
