"""mime_parse: decodes or degrades, never raises."""

import base64
import email
import email.utils
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.policy import compat32
from pathlib import Path

import pytest

from mailbox.mime import clean_text, mime_parse
from sandbox.corpus import PEOPLE, generate_messages


def test_plain_message_fields():
    raw = (
        b"Message-ID: <abc@example.org>\r\n"
        b"In-Reply-To: <root@example.org>\r\n"
        b"References: <root@example.org>\r\n <mid@example.org>\r\n"
        b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.org>\r\n"
        b'To: a@example.org, "B, Bee" <b@example.org>\r\n'
        b"Cc: c@example.org\r\n"
        b"Subject: =?utf-8?b?w6l0w6k=?=\r\n"
        b"Date: Tue, 03 Mar 2026 10:00:00 +0100\r\n"
        b"\r\n"
        b"> quoted\r\nHello there\r\n"
    )
    parsed = mime_parse(raw)
    assert parsed.parse_error == ""
    assert parsed.message_id == "abc@example.org"
    assert parsed.in_reply_to == "root@example.org"
    assert parsed.references == ["root@example.org", "mid@example.org"]
    assert (parsed.from_name, parsed.from_address) == ("Renée", "renee@example.org")
    assert parsed.to == [{"name": "", "email": "a@example.org"}, {"name": "B, Bee", "email": "b@example.org"}]
    assert parsed.cc == [{"name": "", "email": "c@example.org"}]
    assert parsed.subject == "été"
    assert parsed.date == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    assert parsed.snippet == "Hello there"


def test_alternative_with_inline_image_and_attachment():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    raw = (
        "From: a@example.org\r\nSubject: pics\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="M"\r\n\r\n'
        '--M\r\nContent-Type: multipart/related; boundary="R"\r\n\r\n'
        '--R\r\nContent-Type: multipart/alternative; boundary="A"\r\n\r\n'
        "--A\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "Gr=FC=DFe\r\n"
        "--A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        '<p>Gr\u00fc\u00dfe <img src="cid:img1@x"></p>\r\n--A--\r\n'
        "--R\r\nContent-Type: image/png\r\nContent-ID: <img1@x>\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: inline\r\n\r\n" + base64.encodebytes(png).decode() + "--R--\r\n"
        '--M\r\nContent-Type: application/pdf; name="r\u00e9sum\u00e9.pdf"\r\n'
        "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"%PDF-1.4 x").decode() + "--M--\r\n"
    ).encode("utf-8")
    parsed = mime_parse(raw)
    assert parsed.text.strip() == "Grüße"
    assert "cid:img1@x" in parsed.html
    inline, pdf = parsed.attachments
    assert (inline.content_id, inline.is_inline, inline.content) == ("img1@x", True, png)
    assert (pdf.filename, pdf.is_inline, pdf.content) == ("résumé.pdf", False, b"%PDF-1.4 x")
    assert parsed.has_attachments


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01\x02 garbage without headers",
        b"Subject: \xff\xfe raw 8bit \xe9t\xe9\r\nFrom: \xe9 <x@y>\r\n\r\nbody \xe9\x00\r\n",
        b"Subject: x\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nbody \xe9\r\n",
        b"Subject: =?bogus-charset?q?abc?= =?utf-8?b?!!!notbase64?=\r\n\r\nx\r\n",
        b'Subject: x\r\nContent-Type: multipart/mixed; boundary="never"\r\n\r\nno boundary here\r\n',
        b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!not base64 at all==\r\n",
        b"Date: not a date at all\r\nFrom: <<<>>>@@@,,,\r\nTo: undisclosed-recipients:;\r\n\r\nbody",
        b"Date: Mon, 32 Foo 99999 99:99:99 +9999\r\nMessage-ID: no-brackets@x\r\n\r\n",
        b'Subject: x\r\nContent-Type: text/plain; charset="utf-7"\r\n\r\n+AGEAYgBj-\r\n',
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 200,
    ],
)
def test_awkward_input_never_raises_and_is_storable(raw):
    parsed = mime_parse(raw)
    for value in [parsed.subject, parsed.text, parsed.html, parsed.from_name, parsed.snippet, parsed.message_id]:
        assert "\x00" not in value
        value.encode("utf-8")  # no lone surrogates


def test_raw_8bit_headers_are_decoded():
    parsed = mime_parse("Subject: café\r\nFrom: José <j@example.org>\r\n\r\nolá".encode())
    assert parsed.subject == "café"
    assert parsed.from_name == "José"
    assert parsed.text == "olá"


def test_latin1_body_mislabelled_as_utf8_degrades():
    parsed = mime_parse(b"Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xe9\r\n")
    assert parsed.text.startswith("café")


def test_unparseable_message_flags_parse_error():
    assert mime_parse(b"").parse_error
    assert mime_parse(b'Subject: x\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\nnone\r\n').parse_error


def test_clean_text_strips_nul_and_surrogates():
    assert clean_text("a\x00b\udce9") == "abé"


def test_adjacent_encoded_words_in_a_display_name_join_without_a_space():
    # RFC 2047 §6.2: the folding whitespace between two encoded words is not part of the text.
    raw = (
        b"From: =?iso-8859-1?B?SOls6G5lIER1Ym9p?=\r\n =?iso-8859-1?B?cw==?= <helene.dubois@exemple.fr>\r\n"
        b"To: =?utf-8?Q?Ren=C3=A9e?= =?utf-8?Q?_Martin?= <renee@example.org>\r\n"
        b"Reply-To: =?utf-8?q?M=C3=BCller,_J?= <m@example.org>\r\n"
        b"Subject: =?utf-8?Q?caf=C3?=\r\n =?utf-8?Q?=A9?= =?iso-8859-1?q?cr=E8me?= au lait\r\n\r\nx"
    )
    parsed = mime_parse(raw)
    assert (parsed.from_name, parsed.from_address) == ("Hélène Dubois", "helene.dubois@exemple.fr")
    assert parsed.to == [{"name": "Renée Martin", "email": "renee@example.org"}]
    assert parsed.reply_to == [{"name": "Müller, J", "email": "m@example.org"}]
    assert parsed.subject == "cafécrème au lait"  # a UTF-8 character split across two words survives
    assert parsed.parse_error == ""


def test_generated_names_have_no_stray_spaces():
    people = {name.replace(" ", ""): name for name, _, _ in PEOPLE}
    seen = set()
    for raw in generate_messages(300, to_address="owner.person@example.org", start=datetime(2024, 1, 1, tzinfo=UTC)):
        parsed = mime_parse(raw)
        headers = email.message_from_bytes(raw, policy=compat32)
        for header, addresses in [
            ("From", [{"name": parsed.from_name, "email": parsed.from_address}]),
            ("To", parsed.to),
            ("Cc", parsed.cc),
        ]:
            expected = [
                (str(make_header(decode_header(name))), mailbox)
                for name, mailbox in email.utils.getaddresses(headers.get_all(header, []))
            ]
            assert [(a["name"], a["email"]) for a in addresses] == expected, (header, raw[:400])
            for address in addresses:
                original = people.get(address["name"].replace(" ", ""))
                if original:
                    assert address["name"] == original
                    seen.add(original)
    assert {"Hélène Dubois", "Ольга Смирнова", "田中 太郎", "Käthe Schröder"} <= seen


def test_headers_and_parameters_degrade_field_by_field():
    raw = (
        b"Subject: =?unknown-8bit?q?=E9t=E9?=\r\n"
        b"From: =?x-bogus?b?w6k=?= <a@example.org>\r\n"
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: text/plain; charset*=utf-8''iso-8859-1\r\n\r\ncaf\xe9\r\n"
        b"--x\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="=?utf-8?B?w6kuZG9j?="\r\n\r\nzz\r\n'
        b"--x\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="r\xc3\xa9sum\xc3\xa9.pdf"\r\n'
        b"\r\n%PDF\r\n--x--\r\n"
    )
    parsed = mime_parse(raw)
    assert (parsed.subject, parsed.from_name) == ("été", "é")
    assert parsed.text.strip() == "café"
    assert [a.filename for a in parsed.attachments] == ["é.doc", "résumé.pdf"]
    assert parsed.parse_error == ""


def _nested(levels: int, *, text: str) -> str:
    """``levels`` multiparts, each the only part of the one above, with ``text`` at the bottom."""
    opening = "".join(f'--n{i}\r\nContent-Type: multipart/mixed; boundary="n{i + 1}"\r\n\r\n' for i in range(levels))
    closing = "".join(f"--n{i}--\r\n" for i in reversed(range(levels)))
    return (
        f'Content-Type: multipart/mixed; boundary="n0"\r\n\r\n{opening}'
        f"--n{levels}\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--n{levels}--\r\n{closing}"
    )


@pytest.mark.parametrize("levels", [60, 3000])
def test_nesting_deeper_than_the_limit_keeps_the_reachable_text_and_says_so(levels):
    from mailbox.mime import MAX_DEPTH

    raw = (
        'From: a@example.org\r\nSubject: Russian dolls\r\nContent-Type: multipart/mixed; boundary="top"\r\n\r\n'
        "--top\r\nContent-Type: text/plain\r\n\r\nOn the surface.\r\n"
        f"--top\r\n{_nested(levels, text='At the bottom.')}\r\n"
        '--top\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"\r\n\r\n%PDF\r\n'
        "--top--\r\n"
    ).encode()
    parsed = mime_parse(raw)
    assert parsed.subject == "Russian dolls"
    assert parsed.text == "On the surface." and "bottom" not in parsed.text
    assert [a.filename for a in parsed.attachments] == ["a.pdf"]
    assert parsed.parse_error == f"parts nested more than {MAX_DEPTH} levels deep were not read"


def test_nesting_within_the_limit_is_read_without_a_flag():
    from mailbox.mime import MAX_DEPTH

    parsed = mime_parse(f"Subject: deep\r\n{_nested(MAX_DEPTH - 1, text='Fifty levels down.')}".encode())
    assert (parsed.text, parsed.parse_error) == ("Fifty levels down.", "")
    corpus = mime_parse((Path(__file__).parents[2] / "sandbox/corpus/22-deeply-nested.eml").read_bytes())
    assert corpus.text.strip() == "Thirty levels down." and corpus.parse_error == ""
