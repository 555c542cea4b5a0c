"""Sending from Outlook accounts over SMTP with XOAUTH2: Dovecot's submission service relaying to a sink,
and an Exchange-like submission front for ``535 5.7.139`` and the 30-messages-a-minute limit."""

from __future__ import annotations

import time

import pytest

from mailbox.models import Folder, Message, OutgoingMessage
from mailbox.outbox import outgoing_queue, outgoing_send
from sandbox.dovecot import ExchangeSubmission
from tests.fixtures.dovecot import outlook_client
from tests.providers.test_outlook_sync import seed

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def queued(account, **fields) -> OutgoingMessage:
    fields.setdefault("to", [{"name": "Bob", "email": "bob@example.org"}])
    fields.setdefault("subject", "Quarterly numbers")
    fields.setdefault("body_text", "Hello Bob,\nthe numbers are attached.\n")
    return outgoing_queue(outgoing=OutgoingMessage.objects.create(account=account, **fields))


@pytest.fixture
def exchange(dovecot, sandbox, outlook_settings):
    front = ExchangeSubmission(introspection_url=sandbox.microsoft_introspection_url, sink=dovecot.sink).start()
    outlook_settings.MICROSOFT_SMTP_PORT = front.port
    outlook_settings.MICROSOFT_SMTP_SECURITY = "none"  # the stand-in speaks no TLS
    yield front
    front.stop()


def test_send_goes_through_dovecot_submission_with_xoauth2(dovecot, outlook_account):
    account = outlook_account()
    outgoing = queued(
        account, cc=[{"name": "", "email": "carol@example.org"}], bcc=[{"name": "", "email": "hidden@example.org"}]
    )

    assert outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    [sent] = dovecot.sink.wait_for(1)
    assert sent.mail_from == account.email
    assert sorted(sent.rcpt_tos) == ["bob@example.org", "carol@example.org", "hidden@example.org"]
    message = sent.message()
    assert message["Message-ID"] == f"<{outgoing.message_id}>" and message["Subject"] == "Quarterly numbers"
    assert message["Bcc"] is None  # the hidden recipient stays hidden
    assert "by outlook.sandbox.test with ESMTPSA" in message["Received"]  # STARTTLS + AUTH at Dovecot
    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.SENT and outgoing.remote_id


def test_reply_carries_thread_headers_and_sent_copy_is_not_duplicated(dovecot, outlook_account):
    account = outlook_account()
    seed(dovecot, account.email, 5)
    outlook_client(account).full_sync()
    source = Message.objects.filter(account=account).exclude(message_id="").order_by("date").first()
    reply = queued(account, kind=OutgoingMessage.Kind.REPLY, source=source, subject=f"Re: {source.subject}")

    assert outgoing_send(outgoing_id=reply.pk).outcome == "sent"
    [sent] = dovecot.sink.wait_for(1)
    message = sent.message()
    assert message["In-Reply-To"] == f"<{source.message_id}>"
    assert f"<{source.message_id}>" in message["References"]

    # Exchange files the sent mail in Sent Items itself; the next sync must not show it twice.
    dovecot.append(
        account.email, bytes(OutgoingMessage.objects.get(pk=reply.pk).raw), folder="Sent Items", flags=[b"\\Seen"]
    )
    outlook_client(account).incremental_sync()
    sent_folder = Folder.objects.get(account=account, role=Folder.Role.SENT)
    copies = Message.objects.filter(account=account, message_id=reply.message_id)
    assert copies.count() == 1
    assert list(copies[0].folders.all()) == [sent_folder]
    assert copies[0].thread_id == Message.objects.get(pk=source.pk).thread_id  # joins the Inbox thread


def test_append_sent_setting_files_one_copy_on_the_server_and_locally(dovecot, outlook_account, settings):
    settings.MICROSOFT_APPEND_SENT = True
    account = outlook_account()
    outlook_client(account).full_sync()
    outgoing = queued(account)

    assert outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    assert len(dovecot.uids(account.email, "Sent Items")) == 1
    outlook_client(account).incremental_sync()
    copies = Message.objects.filter(account=account, message_id=outgoing.message_id)
    assert copies.count() == 1 and copies[0].is_read
    assert copies[0].messagefolder_set.get().uid == dovecot.uids(account.email, "Sent Items")[0]


def test_smtp_auth_disabled_gets_a_plain_explanation(dovecot, outlook_account, exchange):
    account = outlook_account()
    exchange.smtp_auth_disabled.add(account.email)
    outgoing = queued(account)

    result = outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    # Retrying can't help until an admin acts: failed at once, kept with the reason, not retried.
    assert result.outcome == "failed" and outgoing.status == OutgoingMessage.Status.FAILED
    assert outgoing.attempts == 1
    assert outgoing.last_error_code == "smtp_auth_disabled"
    assert "Authenticated SMTP" in outgoing.error_message and "administrator" in outgoing.error_message
    assert account.access_token not in outgoing.last_error
    assert dovecot.sink.messages == []


def test_sends_are_paced_to_the_mailbox_limit_instead_of_failing(dovecot, outlook_account, exchange, settings):
    exchange.rate_limit, exchange.rate_window = 2, 1.5
    account = outlook_account()

    # Without pacing the server's limit bites: the third message is refused (and left for a retry).
    settings.MICROSOFT_SMTP_RATE_LIMIT = 100
    results = [outgoing_send(outgoing_id=queued(account).pk) for _ in range(3)]
    assert [r.outcome for r in results] == ["sent", "sent", "retry"] and results[2].retry_after
    assert exchange.refused == [account.email]
    time.sleep(exchange.rate_window)

    other = outlook_account()
    settings.MICROSOFT_SMTP_RATE_LIMIT, settings.MICROSOFT_SMTP_RATE_WINDOW_SECONDS = 2, 1.5
    dovecot.sink.clear()
    started = time.monotonic()
    results = [outgoing_send(outgoing_id=queued(other).pk) for _ in range(5)]
    assert [r.outcome for r in results] == ["sent"] * 5
    assert len(dovecot.sink.messages) == 5 and exchange.refused == [account.email]
    assert time.monotonic() - started >= 2 * 1.5 - 0.2  # two waits for the window to pass


def test_send_with_a_token_microsoft_expired_early_refreshes_and_sends(dovecot, outlook_account, sandbox):
    account = outlook_account()
    old_access = account.access_token
    sandbox.microsoft.expire_access_tokens(account.email)  # we still think it valid for an hour
    outgoing = queued(account)

    assert outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    assert len(dovecot.sink.wait_for(1)) == 1
    account.refresh_from_db()
    assert account.access_token != old_access


def test_exchange_files_its_own_copy_and_the_local_one_gives_way_to_it(dovecot, outlook_account, exchange_behind_proxy):
    account = outlook_account()
    outlook_client(account).full_sync()
    outgoing = queued(account)

    assert outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    outgoing.refresh_from_db()
    # Shown in Sent at once; Exchange's copy has bytes (and so a key) of its own.
    (local,) = Message.objects.filter(account=account, message_id=outgoing.message_id)
    assert local.remote_id == outgoing.remote_id
    assert [f.role for f in local.folders.all()] == [Folder.Role.SENT]

    outlook_client(account).incremental_sync()
    (synced,) = Message.objects.filter(account=account, message_id=outgoing.message_id)
    assert synced.raw.startswith(b"X-MS-Exchange-Organization-AuthAs: Internal\r\n")
    assert synced.remote_id != local.remote_id and synced.thread.message_count == 1
    assert [f.role for f in synced.folders.all()] == [Folder.Role.SENT]
