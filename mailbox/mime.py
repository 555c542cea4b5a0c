"""Parse raw RFC 5322 bytes into the fields the store keeps. Never raises.

:func:`mime_parse` uses the standard library (``email`` with ``policy.default``) and degrades
field by field: a header that will not parse falls back to its raw text, a body in an unknown or
lying charset is decoded with fallbacks and ``errors="replace"``, and if the message cannot be
parsed at all the result has ``parse_error`` set (the caller keeps the raw bytes regardless).
Every string in the result is safe for any database: no NUL characters, no lone surrogates.
"""

from __future__ import annotations

import codecs
import email
import email.header
import email.utils
import html as html_lib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message as EmailMessage

logger = logging.getLogger(__name__)

SNIPPET_LENGTH = 200
_FALLBACK_CHARSETS = ("utf-8", "cp1252", "latin-1")
# Labels mail clients use that Python's codecs do not know, mapped to what they mean in practice.
_CHARSET_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
    "x-user-defined": "cp1252",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",  # gb18030 is a superset and decodes what mislabelled gb2312 mail really holds
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "ansi_x3.4-1968": "ascii",
    "us-ascii": "utf-8",  # mail labelled us-ascii very often carries 8-bit text anyway
    "ascii": "utf-8",
}

_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_TAG = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    content: bytes
    content_id: str = ""  # without <>
    is_inline: bool = False


@dataclass
class ParsedMessage:
    message_id: str = ""  # without <>
    in_reply_to: str = ""  # without <>
    references: list[str] = field(default_factory=list)  # oldest first, without <>
    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    to: list[dict[str, str]] = field(default_factory=list)  # [{"name": ..., "email": ...}]
    cc: list[dict[str, str]] = field(default_factory=list)
    bcc: list[dict[str, str]] = field(default_factory=list)
    reply_to: list[dict[str, str]] = field(default_factory=list)
    date: datetime | None = None  # timezone-aware (UTC when the header had no zone)
    text: str = ""
    html: str = ""
    snippet: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    size: int = 0
    parse_error: str = ""  # non-empty when the message (or a part of it) could not be parsed

    @property
    def has_attachments(self) -> bool:
        """True when there is a real attachment (inline cid: images do not count)."""
        return any(not a.is_inline for a in self.attachments)


def mime_parse(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` (RFC 5322 bytes). Never raises; see the module docstring for how it degrades."""
    result = ParsedMessage(size=len(raw or b""))
    try:
        if not raw or not raw.strip():
            result.parse_error = "The message is empty."
            return result
        msg = email.message_from_bytes(raw, policy=policy.default)
        problems: list[str] = []
        _parse_headers(msg, result, problems)
        _parse_body(msg, result, problems)
        if not msg.keys() and not result.text:
            problems.append("no headers were found")
        if problems:
            result.parse_error = "; ".join(dict.fromkeys(problems))[:2000]
    except Exception as exc:  # noqa: BLE001 - the contract is to never raise
        logger.warning("MIME parse failed: %s", type(exc).__name__)
        result.parse_error = f"The message could not be parsed ({type(exc).__name__})."
        if not result.text:
            result.text = clean_text(_decode_bytes(raw or b"", None))
    result.snippet = _snippet(result)
    return result


def clean_text(value: str) -> str:
    """Make ``value`` storable: surrogate-escaped bytes decoded, lone surrogates and NULs removed."""
    if not value:
        return ""
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        data = value.encode("utf-8", "surrogateescape") if _only_escapes(value) else value.encode(
            "utf-8", "replace"
        )
        value = _decode_bytes(data, None)
    return value.replace("\x00", "")


def _only_escapes(value: str) -> bool:
    return all(not ("\ud800" <= ch <= "\udfff") or "\udc80" <= ch <= "\udcff" for ch in value)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset if it works, then UTF-8, then cp1252, then latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark says more than any label
        return data[3:].decode("utf-8", errors="replace").replace("\x00", "")
    candidates = []
    if charset:
        name = charset.strip().strip('"').lower()
        candidates.append(_CHARSET_ALIASES.get(name, name))
    candidates.extend(_FALLBACK_CHARSETS)
    for name in candidates:
        try:
            codecs.lookup(name)
            return data.decode(name).replace("\x00", "")
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    declared = candidates[0]
    try:
        return data.decode(declared, errors="replace").replace("\x00", "")
    except LookupError:
        return data.decode("utf-8", errors="replace").replace("\x00", "")


# --- Headers ------------------------------------------------------------------------------------


def _header_text(msg: EmailMessage, name: str, problems: list[str]) -> str:
    """The decoded text of header ``name`` ('' if absent), degrading to RFC 2047 decoding of the raw value."""
    try:
        value = msg.get(name)
        if value is None:
            return ""
        return clean_text(str(value)).strip()
    except Exception:  # noqa: BLE001 - a malformed header must not sink the message
        problems.append(f"the {name} header is malformed")
    return _raw_header_text(msg, name)


def _raw_header_text(msg: EmailMessage, name: str) -> str:
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return _decode_rfc2047(str(value))
    return ""


def _decode_rfc2047(value: str) -> str:
    try:
        parts = email.header.decode_header(value)
        out = []
        for chunk, charset in parts:
            out.append(_decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk)
        return clean_text("".join(out)).strip()
    except Exception:  # noqa: BLE001
        return clean_text(value).strip()


def _addresses(msg: EmailMessage, name: str, problems: list[str]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    try:
        header = msg.get(name)
        if header is None:
            return []
        for address in getattr(header, "addresses", ()):
            mailbox = clean_text(address.addr_spec or "")
            if mailbox or address.display_name:
                found.append({"name": clean_text(address.display_name or "")[:255], "email": mailbox[:320]})
        if found or not str(header).strip():
            return found
    except Exception:  # noqa: BLE001
        problems.append(f"the {name} header is malformed")
    # Fallback: the lenient parser of email.utils over the decoded raw text.
    text = _raw_header_text(msg, name)
    for display, mailbox in email.utils.getaddresses([text]):
        if mailbox or display:
            found.append({"name": display[:255], "email": mailbox[:320]})
    return found


def _first_id(value: str) -> str:
    match = _ANGLE_ID.search(value or "")
    if match:
        return match.group(1)[:998]
    return (value or "").strip().strip("<>").split()[0][:998] if (value or "").strip() else ""


def _all_ids(value: str) -> list[str]:
    ids = _ANGLE_ID.findall(value or "")
    if not ids and value and value.strip():
        ids = [token.strip("<>") for token in value.split()]
    return [i[:998] for i in ids if i]


def _parse_date(msg: EmailMessage, problems: list[str]) -> datetime | None:
    text = _raw_header_text(msg, "Date")
    if not text:
        return None
    try:
        value = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        problems.append("the Date header is malformed")
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _parse_headers(msg: EmailMessage, result: ParsedMessage, problems: list[str]) -> None:
    # Message ids carry no encoded words: the raw text is exact (and much faster than the header registry).
    result.message_id = _first_id(_raw_header_text(msg, "Message-ID"))
    result.in_reply_to = _first_id(_raw_header_text(msg, "In-Reply-To"))
    result.references = _all_ids(_raw_header_text(msg, "References"))
    result.subject = _header_text(msg, "Subject", problems)
    senders = _addresses(msg, "From", problems)
    if senders:
        result.from_name, result.from_address = senders[0]["name"], senders[0]["email"]
    result.to = _addresses(msg, "To", problems)
    result.cc = _addresses(msg, "Cc", problems)
    result.bcc = _addresses(msg, "Bcc", problems)
    result.reply_to = _addresses(msg, "Reply-To", problems)
    result.date = _parse_date(msg, problems)


# --- Body ---------------------------------------------------------------------------------------


@dataclass
class _PartInfo:
    """A part's Content-Type and Content-Disposition, each parsed once (header parsing is the slow bit)."""

    content_type: str
    charset: str | None
    disposition: str | None
    filename: str


def _part_info(part: EmailMessage) -> _PartInfo:
    try:
        ct = part.get("content-type")
        if ct is not None and not getattr(ct, "defects", None) and "/" in getattr(ct, "content_type", ""):
            ctype, params = ct.content_type.lower(), dict(ct.params)
        else:
            ctype, params = part.get_content_type(), {}
    except Exception:  # noqa: BLE001
        ctype, params = part.get_default_type(), {}
    try:
        cd = part.get("content-disposition")
        disposition = cd.content_disposition.lower() if cd is not None and cd.content_disposition else None
        cd_params = dict(cd.params) if cd is not None else {}
    except Exception:  # noqa: BLE001
        disposition, cd_params = None, {}
    name = cd_params.get("filename") or params.get("name") or ""
    if isinstance(name, tuple):
        name = email.utils.collapse_rfc2231_value(name)
    name = _decode_rfc2047(str(name)) if "=?" in str(name) else clean_text(str(name))
    filename = name.replace("/", "_").replace("\\", "_").strip()[:255]
    return _PartInfo(ctype, params.get("charset"), disposition, filename)


def _leaf_parts(part: EmailMessage, depth: int = 0):
    """Yield (part, info) for the leaf parts; an attached message (message/rfc822) is one leaf, kept as .eml."""
    if depth > 50:  # a pathological nesting bomb
        return
    info = _part_info(part)
    if part.is_multipart() and not info.content_type.startswith("message/"):
        payload = part.get_payload()
        if isinstance(payload, list):
            for child in payload:
                yield from _leaf_parts(child, depth + 1)
        return
    yield part, info


def _part_bytes(part: EmailMessage, ctype: str) -> bytes:
    if ctype.startswith("message/") and part.is_multipart():
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        try:
            return inner.as_bytes(policy=policy.default.clone(linesep="\r\n"))
        except Exception:  # noqa: BLE001
            return str(inner).encode("utf-8", "replace")
    data = part.get_payload(decode=True)
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    return data


def _parse_body(msg: EmailMessage, result: ParsedMessage, problems: list[str]) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    for part, info in _leaf_parts(msg):
        try:
            ctype, disposition, filename = info.content_type, info.disposition, info.filename
            content_id = _first_id(_raw_header_text(part, "Content-ID"))
            if ctype.startswith("multipart/"):  # a multipart whose boundary is missing: show what is there
                ctype = "text/plain"
            is_body_text = ctype in ("text/plain", "text/html") and disposition != "attachment" and not (
                filename and disposition == "inline" and not content_id and ctype != "text/html"
            )
            data = _part_bytes(part, ctype)
            if is_body_text:
                text = _decode_bytes(data, info.charset)
                (htmls if ctype == "text/html" else texts).append(text)
                continue
            if not data and not filename:
                continue
            if not filename and ctype.startswith("message/"):
                filename = "message.eml"
            result.attachments.append(
                ParsedAttachment(
                    filename=filename,
                    content_type=ctype[:255],
                    content=data,
                    content_id=content_id[:255],
                    is_inline=bool(content_id) and disposition != "attachment",
                )
            )
        except Exception as exc:  # noqa: BLE001 - skip one broken part, keep the rest
            problems.append(f"a {type(exc).__name__} in one part was skipped")
    result.text = "\n".join(t for t in texts if t)
    result.html = "\n".join(h for h in htmls if h)
    for part in _all_parts(msg):
        for defect in getattr(part, "defects", []):
            explanation = _SERIOUS_DEFECTS.get(type(defect).__name__)
            if explanation:
                problems.append(explanation)


_SERIOUS_DEFECTS = {
    "StartBoundaryNotFoundDefect": "a multipart boundary is missing",
    "MultipartInvariantViolationDefect": "a multipart part has no boundary",
    "CloseBoundaryNotFoundDefect": "the message is truncated (a multipart never ends)",
    "InvalidBase64CharactersDefect": "a base64 part is damaged",
    "InvalidBase64PaddingDefect": "a base64 part is damaged",
    "InvalidBase64LengthDefect": "a base64 part is damaged",
}


def _all_parts(part: EmailMessage, depth: int = 0):
    if depth > 50:
        return
    yield part
    payload = part.get_payload() if part.is_multipart() else None
    if isinstance(payload, list):
        for child in payload:
            yield from _all_parts(child, depth + 1)


def _snippet(result: ParsedMessage) -> str:
    source = result.text
    if not source.strip() and result.html:
        source = html_lib.unescape(_TAG.sub(" ", result.html))
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(">")]
    return _SPACE.sub(" ", " ".join(lines)).strip()[:SNIPPET_LENGTH]
