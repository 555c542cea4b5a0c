"""mime_tree's fast path builds exactly the tree the stdlib's BytesParser(policy=compat32) builds, or steps aside."""

import email.utils
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32

import pytest

from mailbox import mime
from sandbox.corpus import awkward_corpus, generate_messages

STDLIB = BytesParser(policy=compat32)


def _shape(msg: Message) -> tuple:
    """Everything the feed parser sets on a message, recursively."""
    payload = msg._payload
    children = tuple(_shape(part) for part in payload) if isinstance(payload, list) else payload
    return (
        tuple(msg._headers),
        msg.get_unixfrom(),
        msg.get_default_type(),
        msg.preamble,
        msg.epilogue,
        tuple(type(d).__name__ for d in msg.defects),
        children,
    )


def _fast(raw: bytes) -> Message | None:
    return mime._fast_part(raw, 0, len(raw))


def _assert_fast_equals_stdlib(raw: bytes) -> bool:
    """True when the fast path answered (and its answer is the stdlib's)."""
    fast = _fast(raw)
    if fast is not None:
        assert _shape(fast) == _shape(STDLIB.parsebytes(raw))
    assert _shape(mime.mime_tree(raw)) == _shape(STDLIB.parsebytes(raw))
    return fast is not None


@pytest.mark.parametrize("seed", [1, 7])
def test_generated_mail_takes_the_fast_path_and_matches_the_stdlib(seed):
    raws = list(generate_messages(400, to_address="tree@example.org", seed=seed))
    assert all(_assert_fast_equals_stdlib(raw) for raw in raws)
    assert any(_fast(raw).is_multipart() for raw in raws)  # nested multiparts were among them


@pytest.mark.parametrize(("name", "raw"), awkward_corpus(), ids=[name for name, _ in awkward_corpus()])
def test_awkward_corpus_matches_the_stdlib(name, raw):
    _assert_fast_equals_stdlib(raw)


def test_mime_headers_reads_the_headers_as_the_stdlib_header_parser_does():
    raws = [*generate_messages(200, to_address="tree@example.org", seed=5), *(raw for _, raw in awkward_corpus())]
    for raw in [*raws, *EDGES.values()]:
        assert mime.mime_headers(raw)._headers == BytesHeaderParser(policy=compat32).parsebytes(raw)._headers


def _mail(body: bytes, *, boundary: bytes = b"b1", headers: bytes = b"") -> bytes:
    return (
        b"From: a@example.org\r\nSubject: s\r\n"
        + headers
        + b'Content-Type: multipart/mixed; boundary="'
        + boundary
        + b'"\r\n\r\n'
        + body
    )


EDGES = {
    "plain LF endings": b"From: a@example.org\nSubject: x\n\nhello\nworld\n",
    "no body": b"From: a@example.org\r\nSubject: x\r\n",
    "no headers": b"\r\nbody only\r\n",
    "folded header": b"Subject: one\r\n two\r\n\tthree\r\n\r\nx",
    "8-bit header": "Subject: caf\u00e9\r\n\r\nx".encode(),
    "body line where a header should be": b"Subject: x\r\nnot a header\r\n\r\nx",
    "continuation first": b" Subject: x\r\n\r\nx",
    "unix from": b"From someone Tue Mar 3 10:00:00 2026\r\nSubject: x\r\n\r\nx",
    "lone CR": b"Subject: x\r\n\r\nline\rline\r\n",
    "form feed": b"Subject: x\r\n\r\npage\x0cbreak\r\n",
    "empty header name": b": nothing\r\nSubject: x\r\n\r\nx",
    "multipart": _mail(
        b"preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\n\r\ntwo\r\n--b1--\r\nepilogue\r\n"
    ),
    "no preamble, no epilogue": _mail(b"--b1\r\n\r\none\r\n--b1--"),
    "delimiter with trailing space": _mail(b"--b1  \r\n\r\none\r\n--b1-- \r\n"),
    "delimiter lookalike inside a line": _mail(b"--b1\r\n\r\nsee --b1 here\r\n--b1x\r\n--b1--\r\n"),
    "nested": _mail(
        b"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\n\r\nplain\r\n--b2\r\n"
        b"Content-Type: text/html\r\n\r\n<p>x</p>\r\n--b2--\r\n\r\n--b1\r\n\r\nafter\r\n--b1--\r\n"
    ),
    "nested, inner epilogue": _mail(
        b"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\n\r\nx\r\n--b2--\r\ntail\r\n\r\n"
        b"--b1--\r\n"
    ),
    "nested, no line after inner close": _mail(
        b"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\n\r\nx\r\n--b2--\r\n--b1--\r\n"
    ),
    "no closing delimiter": _mail(b"--b1\r\n\r\none\r\n"),
    "closing delimiter first": _mail(b"--b1--\r\n--b1\r\n\r\none\r\n"),
    "no delimiter at all": _mail(b"just text\r\n"),
    "two delimiters in a row": _mail(b"--b1\r\n--b1\r\n\r\none\r\n--b1--\r\n"),
    "part without headers or blank line": _mail(b"--b1\r\nno headers here\r\n--b1--\r\n"),
    "base64 multipart": _mail(b"--b1\r\n\r\none\r\n--b1--\r\n", headers=b"Content-Transfer-Encoding: base64\r\n"),
    "no boundary parameter": b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\none\r\n--x--\r\n",
    "digest": b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in\r\n\r\nx\r\n--d--\r\n",
    "attached message": b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n",
    "quoted boundary with specials": _mail(b"--a.b+c\r\n\r\none\r\n--a.b+c--\r\n", boundary=b"a.b+c"),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_edge_cases_match_the_stdlib(name):
    _assert_fast_equals_stdlib(EDGES[name])


def test_the_fast_path_declines_what_the_stdlib_flags_as_defective():
    for name in (
        "body line where a header should be",
        "continuation first",
        "no closing delimiter",
        "closing delimiter first",
        "no delimiter at all",
        "no boundary parameter",
        "base64 multipart",
    ):
        assert _fast(EDGES[name]) is None, name
        assert STDLIB.parsebytes(EDGES[name]).defects or any(
            part.defects for part in STDLIB.parsebytes(EDGES[name]).walk()
        ), name


# --- The fast paths for address lists and MIME parameters agree with email.utils / Message.get_param ---


def _header_values(names: tuple[str, ...]) -> list[str]:
    raws = [*generate_messages(300, to_address="tree@example.org", seed=3), *(raw for _, raw in awkward_corpus())]
    values = []
    for raw in raws:
        for part in STDLIB.parsebytes(raw).walk():
            values += [mime._unfold(value) for key, value in part.raw_items() if key.lower() in names]
    return values


ADDRESS_EDGES = [
    "a@example.org",
    "  a@example.org  ",
    "A B <a@example.org>",
    "A   B\t<a@example.org>",
    "A.B. <a@x.org>",
    '"Smith, J" <j@x.org>, k@y.org',
    '" padded " <p@x.org>',
    '"" <e@x.org>',
    "a@x.org,",
    "a@x.org, , b@y.org",
    "José <j@x.org>",
    "名字 <n@x.org>",
    "A\u00a0B <a@x.org>",
    "=?utf-8?q?Ren=C3=A9e?= <r@x.org>",
    "a@x.org (comment)",
    "Group: a@x.org, b@y.org;",
    '"A \\"B\\"" <a@x.org>',
    "<a@x.org>",
    "a @ x.org",
    "A <a@[127.0.0.1]>",
    "A <@route:a@x.org>",
    "undisclosed-recipients:;",
    "plain words",
    "A <a..b@x.org>",
    '"A" B <a@x.org>',
    "a@x.org b@y.org",
    "A <a@x.org> trailing",
]


def test_simple_addresses_agree_with_email_utils():
    samples = _header_values(("from", "to", "cc", "reply-to")) + ADDRESS_EDGES
    taken = 0
    for text in samples:
        fast = mime._simple_addresses(text)
        if fast is not None:
            taken += 1
            assert fast == email.utils.getaddresses([text]), text
    assert taken > len(samples) * 0.8  # the common shapes do take the fast path


PARAM_EDGES = [
    'text/plain; charset="utf-8"; format=flowed',
    "text/plain;charset=UTF-8;",
    'attachment; filename="a;b.pdf"',
    'attachment; filename=" spaced.pdf "',
    "attachment; filename=",
    "text/plain; charset",
    "text/plain; ; a=b",
    "attachment; filename*=utf-8''%E2%82%AC.pdf",
    'attachment; filename*0="a"; filename*1="b.pdf"',
    'attachment; filename="<angle>.pdf"',
    "text/plain; charset=<x>",
    'a; b="c\\"d"',
    "a; b=c (comment)",
    'text/plain; CHARSET="x"; charset="y"',
    'multipart/mixed;\r\n boundary="=_b"',
    'x"; a=b',
    "a; b=c d",
]


def test_simple_params_agree_with_get_params():
    samples = _header_values(("content-type", "content-disposition")) + PARAM_EDGES
    taken = 0
    for value in samples:
        fast = mime._simple_params(value)
        if fast is not None:
            taken += 1
            assert fast == mime._stdlib_params(value), value
    assert taken > len(samples) * 0.8
