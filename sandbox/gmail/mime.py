"""What Gmail derives from a message's raw bytes: header facts, snippet, and the `payload` part tree.

Parsing uses the lenient ``compat32`` policy and never raises: a message Gmail would accept (any
bytes at all) must be storable and readable in every format.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.errors
import email.header
import email.utils
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message as EmailMessage
from email.policy import compat32
from typing import cast

SNIPPET_LENGTH = 200
_TAG = re.compile(r"<[^>]*>")
_INVISIBLE = re.compile(r"<(style|script|head|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ufeff]")
_SURROGATE = re.compile("[\udc80-\udcff]")
_MSGID = re.compile(r"<[^<>\s]+>")


@dataclass
class MessageFacts:
    """Header facts the store indexes at insert time (threading, search, ordering)."""

    message_id: str = ""
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    subject: str = ""
    sender: str = ""
    recipients: str = ""  # To, Cc and Bcc, lower-cased, for `to:` searches
    date_ms: int | None = None
    snippet: str = ""
    has_attachment: bool = False
    text: str = ""  # lower-cased searchable text (subject, addresses, snippet)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url (or plain base64), padded or not, as Google accepts."""
    cleaned = re.sub(r"\s+", "", text).replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=compat32)


def clean_text(value: str) -> str:
    """Make a str JSON-safe: surrogate-escaped 8-bit bytes are read as UTF-8, else as windows-1252."""
    if _SURROGATE.search(value):
        data = value.encode("utf-8", "surrogateescape")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("windows-1252", "replace")
    return value


def raw_header(message: EmailMessage | LightPart, name: str, default: str = "") -> str:
    """The first ``name`` header as written (compat32's ``get`` mangles raw 8-bit values)."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return str(value)
    return default


def decode_header_value(value: object) -> str:
    """Unfold and decode RFC 2047 encoded words as Gmail shows header values; never raises."""
    text = clean_text(str(value))
    text = re.sub(r"\r?\n[ \t]", " ", text).strip()
    if "=?" not in text:
        return text
    try:
        return clean_text(str(email.header.make_header(email.header.decode_header(text))))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return text


def _msgids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def _date_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _payload_bytes(part: EmailMessage | LightPart) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - garbage transfer encodings must degrade, not crash
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def _part_text(part: EmailMessage | LightPart) -> str:
    data = _payload_bytes(part)
    for charset in (part.get_content_charset() or "us-ascii", "utf-8"):
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("windows-1252", "replace")


def _filename(part: EmailMessage | LightPart) -> str:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - malformed RFC 2231 parameters
        return ""
    return decode_header_value(name) if name else ""


def is_attachment(part: EmailMessage | LightPart) -> bool:
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        return False
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return bool(_filename(part)) or disposition == "attachment"


def _html_to_text(markup: str) -> str:
    return html.unescape(_TAG.sub(" ", _INVISIBLE.sub(" ", markup)))


def snippet_of(message: EmailMessage | LightPart) -> str:
    plain = markup = None
    for part in message.walk():
        if part.is_multipart() or is_attachment(part):
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            plain = _part_text(part)
        elif ctype == "text/html" and markup is None:
            markup = _part_text(part)
        if plain is not None:
            break
    text = plain if plain is not None else _html_to_text(markup or "")
    text = _SPACE.sub(" ", _CONTROL.sub("", text)).strip()[:SNIPPET_LENGTH]
    return html.escape(text, quote=True).replace("&#x27;", "&#39;")


class _Fallback(Exception):
    """The fast reader met something only the full parser handles."""


_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_BLANK = re.compile(rb"\r?\n\r?\n")


class LightPart:
    """Just enough of ``email.message.Message`` for :func:`facts_of`, read straight off the bytes.

    Parsing 10,000 messages with the stdlib's feed parser takes seconds (it compiles a regex per
    boundary); this reads the common shapes in a fraction of that and raises ``_Fallback`` for the
    rest (missing or unterminated boundaries, odd header lines), which then get the full parser.
    """

    def __init__(self, data: bytes, *, depth: int = 0) -> None:
        if depth > 20:
            raise _Fallback
        if data.startswith((b"\r\n", b"\n")):
            head, self.body = b"", data[2 if data.startswith(b"\r\n") else 1 :]
        else:
            match = _BLANK.search(data)
            head, self.body = (data[: match.start()], data[match.end() :]) if match else (data, b"")
        text = re.sub(r"\r?\n[ \t]", " ", head.decode("ascii", "surrogateescape"))
        self.headers: list[tuple[str, str]] = []
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if not sep or not name or " " in name:
                raise _Fallback
            self.headers.append((name, value.strip()))
        ctype = self.get("Content-Type", "text/plain")
        main = ctype.split(";")[0].strip().lower()
        self.ctype = main if main.count("/") == 1 else "text/plain"
        self.params = {key.lower(): value.strip('"') for key, value in _PARAM.findall(ctype)}
        self.children: list[LightPart] = []
        if self.ctype.startswith("multipart/"):
            self.children = [LightPart(chunk, depth=depth + 1) for chunk in self._chunks()]
        elif self.ctype == "message/rfc822":
            self.children = [LightPart(self.body, depth=depth + 1)]

    def _chunks(self) -> list[bytes]:
        boundary = self.params.get("boundary")
        if not boundary:
            raise _Fallback
        # Plain bytes splitting: a regex per boundary would be compiled per message (what makes the
        # stdlib parser slow) and would flush the re module's cache.
        pieces = (b"\n" + self.body).split(b"\n--" + boundary.encode("ascii", "surrogateescape"))
        chunks: list[bytes] = []
        for piece in pieces[1:]:
            if piece.startswith(b"--"):
                return chunks
            line_end = piece.find(b"\n")
            if line_end < 0 or piece[:line_end].strip(b" \t\r"):
                raise _Fallback  # a line that only starts like the delimiter, or a cut-off part
            chunk = piece[line_end + 1 :]
            chunks.append(chunk[:-1] if chunk.endswith(b"\r") else chunk)
        raise _Fallback  # no closing delimiter: truncated

    def get(self, name: str, default: str = "") -> str:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), default)

    def raw_items(self) -> list[tuple[str, str]]:
        return self.headers

    def is_multipart(self) -> bool:
        return bool(self.children) or self.ctype.startswith("multipart/")

    def get_content_type(self) -> str:
        return self.ctype

    def get_content_maintype(self) -> str:
        return self.ctype.split("/")[0]

    def get_content_charset(self) -> str | None:
        charset = self.params.get("charset")
        return charset.lower() if charset else None

    def get_filename(self) -> str | None:
        disposition = self.get("Content-Disposition").partition(";")[2]
        found = {key.lower(): value.strip('"') for key, value in _PARAM.findall(";" + disposition)}
        found.update((key, value) for key, value in self.params.items() if key not in found)
        # Only whether a name exists matters to facts_of; RFC 2231 forms (filename*, name*0*) count.
        return next((value for key, value in found.items() if key.split("*")[0] in ("filename", "name")), None)

    def get_payload(self, decode: bool = False) -> bytes:
        encoding = self.get("Content-Transfer-Encoding").lower()
        try:
            if encoding == "base64":
                return binascii.a2b_base64(self.body)
            if encoding == "quoted-printable":
                return binascii.a2b_qp(self.body)
        except binascii.Error as exc:
            raise _Fallback from exc
        return self.body

    def walk(self) -> Iterator[LightPart]:
        yield self
        for child in self.children:
            yield from child.walk()


def facts_of(raw: bytes) -> MessageFacts:
    try:
        return _facts(LightPart(raw))
    except Exception:  # noqa: BLE001, S110 - anything the light reader cannot follow goes to the full parser
        pass
    try:
        return _facts(parse(raw))
    except Exception:  # noqa: BLE001 - a message that cannot be parsed is still stored
        return MessageFacts()


def _facts(message: EmailMessage | LightPart) -> MessageFacts:
    def get(name: str) -> str:
        return raw_header(message, name)

    subject = decode_header_value(get("Subject"))
    sender = decode_header_value(get("From"))
    recipients = " ".join(decode_header_value(get(name)) for name in ("To", "Cc", "Bcc"))
    snippet = snippet_of(message)
    return MessageFacts(
        message_id=(_msgids(get("Message-ID")) or [""])[0],
        in_reply_to=_msgids(get("In-Reply-To")),
        references=_msgids(get("References")),
        subject=subject,
        sender=sender,
        recipients=recipients.lower(),
        date_ms=_date_ms(get("Date") or None),
        snippet=snippet,
        has_attachment=any(is_attachment(part) for part in message.walk()),
        text=" ".join((subject, sender, recipients, html.unescape(snippet))).lower(),
    )


def attachment_id(message_id: str, part_id: str) -> str:
    # Opaque-looking like Google's, but stable so tests can compare.
    return "ANGjdJ" + b64url(f"{message_id}:{part_id}".encode()).rstrip("=")


def parse_attachment_id(value: str) -> tuple[str, str] | None:
    if not value.startswith("ANGjdJ"):
        return None
    try:
        message_id, _, part_id = b64url_decode(value[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return message_id, part_id


def _headers(part: EmailMessage, wanted: set[str] | None) -> list[dict[str, str]]:
    return [
        {"name": name, "value": decode_header_value(value)}
        for name, value in part.raw_items()
        if wanted is None or name.lower() in wanted
    ]


def _child_id(parent: str, index: int) -> str:
    return f"{parent}.{index}" if parent else str(index)


def part_json(part: EmailMessage, *, message_id: str, part_id: str = "") -> dict:
    """One node of Gmail's `payload` tree (format=full)."""
    node: dict = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": _filename(part),
        "headers": _headers(part, None),
    }
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        data = _message_bytes(part) if part.get_content_type() == "message/rfc822" else _payload_bytes(part)
        # Gmail serves named parts and every non-text part (inline images too) by attachmentId.
        if is_attachment(part) or part.get_content_maintype() != "text":
            node["body"] = {"attachmentId": attachment_id(message_id, part_id), "size": len(data)}
        elif data:
            node["body"] = {"size": len(data), "data": b64url(data)}
        else:
            node["body"] = {"size": 0}
        return node
    node["body"] = {"size": 0}
    children = part.get_payload()
    if isinstance(children, list):
        node["parts"] = [
            part_json(child, message_id=message_id, part_id=_child_id(part_id, index))
            for index, child in enumerate(children)
        ]
    return node


def _message_bytes(part: EmailMessage) -> bytes:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        inner = payload[0]
        try:
            return inner.as_bytes(policy=compat32) if isinstance(inner, EmailMessage) else b""
        except Exception:  # noqa: BLE001
            return b""
    return _payload_bytes(part)


def payload_full(raw: bytes, *, message_id: str) -> dict:
    try:
        return part_json(parse(raw), message_id=message_id)
    except Exception:  # noqa: BLE001 - degrade to an opaque single part rather than fail the request
        return {
            "partId": "",
            "mimeType": "text/plain",
            "filename": "",
            "headers": [],
            "body": {"size": len(raw), "data": b64url(raw)},
        }


def payload_metadata(raw: bytes, *, headers: list[str] | None) -> dict:
    wanted = {name.lower() for name in headers} if headers else None
    try:
        message = parse(raw)
        return {
            "partId": "",
            "mimeType": message.get_content_type(),
            "filename": "",
            "headers": _headers(message, wanted),
            "body": {"size": 0},
        }
    except Exception:  # noqa: BLE001
        return {"partId": "", "mimeType": "text/plain", "filename": "", "headers": [], "body": {"size": 0}}


def find_part(raw: bytes, part_id: str) -> bytes | None:
    """The decoded bytes of the part ``part_id`` (for attachments.get)."""
    try:
        node = parse(raw)
        for step in part_id.split(".") if part_id else []:
            if node.get_content_type() == "message/rfc822" or not node.is_multipart():
                return None
            children = cast("list[EmailMessage]", node.get_payload())  # a multipart's parts
            node = children[int(step)]
    except (IndexError, ValueError, TypeError):
        return None
    if node.get_content_type() == "message/rfc822":
        return _message_bytes(node)
    return _payload_bytes(node)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
