"""What is Exchange Online's in Outlook's IMAP/SMTP transport: its servers, XOAUTH2, its texts and limits.

The transport itself is ``providers.imap``; this module only fills in its :class:`Transport`:

- the servers from MICROSOFT_IMAP_*/MICROSOFT_SMTP_* (and the CA bundle MICROSOFT_CA_BUNDLE);
- XOAUTH2 with the account's access token (refreshed by ``accounts.services``);
- an IMAP login refused with a fresh token means the Microsoft account has no Outlook mailbox;
- ``535 5.7.139``: SMTP AUTH is disabled for the mailbox; :class:`SmtpAuthDisabled` says what to enable;
- Exchange allows 30 messages a minute per mailbox: sends are paced to that (they wait, they don't fail);
- MICROSOFT_APPEND_SENT: Exchange files SMTP-sent mail in Sent Items itself; other servers need an APPEND.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.conf import settings
from imapclient.exceptions import LoginError

from providers.errors import ActionRequired, ErrorCode, NoMailbox, ProviderError
from providers.imap.connection import CONNECTION_ERRORS, imap_close, imap_connect, imap_login
from providers.imap.transport import MailServer, OAuth2Login, Protocol, Transport

if TYPE_CHECKING:
    from providers.base import Account

NAME = "Outlook"
NO_MAILBOX_MESSAGE = (
    "Microsoft accepted this account's sign-in, but its mail server refused access: the account has no "
    "Outlook mailbox. Only Outlook.com, Hotmail and Microsoft 365 mailboxes can be synced; a Microsoft "
    "account made with another address (such as Gmail) has none. Connect a mailbox hosted by Outlook instead."
)
SMTP_AUTH_DISABLED_MESSAGE = (
    'Outlook refused to send: SMTP sending ("Authenticated SMTP") is turned off for this mailbox, as it is '
    "by default in Microsoft 365 tenants created after January 2020. An administrator must enable it: in the "
    "Microsoft 365 admin center open Users > Active users > this user > Mail > Manage email apps and tick "
    '"Authenticated SMTP" (or run Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled '
    "$false), and make sure Security defaults do not block it. Then retry the message."
)
SMTP_LOGIN_REFUSED_MESSAGE = (
    "Outlook refused Mailhub's sign-in for sending from this mailbox. Reconnect the mailbox and try again."
)
QUOTA_MARKERS = ("SubmissionQuotaExceeded", "4.5.127", "5.2.0 STOREDRV.Submission.Exception:Submission")


class SmtpAuthDisabled(ActionRequired):
    """Exchange answered ``535 5.7.139``: an administrator must enable SMTP AUTH for the mailbox."""

    code = ErrorCode.SMTP_AUTH_DISABLED


def rate_limit() -> tuple[int, float]:
    """(messages, seconds): Exchange Online's per-mailbox submission limit, 30 a minute."""
    return (
        int(getattr(settings, "MICROSOFT_SMTP_RATE_LIMIT", 30)),
        float(getattr(settings, "MICROSOFT_SMTP_RATE_WINDOW_SECONDS", 60)),
    )


def imap_server() -> MailServer:
    return MailServer(
        host=settings.MICROSOFT_IMAP_HOST,
        port=settings.MICROSOFT_IMAP_PORT,
        security=settings.MICROSOFT_IMAP_SECURITY,
        ca_bundle=settings.MICROSOFT_CA_BUNDLE,
        setting="MICROSOFT_IMAP_SECURITY",
    )


def smtp_server() -> MailServer:
    return MailServer(
        host=settings.MICROSOFT_SMTP_HOST,
        port=settings.MICROSOFT_SMTP_PORT,
        security=settings.MICROSOFT_SMTP_SECURITY,
        ca_bundle=settings.MICROSOFT_CA_BUNDLE,
        setting="MICROSOFT_SMTP_SECURITY",
    )


def smtp_auth_refusal(text: str) -> Exception | None:
    if "5.7.139" in text or "SmtpClientAuthentication is disabled" in text:
        return SmtpAuthDisabled(SMTP_AUTH_DISABLED_MESSAGE)
    return None


def outlook_transport(*, account: Account, access_token: Callable[..., str]) -> Transport:
    """The transport for an Outlook mailbox, from the settings of this moment; ``access_token`` as in
    ``Provider.mail_client``."""

    def login_refused(protocol: Protocol) -> Exception:
        if protocol == "smtp":
            return ProviderError(SMTP_LOGIN_REFUSED_MESSAGE)
        return NoMailbox(NO_MAILBOX_MESSAGE)

    return Transport(
        name=NAME,
        imap=imap_server(),
        smtp=smtp_server(),
        login=OAuth2Login(email=account.email, access_token=access_token),
        login_refused=login_refused,
        append_sent=settings.MICROSOFT_APPEND_SENT,
        send_rate=rate_limit,
        smtp_auth_refusal=smtp_auth_refusal,
        quota_markers=QUOTA_MARKERS,
    )


def imap_check_login(*, email: str, access_token: str) -> None:
    """Raise NoMailbox if Outlook refuses an IMAP login with this (fresh, valid) token; else return quietly.

    Called when an account is connected: the token has just been issued, so a refusal means the
    Microsoft account has no Outlook mailbox.
    """
    client = imap_connect(imap_server(), name=NAME, timeout=30)
    try:
        login = OAuth2Login(email=email, access_token=lambda **_: access_token)
        imap_login(client, login=login, access_token=access_token)
    except LoginError:
        raise NoMailbox(NO_MAILBOX_MESSAGE) from None
    except CONNECTION_ERRORS:
        raise ProviderError("Outlook's mail server closed the connection during sign-in. Try again.") from None
    finally:
        imap_close(client)
