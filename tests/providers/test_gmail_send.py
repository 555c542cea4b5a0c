"""Sending through the outbox with messages.send: headers, threadId, attachments, never twice."""

from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.utils import timezone

from mailbox import services
from mailbox.models import Message, OutgoingAttachment, OutgoingMessage
from mailbox.store import blob_store

pytestmark = pytest.mark.django_db(transaction=True)


def _outgoing(account, **kwargs):
    values = {
        "to": [{"name": "Bob Example", "email": "bob@example.org"}],
        "cc": [{"name": "", "email": "carol@example.org"}],
        "subject": "Quarterly numbers",
        "body_text": "Hi Bob,\nthe numbers are attached.",
        "body_html": "<p>Hi Bob,<br>the numbers are attached.</p>",
    }
    values.update(kwargs)
    return OutgoingMessage.objects.create(account=account, **values)


def test_send_new_message_with_attachment(gmail_account, gmail_mailbox):
    services.account_sync(account_id=gmail_account.pk)
    outgoing = _outgoing(gmail_account)
    blob = blob_store(content=b"a,b\n1,2\n")
    OutgoingAttachment.objects.create(outgoing=outgoing, blob=blob, filename="numbers.csv", content_type="text/csv")
    services.outgoing_queue(outgoing=outgoing)
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.QUEUED and outgoing.message_id and outgoing.raw
    frozen = bytes(outgoing.raw)

    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "ok"
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.SENT and outgoing.remote_id and outgoing.sent_at
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert sent.raw == frozen and sent.requested_thread_id is None
    mime = message_from_bytes(sent.raw, policy=policy.default)
    assert mime["Message-ID"] == f"<{outgoing.message_id}>"
    assert mime["To"] == "Bob Example <bob@example.org>" and mime["Cc"] == "carol@example.org"
    assert gmail_account.email in mime["From"]
    (attachment,) = list(mime.iter_attachments())
    assert attachment.get_filename() == "numbers.csv" and attachment.get_content() == "a,b\n1,2\n"
    # It shows in the local Sent folder right away, under Gmail's id and thread.
    local = Message.objects.get(account=gmail_account, remote_id=outgoing.remote_id)
    assert [f.remote_id for f in local.folders.all()] == ["SENT"] and local.is_read
    assert local.thread.remote_id == sent.thread_id
    # The next sync finds nothing new to add.
    services.account_sync(account_id=gmail_account.pk)
    assert Message.objects.filter(account=gmail_account, message_id=outgoing.message_id).count() == 1


def test_reply_carries_thread_and_reference_headers(gmail_account, gmail_mailbox, make_raw):
    root = make_raw(subject="Lunch?", sender="Bob <bob@example.org>", message_id="root.1@example.org")
    gmail_mailbox.deliver(root)
    answer = make_raw(
        subject="Re: Lunch?", sender="Bob <bob@example.org>", message_id="second.2@example.org",
        in_reply_to="root.1@example.org", references="<root.1@example.org>",
    )
    gmail_mailbox.deliver(answer)
    services.account_sync(account_id=gmail_account.pk)
    source = Message.objects.get(account=gmail_account, message_id="second.2@example.org")
    outgoing = _outgoing(
        gmail_account, kind=OutgoingMessage.Kind.REPLY, source=source, subject="Re: Lunch?", body_html="",
        to=[{"name": "Bob", "email": "bob@example.org"}], cc=[],
    )
    services.outgoing_queue(outgoing=outgoing)
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "ok"
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert sent.requested_thread_id == source.thread.remote_id == sent.thread_id
    mime = message_from_bytes(sent.raw, policy=policy.default)
    assert mime["In-Reply-To"] == "<second.2@example.org>"
    assert mime["References"].split() == ["<root.1@example.org>", "<second.2@example.org>"]
    outgoing.refresh_from_db()
    local = Message.objects.get(account=gmail_account, remote_id=outgoing.remote_id)
    assert local.thread_id == source.thread_id
    source.thread.refresh_from_db()
    assert source.thread.message_count == 3


def test_send_is_never_repeated(gmail_account, gmail_mailbox):
    outgoing = _outgoing(gmail_account)
    services.outgoing_queue(outgoing=outgoing)
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "ok"
    # A duplicate task for a sent row does nothing.
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "busy"
    # A worker that died after Gmail accepted the message but before recording it: the row is stuck
    # in "sending". The retry finds the message at Gmail (rfc822msgid:) instead of sending it again.
    remote_id = OutgoingMessage.objects.get(pk=outgoing.pk).remote_id
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(status=OutgoingMessage.Status.SENDING, remote_id="")
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "busy"  # maybe still in progress
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "ok"
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.SENT and outgoing.remote_id == remote_id
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1


def test_temporary_failure_retries_the_same_bytes_once(gmail_account, gmail_mailbox):
    outgoing = _outgoing(gmail_account)
    services.outgoing_queue(outgoing=outgoing)
    gmail_mailbox.store.fail_next(3, status=503, method="messages.send", email=gmail_mailbox.email)
    result = services.outgoing_send(outgoing_id=outgoing.pk)
    assert result.outcome == "retry" and result.retry_after
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.QUEUED and "503" in outgoing.last_error
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "ok"
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert sent.raw == bytes(OutgoingMessage.objects.get(pk=outgoing.pk).raw)


def test_failure_is_kept_with_its_reason_and_can_be_retried(gmail_account, gmail_mailbox, sandbox_settings):
    outgoing = _outgoing(gmail_account)
    services.outgoing_queue(outgoing=outgoing)
    sandbox_settings.tokens.revoke_user(gmail_account.email)
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "stopped"
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.FAILED and "Reconnect" in outgoing.last_error
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []
    # The user reconnects (fresh tokens), then retries.
    from tests.fixtures.mail import GOOGLE_SCOPES

    common = {"provider": "google", "client_id": "x", "email": gmail_account.email, "scopes": GOOGLE_SCOPES}
    gmail_account.refresh_from_db()
    gmail_account.access_token = sandbox_settings.tokens.issue(kind="access", lifetime=3600, **common).value
    gmail_account.status = gmail_account.Status.ACTIVE
    gmail_account.save()
    services.outgoing_retry(outgoing=outgoing)
    assert outgoing.status == OutgoingMessage.Status.QUEUED
    assert services.outgoing_send(outgoing_id=outgoing.pk).outcome == "ok"
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1
