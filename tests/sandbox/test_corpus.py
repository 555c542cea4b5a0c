"""The message generator, the awkward corpus, and `manage.py sandbox_seed`."""

from __future__ import annotations

import collections
import email
import email.header
import re
from datetime import UTC, datetime, timedelta
from email.policy import compat32
from email.policy import default as default_policy

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from sandbox.corpus import CORPUS_DIR, awkward_corpus, generate_messages
from sandbox.gmail.store import GmailStore

OWNER = "owner@gmail.com"
START = datetime(2023, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def generated() -> list[bytes]:
    return list(generate_messages(600, to_address=OWNER, seed=7, start=START))


def test_generation_is_deterministic_by_seed_and_start():
    first = list(generate_messages(50, to_address=OWNER, seed=3, start=START))
    assert first == list(generate_messages(50, to_address=OWNER, seed=3, start=START))
    assert first != list(generate_messages(50, to_address=OWNER, seed=4, start=START))
    assert first != list(generate_messages(50, to_address=OWNER, seed=3, start=START + timedelta(days=1)))
    assert len(list(generate_messages(0, to_address=OWNER))) == 0


def test_generated_mail_is_varied_and_well_formed(generated):
    charsets, types, encodings = collections.Counter(), collections.Counter(), collections.Counter()
    ids, dates, senders = [], [], set()
    replies = encoded_subjects = rfc2231 = owner_sent = 0
    for raw in generated:
        message = email.message_from_bytes(raw, policy=default_policy)
        assert not message.defects
        ids.append(message["Message-ID"])
        dates.append(message["Date"].datetime)
        senders.add(message["From"].addresses[0].addr_spec)
        owner_sent += message["From"].addresses[0].addr_spec == OWNER
        subject_raw = re.search(rb"^Subject: (.*(?:\r\n .*)*)", raw, re.MULTILINE).group(1).decode()
        if "=?" in subject_raw:
            encoded_subjects += 1
            assert not str(message["Subject"]).isascii()
        if message["In-Reply-To"]:
            replies += 1
            assert message["In-Reply-To"] in ids[:-1]  # answers an earlier message
            assert str(message["Subject"]).startswith("Re: ")
            assert message["References"].split()[-1] == message["In-Reply-To"]
        rfc2231 += raw.count(b"filename*=")
        content_ids = set()
        cid_refs = set()
        for part in message.walk():
            types[part.get_content_type()] += 1
            encodings[part.get("Content-Transfer-Encoding", "")] += 1
            if part.get_content_charset():
                charsets[part.get_content_charset()] += 1
            if part["Content-ID"]:
                content_ids.add(part["Content-ID"].strip("<>"))
            if part.get_content_maintype() == "text":
                text = part.get_content()  # decodes in its charset without error
                cid_refs.update(re.findall(r'src="cid:([^"]+)"', text))
            elif not part.is_multipart():
                assert part.get_filename() or part["Content-ID"]
        assert cid_refs <= content_ids  # every inline image is in the message
    assert len(set(ids)) == len(ids)
    assert dates == sorted(dates) and dates[0] >= START and dates[-1] <= START + timedelta(days=731)
    assert dates[-1] - dates[0] > timedelta(days=700)
    assert {"utf-8", "iso-8859-1", "windows-1252", "shift_jis", "koi8-r"} <= set(charsets)
    assert {"gb2312", "gbk"} & set(charsets)
    assert {
        "text/plain",
        "text/html",
        "multipart/alternative",
        "multipart/mixed",
        "multipart/related",
        "image/png",
        "application/pdf",
    } <= set(types)
    assert {"7bit", "8bit", "quoted-printable", "base64"} <= set(encodings)
    assert 0.2 < replies / len(generated) < 0.5 and owner_sent > 30
    assert encoded_subjects > 100 and rfc2231 > 5 and len(senders) > 15


def test_awkward_corpus_has_the_edge_cases_and_parses():
    corpus = dict(awkward_corpus())
    assert len(corpus) >= 20 and all(name.endswith(".eml") for name in corpus)
    assert set(corpus) == {path.name for path in CORPUS_DIR.glob("*.eml")}
    assert b"\r" not in corpus["14-bare-lf.eml"]
    assert b"\n\n" not in corpus["20-headers-only.eml"].replace(b"\r", b"")
    assert re.search(rb"^Subject: .*[\x80-\xff]", corpus["05-8bit-headers.eml"], re.MULTILINE)
    assert b"application/ms-tnef" in corpus["09-tnef-winmail.eml"]
    assert b"text/calendar" in corpus["18-calendar-invite.eml"]
    assert b"MIME-Version" not in corpus["19-non-mime.eml"].split(b"\r\n\r\n")[0]
    first, second = (
        email.message_from_bytes(corpus[name])
        for name in ("12-duplicate-message-id-a.eml", "13-duplicate-message-id-b.eml")
    )
    assert first["Message-ID"] == second["Message-ID"] and first.get_payload() != second.get_payload()
    for name, raw in corpus.items():
        for policy in (compat32, default_policy):
            message = email.message_from_bytes(raw, policy=policy)
            list(message.walk())
            assert message["Subject"] is not None, name


def test_seed_command_writes_and_extends_a_snapshot(tmp_path):
    snapshot = tmp_path / "gmail.json.gz"
    call_command("sandbox_seed", "--email", OWNER, "--count", "40", "--snapshot", str(snapshot))
    call_command("sandbox_seed", "--email", OWNER, "--eml", str(CORPUS_DIR), "--snapshot", str(snapshot))
    mbox = tmp_path / "export.mbox"
    mbox.write_bytes(
        b"From alice@example.org Mon Jan  1 00:00:00 2024\n"
        b"From: alice@example.org\nTo: owner@gmail.com\nSubject: one\nMessage-ID: <m1@x>\n\n"
        b">From the start of a line.\n\n"
        b"From bob@example.org Mon Jan  1 00:00:01 2024\n"
        b"From: bob@example.org\nTo: owner@gmail.com\nSubject: two\nMessage-ID: <m2@x>\n\nSecond.\n"
    )
    call_command("sandbox_seed", "--email", OWNER, "--mbox", str(mbox), "--snapshot", str(snapshot))

    store = GmailStore()
    store.load(snapshot)
    messages = store.messages(OWNER)
    assert len(messages) == 40 + len(awkward_corpus()) + 2
    by_subject = {str(email.message_from_bytes(m.raw)["Subject"]): m for m in messages}
    assert by_subject["one"].raw.endswith(b"\n\nFrom the start of a line.\n")
    assert by_subject["two"].raw.endswith(b"Second.\n")
    labels = collections.Counter(label for m in messages for label in m.label_ids)
    assert labels["SENT"] > 0 and labels["INBOX"] > 0 and labels["UNREAD"] > 0


def test_seed_command_feeds_a_running_sandbox(gmail_api):
    call_command("sandbox_seed", "--email", OWNER, "--count", "250", "--seed", "2", "--url", gmail_api.url)
    assert len(gmail_api.store.messages(OWNER)) == 250
    service = gmail_api.service(OWNER)
    listed = service.users().messages().list(userId="me", labelIds=["SENT"]).execute()
    assert listed["resultSizeEstimate"] > 0
    with pytest.raises(CommandError):
        call_command("sandbox_seed", "--email", OWNER, "--count", "1", "--url", "http://127.0.0.1:1")
