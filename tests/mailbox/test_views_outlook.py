"""The mail UI over an Outlook account: real Dovecot IMAP/submission checking sandbox-issued tokens.

Read, reply with an attachment (the SMTP sink receives it), and archive (the message leaves INBOX on the server).
"""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from mailbox import sync
from mailbox.models import Message, OutgoingMessage
from tests.fixtures.ui import raw_text_message

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db(transaction=True)]


def test_outlook_read_reply_with_attachment_and_archive(
    client, alice, dovecot, outlook_account, eager_celery, sends_at_once
):
    account = outlook_account()
    raw, mid = raw_text_message(subject="Budget review", body="Please send the numbers.",
                                sender="Olga <olga@example.org>", to=account.email)  # fmt: skip
    dovecot.append(account.email, raw)
    raw2, _ = raw_text_message(subject="Team lunch", body="Friday?", sender="Pat <pat@example.org>", to=account.email)
    dovecot.append(account.email, raw2)
    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    client.force_login(alice)

    inbox = client.get(reverse("mailbox:inbox")).content.decode()
    assert "Budget review" in inbox and "Team lunch" in inbox and account.email in inbox
    message = Message.objects.get(account=account, subject="Budget review")
    assert client.post(reverse("mailbox:thread_read", args=[message.thread_id])).status_code == 204
    assert Message.objects.get(pk=message.pk).is_read

    client.post(reverse("mailbox:compose_from_message", args=[message.id, "reply"]))
    draft = OutgoingMessage.objects.get(account=account)
    response = client.post(reverse("mailbox:draft", args=[draft.id]), {
        "account": account.id, "to": "Olga <olga@example.org>", "subject": draft.subject, "body_format": "text",
        "body_text": "Numbers attached.", "action": "send",
        "files": [SimpleUploadedFile("numbers.csv", b"q,v\nQ3,42\n", content_type="text/csv")],
    })  # fmt: skip
    assert response.status_code == 302
    sent = dovecot.sink.wait_for(1)[0]
    assert "olga@example.org" in sent.rcpt_tos
    mail = message_from_bytes(sent.data, policy=email_policy.default)
    assert mail["In-Reply-To"] == f"<{mid}>" and mail["Subject"] == "Re: Budget review"
    assert [p.get_filename() for p in mail.iter_attachments()] == ["numbers.csv"]
    assert OutgoingMessage.objects.get(pk=draft.pk).status == OutgoingMessage.Status.SENT

    lunch = Message.objects.get(account=account, subject="Team lunch")
    before = len(dovecot.uids(account.email))
    client.post(reverse("mailbox:bulk_action"), {"action": "archive", "threads": [lunch.thread_id], "next": "/"})
    assert len(dovecot.uids(account.email)) == before - 1  # moved out of INBOX on the server
    assert "Team lunch" not in client.get(reverse("mailbox:inbox")).content.decode()
