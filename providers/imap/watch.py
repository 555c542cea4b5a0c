"""Watching an IMAP INBOX between syncs: IDLE (RFC 2177) where the server offers it, NOOP polls where not.

One connection per mailbox stays logged in with INBOX selected read-only. In IDLE the server tells of new mail
(EXISTS), expunges and flag changes as they happen; the watcher waits on the socket and reads them here. IDLE is
re-issued every ``renew_seconds`` (servers may log out a client idle for 30 minutes). A server without IDLE is
asked with a NOOP every ``poll_seconds``, which reports the same changes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from providers.errors import ErrorCode, ProviderError
from providers.imap.connection import CONNECTION_ERRORS

if TYPE_CHECKING:
    from providers.imap.client import Session

# Untagged responses that mean the folder changed (VANISHED: an expunge under QRESYNC).
CHANGES = {b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED"}
# A socket that keeps waking the watcher with nothing to read has been closed by the server.
EMPTY_READS_BEFORE_DROPPED = 3


class WatchDropped(ProviderError):
    """The server closed the watch's connection; the watcher opens it again."""

    code = ErrorCode.UNREACHABLE


class InboxWatch:
    """A :class:`providers.base.MailboxWatch` on one account's INBOX."""

    def __init__(self, session: Session) -> None:
        self.session = session  # its own connection, not the sync's
        self.renew_seconds = float(settings.MAILHUB_IDLE_RENEW_SECONDS)
        self.poll_seconds = float(settings.MAILHUB_IMAP_POLL_SECONDS)
        self.idling = False
        self._check_at = 0.0
        self._empty_reads = 0

    @property
    def uses_idle(self) -> bool:
        return b"IDLE" in self.session.capabilities

    def open(self) -> None:
        try:
            self.session.open()
            self.session.select("INBOX")
            self._start()
        except CONNECTION_ERRORS as exc:
            self.close()
            raise WatchDropped(f"The mail server closed the connection ({type(exc).__name__}).") from None
        except IMAPClientError as exc:
            self.close()
            raise ProviderError(f"The mail server refused to open INBOX ({exc}).") from None

    def fileno(self) -> int | None:
        client = self.session.client
        return client.socket().fileno() if client is not None and self.idling else None

    def check_at(self) -> float:
        return self._check_at

    def changed(self) -> bool:
        client = self.session.client
        if client is None:
            raise WatchDropped("The watch is closed.")
        try:
            if not self.idling:
                return self._poll(client)
            if time.monotonic() >= self._check_at:
                return self._renew(client)
            return self._read(client)
        except CONNECTION_ERRORS as exc:
            self.session.drop()
            self.idling = False
            raise WatchDropped(f"The mail server closed the connection ({type(exc).__name__}).") from None
        except IMAPClientError as exc:
            self.close()
            raise WatchDropped(f"The mail server ended IDLE ({exc}).") from None

    def close(self) -> None:
        client = self.session.client
        if client is not None and self.idling:
            try:
                client.idle_done()
            except Exception:  # noqa: BLE001 - closing a connection that may be dead already
                self.session.drop()
        self.idling = False
        self.session.close()

    def _start(self) -> None:
        client = self.session.client
        assert client is not None
        if self.uses_idle:
            client.idle()
            self.idling = True
            self._check_at = time.monotonic() + self.renew_seconds
        else:
            self._check_at = time.monotonic() + self.poll_seconds

    def _read(self, client: IMAPClient) -> bool:
        responses = client.idle_check(timeout=0)
        if any(_is_bye(response) for response in responses):
            raise WatchDropped("The mail server said BYE.")
        if not responses:
            self._empty_reads += 1
            if self._empty_reads >= EMPTY_READS_BEFORE_DROPPED:
                raise EOFError("readable socket with nothing to read")
            return False
        self._empty_reads = 0
        return _any_change(responses)

    def _renew(self, client: IMAPClient) -> bool:
        _, responses = client.idle_done()
        self.idling = False
        client.idle()
        self.idling = True
        self._check_at = time.monotonic() + self.renew_seconds
        return _any_change(responses)

    def _poll(self, client: IMAPClient) -> bool:
        if time.monotonic() < self._check_at:
            return False
        _, responses = client.noop()
        self._check_at = time.monotonic() + self.poll_seconds
        return _any_change(responses)


def _any_change(responses: list) -> bool:
    """Whether the untagged responses tell of a change: "* 3 EXISTS" parses as (3, b"EXISTS"), "* VANISHED 41"
    as (b"VANISHED", 41)."""
    return any(any(part in CHANGES for part in response[:2]) for response in responses)


def _is_bye(response: tuple) -> bool:
    return bool(response) and response[0] == b"BYE"
