"""The awkward MIME corpus goes through the real Gmail sync: every message stored, raw bytes intact."""

import pytest

from mailbox import sync
from mailbox.models import Attachment, Message
from sandbox.corpus import awkward_corpus

pytestmark = pytest.mark.django_db(transaction=True)

BROKEN = {"03-missing-boundary.eml", "04-truncated-multipart.eml", "15-base64-garbage.eml"}


def test_awkward_corpus_is_stored_with_raw_bytes_and_flags(gmail_account, gmail_mailbox):
    corpus = awkward_corpus()
    assert len(corpus) >= 20
    ids = {gmail_mailbox.deliver(raw): name for name, raw in corpus}
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    stored = {m.remote_id: m for m in Message.objects.filter(account=gmail_account)}
    assert set(stored) == set(ids)
    raws = dict(corpus)
    for remote_id, name in ids.items():
        message = stored[remote_id]
        assert message.raw == raws[name], name
        assert bool(message.parse_error) == (name in BROKEN), (name, message.parse_error)
        for value in (message.subject, message.body_text, message.body_html, message.snippet):
            assert "\x00" not in value
    by_name = {name: stored[remote_id] for remote_id, name in ids.items()}
    assert by_name["21-tricky-encoded-words.eml"].subject.startswith("テスト")
    assert by_name["05-8bit-headers.eml"].subject.startswith("Raw UTF-8 in headers: ¿Qué")
    rfc2231 = Attachment.objects.filter(message=by_name["06-rfc2231-filenames.eml"])
    filenames = set(rfc2231.values_list("filename", flat=True))
    assert "Übersicht Q3 – final.pdf" in filenames
    # Two different mails that share a Message-ID stay two messages.
    assert by_name["12-duplicate-message-id-a.eml"].pk != by_name["13-duplicate-message-id-b.eml"].pk
    inline = Attachment.objects.filter(message=by_name["24-attachment-without-name.eml"], is_inline=True)
    assert inline.exists() and inline.first().content_id
    assert (
        not by_name["24-attachment-without-name.eml"].has_attachments
        or Attachment.objects.filter(message=by_name["24-attachment-without-name.eml"], is_inline=False).exists()
    )
