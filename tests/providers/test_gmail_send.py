"""Sending through the outbox with messages.send: headers, threadId, attachments, never twice."""

from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.utils import timezone

from mailbox import outbox, sync
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
    sync.account_sync(account_id=gmail_account.pk)
    outgoing = _outgoing(gmail_account)
    blob = blob_store(content=b"a,b\n1,2\n")
    OutgoingAttachment.objects.create(outgoing=outgoing, blob=blob, filename="numbers.csv", content_type="text/csv")
    outbox.outgoing_queue(outgoing=outgoing)
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.QUEUED and outgoing.message_id and outgoing.raw
    frozen = bytes(outgoing.raw)

    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
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
    sync.account_sync(account_id=gmail_account.pk)
    assert Message.objects.filter(account=gmail_account, message_id=outgoing.message_id).count() == 1


def test_reply_carries_thread_and_reference_headers(gmail_account, gmail_mailbox, make_raw):
    root = make_raw(subject="Lunch?", sender="Bob <bob@example.org>", message_id="root.1@example.org")
    gmail_mailbox.deliver(root)
    answer = make_raw(
        subject="Re: Lunch?",
        sender="Bob <bob@example.org>",
        message_id="second.2@example.org",
        in_reply_to="root.1@example.org",
        references="<root.1@example.org>",
    )
    gmail_mailbox.deliver(answer)
    sync.account_sync(account_id=gmail_account.pk)
    source = Message.objects.get(account=gmail_account, message_id="second.2@example.org")
    outgoing = _outgoing(
        gmail_account,
        kind=OutgoingMessage.Kind.REPLY,
        source=source,
        subject="Re: Lunch?",
        body_html="",
        to=[{"name": "Bob", "email": "bob@example.org"}],
        cc=[],
    )
    outbox.outgoing_queue(outgoing=outgoing)
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
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


def test_send_is_never_repeated(gmail_account, gmail_mailbox, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    outgoing = _outgoing(gmail_account)
    outbox.outgoing_queue(outgoing=outgoing)
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    # A duplicate task for a sent row does nothing.
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "nothing"
    # A worker that died after Gmail accepted the message but before recording it: the row is stuck
    # in "sending" with its handoff recorded. While the dead worker's lease holds, a task comes back later;
    # once it ran out, the message is found at Gmail (rfc822msgid:) instead of being sent again.
    remote_id = OutgoingMessage.objects.get(pk=outgoing.pk).remote_id
    lease = timezone.now() + timedelta(minutes=5)
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(
        status=OutgoingMessage.Status.SENDING, remote_id="", lease_expires_at=lease
    )
    waiting = outbox.outgoing_send(outgoing_id=outgoing.pk)
    assert waiting.outcome == "wait" and 290 < waiting.retry_after <= 300
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.SENT and outgoing.remote_id == remote_id
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1


def test_a_5xx_on_send_is_checked_at_gmail_before_the_same_bytes_go_again(gmail_account, gmail_mailbox, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    outgoing = _outgoing(gmail_account)
    outbox.outgoing_queue(outgoing=outgoing)
    gmail_mailbox.store.fail_next(1, status=503, method="messages.send", email=gmail_mailbox.email)
    result = outbox.outgoing_send(outgoing_id=outgoing.pk)
    assert result.outcome == "retry" and result.retry_after == 0
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.QUEUED and "503" in outgoing.last_error
    assert outgoing.last_error_code == "send_uncertain" and outgoing.error_message.endswith(
        "Mailhub tries again shortly."
    )
    assert outgoing.handed_off_at is not None  # Gmail may have it: it is asked first
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert sent.raw == bytes(OutgoingMessage.objects.get(pk=outgoing.pk).raw)


def test_the_check_waits_for_gmail_to_show_what_it_accepted(gmail_account, gmail_mailbox, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 30
    outgoing = _outgoing(gmail_account)
    outbox.outgoing_queue(outgoing=outgoing)
    gmail_mailbox.store.fail_next(1, status=500, method="messages.send", email=gmail_mailbox.email)
    result = outbox.outgoing_send(outgoing_id=outgoing.pk)
    assert result.outcome == "retry" and result.retry_after == 30
    # A task that comes before then is a duplicate and does nothing.
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "nothing"
    assert OutgoingMessage.objects.get(pk=outgoing.pk).status == OutgoingMessage.Status.QUEUED


def test_a_throttled_send_did_not_go_and_is_sent_later_without_a_check(gmail_account, gmail_mailbox, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 3600  # a check would have to wait an hour
    outgoing = _outgoing(gmail_account)
    outbox.outgoing_queue(outgoing=outgoing)
    gmail_mailbox.store.fail_next(1, status=429, method="messages.send", email=gmail_mailbox.email)
    result = outbox.outgoing_send(outgoing_id=outgoing.pk)
    assert result.outcome == "retry"
    outgoing.refresh_from_db()
    assert outgoing.handed_off_at is None and outgoing.status == OutgoingMessage.Status.QUEUED
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(next_attempt_at=timezone.now())
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1


def test_failure_is_kept_with_its_reason_and_can_be_retried(gmail_account, gmail_mailbox, sandbox_settings):
    outgoing = _outgoing(gmail_account)
    outbox.outgoing_queue(outgoing=outgoing)
    sandbox_settings.tokens.revoke_user(gmail_account.email)
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "failed"
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.FAILED and outgoing.last_error_code == "access_revoked"
    assert "Reconnect" in outgoing.error_message
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []
    # The user reconnects (fresh tokens), then retries.
    from tests.fixtures.mail import GOOGLE_SCOPES

    common = {"provider": "google", "client_id": "x", "email": gmail_account.email, "scopes": GOOGLE_SCOPES}
    gmail_account.refresh_from_db()
    gmail_account.access_token = sandbox_settings.tokens.issue(kind="access", lifetime=3600, **common).value
    gmail_account.status = gmail_account.Status.ACTIVE
    gmail_account.save()
    outbox.outgoing_retry(outgoing=outgoing)
    assert outgoing.status == OutgoingMessage.Status.QUEUED
    assert outbox.outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1
