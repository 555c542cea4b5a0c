"""What the IMAP/SMTP transport is given: the two servers, how to log in, and the provider's own rules.

The transport (:mod:`~providers.imap.connection`, :mod:`~providers.imap.client`, :mod:`~providers.imap.smtp`,
:mod:`~providers.imap.writeback`) knows nothing of a particular provider. Microsoft gives it Exchange's
servers, an XOAUTH2 login with a token callable and Exchange's limits (``providers.microsoft.exchange``);
the generic provider gives it the servers and the username and password the user entered
(``providers.imap.provider``).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from django.conf import settings

from mailhub.config import mail_security
from providers.errors import ActionRequired

Protocol = Literal["imap", "smtp"]


@dataclass(frozen=True)
class MailServer:
    """One server: where it is and how the connection is protected."""

    host: str
    port: int
    security: str  # ssl | starttls | none (plain text only to this machine, see mailhub.config.mail_security)
    ca_bundle: str = ""  # a CA file to trust instead of the system's; "" = the system's trust store
    setting: str = "security"  # what to name in the error when ``security`` is refused (a variable or a field)
    # A server a user typed in: it must be on the internet, or Mailhub could be pointed at this machine's own
    # services or its private network (Redis, PostgreSQL, an intranet) to probe or talk to them.
    public_only: bool = False

    def checked_security(self) -> str:
        """``security``, checked again before every connection (a value set some other way cannot slip by)."""
        return mail_security(
            variable=self.setting,
            value=self.security,
            host=self.host,
            allow_plaintext=settings.INSECURE_ALLOW_PLAINTEXT_MAIL,
        )

    def checked_address(self) -> None:
        """Raise PrivateServerRefused if a ``public_only`` server's name leads inside this machine or its networks.

        Checked before every connection, so a name that later resolves elsewhere is caught too; an answer that
        changes between this lookup and the connection's own (DNS rebinding) is caught by :meth:`checked_peer`.
        """
        if not self._checked():
            return
        try:
            answers = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return  # no address at all: the connection fails as unreachable
        for *_, sockaddr in answers:
            self._refuse_private(str(sockaddr[0]))

    def checked_peer(self, sock: socket.socket) -> None:
        """Raise PrivateServerRefused if the connected socket of a ``public_only`` server leads inside: called on
        every new connection before anything of ours (a sign-in, a command the user chose) is sent on it."""
        if self._checked():
            self._refuse_private(sock.getpeername()[0])

    def _checked(self) -> bool:
        return self.public_only and not settings.IMAP_ALLOW_PRIVATE_SERVERS

    def _refuse_private(self, ip: str) -> None:
        address = ipaddress.ip_address(ip.split("%", 1)[0])  # without an IPv6 zone ("fe80::1%eth0")
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise PrivateServerRefused(f"{self.host} leads to {address}, which is not on the internet.")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle or None)


class PrivateServerRefused(ActionRequired):
    """A server a user named resolves to this machine or a private network (see ``MailServer.public_only``)."""


@dataclass(frozen=True)
class OAuth2Login:
    """XOAUTH2: the mailbox's address and a callable giving an access token (``force_refresh=True``: a new one)."""

    email: str
    access_token: Callable[..., str]


@dataclass(frozen=True)
class PasswordLogin:
    """IMAP LOGIN (or AUTHENTICATE PLAIN) and SMTP AUTH with a username and password."""

    username: str
    password: str = field(repr=False)


def _nothing_special(text: str) -> Exception | None:
    return None


@dataclass(frozen=True)
class Transport:
    """Everything the IMAP/SMTP transport needs to sync, write back and send for one mailbox."""

    name: str  # the provider as users know it, in messages ("Outlook's mail server could not be reached")
    imap: MailServer
    smtp: MailServer
    login: OAuth2Login | PasswordLogin
    # What a login the server refuses means (after one token refresh, for XOAUTH2): the error to raise (Outlook:
    # NoMailbox; a password: ReconnectRequired). It changes no state: the engines do (``providers.errors``).
    login_refused: Callable[[Protocol], Exception]
    # The server does not file SMTP-sent mail in Sent itself: the outbox APPENDs it there.
    append_sent: bool = True
    # (messages, seconds) a mailbox may send, paced to stay under; None: no pacing.
    send_rate: Callable[[], tuple[int, float]] | None = None
    # A provider's own meaning of an SMTP AUTH refusal's text (Exchange's "SMTP AUTH disabled"), else None.
    smtp_auth_refusal: Callable[[str], Exception | None] = _nothing_special
    # Texts in a refused message that mean "sending limit reached, retry later".
    quota_markers: tuple[str, ...] = ()
