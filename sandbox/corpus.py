"""Realistic and awkward RFC 5322 messages for the sandbox mailboxes, tests and benchmarks.

``generate_messages`` builds mail by string templates (fast: 10,000 messages in about a second):
threads with In-Reply-To/References, many senders, plain/HTML/multipart-alternative bodies,
attachments, inline ``cid:`` images, and several charsets and transfer encodings, with dates
spread over two years. The same ``seed`` and ``start`` always give the same bytes.

``awkward_corpus`` loads the hand-written edge cases in ``sandbox/corpus/*.eml``.
"""

from __future__ import annotations

import base64
import binascii
import html
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
SPAN = timedelta(days=730)
CRLF = "\r\n"


@dataclass(frozen=True)
class Language:
    code: str
    charsets: tuple[str, ...]  # the charsets this language is sent in (first is the most common)
    utc_offset: int  # minutes
    subjects: tuple[str, ...]
    sentences: tuple[str, ...]
    greeting: str
    closing: str


LANGUAGES = {
    "en": Language(
        "en",
        ("utf-8", "us-ascii"),
        -300,
        (
            "Quarterly report",
            "Lunch on Friday?",
            "Project kickoff",
            "Invoice #{n}",
            "Design review notes",
            "Your order has shipped",
            "Travel plans",
            "Budget for next year",
            "Team offsite agenda",
            "Question about the API",
            "Weekly update",
            "Contract draft v{n}",
        ),
        (
            "Please find the latest numbers below.",
            "Let me know what you think when you have a minute.",
            "We moved the meeting to Thursday at 3pm.",
            "The build is green again after the fix.",
            "Could you review the attached document before Monday?",
            "Thanks for the quick turnaround!",
            "I have added a few comments inline.",
            "The customer asked for a revised estimate.",
            "All tests pass on the staging environment.",
            "We should talk about the roadmap soon.",
        ),
        "Hi {name},",
        "Best regards,",
    ),
    "fr": Language(
        "fr",
        ("iso-8859-1", "utf-8"),
        60,
        (
            "Réunion de l'équipe",
            "Compte rendu de la séance",
            "Déjeuner à la cantine",
            "Facture n°{n}",
            "Congés d'été",
            "Révision du budget",
            "Présentation à Genève",
        ),
        (
            "Voici le compte rendu de la réunion de mercredi.",
            "Pourriez-vous vérifier les chiffres élevés ?",
            "Le café est prêt à côté de la salle à manger.",
            "Merci d'avance pour votre réponse rapide.",
            "Nous avons déplacé la séance à jeudi après-midi.",
            "À très bientôt, j'espère.",
        ),
        "Bonjour {name},",
        "Bien cordialement,",
    ),
    "de": Language(
        "de",
        ("windows-1252", "iso-8859-1", "utf-8"),
        60,
        (
            "Besprechung am Dienstag",
            "Änderungen im Vertrag",
            "Grüße aus München",
            "Rechnung Nr. {n}",
            "Überstunden im März",
            "Schöne Feiertage",
        ),
        (
            "Anbei die überarbeitete Fassung des Dokuments.",
            "Können wir das Gespräch auf Freitag verschieben?",
            "Die Größe der Datei übersteigt das Limit.",
            "Vielen Dank für die schnelle Rückmeldung!",
            "Bitte prüfen Sie die Änderungen bis Montag.",
            "Das Büro bleibt über Weihnachten geschlossen.",
        ),
        "Hallo {name},",
        "Viele Grüße,",
    ),
    "smart": Language(
        "smart",
        ("windows-1252",),
        -480,
        ("“Quick” question", "Re-org – what’s next", "Costs in € for Q{n}", "Don’t forget the “all hands”"),
        (
            "Here’s the “final” version – hopefully.",
            "It costs €120 per seat… not bad.",
            "We’re “almost” done — one more review.",
            "Thanks • see you at the offsite.",
        ),
        "Hey {name},",
        "Cheers,",
    ),
    "zh": Language(
        "zh",
        ("gb2312", "gbk", "utf-8"),
        480,
        ("会议通知", "关于下周的安排", "项目进度报告", "请查收附件", "年终总结", "发票第{n}号"),
        (
            "你好，会议安排在明天下午三点。",
            "请查收附件中的报告。",
            "我们已经完成了第一阶段的工作。",
            "如有问题请随时联系我。",
            "谢谢你的帮助！",
            "下周一之前请把资料发给我。",
        ),
        "{name}，你好：",
        "此致敬礼",
    ),
    "ja": Language(
        "ja",
        ("shift_jis", "utf-8"),
        540,
        ("会議のお知らせ", "資料送付の件", "来週の予定について", "請求書第{n}号", "お見積りのご依頼"),
        (
            "お世話になっております。",
            "会議の資料を送付いたします。",
            "ご確認のほどよろしくお願いいたします。",
            "来週の月曜日に打ち合わせをお願いできますか。",
            "ご質問があればお気軽にご連絡ください。",
        ),
        "{name}様",
        "よろしくお願いいたします。",
    ),
    "ru": Language(
        "ru",
        ("koi8-r", "utf-8", "windows-1251"),
        180,
        ("Отчёт за квартал", "Встреча в понедельник", "Счёт N {n}", "Планы на неделю", "Привет из Москвы"),
        (
            "Здравствуйте! Отправляю отчёт за квартал.",
            "Давайте обсудим это на встрече в понедельник.",
            "Спасибо за быстрый ответ!",
            "Файл слишком большой, отправлю ссылку.",
            "Всё готово к запуску.",
        ),
        "Здравствуйте, {name}!",
        "С уважением,",
    ),
    "emoji": Language(
        "emoji",
        ("utf-8",),
        0,
        ("🎉 Party on Friday", "Launch day 🚀", "Coffee? ☕", "Ünïcödé test ✓ #{n}"),
        (
            "We shipped it 🚀🚀",
            "See you at the café ☕ around 10.",
            "Great job everyone 👏 — really.",
            "Naïve façade, smörgåsbord, 東京, Ελληνικά, עברית, العربية.",
        ),
        "Hey {name} 👋",
        "Cheers 🙌",
    ),
}

PEOPLE = (
    ("Alice Martin", "alice.martin@example.com", "en"),
    ("Bob Stone", "bob@stone.example.net", "en"),
    ("Carol O'Neil", "carol.oneil@example.org", "en"),
    ("Dave Kim", "dkim@startup.example", "en"),
    ("Erin Walsh", "erin@agency.example", "smart"),
    ("Frank Li", "frank.li@example.com", "smart"),
    ("Hélène Dubois", "helene.dubois@exemple.fr", "fr"),
    ("François Léger", "f.leger@exemple.fr", "fr"),
    ("Jürgen Müller", "j.mueller@beispiel.de", "de"),
    ("Käthe Schröder", "k.schroeder@beispiel.de", "de"),
    ("王伟", "wang.wei@example.cn", "zh"),
    ("李娜", "li.na@example.cn", "zh"),
    ("田中 太郎", "tanaka@example.jp", "ja"),
    ("佐藤 花子", "hanako.sato@example.jp", "ja"),
    ("Иван Петров", "ivan.petrov@example.ru", "ru"),
    ("Ольга Смирнова", "olga@example.ru", "ru"),
    ("Zoë Quinn", "zoe@emoji.example", "emoji"),
    ("GitHub", "noreply@github.example", "en"),
    ("Newsletter Team", "news@shop.example", "emoji"),
    ("Grace Hopper", "grace@navy.example", "en"),
)

# A 1x1 transparent PNG for inline images.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def _pdf(*lines: str) -> bytes:
    """A one-page A4 PDF showing ``lines`` (ASCII) in Helvetica, with a correct cross-reference table."""
    text = " ".join(f"({line}) Tj 0 -22 Td" for line in lines)
    stream = f"BT /F1 16 Tf 72 760 Td {text} ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


ATTACHMENTS = (
    ("report-{n}.pdf", "application/pdf", _pdf("Quarterly report", "Revenue: 42", "Costs: 17")),
    ("data-{n}.csv", "text/csv", b"id,name,amount\r\n1,alpha,10.5\r\n2,beta,7\r\n"),
    ("photo-{n}.png", "image/png", PNG),
    (
        "Präsentation {n}.pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        b"PK\x03\x04",
    ),
    ("résumé-{n}.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", b"PK\x03\x04"),
    ("会议纪要{n}.txt", "text/plain", "会议纪要\r\n".encode()),
    ("archive-{n}.zip", "application/zip", b"PK\x03\x04"),
)


@dataclass
class _Thread:
    subject: str
    language: Language
    charset: str
    references: list[str]
    people: list[tuple[str, str, str]]
    last_text: str
    replies: int = 0
    extra: dict = field(default_factory=dict)


# --- encoders ---------------------------------------------------------------------------------------
def _encoded_words(text: str, charset: str, rng: random.Random) -> str:
    """RFC 2047: ``text`` as encoded words (B or Q) folded under 76 columns; ASCII stays plain."""
    if text.isascii():
        return text
    if charset in ("us-ascii",):
        charset = "utf-8"
    use_q = charset in ("iso-8859-1", "windows-1252", "utf-8") and rng.random() < 0.5
    words, chunk = [], 8 if charset in ("utf-8",) else 12
    for index in range(0, len(text), chunk):
        data = text[index : index + chunk].encode(charset)
        if use_q:
            encoded = binascii.b2a_qp(data, header=True).decode("ascii").replace("?", "=3F")
            words.append(f"=?{charset}?Q?{encoded}?=")
        else:
            words.append(f"=?{charset}?B?{base64.b64encode(data).decode('ascii')}?=")
    return (CRLF + " ").join(words)


def _address(name: str, email: str, charset: str, rng: random.Random) -> str:
    if name.isascii():
        needs_quotes = any(ch in name for ch in "'.,")
        return f'"{name}" <{email}>' if needs_quotes else f"{name} <{email}>"
    try:
        name.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    return f"{_encoded_words(name, charset, rng)} <{email}>"


def _transfer(data: bytes, charset: str, rng: random.Random) -> tuple[str, str]:
    """(Content-Transfer-Encoding, encoded body) for text in ``charset``."""
    if data.isascii():
        return "7bit", data.decode("ascii")
    if charset in ("iso-8859-1", "windows-1252", "utf-8") and rng.random() < 0.6:
        encoded = binascii.b2a_qp(data).decode("ascii").replace("\n", CRLF)
        return "quoted-printable", encoded
    if charset in ("koi8-r", "windows-1251") and rng.random() < 0.5:
        return "8bit", data.decode("latin-1")  # written back as the same bytes
    return "base64", base64.encodebytes(data).decode("ascii").replace("\n", CRLF)


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii").replace("\n", CRLF)


# --- message parts -------------------------------------------------------------------------------------
def _text_part(text: str, subtype: str, charset: str, rng: random.Random) -> str:
    data = text.replace("\n", CRLF).encode(charset)
    cte, body = _transfer(data, charset, rng)
    return (
        f'Content-Type: text/{subtype}; charset="{charset}"{CRLF}'
        f"Content-Transfer-Encoding: {cte}{CRLF}{CRLF}{body.rstrip(CRLF)}{CRLF}"
    )


def _html(paragraphs: list[str], charset: str, *, image_cid: str | None, table: bool) -> str:
    rows = "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs)
    if table:
        rows += (
            '<table border="1" cellpadding="4" style="border-collapse:collapse">\n'
            "<tr><th>Item</th><th>Qty</th><th>Price</th></tr>\n"
            "<tr><td>Widget</td><td>3</td><td>9.99</td></tr>\n"
            "<tr><td>Gadget</td><td>1</td><td>24.50</td></tr>\n</table>\n"
        )
    if image_cid:
        rows += f'<p><img src="cid:{image_cid}" alt="logo" width="1" height="1"></p>\n'
    return (
        f'<html><head><meta http-equiv="Content-Type" content="text/html; charset={charset}">'
        f"<style>p {{ font-family: sans-serif; }}</style></head>\n<body>\n{rows}</body></html>\n"
    )


def _filename_params(name: str, rng: random.Random) -> str:
    if name.isascii():
        return f'filename="{name}"'
    if rng.random() < 0.5:  # RFC 2231, as Thunderbird and Apple Mail write it
        return f"filename*=utf-8''{quote(name)}"
    return f'filename="{_encoded_words(name, "utf-8", rng)}"'  # RFC 2047 in a parameter, as Outlook does


def _attachment(n: int, rng: random.Random) -> str:
    template, ctype, magic = rng.choice(ATTACHMENTS)
    name = template.format(n=n)
    size = rng.randint(20_000, 120_000) if rng.random() < 0.03 else rng.randint(200, 6_000)
    data = magic if ctype == "image/png" else magic + rng.randbytes(size)
    params = _filename_params(name, rng)
    type_name = f'; name="{name}"' if name.isascii() else ""
    return (
        f"Content-Type: {ctype}{type_name}{CRLF}Content-Disposition: attachment; {params}{CRLF}"
        f"Content-Transfer-Encoding: base64{CRLF}{CRLF}{_b64(data)}"
    )


def _multipart(subtype: str, parts: list[str], boundary: str, extra: str = "") -> str:
    body = "".join(f"--{boundary}{CRLF}{part}{CRLF}" for part in parts)
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra}{CRLF}{CRLF}'
        f"This is a multi-part message in MIME format.{CRLF}{CRLF}{body}--{boundary}--{CRLF}"
    )


def _inline_image(cid: str) -> str:
    return (
        f'Content-Type: image/png; name="logo.png"{CRLF}Content-Transfer-Encoding: base64{CRLF}'
        f'Content-ID: <{cid}>{CRLF}Content-Disposition: inline; filename="logo.png"{CRLF}{CRLF}{_b64(PNG)}'
    )


def _body(text: str, paragraphs: list[str], charset: str, n: int, rng: random.Random, stamp: str) -> str:
    roll = rng.random()
    boundary = f"=_{stamp}_{n:06d}_{{}}"
    if roll < 0.33:
        return _text_part(text, "plain", charset, rng)
    if roll < 0.41:
        return _text_part(_html(paragraphs, charset, image_cid=None, table=rng.random() < 0.5), "html", charset, rng)
    cid = f"img{n}.{stamp}@corpus.example" if roll >= 0.88 else None
    markup = _html(paragraphs, charset, image_cid=cid, table=rng.random() < 0.3)
    alternative = _multipart(
        "alternative",
        [_text_part(text, "plain", charset, rng), _text_part(markup, "html", charset, rng)],
        boundary.format("alt"),
    )
    if cid:
        alternative = _multipart(
            "related", [alternative, _inline_image(cid)], boundary.format("rel"), '; type="multipart/alternative"'
        )
    if roll < 0.66:
        return alternative
    files = [_attachment(n * 10 + index, rng) for index in range(1 if rng.random() < 0.8 else 2)]
    return _multipart("mixed", [alternative, *files], boundary.format("mix"))


# --- generator --------------------------------------------------------------------------------------------
def _paragraphs(language: Language, rng: random.Random) -> list[str]:
    count = rng.randint(1, 4)
    return [
        " ".join(rng.sample(language.sentences, k=min(len(language.sentences), rng.randint(1, 3))))
        for _ in range(count)
    ]


def _default_start() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - SPAN


def generate_messages(n: int, *, to_address: str, seed: int = 0, start: datetime | None = None) -> Iterator[bytes]:
    """Yield ``n`` RFC 5322 messages for the mailbox ``to_address``, oldest first.

    Dates run from ``start`` (default: two years before today, midnight UTC) over two years, so the
    output is byte-identical for the same (n, to_address, seed, start). About one in three messages
    answers an earlier thread (In-Reply-To/References, "Re:"), some of them written by the owner.
    """
    rng = random.Random(seed)
    begin = start or _default_start()
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    owner_name = to_address.split("@")[0].replace(".", " ").title()
    stamp = f"{seed:x}"
    threads: list[_Thread] = []
    for index in range(n):
        when = begin + SPAN * ((index + rng.random()) / max(n, 1))
        thread = rng.choice(threads[-40:]) if threads and rng.random() < 0.35 else None
        if thread is None:
            person = rng.choice(PEOPLE)
            language = LANGUAGES[person[2]]
            charset = rng.choice(language.charsets)
            subject = rng.choice(language.subjects).format(n=index + 1)
            thread = _Thread(subject, language, charset, [], [person], "")
            threads.append(thread)
            sender, recipient = person, None
        else:
            thread.replies += 1
            if rng.random() < 0.3:
                sender, recipient = None, thread.people[-1]  # the owner answers
            else:
                sender = rng.choice(_writers(thread.charset)) if rng.random() < 0.3 else thread.people[0]
                recipient = None
                if sender not in thread.people:
                    thread.people.append(sender)
        yield _message(index, when, thread, sender, recipient, owner_name, to_address, rng, stamp)


def _writers(charset: str) -> tuple[tuple[str, str, str], ...]:
    """The people whose names can be written in ``charset`` (they sign the body)."""
    if charset not in _WRITERS:
        fits = []
        for person in PEOPLE:
            try:
                person[0].encode(charset)
            except UnicodeEncodeError:
                continue
            fits.append(person)
        _WRITERS[charset] = tuple(fits)
    return _WRITERS[charset]


_WRITERS: dict[str, tuple[tuple[str, str, str], ...]] = {}


def _message(
    index: int,
    when: datetime,
    thread: _Thread,
    sender: tuple[str, str, str] | None,
    recipient: tuple[str, str, str] | None,
    owner_name: str,
    owner: str,
    rng: random.Random,
    stamp: str,
) -> bytes:
    language, charset = thread.language, thread.charset
    domain = (sender[1] if sender else owner).split("@")[1]
    message_id = f"<{stamp}.{index}.{rng.getrandbits(40):010x}@{domain}>"
    reply = bool(thread.references)
    subject = ("Re: " if reply else "") + thread.subject
    offset = timezone(timedelta(minutes=language.utc_offset if sender else 0))
    if sender:
        from_header = _address(sender[0], sender[1], charset, rng)
        to_header = _address(owner_name, owner, charset, rng)
        greeting_name = owner_name
    else:
        from_header = _address(owner_name, owner, "utf-8", rng)
        assert recipient is not None
        to_header = _address(recipient[0], recipient[1], charset, rng)
        greeting_name = recipient[0]
    paragraphs = _paragraphs(language, rng)
    text = "\n\n".join(
        [
            language.greeting.format(name=greeting_name),
            *paragraphs,
            language.closing,
            sender[0] if sender else owner_name,
        ]
    )
    if reply and thread.last_text:
        text += "\n\n" + "\n".join("> " + line for line in thread.last_text.splitlines()[:8])
    headers = [
        f"Return-Path: <{sender[1] if sender else owner}>",
        f"Received: from mx.{domain} (mx.{domain} [192.0.2.{index % 250 + 1}]) by mx.google.example "
        f"with ESMTPS id {index:x}; {format_datetime(when.astimezone(UTC))}",
        f"Date: {format_datetime(when.astimezone(offset))}",
        f"From: {from_header}",
        f"To: {to_header}",
    ]
    if rng.random() < 0.15:
        other = rng.choice(PEOPLE)
        headers.append(f"Cc: {_address(other[0], other[1], charset, rng)}")
    headers += [f"Subject: {_encoded_words(subject, charset, rng)}", f"Message-ID: {message_id}"]
    if reply:
        refs = thread.references[:1] + thread.references[-9:] if len(thread.references) > 10 else thread.references
        headers += [f"In-Reply-To: {thread.references[-1]}", "References: " + (CRLF + " ").join(refs)]
    headers += ["MIME-Version: 1.0", f"X-Mailer: Corpus/{index % 5}"]
    thread.references.append(message_id)
    thread.last_text = text
    body = _body(text, paragraphs, charset, index, rng, stamp)
    # Every header is ASCII and every body part is already in its transfer encoding; 8bit parts were
    # carried as latin-1 code points, so latin-1 gives back their exact bytes.
    return (CRLF.join(headers) + CRLF + body).encode("latin-1")


def awkward_corpus() -> list[tuple[str, bytes]]:
    """The hand-written edge cases: (file name, raw bytes), sorted by name."""
    return [(path.name, path.read_bytes()) for path in sorted(CORPUS_DIR.glob("*.eml"))]
