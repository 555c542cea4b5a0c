"""Pictures pasted into the rich-text editor (data: images) leave as parts of the message, named by cid: in its
HTML, as mail clients send them; the same picture twice is one part."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy

import pytest

from mailbox import compose, outbox
from mailbox.models import OutgoingMessage

pytestmark = pytest.mark.django_db

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_a_pasted_picture_is_sent_as_a_related_part(ui_mail):
    src = "data:image/png;base64," + base64.b64encode(PNG).decode()
    html = f'<p>Look:</p><p><img src="{src}" alt="dot"> and again <img src="{src}"></p>'
    data = {"to": [{"name": "", "email": "bob@example.org"}], "cc": [], "bcc": [], "subject": "Pic",
            "body_format": "html", "body_html": html}  # fmt: skip
    draft = compose.draft_save(draft=None, account=ui_mail.alice_gmail, data=data, files=[], remove_ids=[])
    assert src in draft.body_html  # kept while it is written
    outbox.outgoing_queue(outgoing=draft)
    mail = message_from_bytes(bytes(OutgoingMessage.objects.get(pk=draft.pk).raw), policy=policy.default)

    html_part = mail.get_body(("html",))
    related = [part for part in mail.walk() if part.get_content_type() == "multipart/related"]
    (image,) = [part for part in mail.walk() if part.get_content_type() == "image/png"]
    assert len(related) == 1 and image.get_content() == PNG
    cid = image["Content-ID"].strip("<>")
    sent_html = html_part.get_content()
    assert sent_html.count(f'src="cid:{cid}"') == 2 and "data:image" not in sent_html
    assert "data:image" not in mail.get_body(("plain",)).get_content()


def test_a_broken_picture_is_dropped_not_sent_as_garbage(ui_mail):
    data = {"to": [{"name": "", "email": "bob@example.org"}], "cc": [], "bcc": [], "subject": "Pic",
            "body_format": "html", "body_html": '<p>x<img src="data:image/png;base64,@@@@"></p>'}  # fmt: skip
    draft = compose.draft_save(draft=None, account=ui_mail.alice_gmail, data=data, files=[], remove_ids=[])
    outbox.outgoing_queue(outgoing=draft)
    mail = message_from_bytes(bytes(OutgoingMessage.objects.get(pk=draft.pk).raw), policy=policy.default)
    assert not [part for part in mail.walk() if part.get_content_maintype() == "image"]
