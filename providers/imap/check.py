"""Check a mailbox's IMAP and SMTP servers and sign-in before anything is saved (the generic provider).

:func:`servers_check` connects to the IMAP server, makes sure it speaks IMAP4rev1, logs in, then connects
to the SMTP server and authenticates; it sends and changes nothing. Every way it can fail is a
:class:`CheckFailed` with a :class:`Failure` code, the protocol and the server's ``host:port``: the page
chooses the (translated) words from the code. Nothing in it ever holds the password.
"""

from __future__ import annotations

import smtplib
from enum import StrEnum

from imapclient.exceptions import LoginError

from providers.errors import ProviderError
from providers.imap import connection as imap
from providers.imap import smtp
from providers.imap.transport import MailServer, PasswordLogin, PrivateServerRefused, Protocol

CHECK_TIMEOUT = 15.0  # seconds per connection: a user is waiting for the page


class Failure(StrEnum):
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 - a failure code, not a password
    UNREACHABLE = "unreachable"
    CERTIFICATE = "certificate"
    NOT_IMAP4REV1 = "not_imap4rev1"
    NO_STARTTLS = "no_starttls"
    NO_SMTP_AUTH = "no_smtp_auth"
    TRY_AGAIN = "try_again"  # the server refused the sign-in for now (RFC 5530 UNAVAILABLE, SMTP 4xx)
    CLOSED = "closed"  # the connection broke during sign-in
    PRIVATE = "private"  # the server is on this machine or a private network (MailServer.public_only)


class CheckFailed(ProviderError):
    """The servers or the sign-in are not usable. ``str(exc)`` is plain English for logs (no secret)."""

    def __init__(self, failure: Failure, *, protocol: Protocol, server: MailServer) -> None:
        self.failure = failure
        self.protocol = protocol
        self.where = f"{server.host}:{server.port}"
        super().__init__(f"{protocol.upper()} server {self.where}: {failure.value}")


def servers_check(*, imap_server: MailServer, smtp_server: MailServer, login: PasswordLogin) -> None:
    """Return quietly when both servers take this sign-in; raise :class:`CheckFailed` otherwise."""
    imap_check(imap_server, login=login)
    smtp_check(smtp_server, login=login)


def imap_check(server: MailServer, *, login: PasswordLogin) -> None:
    def failed(failure: Failure) -> CheckFailed:
        return CheckFailed(failure, protocol="imap", server=server)

    try:
        client = imap.imap_connect(server, name="The IMAP server", timeout=CHECK_TIMEOUT)
    except PrivateServerRefused:
        raise failed(Failure.PRIVATE) from None
    except imap.StartTlsMissing:
        raise failed(Failure.NO_STARTTLS) from None
    except imap.CertificateRejected:
        raise failed(Failure.CERTIFICATE) from None
    except imap.ServerUnreachable:
        raise failed(Failure.UNREACHABLE) from None
    except imap.NotImap4Server:
        raise failed(Failure.NOT_IMAP4REV1) from None
    try:
        if b"IMAP4REV1" not in {c.upper() for c in client.capabilities()}:
            raise failed(Failure.NOT_IMAP4REV1)
        imap.imap_login(client, login=login)
    except LoginError as exc:
        temporary = imap.login_refusal_is_temporary(exc)
        raise failed(Failure.TRY_AGAIN if temporary else Failure.WRONG_PASSWORD) from None
    except imap.CONNECTION_ERRORS:
        raise failed(Failure.CLOSED) from None
    finally:
        imap.imap_close(client)


def smtp_check(server: MailServer, *, login: PasswordLogin) -> None:
    def failed(failure: Failure) -> CheckFailed:
        return CheckFailed(failure, protocol="smtp", server=server)

    try:
        connection = smtp.smtp_connect(server, name="The SMTP server", timeout=CHECK_TIMEOUT)
    except PrivateServerRefused:
        raise failed(Failure.PRIVATE) from None
    except smtp.SmtpCertificateRejected:
        raise failed(Failure.CERTIFICATE) from None
    except smtp.SmtpUnreachable:
        raise failed(Failure.UNREACHABLE) from None
    try:
        smtp.smtp_login(connection, login=login)
    except smtplib.SMTPAuthenticationError as exc:
        raise failed(Failure.TRY_AGAIN if 400 <= exc.smtp_code < 500 else Failure.WRONG_PASSWORD) from None
    except smtplib.SMTPNotSupportedError:
        raise failed(Failure.NO_SMTP_AUTH) from None
    except (OSError, smtplib.SMTPException):
        raise failed(Failure.CLOSED) from None
    finally:
        smtp.close(connection)
