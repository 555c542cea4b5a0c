"""Send over SMTP with XOAUTH2 (Exchange Online: smtp.office365.com:587, STARTTLS).

- The outbox's frozen bytes (``outgoing.raw``) are sent as they are, minus the Bcc header.
- ``535 5.7.139``: SMTP AUTH is disabled for the mailbox; :class:`SmtpAuthDisabled` says what to enable.
- Exchange allows 30 messages a minute per mailbox: sends are paced to that (they wait, they don't fail).
- MICROSOFT_APPEND_SENT: Exchange files SMTP-sent mail in Sent Items itself; other servers need an APPEND,
  made by the outbox after the send is recorded (:func:`sent_file`), never before.
- One attempt per call: the outbox decides about retries (see ``mailbox.outbox``).
"""

from __future__ import annotations

import base64
import email.parser
import email.utils
import logging
import re
import smtplib
import ssl
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone
from imapclient.exceptions import IMAPClientError

from accounts.services import account_access_token
from mailbox import store
from mailbox.models import Folder, OutgoingMessage
from mailhub.config import mail_security
from providers.errors import ActionRequired, ProviderError, SendUncertain
from providers.imap import connection as imap

if TYPE_CHECKING:
    from providers.imap.client import OutlookClient

logger = logging.getLogger(__name__)

SMTP_AUTH_DISABLED_MESSAGE = (
    'Outlook refused to send: SMTP sending ("Authenticated SMTP") is turned off for this mailbox, as it is '
    "by default in Microsoft 365 tenants created after January 2020. An administrator must enable it: in the "
    "Microsoft 365 admin center open Users > Active users > this user > Mail > Manage email apps and tick "
    '"Authenticated SMTP" (or run Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled '
    "$false), and make sure Security defaults do not block it. Then retry the message."
)
_BCC_HEADER = re.compile(rb"^(bcc|resent-bcc):.*(\r?\n[ \t].*)*\r?\n", re.IGNORECASE | re.MULTILINE)
_LEADING_DOT = re.compile(rb"^\\.", re.MULTILINE)
_QUOTA_MARKERS = ("SubmissionQuotaExceeded", "4.5.127", "5.2.0 STOREDRV.Submission.Exception:Submission")


class SmtpAuthDisabled(ActionRequired):
    """Exchange answered ``535 5.7.139``: an administrator must enable SMTP AUTH for the mailbox."""


def rate_limit() -> tuple[int, float]:
    """(messages, seconds): Exchange Online's per-mailbox submission limit, 30 a minute."""
    return (
        int(getattr(settings, "MICROSOFT_SMTP_RATE_LIMIT", 30)),
        float(getattr(settings, "MICROSOFT_SMTP_RATE_WINDOW_SECONDS", 60)),
    )


# Sends this process made (outgoing ids and times) that the database may not show as sent yet.
_recent_lock = threading.Lock()
_recent: dict[int, deque[tuple[int | None, float]]] = defaultdict(deque)


def send_pace(*, account_id: int, exclude_id: int | None = None) -> float:
    """Wait until another message may go without passing the per-mailbox limit; returns seconds waited."""
    limit, window = rate_limit()
    waited = 0.0
    while True:
        now = time.time()
        with _recent_lock:
            mine = _recent[account_id]
            while mine and mine[0][1] <= now - window:
                mine.popleft()
            times = [t for _, t in mine]
            known = {i for i, _ in mine if i is not None}
        rows = OutgoingMessage.objects.filter(
            account_id=account_id,
            status=OutgoingMessage.Status.SENT,
            sent_at__gt=timezone.now() - timedelta(seconds=window),
        ).exclude(pk__in=known | ({exclude_id} if exclude_id else set()))
        times += [sent.timestamp() for sent in rows.values_list("sent_at", flat=True)]
        if len(times) < limit:
            return waited
        times.sort()
        pause = max(times[-limit] + window - now, 0.05)
        logger.info(
            "Pacing account %s: %d messages in the last %.0fs; waiting %.1fs", account_id, len(times), window, pause
        )
        time.sleep(pause)
        waited += pause


def _send_record(*, account_id: int, outgoing_id: int | None) -> None:
    with _recent_lock:
        _recent[account_id].append((outgoing_id, time.time()))


def smtp_connect(*, timeout: float = 60) -> smtplib.SMTP:
    host, port = settings.MICROSOFT_SMTP_HOST, settings.MICROSOFT_SMTP_PORT
    security = mail_security(  # ssl, starttls or none (plain text only to this machine or with the override)
        variable="MICROSOFT_SMTP_SECURITY",
        value=settings.MICROSOFT_SMTP_SECURITY,
        host=host,
        allow_plaintext=settings.INSECURE_ALLOW_PLAINTEXT_MAIL,
    )
    context = ssl.create_default_context(cafile=settings.MICROSOFT_CA_BUNDLE or None)
    try:
        if security == "ssl":
            server: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            server = smtplib.SMTP(host, port, timeout=timeout)
        server.ehlo()
        if security == "starttls":
            server.starttls(context=context)
            server.ehlo()
    except (OSError, smtplib.SMTPException) as exc:
        raise ProviderError(f"Outlook's SMTP server could not be reached ({type(exc).__name__}).") from None
    return server


def smtp_login(server: smtplib.SMTP, *, email: str, access_token: str) -> None:
    """AUTH XOAUTH2 (raises SMTPAuthenticationError, whose text never holds the token)."""
    blob = base64.b64encode(f"user={email}\x01auth=Bearer {access_token}\x01\x01".encode()).decode()
    code, text = server.docmd("AUTH", f"XOAUTH2 {blob}")
    if code == 334:  # the server sent an error challenge: answer empty to get the final status
        code, text = server.docmd("")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, text)


def _auth_disabled(exc: smtplib.SMTPAuthenticationError) -> bool:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return "5.7.139" in text or "SmtpClientAuthentication is disabled" in text


def _text(exc: smtplib.SMTPResponseException) -> str:
    raw = exc.smtp_error
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def envelope(raw: bytes, *, sender: str) -> tuple[str, list[str], bytes]:
    """(MAIL FROM, RCPT TOs from To/Cc/Bcc, the bytes to send without Bcc)."""
    header_end = raw.find(b"\r\n\r\n")
    header_end = header_end if header_end >= 0 else raw.find(b"\n\n")
    head = raw if header_end < 0 else raw[: header_end + 2]
    headers = email.parser.BytesHeaderParser().parsebytes(head)
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for _, address in email.utils.getaddresses([str(v) for v in headers.get_all(name, [])]):
            if address and address.lower() not in {r.lower() for r in recipients}:
                recipients.append(address)
    body = raw if header_end < 0 else _BCC_HEADER.sub(b"", raw[: header_end + 2]) + raw[header_end + 2 :]
    return sender, recipients, body


def outgoing_send_smtp(*, client: OutlookClient, outgoing: OutgoingMessage, handoff: Callable[[], None]) -> str:
    """Send ``outgoing.raw`` once for the client's account; returns the remote id the sync will file it under.

    Every refusal up to the DATA command's 354 means nothing was sent. ``handoff()`` is called right after it;
    from then on only a reply from the server is definite, and a lost one raises SendUncertain.
    """
    account = client.account
    raw = bytes(outgoing.raw or b"")
    if not raw:
        raise ActionRequired("This message has no content to send.")
    sender, recipients, body = envelope(raw, sender=account.email)
    if not recipients:
        raise ActionRequired("This message has no recipients.")
    send_pace(account_id=account.pk, exclude_id=outgoing.pk)
    server = _connect_and_login(account=account)
    try:
        _envelope_send(server, sender=sender, recipients=recipients)
        handoff()
        _data_send(server, body)
    finally:
        _close(server)
    _send_record(account_id=account.pk, outgoing_id=outgoing.pk)
    return sent_remote_id(outgoing)


def sent_remote_id(outgoing: OutgoingMessage) -> str:
    """The key of the local Sent copy: that of these bytes, which the sync finds again where we APPEND them.

    Where the server files a copy of its own (Exchange, other bytes), the next sync stores that copy and drops
    this one, whose Sent membership has no UID there.
    """
    return imap.content_remote_id(bytes(outgoing.raw or b""))


def _envelope_send(server: smtplib.SMTP, *, sender: str, recipients: list[str]) -> None:
    """MAIL FROM, every RCPT TO and DATA up to its 354: the server has nothing yet if any of them fails."""
    try:
        code, reply = server.mail(sender)
        if code != 250:
            raise _refusal(code, reply)
        refused = []
        for recipient in recipients:
            code, reply = server.rcpt(recipient)
            if code not in (250, 251):
                if 400 <= code < 500:
                    raise _refusal(code, reply)
                refused.append(recipient)
        if refused:
            raise ActionRequired(f"Outlook refused these recipients: {', '.join(refused)[:400]}. Nothing was sent.")
        code, reply = server.docmd("DATA")
        if code != 354:
            raise _refusal(code, reply)
    except (OSError, smtplib.SMTPServerDisconnected):
        raise ProviderError("The connection to Outlook's SMTP server broke before the message was sent.") from None


def _data_send(server: smtplib.SMTP, body: bytes) -> None:
    """The message and its final dot (what smtplib's data() does after the 354), then the server's verdict."""
    quoted = _LEADING_DOT.sub(b"..", body)
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    try:
        server.send(quoted + b".\r\n")
        code, reply = server.getreply()
    except (OSError, smtplib.SMTPServerDisconnected):
        raise SendUncertain("The connection to Outlook's SMTP server broke while it was taking the message.") from None
    if code != 250:
        raise _refusal(code, reply)


def _refusal(code: int, reply: bytes) -> ProviderError:
    """A definite "no" from the server: nothing was sent. Temporary ones are retried, the rest need a person."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    if any(marker in text for marker in _QUOTA_MARKERS) or code == 452:
        return ProviderError(
            "Outlook's sending limit for this mailbox was reached; the message will be retried shortly.",
            retry_after=rate_limit()[1],
        )
    if 400 <= code < 500:
        return ProviderError(f"Outlook deferred the message ({code}); it will be retried.")
    return ActionRequired(f"Outlook refused the message: {code} {text[:160]}")


def sent_file(*, client: OutlookClient, outgoing: OutgoingMessage, remote_id: str) -> None:
    """Servers that do not file SMTP mail themselves (MICROSOFT_APPEND_SENT): APPEND it to Sent, once."""
    if not settings.MICROSOFT_APPEND_SENT:
        return
    raw = bytes(outgoing.raw or b"")
    if sent_find(client=client, outgoing=outgoing) is not None:
        return  # an earlier filing went through
    try:
        sent_append(client=client, raw=raw, remote_id=remote_id)
    except (IMAPClientError, OSError) as exc:
        raise ProviderError(f"The sent message could not be put in Sent ({type(exc).__name__}).") from None


def _connect_and_login(*, account) -> smtplib.SMTP:
    """A connection authenticated with XOAUTH2; a refused token is refreshed once, on a new connection."""
    server = smtp_connect()
    try:
        smtp_login(server, email=account.email, access_token=account_access_token(account=account))
        return server
    except smtplib.SMTPAuthenticationError as exc:
        _close(server)
        if _auth_disabled(exc):
            raise SmtpAuthDisabled(SMTP_AUTH_DISABLED_MESSAGE) from None
    except (OSError, smtplib.SMTPException):
        _close(server)
        raise ProviderError("The connection to Outlook's SMTP server broke during sign-in.") from None
    except BaseException:
        _close(server)
        raise
    token = account_access_token(account=account, force_refresh=True)
    server = smtp_connect()
    try:
        smtp_login(server, email=account.email, access_token=token)
        return server
    except smtplib.SMTPAuthenticationError as exc:
        _close(server)
        if _auth_disabled(exc):
            raise SmtpAuthDisabled(SMTP_AUTH_DISABLED_MESSAGE) from None
        raise ProviderError(
            "Outlook refused Mailhub's sign-in for sending from this mailbox. Reconnect the mailbox and try again."
        ) from None
    except (OSError, smtplib.SMTPException):
        _close(server)
        raise ProviderError("The connection to Outlook's SMTP server broke during sign-in.") from None


def _close(server: smtplib.SMTP) -> None:
    try:
        server.quit()
    except (OSError, smtplib.SMTPException):
        server.close()


def _sent_folder(account) -> Folder | None:
    return Folder.objects.filter(account=account, role=Folder.Role.SENT).order_by("pk").first()


def sent_append(*, client: OutlookClient, raw: bytes, remote_id: str) -> None:
    """APPEND the sent message to Sent (\\Seen) and file it locally under the id the sync will find it by."""
    session = client.session
    folder = _sent_folder(client.account)
    if folder is None:
        with session:
            client._folders_refresh()
        folder = _sent_folder(client.account)
    if folder is None:
        logger.warning("Account %s has no Sent folder; the sent message was not filed", client.account.pk)
        return

    def append(c) -> int | None:
        response = c.append(folder.remote_id, raw, flags=[b"\\Seen"], msg_time=timezone.now())
        match = re.search(rb"APPENDUID \d+ (\d+)", response if isinstance(response, bytes) else b"")
        return int(match.group(1)) if match else None

    with session:
        uid = session.run(append, repeatable=False)  # a lost answer is settled by sent_find, not by a second APPEND
    store.message_upsert(
        account=client.account,
        remote_id=remote_id,
        raw=raw,
        folders=[folder],
        is_read=True,
        uid_by_folder={folder.pk: uid} if uid else None,
    )


def sent_find(*, client: OutlookClient, outgoing: OutgoingMessage) -> str | None:
    """The remote id of ``outgoing`` if its Message-ID is in the Sent folder, else None."""
    if not outgoing.message_id:
        return None
    with client.session as session:
        client._folders_refresh()
        folder = _sent_folder(client.account)
        if folder is None:
            return None

        def search(c) -> list[int]:
            session.select(folder.remote_id)
            return c.search(["HEADER", "Message-ID", f"<{outgoing.message_id}>"])

        found = session.run(search)
    if not found:
        return None
    return sent_remote_id(outgoing)
