"""Send over SMTP (XOAUTH2 or a password, as the client's :class:`Transport` says).

- The outbox's frozen bytes (``outgoing.raw``) are sent as they are, minus the Bcc header.
- A provider's own meaning of an AUTH refusal (Exchange's ``535 5.7.139``) comes from
  ``Transport.smtp_auth_refusal``; its sending limit from ``Transport.send_rate``: sends are paced to
  it (they wait, they don't fail).
- ``Transport.append_sent``: servers that do not file SMTP-sent mail in Sent get an APPEND, made by the
  outbox after the send is recorded (:func:`sent_file`), never before.
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
from typing import TYPE_CHECKING

from django.utils import timezone
from imapclient.exceptions import IMAPClientError

from providers.base import LocalFolder, LocalMailbox, Outgoing, RemoteMessage
from providers.errors import ActionRequired, ErrorCode, ProviderError, SendUncertain
from providers.imap import connection as imap
from providers.imap.transport import MailServer, OAuth2Login, PasswordLogin, Transport

if TYPE_CHECKING:
    from providers.imap.client import ImapMailClient

logger = logging.getLogger(__name__)

_BCC_HEADER = re.compile(rb"^(bcc|resent-bcc):.*(\r?\n[ \t].*)*\r?\n", re.IGNORECASE | re.MULTILINE)
_LEADING_DOT = re.compile(rb"^\\.", re.MULTILINE)


# Sends this process made (outgoing ids and times) that the database may not show as sent yet.
_recent_lock = threading.Lock()
_recent: dict[int, deque[tuple[int | None, float]]] = defaultdict(deque)


def send_pace(*, local: LocalMailbox, account_id: int, rate: tuple[int, float], exclude_id: int | None = None) -> float:
    """Wait until another message may go without passing the per-mailbox limit ``rate`` (messages, seconds):
    what this process sent, and what the outbox recorded as sent from anywhere; returns seconds waited."""
    limit, window = rate
    waited = 0.0
    while True:
        now = time.time()
        with _recent_lock:
            mine = _recent[account_id]
            while mine and mine[0][1] <= now - window:
                mine.popleft()
            times = [t for _, t in mine]
            known = {i for i, _ in mine if i is not None}
        recorded = local.recent_sends(seconds=window, exclude=known | ({exclude_id} if exclude_id else set()))
        times += [sent.timestamp() for sent in recorded]
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


class SmtpUnreachable(ProviderError):
    """The SMTP server could not be reached."""

    code = ErrorCode.UNREACHABLE


class SmtpCertificateRejected(SmtpUnreachable):
    """TLS to the SMTP server failed because its certificate is not trusted."""


def _peer_check(server: MailServer, connection: smtplib.SMTP) -> None:
    """The address actually connected to passes ``server``'s check (see ``MailServer.checked_peer``)."""
    try:
        if connection.sock is None:
            raise smtplib.SMTPServerDisconnected("no connection")
        server.checked_peer(connection.sock)
    except BaseException:
        connection.close()
        raise


def smtp_connect(server: MailServer, *, name: str, timeout: float = 60) -> smtplib.SMTP:
    """A connection to ``server`` after EHLO (and STARTTLS); ``name``: the provider, for the error message."""
    host, port = server.host, server.port
    security = server.checked_security()  # ssl, starttls or none (plain text only to this machine or overridden)
    server.checked_address()
    context = server.ssl_context()
    try:
        if security == "ssl":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            connection = smtplib.SMTP(host, port, timeout=timeout)
        _peer_check(server, connection)  # before EHLO: nothing of ours goes to a server we must not talk to
        connection.ehlo()
        if security == "starttls":
            connection.starttls(context=context)
            connection.ehlo()
    except ssl.SSLCertVerificationError:
        raise SmtpCertificateRejected(f"{name}'s SMTP server presented a certificate that is not trusted.") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpUnreachable(f"{name}'s SMTP server could not be reached ({type(exc).__name__}).") from None
    return connection


def smtp_login(server: smtplib.SMTP, *, login: OAuth2Login | PasswordLogin, access_token: str = "") -> None:
    """AUTH XOAUTH2 with ``access_token``, or smtplib's AUTH (PLAIN/LOGIN) with a password.

    Raises SMTPAuthenticationError (whose text never holds the token or password), or SMTPNotSupportedError
    when the server offers no AUTH at all.
    """
    if isinstance(login, PasswordLogin):
        server.login(login.username, login.password)
        return
    blob = base64.b64encode(f"user={login.email}\x01auth=Bearer {access_token}\x01\x01".encode()).decode()
    code, text = server.docmd("AUTH", f"XOAUTH2 {blob}")
    if code == 334:  # the server sent an error challenge: answer empty to get the final status
        code, text = server.docmd("")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, text)


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


def outgoing_send_smtp(*, client: ImapMailClient, outgoing: Outgoing, handoff: Callable[[], None]) -> str:
    """Send ``outgoing.raw`` once for the client's account; returns the remote id the sync will file it under.

    Every refusal up to the DATA command's 354 means nothing was sent. ``handoff()`` is called right after it;
    from then on only a reply from the server is definite, and a lost one raises SendUncertain.
    """
    account, transport = client.account, client.transport
    raw = outgoing.raw
    if not raw:
        raise ActionRequired("This message has no content to send.")
    sender, recipients, body = envelope(raw, sender=account.email)
    if not recipients:
        raise ActionRequired("This message has no recipients.", code=ErrorCode.NO_RECIPIENTS)
    if transport.send_rate is not None:
        send_pace(local=client.local, account_id=account.pk, rate=transport.send_rate(), exclude_id=outgoing.id)
    server = _connect_and_login(transport)
    try:
        _envelope_send(server, transport, sender=sender, recipients=recipients)
        handoff()
        _data_send(server, transport, body)
    finally:
        close(server)
    _send_record(account_id=account.pk, outgoing_id=outgoing.id)
    return sent_remote_id(outgoing)


def sent_remote_id(outgoing: Outgoing) -> str:
    """The key of the local Sent copy: that of these bytes, which the sync finds again where we APPEND them.

    Where the server files a copy of its own (Exchange, other bytes), the next sync stores that copy and drops
    this one, whose Sent membership has no UID there.
    """
    return imap.content_remote_id(outgoing.raw)


def _envelope_send(server: smtplib.SMTP, transport: Transport, *, sender: str, recipients: list[str]) -> None:
    """MAIL FROM, every RCPT TO and DATA up to its 354: the server has nothing yet if any of them fails."""
    try:
        code, reply = server.mail(sender)
        if code != 250:
            raise _refusal(transport, code, reply)
        refused = []
        for recipient in recipients:
            code, reply = server.rcpt(recipient)
            if code not in (250, 251):
                if 400 <= code < 500:
                    raise _refusal(transport, code, reply)
                refused.append(recipient)
        if refused:
            addresses = ", ".join(refused)[:400]
            raise ActionRequired(
                f"{transport.name} refused these recipients: {addresses}. Nothing was sent.",
                code=ErrorCode.RECIPIENTS_REFUSED,
                detail=addresses,
            )
        code, reply = server.docmd("DATA")
        if code != 354:
            raise _refusal(transport, code, reply)
    except (OSError, smtplib.SMTPServerDisconnected):
        raise ProviderError(
            f"The connection to {transport.name}'s SMTP server broke before the message was sent."
        ) from None


def _data_send(server: smtplib.SMTP, transport: Transport, body: bytes) -> None:
    """The message and its final dot (what smtplib's data() does after the 354), then the server's verdict."""
    quoted = _LEADING_DOT.sub(b"..", body)
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    try:
        server.send(quoted + b".\r\n")
        code, reply = server.getreply()
    except (OSError, smtplib.SMTPServerDisconnected):
        raise SendUncertain(
            f"The connection to {transport.name}'s SMTP server broke while it was taking the message."
        ) from None
    if code != 250:
        raise _refusal(transport, code, reply)


def _refusal(transport: Transport, code: int, reply: bytes) -> ProviderError:
    """A definite "no" from the server: nothing was sent. Temporary ones are retried, the rest need a person."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    if any(marker in text for marker in transport.quota_markers) or code == 452:
        return ProviderError(
            f"{transport.name}'s sending limit for this mailbox was reached; the message will be retried shortly.",
            retry_after=transport.send_rate()[1] if transport.send_rate else 60.0,
            code=ErrorCode.THROTTLED,
        )
    if 400 <= code < 500:
        return ProviderError(f"{transport.name} deferred the message ({code}); it will be retried.")
    said = f"{code} {text[:160]}"
    return ActionRequired(f"{transport.name} refused the message: {said}", detail=said)


def sent_file(*, client: ImapMailClient, outgoing: Outgoing, remote_id: str) -> None:
    """Servers that do not file SMTP mail themselves (``Transport.append_sent``): APPEND it to Sent, once."""
    if not client.transport.append_sent:
        return
    if sent_find(client=client, outgoing=outgoing) is not None:
        return  # an earlier filing went through
    try:
        sent_append(client=client, raw=outgoing.raw, remote_id=remote_id)
    except (IMAPClientError, OSError) as exc:
        raise ProviderError(f"The sent message could not be put in Sent ({type(exc).__name__}).") from None


def _connect_and_login(transport: Transport) -> smtplib.SMTP:
    """An authenticated connection; a refused XOAUTH2 token is refreshed once, on a new connection."""
    login = transport.login
    if isinstance(login, OAuth2Login):
        refused = _login_attempt(transport, access_token_of=lambda: login.access_token())
        if not isinstance(refused, smtplib.SMTPAuthenticationError):
            return refused
        token = login.access_token(force_refresh=True)
        refused = _login_attempt(transport, access_token_of=lambda: token)
    else:
        refused = _login_attempt(transport, access_token_of=lambda: "")
    if not isinstance(refused, smtplib.SMTPAuthenticationError):
        return refused
    raise transport.login_refused("smtp") from None


def _login_attempt(
    transport: Transport, *, access_token_of: Callable[[], str]
) -> smtplib.SMTP | smtplib.SMTPAuthenticationError:
    """A new connection and one AUTH: the connection, or the refusal (a provider's special refusals raise)."""
    server = smtp_connect(transport.smtp, name=transport.name)
    try:
        smtp_login(server, login=transport.login, access_token=access_token_of())
        return server
    except smtplib.SMTPAuthenticationError as exc:
        close(server)
        special = transport.smtp_auth_refusal(_text(exc))
        if special is not None:
            raise special from None
        # "454 4.7.0 Temporary authentication failure" for a password: not the credentials. (For XOAUTH2 Dovecot
        # answers an expired token so, and a refused token is refreshed once anyway.)
        if isinstance(transport.login, PasswordLogin) and 400 <= exc.smtp_code < 500:
            raise ProviderError(
                f"{transport.name}'s SMTP server could not check the sign-in just now; the message will be retried."
            ) from None
        return exc
    except (OSError, smtplib.SMTPException):
        close(server)
        raise ProviderError(f"The connection to {transport.name}'s SMTP server broke during sign-in.") from None
    except BaseException:
        close(server)
        raise


def close(server: smtplib.SMTP) -> None:
    try:
        server.quit()
    except (OSError, smtplib.SMTPException):
        server.close()


def _sent_folder(local: LocalMailbox) -> LocalFolder | None:
    return next((folder for folder in local.folders().values() if folder.role == "sent"), None)


def sent_append(*, client: ImapMailClient, raw: bytes, remote_id: str) -> None:
    """APPEND the sent message to Sent (\\Seen) and file it locally under the id the sync will find it by."""
    session = client.session
    folder = _sent_folder(client.local)
    if folder is None:
        with session:
            client._folders_refresh()
        folder = _sent_folder(client.local)
    if folder is None:
        logger.warning("Account %s has no Sent folder; the sent message was not filed", client.account.pk)
        return

    def append(c) -> int | None:
        response = c.append(folder.remote_id, raw, flags=[b"\\Seen"], msg_time=timezone.now())
        match = re.search(rb"APPENDUID \d+ (\d+)", response if isinstance(response, bytes) else b"")
        return int(match.group(1)) if match else None

    with session:
        uid = session.run(append, repeatable=False)  # a lost answer is settled by sent_find, not by a second APPEND
    sent = RemoteMessage(
        remote_id=remote_id,
        raw=raw,
        folders=[folder.remote_id],
        is_read=True,
        uids={folder.remote_id: uid} if uid else {},
    )
    client.local.messages_save([sent])


def sent_find(*, client: ImapMailClient, outgoing: Outgoing) -> str | None:
    """The remote id of ``outgoing`` if its Message-ID is in the Sent folder, else None."""
    if not outgoing.message_id:
        return None
    with client.session as session:
        client._folders_refresh()
        folder = _sent_folder(client.local)
        if folder is None:
            return None

        def search(c) -> list[int]:
            session.select(folder.remote_id)
            return c.search(["HEADER", "Message-ID", f"<{outgoing.message_id}>"])

        found = session.run(search)
    if not found:
        return None
    return sent_remote_id(outgoing)
