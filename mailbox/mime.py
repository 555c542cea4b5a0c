"""Parse raw RFC 5322 bytes into the fields the store keeps. Never raises.

:func:`mime_parse` works on the tree the standard library's ``email`` package builds under
``policy.compat32`` (plain strings instead of header objects, several times faster than ``policy.default``);
:func:`mime_tree` builds that same tree faster for well-formed mail and leaves the rest to the stdlib's
parser, and address lists and MIME parameters have the same kind of fast path. Every header and body
part is then decoded explicitly, degrading field by field: raw 8-bit header text is decoded as UTF-8 with
cp1252/latin-1 fallbacks, RFC 2047 encoded words are decoded word by word (an undecodable word stays as
written), a body in an unknown or lying charset is decoded with fallbacks and ``errors="replace"``, and if
the message cannot be parsed at all the result has ``parse_error`` set (the caller keeps the raw bytes
regardless). Every string in the result is safe for any database: no NUL characters, no lone surrogates.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import email.utils
import html as html_lib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.feedparser import FeedParser
from email.message import Message as EmailMessage
from email.parser import Parser
from typing import cast

logger = logging.getLogger(__name__)

SNIPPET_LENGTH = 200
MAX_DEPTH = 50  # levels of multipart nesting read; deeper parts are left out and the message flagged
_FEED_CHUNK = 1 << 16
_ODD_SEPARATORS = (b"\v", b"\f", b"\x1c", b"\x1d", b"\x1e")  # line breaks to str.splitlines, not to mail
_SNIPPET_HTML_WHOLE = 1 << 20  # an HTML body up to this size is read whole for its snippet
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
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# RFC 2047: =?charset?encoding?text?= (the text may not hold "?"; broken mailers do put spaces in it).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?]*)\?=")
_ADDRESS_SPECIALS = re.compile(r'[\s,;:<>()@"\[\]\\]')
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR_SPEC = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PHRASE_WORD = r'[^()<>@,:;"\[\]\\ \t\r\n]+'  # what email.utils reads as one word of a display name
_SIMPLE_MAILBOX = re.compile(
    rf'[ \t]*(?:(?:({_PHRASE_WORD}(?:[ \t]+{_PHRASE_WORD})*)|"([^"\\\r\n]*)")[ \t]*<({_ADDR_SPEC})>|({_ADDR_SPEC}))'
    r"[ \t]*(?:,|\Z)"
)
_BLANKS = re.compile(r"[ \t]+")
_SIMPLE_PARAM = re.compile(r'\s*([^\s=;"*\\()<>]+)\s*=\s*(?:"([^"\\\r\n<>]*)"|([^\s;"\\()<>]*))\s*(?:;|\Z)')
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")  # private-use characters: not in real names
_PARSER = Parser(policy=policy.compat32)
_HEADER_NAME = re.compile(r"[\041-\071\073-\176]+:")  # the feed parser's header line, name not empty
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(\r\n|\n)?\Z")  # what may follow "--boundary" on its line
# Re-serialising an attached message (message/rfc822): keep its header lines as they were written.
_EML_POLICY = policy.default.clone(linesep="\r\n", refold_source="none")


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
        msg = mime_tree(raw)
        problems: list[str] = []
        _parse_headers(msg, result, problems)
        _parse_body(msg, result, problems)
        if not msg.keys() and not result.text:
            problems.append("no headers were found")
        if problems:
            result.parse_error = "; ".join(dict.fromkeys(problems))[:2000]
    except Exception as exc:  # noqa: BLE001 - the contract is to never raise
        logger.warning("MIME parse failed: %s", type(exc).__name__)
        if isinstance(exc, RecursionError):
            result.parse_error = "The message is nested too deeply to be parsed; its raw text is shown."
        else:
            result.parse_error = f"The message could not be parsed ({type(exc).__name__})."
        if not result.text:
            result.text = clean_text(_decode_bytes(raw or b"", None))
    result.snippet = _snippet(result)
    return result


def mime_tree(raw: bytes) -> EmailMessage:
    """``raw`` as the tree of ``email.message.Message`` objects that ``BytesParser(policy=compat32)`` builds.

    Well-formed mail takes a fast path that splits the bytes with searches; the stdlib's feed parser,
    which runs line by line and compiles a new regular expression for every multipart boundary, is used
    for anything the fast path is not sure of (see :func:`_fast_part`).

    Memory: the fast path never copies a leaf's body: it stays a span of ``raw`` until something reads it
    (:func:`_part_bytes` decodes it straight from there), so a big attachment is not held twice as text.
    The stdlib is fed in chunks rather than through ``parsestr``, whose StringIO held 4 bytes a character.
    """
    if not _odd_line_breaks(raw):
        msg = _fast_part(raw, 0, len(raw))
        if msg is not None:
            return msg
    parser = FeedParser(policy=policy.compat32)
    view = memoryview(raw)
    for start in range(0, len(raw), _FEED_CHUNK):
        parser.feed(str(view[start : start + _FEED_CHUNK], "ascii", "surrogateescape"))
    return parser.close()


def mime_headers(raw: bytes) -> EmailMessage:
    """The headers of ``raw`` as ``BytesHeaderParser(policy=compat32)`` reads them (the body is not parsed)."""
    text = raw.decode("ascii", "surrogateescape")
    if not _odd_line_breaks(raw):
        headers = _fast_headers(text, 0, len(text))
        if headers is not None:
            return headers[0]
    return _PARSER.parsestr(text, headersonly=True)


class _SpanMessage(EmailMessage):
    """A compat32 message whose leaf body may stay a span of the raw bytes until it is read.

    ``_payload`` reads as the text the stdlib would have set (the span decoded as ASCII with surrogate
    escapes, one character per byte); :func:`_part_bytes` decodes the span without making that text.
    """

    _span: tuple[bytes, int, int] | None = None
    _value: object = None

    @property  # type: ignore[override]
    def _payload(self):  # noqa: ANN202 - the stdlib's attribute
        if self._span is not None:
            raw, start, end = self._span
            return str(memoryview(raw)[start:end], "ascii", "surrogateescape")
        return self._value

    @_payload.setter
    def _payload(self, value) -> None:  # noqa: ANN001
        self._span = None
        self._value = value

    def is_multipart(self) -> bool:
        return self._span is None and isinstance(self._value, list)


def _fast_part(raw: bytes, start: int, end: int, depth: int = 0, *, strip_eol: bool = False) -> EmailMessage | None:
    """The message in ``raw[start:end]``, built as the stdlib's feed parser builds it; None if unsure.

    It gives up (None) wherever the feed parser would record a defect or take a rare branch: a header
    line that is not a header, a Unix From line, message/* and multipart/digest bodies, a multipart
    without its boundary, its first or its closing delimiter, or with a delimiter straight after another.
    Parts nested deeper than MAX_DEPTH are not split (the only place its tree differs from the stdlib's,
    whose parser dies of recursion a few hundred levels down). ``strip_eol``: the line break at the end belongs to the
    delimiter that follows (RFC 2046). Offsets are byte offsets: decoding ASCII with surrogate escapes
    gives one character per byte, so they are the stdlib's string offsets too.
    """
    head_end = _header_block_end(raw, start, end)
    headers = _fast_headers(raw[start:head_end].decode("ascii", "surrogateescape"), 0, head_end - start)
    if headers is None:
        return None
    msg, position = headers
    position += start
    ctype = msg.get_content_type()
    too_deep = depth > MAX_DEPTH  # never read (see _leaf_parts): kept whole, so no nesting bomb recurses here
    if (ctype.startswith("message/") or ctype == "multipart/digest") and not too_deep:
        return None
    if not ctype.startswith("multipart/") or too_deep:
        if strip_eol:
            end -= 2 if raw.endswith(b"\r\n", position, end) else 1 if raw.endswith(b"\n", position, end) else 0
        msg._span = (raw, position, end)
        return msg
    if not _fast_multipart(msg, raw, position, end, depth):
        return None
    if strip_eol:  # RFC 2046: the line break before a delimiter belongs to the delimiter.
        msg.epilogue = _strip_eol(msg.epilogue) if msg.epilogue else None
    return msg


def _header_block_end(raw: bytes, start: int, end: int) -> int:
    """Where the header section at ``raw[start:end]`` ends, its blank line included (``end`` if none)."""
    if start < end and raw[start] in b"\r\n":
        blank = start
    else:
        ends = [found + 1 for found in (raw.find(b"\n\n", start, end), raw.find(b"\n\r", start, end)) if found >= 0]
        if not ends:
            return end
        blank = min(ends)
    line_end = raw.find(b"\n", blank, end)
    return end if line_end < 0 else line_end + 1


def _fast_headers(text: str, start: int, end: int) -> tuple[_SpanMessage, int] | None:
    """The header section at ``text[start:end]`` as a message, and where its body starts; None if unsure."""
    msg = _SpanMessage(policy=policy.compat32)
    header: list[str] = []
    position = start
    while position < end:
        line_end = text.find("\n", position, end) + 1 or end
        line = text[position:line_end]
        position = line_end
        if line[0] in "\r\n":  # the blank line that ends the headers
            break
        if line[0] in " \t":
            if not header:
                return None
            header.append(line)
            continue
        if line.startswith("From ") or not _HEADER_NAME.match(line):
            return None
        if header:
            msg.set_raw(*policy.compat32.header_source_parse(header))
        header = [line]
    if header:
        msg.set_raw(*policy.compat32.header_source_parse(header))
    return msg, position


def _fast_multipart(msg: EmailMessage, raw: bytes, start: int, end: int, depth: int) -> bool:
    """Split the multipart body ``raw[start:end]`` into ``msg``'s parts, preamble and epilogue."""
    boundary = msg.get_boundary()
    encoding = str(msg.get("content-transfer-encoding", "8bit")).lower()
    if not boundary or encoding not in ("7bit", "8bit", "binary"):
        return False
    try:
        delimiter = b"--" + boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return False
    lines: list[tuple[int, int]] = []  # (start, end) of each delimiter line up to the closing one
    closed = False
    found = raw.find(delimiter, start, end)
    while found >= 0:
        line_end = raw.find(b"\n", found, end) + 1 or end
        if found == start or raw[found - 1] == 0x0A:
            tail = _DELIMITER_TAIL.match(raw, found + len(delimiter), line_end)
            if tail:
                lines.append((found, line_end))
                if tail.group(1):
                    closed = True
                    break
        found = raw.find(delimiter, line_end, end)
    if not closed or len(lines) < 2:
        return False
    if lines[0][0] > start:
        msg.preamble = _strip_eol(_text(raw, start, lines[0][0]))
    for (_, part_start), (part_end, _) in zip(lines, lines[1:], strict=False):
        if part_start == part_end:  # two delimiters in a row: the stdlib skips the empty part
            return False
        part = _fast_part(raw, part_start, part_end, depth + 1, strip_eol=True)
        if part is None:
            return False
        msg.attach(part)
    msg.epilogue = _text(raw, lines[-1][1], end)
    return True


def _text(raw: bytes, start: int, end: int) -> str:
    return str(memoryview(raw)[start:end], "ascii", "surrogateescape")


def _odd_line_breaks(raw: bytes) -> bool:
    """Whether ``raw`` has a line ending in a lone CR, or another separator str.splitlines would honour."""
    return raw.count(b"\r") != raw.count(b"\r\n") or any(char in raw for char in _ODD_SEPARATORS)


def _strip_eol(value: str) -> str:
    if value.endswith("\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith("\n") else value


def clean_text(value: str) -> str:
    """Make ``value`` storable: surrogate-escaped bytes decoded, lone surrogates and NULs removed."""
    if not value:
        return ""
    if value.isascii():
        return value.replace("\x00", "")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        data = value.encode("utf-8", "surrogateescape") if _only_escapes(value) else value.encode("utf-8", "replace")
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


def _raw_headers(msg: EmailMessage) -> dict[str, str]:
    """The first raw value of each header, by lower-case name (as ``msg.get`` would pick it)."""
    found: dict[str, str] = {}
    for key, value in msg.raw_items():
        found.setdefault(key.lower(), value)
    return found


def _unfold(value: str) -> str:
    """Raw header text as Unicode: folding line breaks removed, raw 8-bit bytes decoded (UTF-8 first)."""
    if "\n" in value or "\r" in value:
        value = _LINE_BREAK.sub("", value)
    if not value.isascii():  # the bytes parser carries 8-bit bytes as surrogate escapes
        value = _decode_bytes(value.encode("utf-8", "surrogateescape"), None)
    return value


def _decode_words(value: str) -> str:
    """Decode the RFC 2047 encoded words in ``value``; text around them is kept as it is.

    Whitespace between two adjacent encoded words is dropped (RFC 2047 §6.2), and adjacent words in
    the same charset are decoded together, so a multibyte character split across two words survives.
    A word that will not decode stays as written.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = b""
    pending_charset: str | None = None  # set while the last thing seen was a decoded encoded word
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        position = match.end()
        charset = match.group(1).split("*", 1)[0].lower()  # RFC 2231 adds *language
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            if pending_charset is not None:
                out.append(_decode_bytes(pending, pending_charset))
                pending, pending_charset = b"", None
            out.append(between + match.group(0))
            continue
        if pending_charset is not None and (not between or between.isspace()):
            if charset == pending_charset:
                pending += data
                continue
            out.append(_decode_bytes(pending, pending_charset))
        else:
            if pending_charset is not None:
                out.append(_decode_bytes(pending, pending_charset))
            out.append(between)
        pending, pending_charset = data, charset
    if pending_charset is not None:
        out.append(_decode_bytes(pending, pending_charset))
    out.append(value[position:])
    return "".join(out)


def _word_bytes(encoding: str, text: str) -> bytes | None:
    """The bytes an encoded word's text stands for, or None if they cannot be recovered."""
    try:
        if encoding in "qQ":
            return binascii.a2b_qp(text.encode("utf-8", "surrogateescape"), header=True)
        compact = "".join(text.split())
        data = binascii.a2b_base64(compact + "=" * (-len(compact) % 4))
        return data if data or not compact else None
    except (binascii.Error, ValueError):
        return None


def _header_text(headers: dict[str, str], name: str) -> str:
    """The decoded, storable text of header ``name`` ('' if absent)."""
    value = headers.get(name)
    if not value:
        return ""
    return clean_text(_decode_words(_unfold(value))).strip()


def _addresses(headers: dict[str, str], name: str) -> list[dict[str, str]]:
    """The mailboxes in address header ``name``: split on the raw text, then each display name decoded.

    Splitting before decoding keeps a decoded comma (``=?utf-8?b?TcO8bGxlciwgSg==?=``) inside its name;
    an encoded word that carries a raw special (``=?utf-8?q?M=C3=BCller,_J?=``, common though invalid)
    is set aside while splitting.
    """
    value = headers.get(name)
    if not value:
        return []
    text, saved = _set_aside_words(_unfold(value))
    pairs = None if saved else _simple_addresses(text)
    found: list[dict[str, str]] = []
    for display, mailbox in email.utils.getaddresses([text]) if pairs is None else pairs:
        if saved:
            display, mailbox = _restore_words(display, saved), _restore_words(mailbox, saved)
        if mailbox or display:
            display = clean_text(_decode_words(display)).strip() if display else ""
            found.append({"name": display[:255], "email": clean_text(mailbox)[:320]})
    return found


def _simple_addresses(text: str) -> list[tuple[str, str]] | None:
    """What ``email.utils.getaddresses([text])`` gives, for the common shapes only; None for anything else.

    The shapes: ``addr``, ``Display Name <addr>`` and ``"Quoted, Name" <addr>``, comma separated, with
    a dot-atom address (no comments, groups, escapes, route or domain literals).
    """
    pairs = []
    position = 0
    while position < len(text):
        match = _SIMPLE_MAILBOX.match(text, position)
        if match is None:
            return None
        phrase, quoted, routed, bare = match.groups()
        if bare is not None:
            pairs.append(("", bare))
        else:
            pairs.append((quoted if quoted is not None else " ".join(_BLANKS.split(phrase)), routed))
        position = match.end()
    return pairs


def _set_aside_words(text: str) -> tuple[str, list[str]]:
    """``text`` with each encoded word holding an address special replaced by a placeholder atom."""
    if "=?" not in text:
        return text, []
    saved: list[str] = []

    def set_aside(match: re.Match[str]) -> str:
        if not _ADDRESS_SPECIALS.search(match.group(0)):
            return match.group(0)
        saved.append(match.group(0))
        return f"\ue000{len(saved) - 1}\ue001"

    return _ENCODED_WORD.sub(set_aside, text), saved


def _restore_words(text: str, saved: list[str]) -> str:
    if "\ue000" not in text:
        return text
    return _PLACEHOLDER.sub(
        lambda match: saved[int(match.group(1))] if int(match.group(1)) < len(saved) else match.group(0), text
    )


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


def _parse_date(text: str, problems: list[str]) -> datetime | None:
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
    headers = _raw_headers(msg)
    for name in ("from", "to", "cc", "bcc", "reply-to", "subject"):
        try:
            if name == "subject":
                result.subject = _header_text(headers, name)
            elif name == "from":
                senders = _addresses(headers, name)
                if senders:
                    result.from_name, result.from_address = senders[0]["name"], senders[0]["email"]
            else:
                setattr(result, name.replace("-", "_"), _addresses(headers, name))
        except Exception:  # noqa: BLE001 - a malformed header must not sink the message
            problems.append(f"the {name.title()} header is malformed")
    result.message_id = _first_id(_header_text(headers, "message-id"))
    result.in_reply_to = _first_id(_header_text(headers, "in-reply-to"))
    result.references = _all_ids(_header_text(headers, "references"))
    result.date = _parse_date(_header_text(headers, "date"), problems)


# --- Body ---------------------------------------------------------------------------------------


@dataclass
class _PartInfo:
    """What a leaf part's Content-* headers say, each read once."""

    content_type: str
    charset: str | None = None
    disposition: str | None = None
    filename: str = ""
    content_id: str = ""  # without <>


def _content_headers(part: EmailMessage) -> dict[str, str]:
    """The raw Content-* headers of ``part`` (first of each), as Unicode with 8-bit bytes decoded."""
    found: dict[str, str] = {}
    for key, value in part.raw_items():
        name = key.lower()
        if name.startswith("content-") and name not in found:
            found[name] = value if value.isascii() else _unfold(value)
    return found


def _content_type(part: EmailMessage, headers: dict[str, str]) -> str:
    """As ``Message.get_content_type``: the declared type, lower case; text/plain if it is invalid."""
    value = headers.get("content-type")
    if value is None:
        return part.get_default_type()
    ctype = value.partition(";")[0].strip().lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


def _params(headers: dict[str, str], name: str) -> dict[str, str]:
    """The parameters of header ``name`` by lower-case name: the first of each, as ``Message.get_param``
    reads it (RFC 2231 continuations joined, quotes removed, stripped)."""
    value = headers.get(name)
    if not value or ";" not in value:
        return {}
    simple = _simple_params(value)
    return simple if simple is not None else _stdlib_params(value)


def _stdlib_params(value: str) -> dict[str, str]:
    holder = EmailMessage(policy=policy.compat32)
    holder["content-type"] = value  # decoded text: compat32 would otherwise replace raw 8-bit bytes with U+FFFD
    found: dict[str, str] = {}
    for key, param in (holder.get_params() or [])[1:]:
        if key:
            found.setdefault(key.lower(), str(email.utils.collapse_rfc2231_value(param)).strip())
    return found


def _simple_params(value: str) -> dict[str, str] | None:
    """:func:`_params` for plain ``name=token`` and ``name="quoted"`` parameters; None for anything else
    (RFC 2231, escapes, comments, angle brackets, 8-bit text, a parameter without a value)."""
    head, _, rest = value.partition(";")
    if '"' in head or not value.isascii():
        return None
    found: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _SIMPLE_PARAM.match(rest, position)
        if match is None:
            return None if rest[position:].strip() else found
        key, quoted, token = match.groups()
        found.setdefault(key.lower(), (quoted if quoted is not None else token).strip())
        position = match.end()
    return found


def _part_info(part: EmailMessage, headers: dict[str, str]) -> _PartInfo:
    info = _PartInfo(_content_type(part, headers))
    try:
        ct_params = _params(headers, "content-type")
        info.charset = ct_params.get("charset") or None
        disposition = headers.get("content-disposition")
        if disposition is not None:
            info.disposition = disposition.partition(";")[0].strip().lower() or None
        # As Message.get_filename: Content-Disposition filename, else Content-Type name.
        name = _params(headers, "content-disposition").get("filename") or ct_params.get("name", "")
    except Exception:  # noqa: BLE001 - unreadable parameters: treat the part as having none
        logger.debug("unreadable MIME parameters")
        name = ""
    name = _decode_words(name).strip() if "=?" in name else name
    info.filename = clean_text(name).replace("/", "_").replace("\\", "_").strip()[:255]
    if "content-id" in headers:
        info.content_id = _first_id(clean_text(_unfold(headers["content-id"])))[:255]
    return info


def _leaf_parts(msg: EmailMessage, problems: list[str]):
    """Yield (part, info) for the leaf parts, in order; an attached message (message/rfc822) is one leaf, kept as .eml.

    Parts nested deeper than MAX_DEPTH multipart levels are left out, and ``problems`` says so.
    """
    stack: list[tuple[EmailMessage, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        headers = _content_headers(part)
        if part.is_multipart() and not _content_type(part, headers).startswith("message/"):
            payload = part.get_payload()
            if not isinstance(payload, list):
                continue
            if depth >= MAX_DEPTH:
                if payload:
                    problems.append(f"parts nested more than {MAX_DEPTH} levels deep were not read")
                continue
            # A parsed multipart holds messages only (typeshed also allows the str that attach() takes).
            stack.extend((child, depth + 1) for child in reversed(cast("list[EmailMessage]", payload)))
            continue
        yield part, _part_info(part, headers)


# What may make up a base64 body the stdlib decodes without a defect (line breaks aside): see _span_bytes.
_BASE64_BODY = re.compile(rb"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")


def _span_bytes(part: EmailMessage) -> bytes | None:
    """What ``part.get_payload(decode=True)`` returns, decoded straight from the raw bytes; None: ask the stdlib.

    Only the common encodings, and base64 only when it is clean (then the stdlib records no defect either).
    """
    span = getattr(part, "_span", None)
    if span is None:
        return None
    raw, start, end = span
    encoding = str(part.get("content-transfer-encoding", "")).lower()
    if encoding == "quoted-printable":
        return binascii.a2b_qp(memoryview(raw)[start:end])
    if encoding == "base64":
        digits = end - start - raw.count(b"\r", start, end) - raw.count(b"\n", start, end)
        if digits % 4 or not _BASE64_BODY.fullmatch(raw, start, end):
            return None
        return binascii.a2b_base64(memoryview(raw)[start:end])
    if encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return None
    return raw[start:end]


def _part_bytes(part: EmailMessage, ctype: str) -> bytes:
    if ctype.startswith("message/") and part.is_multipart():
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else payload
        if isinstance(inner, EmailMessage):
            with contextlib.suppress(Exception):
                return inner.as_bytes(policy=_EML_POLICY)
        return str(inner).encode("utf-8", "replace")
    span = _span_bytes(part)
    if span is not None:
        return span
    decoded = part.get_payload(decode=True)  # bytes, or None for a multipart
    if isinstance(decoded, bytes):
        return decoded
    payload = part.get_payload()
    return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


def _parse_body(msg: EmailMessage, result: ParsedMessage, problems: list[str]) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    for part, info in _leaf_parts(msg, problems):
        try:
            ctype, disposition, filename = info.content_type, info.disposition, info.filename
            content_id = info.content_id
            if ctype.startswith("multipart/"):  # a multipart whose boundary is missing: show what is there
                ctype = "text/plain"
            is_body_text = (
                ctype in ("text/plain", "text/html")
                and disposition != "attachment"
                and not (filename and disposition == "inline" and not content_id and ctype != "text/html")
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


def _all_parts(msg: EmailMessage):
    """Every part of the tree, however deep (walked without recursion)."""
    stack = [msg]
    while stack:
        part = stack.pop()
        yield part
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend(reversed(cast("list[EmailMessage]", payload)))  # parts only, as in _leaf_parts


def _snippet(result: ParsedMessage) -> str:
    """The first SNIPPET_LENGTH characters of the unquoted text (of the HTML's text when there is no plain text).

    Reads a growing prefix rather than the whole body, so a body of many megabytes is not copied a few
    times over for 200 characters; for plain text the answer is the same as from the whole body. An HTML
    body over _SNIPPET_HTML_WHOLE is read from a prefix cut before its last unclosed tag.
    """
    text = result.text
    use_html = (not text or text.isspace()) and bool(result.html)
    source = result.html if use_html else text
    size = _SNIPPET_HTML_WHOLE if use_html else 1 << 14
    while True:
        whole = size >= len(source)
        piece = source if whole else source[:size]
        if use_html:
            if not whole and piece.rfind("<") > piece.rfind(">"):
                piece = piece[: piece.rfind("<")]
            piece = html_lib.unescape(_TAG.sub(" ", piece))
        lines = [line for line in piece.splitlines() if not line.lstrip().startswith(">")]
        snippet = _SPACE.sub(" ", " ".join(lines)).strip()
        if whole or len(snippet) >= SNIPPET_LENGTH:
            return snippet[:SNIPPET_LENGTH]
        size *= 4
