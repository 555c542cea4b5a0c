"""Check a mailbox's IMAP and SMTP servers and sign-in before anything is saved (the generic provider).

:func:`servers_check` connects to the IMAP server, makes sure it speaks IMAP4rev1, logs in, then connects
to the SMTP server and authenticates; it sends and changes nothing. Each way it can fail is one
:class:`CheckFailed` subclass with a plain message that names the server (never the password).
"""

from __future__ import annotations

import smtplib

from imapclient.exceptions import LoginError

from providers.base import ProviderError
from providers.imap import connection as imap
from providers.imap import smtp
from providers.imap.transport import MailServer, PasswordLogin, Protocol

CHECK_TIMEOUT = 20.0  # seconds per connection: a user is waiting for the page


class CheckFailed(ProviderError):
    """The servers or the sign-in are not usable; ``str(exc)`` tells the user what to fix."""

    code = "failed"

    def __init__(self, message: str, *, protocol: Protocol) -> None:
        super().__init__(message)
        self.protocol = protocol


class WrongPassword(CheckFailed):
    code = "wrong_password"


class Unreachable(CheckFailed):
    code = "unreachable"


class CertificateUntrusted(CheckFailed):
    code = "certificate"


class TryAgain(CheckFailed):
    code = "temporary"


class NotImap4rev1(CheckFailed):
    code = "not_imap4rev1"


class NoSmtpAuth(CheckFailed):
    code = "no_smtp_auth"


def servers_check(*, imap_server: MailServer, smtp_server: MailServer, login: PasswordLogin) -> None:
    """Return quietly when both servers take this sign-in; raise a :class:`CheckFailed` otherwise."""
    imap_check(imap_server, login=login)
    smtp_check(smtp_server, login=login)


def imap_check(server: MailServer, *, login: PasswordLogin) -> None:
    where = f"{server.host}:{server.port}"
    try:
        client = imap.imap_connect(server, name="The IMAP server", timeout=CHECK_TIMEOUT)
    except imap.StartTlsMissing:
        raise Unreachable(
            f"The IMAP server at {where} does not offer STARTTLS. Choose SSL/TLS (usually port 993) if it has it.",
            protocol="imap",
        ) from None
    except imap.CertificateRejected:
        raise CertificateUntrusted(
            f"The IMAP server at {where} presented a certificate that is not trusted (self-signed, expired or "
            "issued for another name). Check the host name, or ask the server's administrator.",
            protocol="imap",
        ) from None
    except imap.ServerUnreachable:
        raise Unreachable(
            f"The IMAP server at {where} could not be reached. Check the host name, the port and the security.",
            protocol="imap",
        ) from None
    except imap.NotImap4Server:
        raise _not_imap4rev1(where) from None
    try:
        if b"IMAP4REV1" not in {c.upper() for c in client.capabilities()}:
            raise _not_imap4rev1(where)
        imap.imap_login(client, login=login)
    except LoginError as exc:
        if imap.login_refusal_is_temporary(exc):
            raise _try_again(where, protocol="imap") from None
        raise WrongPassword(
            f"The IMAP server at {where} refused this username and password.", protocol="imap"
        ) from None
    except imap.CONNECTION_ERRORS:
        raise Unreachable(
            f"The IMAP server at {where} closed the connection during sign-in. Try again.", protocol="imap"
        ) from None
    finally:
        imap.imap_close(client)


def _try_again(where: str, *, protocol: Protocol) -> TryAgain:
    return TryAgain(
        f"The {protocol.upper()} server at {where} could not check the sign-in just now. Try again in a moment.",
        protocol=protocol,
    )


def _not_imap4rev1(where: str) -> NotImap4rev1:
    return NotImap4rev1(
        f"The server at {where} does not speak IMAP4rev1, which Mailhub needs. Check that the port is the "
        "server's IMAP port.",
        protocol="imap",
    )


def smtp_check(server: MailServer, *, login: PasswordLogin) -> None:
    where = f"{server.host}:{server.port}"
    try:
        connection = smtp.smtp_connect(server, name="The SMTP server", timeout=CHECK_TIMEOUT)
    except smtp.SmtpCertificateRejected:
        raise CertificateUntrusted(
            f"The SMTP server at {where} presented a certificate that is not trusted (self-signed, expired or "
            "issued for another name). Check the host name, or ask the server's administrator.",
            protocol="smtp",
        ) from None
    except smtp.SmtpUnreachable:
        raise Unreachable(
            f"The SMTP server at {where} could not be reached. Check the host name, the port and the security.",
            protocol="smtp",
        ) from None
    try:
        smtp.smtp_login(connection, login=login)
    except smtplib.SMTPAuthenticationError as exc:
        if 400 <= exc.smtp_code < 500:
            raise _try_again(where, protocol="smtp") from None
        raise WrongPassword(
            f"The SMTP server at {where} refused this username and password.", protocol="smtp"
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise NoSmtpAuth(
            f"The SMTP server at {where} offers no sign-in (AUTH) on this connection. Use its submission port "
            "(usually 587 with STARTTLS, or 465 with SSL/TLS).",
            protocol="smtp",
        ) from None
    except smtplib.SMTPException:
        raise Unreachable(
            f"The SMTP server at {where} closed the connection during sign-in. Try again.", protocol="smtp"
        ) from None
    finally:
        smtp.close(connection)
