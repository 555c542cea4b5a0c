"""IMAP plumbing: connecting and logging in (XOAUTH2 or a password), folders and roles, fetches that keep
every response.

Nothing here touches the database; :mod:`providers.imap.client` drives the sync with these pieces.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import ssl
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from imapclient import IMAPClient, imap_utf7
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from providers.errors import ErrorCode, ProviderError
from providers.imap.transport import MailServer, OAuth2Login, PasswordLogin

# Errors that mean "the connection is gone": reconnect and carry on.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes socket.timeout and ssl.SSLError
    EOFError,
    imaplib.IMAP4.abort,
    IMAPClientAbortError,
)
_SPECIAL_USE_ROLES = {
    b"\\sent": "sent",
    b"\\drafts": "drafts",
    b"\\trash": "trash",
    b"\\junk": "spam",
    b"\\archive": "archive",
    b"\\all": "all",
    b"\\flagged": "starred",
}
# For servers without SPECIAL-USE: Outlook's names first, then common ones.
_NAME_ROLES = {
    "sent items": "sent",
    "sent": "sent",
    "sent messages": "sent",
    "drafts": "drafts",
    "deleted items": "trash",
    "trash": "trash",
    "deleted messages": "trash",
    "junk email": "spam",
    "junk": "spam",
    "spam": "spam",
    "archive": "archive",
}
CONTENT_KEY_PREFIX = "sha256:"


class ServerUnreachable(ProviderError, ConnectionError):
    """The IMAP server could not be reached (a ConnectionError too, so a session retries it with backoff)."""

    code = ErrorCode.UNREACHABLE


class CertificateRejected(ServerUnreachable):
    """TLS failed because the server's certificate is not trusted (expired, self-signed, another host's)."""


# RFC 5530 codes with which a server refuses a sign-in for now, not for its credentials: retry, don't reconnect.
TEMPORARY_LOGIN_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]")


def login_refusal_is_temporary(exc: LoginError) -> bool:
    text = str(exc).upper()
    return any(code in text for code in TEMPORARY_LOGIN_CODES)


class StartTlsMissing(ServerUnreachable):
    """STARTTLS was asked for and the server does not offer it: nothing is sent in clear text instead."""


class NotImap4Server(ProviderError):
    """The server answered, but not as an IMAP4 server (another protocol on that port, or IMAP2bis)."""


@dataclass(frozen=True)
class RemoteFolder:
    remote_id: str  # the raw (modified UTF-7) name, as the server spells it
    name: str  # decoded for display
    role: str
    is_selectable: bool
    delimiter: str = "/"


@dataclass
class FolderStatus:
    uidvalidity: int
    uidnext: int
    highestmodseq: int | None
    messages: int


# --- connecting ------------------------------------------------------------------------------------


def imap_connect(server: MailServer, *, name: str, timeout: float = 60) -> IMAPClient:
    """An unauthenticated connection to ``server`` (``name``: the provider, for the error message).

    Raises CertificateRejected when TLS fails on the server's certificate, ServerUnreachable otherwise.
    """
    security = server.checked_security()  # ssl, starttls or none (plain text only to this machine or overridden)
    server.checked_address()
    context = server.ssl_context() if security in {"ssl", "starttls"} else None
    try:
        client = IMAPClient(server.host, port=server.port, ssl=security == "ssl", ssl_context=context, timeout=timeout)
    except ssl.SSLCertVerificationError:
        raise CertificateRejected(f"{name}'s mail server presented a certificate that is not trusted.") from None
    except CONNECTION_ERRORS as exc:
        raise ServerUnreachable(f"{name}'s mail server could not be reached ({type(exc).__name__}).") from None
    except imaplib.IMAP4.error:  # imaplib's own check of the greeting: "server not IMAP4 compliant"
        raise NotImap4Server(f"{name}'s mail server does not speak IMAP4rev1.") from None
    try:
        server.checked_peer(client.socket())
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()  # not even a LOGOUT to a server we must not talk to
        raise
    if security == "starttls":
        try:
            client.starttls(context)
        except ssl.SSLCertVerificationError:
            imap_close(client)
            raise CertificateRejected(f"{name}'s mail server presented a certificate that is not trusted.") from None
        except CONNECTION_ERRORS as exc:
            imap_close(client)
            raise ServerUnreachable(f"{name}'s mail server could not be reached ({type(exc).__name__}).") from None
        except (imaplib.IMAP4.error, IMAPClientError):  # no STARTTLS offered (imapclient's CapabilityError)
            imap_close(client)
            raise StartTlsMissing(f"{name}'s mail server does not offer STARTTLS.") from None
    client.folder_encode = False  # keep raw names: they are the folders' ids; decoded separately
    return client


def imap_login(client: IMAPClient, *, login: OAuth2Login | PasswordLogin, access_token: str = "") -> None:
    """Log in; raises imapclient's LoginError when refused (no secret is ever in its message).

    XOAUTH2 with ``access_token``; a password with AUTHENTICATE PLAIN where offered (it survives
    LOGINDISABLED and non-ASCII passwords), else LOGIN.
    """
    if isinstance(login, OAuth2Login):
        client.oauth2_login(login.email, access_token)
    elif b"AUTH=PLAIN" in client.capabilities():
        client.plain_login(login.username, login.password)
    else:
        client.login(login.username, login.password)


def imap_close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - closing a connection that may already be dead
        with contextlib.suppress(Exception):
            client.shutdown()


def command_counter(client: IMAPClient) -> list[int]:
    """Count the IMAP commands ``client`` sends from now on (for the benchmark); returns a 1-item list."""
    count = [0]
    original = client._imap._command

    def counted(self, name, *args):
        count[0] += 1
        return original(name, *args)

    # A bound method, not a plain function: imaplib compares literal types with type(self._command).
    client._imap._command = types.MethodType(counted, client._imap)
    return count


# --- folders ---------------------------------------------------------------------------------------


def folders_list(client: IMAPClient, *, pattern: str | bytes = "*") -> list[RemoteFolder]:
    """Every folder (or those ``pattern`` names) with its role (SPECIAL-USE flags, else well-known names);
    INBOX first."""
    found = []
    for flags, delimiter, raw_name in client.list_folders(pattern=pattern):
        raw = raw_name.decode("ascii", "replace") if isinstance(raw_name, bytes) else str(raw_name)
        lowered = {f.lower() for f in flags}
        name = imap_utf7.decode(raw.encode("ascii", "replace")) if "&" in raw else raw
        found.append(
            RemoteFolder(
                remote_id=raw,
                name="Inbox" if raw.upper() == "INBOX" else name,
                role=_folder_role(raw, name, lowered),
                is_selectable=not ({b"\\noselect", b"\\nonexistent"} & lowered),
                delimiter=delimiter.decode("ascii", "replace") if isinstance(delimiter, bytes) else (delimiter or ""),
            )
        )
    found.sort(key=lambda f: (f.role != "inbox", f.remote_id))
    return found


def _folder_role(raw: str, name: str, flags: set[bytes]) -> str:
    if raw.upper() == "INBOX":
        return "inbox"
    for flag in flags:
        if flag in _SPECIAL_USE_ROLES:
            return _SPECIAL_USE_ROLES[flag]
    return _NAME_ROLES.get(name.lower(), "user")


def folder_status(client: IMAPClient, remote_id: str, *, condstore: bool) -> FolderStatus:
    items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"] + ([b"HIGHESTMODSEQ"] if condstore else [])
    data = client.folder_status(remote_id, items)
    return FolderStatus(
        uidvalidity=int(data[b"UIDVALIDITY"]),
        uidnext=int(data[b"UIDNEXT"]),
        highestmodseq=int(data[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in data else None,
        messages=int(data.get(b"MESSAGES", 0)),
    )


def folder_select(client: IMAPClient, remote_id: str, *, readonly: bool = True) -> FolderStatus:
    data = client.select_folder(remote_id, readonly=readonly)
    modseq = data.get(b"HIGHESTMODSEQ")
    return FolderStatus(
        uidvalidity=int(data[b"UIDVALIDITY"]),
        uidnext=int(data.get(b"UIDNEXT", 1)),
        highestmodseq=int(modseq) if modseq is not None else None,
        messages=int(data.get(b"EXISTS", 0)),
    )


# --- searching and fetching ------------------------------------------------------------------------


def uids_search(client: IMAPClient, *, since: date | None = None, after_uid: int = 0) -> list[int]:
    """UIDs (ascending) of messages after ``after_uid`` received on or after ``since``."""
    criteria: list = []
    if after_uid:
        criteria += ["UID", f"{after_uid + 1}:*"]
    if since:
        criteria += ["SINCE", since]
    uids = client.search(criteria or "ALL")
    # "n:*" always matches the highest UID, even when it is below n.
    return sorted(uid for uid in uids if uid > after_uid)


def fetch(
    client: IMAPClient, uid_set: str, items: Iterable[str], *, modifiers: Iterable[str] = ()
) -> tuple[dict[int, dict[bytes, Any]], list[bytes]]:
    """``UID FETCH`` that keeps every FETCH response and returns VANISHED data too.

    imapclient's own ``fetch`` drops responses for UIDs it was not given by number, which rules out
    ``1:*`` with CHANGEDSINCE; this mirrors it without that filter.
    """
    args = ["FETCH", uid_set, "(" + " ".join(items) + ")"]
    modifiers = list(modifiers)
    if modifiers:
        args.append("(" + " ".join(modifiers) + ")")
    imap = client._imap
    imap.untagged_responses.pop("VANISHED", None)
    try:
        tag = imap._command("UID", *args)
        typ, data = imap._command_complete("FETCH", tag)
    except imaplib.IMAP4.error as exc:
        if isinstance(exc, imaplib.IMAP4.abort):
            raise
        raise IMAPClientError(str(exc)) from None
    if typ != "OK":
        raise IMAPClientError(f"UID FETCH failed: {data!r}"[:300])
    typ, data = imap._untagged_response(typ, data, "FETCH")
    vanished = imap.untagged_responses.pop("VANISHED", [])
    parsed = parse_fetch_response([d for d in data if d is not None], client.normalise_times, True)
    for uid, item in parsed.items():
        item[b"UID"] = uid  # the parser keys by UID and drops it from the item
    return parsed, vanished


def uid_set(uids: Iterable[int]) -> str:
    """Compact an ascending UID list into an IMAP set ("1:4,7,9:10")."""
    parts: list[str] = []
    start: int | None = None
    prev = 0
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def uid_ranges(data: Iterable[bytes]) -> Iterator[tuple[int, int]]:
    """(first, last) ranges from VANISHED responses (``(EARLIER) 1:3,7``)."""
    for item in data:
        text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
        text = text.replace("(EARLIER)", "").strip()
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            first, _, last = part.partition(":")
            low, high = int(first), int(last or first)
            yield min(low, high), max(low, high)


def header_block(raw: bytes) -> bytes:
    """The header section of a raw message (CRLF or bare LF line ends)."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return raw[: min(ends) + 2] if ends else raw


def content_remote_id(raw: bytes) -> str:
    """The store key (``Message.remote_id``) of an IMAP message: the SHA-256 of its exact bytes.

    ``raw`` is what the server returns for ``BODY.PEEK[]``. Two messages get one key, and so one row, only
    when their bytes are identical (see :mod:`providers.imap.client` for the whole rule). The outbox
    files a message it appended under this key, so the sync finds that row instead of adding a second.
    """
    return CONTENT_KEY_PREFIX + hashlib.sha256(raw).hexdigest()
