"""The outbox's state machine, step by step, against the sandbox Gmail API and Dovecot (no worker processes:
``test_outbox_faults.py`` has those)."""

from __future__ import annotations

import dataclasses
import logging
import random
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from mailbox import outbox, store, tasks
from mailbox.models import Message, OutgoingAttachment, OutgoingMessage
from tests.fixtures.mail import raw_message

pytestmark = pytest.mark.django_db(transaction=True)
Status = OutgoingMessage.Status


def _queued(account, **values) -> OutgoingMessage:
    row = outbox.outgoing_queue(
        outgoing=OutgoingMessage.objects.create(
            account=account,
            to=[{"name": "", "email": "bob@example.org"}],
            subject="Numbers",
            body_text="x",
        )
    )
    if values:
        OutgoingMessage.objects.filter(pk=row.pk).update(**values)
        row.refresh_from_db()
    return row


def _row(row: OutgoingMessage) -> OutgoingMessage:
    return OutgoingMessage.objects.get(pk=row.pk)


# --- claiming -------------------------------------------------------------------------------------


def test_only_a_due_queued_or_abandoned_row_is_claimed(gmail_account, settings):
    settings.MAILHUB_SEND_LEASE_SECONDS = 120
    now = timezone.now()
    draft = OutgoingMessage.objects.create(account=gmail_account, subject="draft")
    failed = _queued(gmail_account, status=Status.FAILED)
    unknown = _queued(gmail_account, status=Status.UNKNOWN, handed_off_at=now)
    later = _queued(gmail_account, next_attempt_at=now + timedelta(minutes=5))
    held = _queued(gmail_account, status=Status.SENDING, lease_expires_at=now + timedelta(seconds=40))

    for row in (draft, failed, unknown, later):
        assert outbox.outgoing_send(outgoing_id=row.pk) == outbox.SendResult(outbox.SendOutcome.NOTHING)
        assert _row(row).status == row.status and _row(row).attempts == 0
    waiting = outbox.outgoing_send(outgoing_id=held.pk)
    assert waiting.outcome == "wait" and 35 < waiting.retry_after <= 40
    assert outbox.outgoing_send(outgoing_id=999_999).outcome == "nothing"

    claim = outbox._outgoing_claim(later.pk)
    assert claim.row is None
    OutgoingMessage.objects.filter(pk=later.pk).update(next_attempt_at=now)
    claim = outbox._outgoing_claim(later.pk)
    assert claim.row is not None and claim.row.attempts == 1
    stored = _row(later)
    assert stored.status == Status.SENDING and stored.attempts == 1
    assert timedelta(seconds=115) < stored.lease_expires_at - timezone.now() <= timedelta(seconds=120)
    assert outbox._outgoing_claim(later.pk).row is None  # the lease holds: nobody else gets it


def test_a_task_up_to_two_seconds_early_is_the_rows_own(gmail_account, gmail_mailbox):
    """The row's own task may run a little before the row's due time (clocks, countdown rounding)."""
    early = _queued(gmail_account, next_attempt_at=timezone.now() + timedelta(seconds=2.6))
    assert outbox.outgoing_send(outgoing_id=early.pk).outcome == "nothing"
    on_time = _queued(gmail_account, next_attempt_at=timezone.now() + timedelta(seconds=1.5))
    assert outbox.outgoing_send(outgoing_id=on_time.pk).outcome == "sent"
    assert _row(early).status == Status.QUEUED and len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1


def test_a_claim_lost_to_another_worker_does_nothing(gmail_account, gmail_mailbox):
    row = _queued(gmail_account)
    first = outbox._outgoing_claim(row.pk)
    # Another worker read the same "queued" row at the same moment: its compare-and-set finds it changed.
    stale = OutgoingMessage.objects.filter(pk=row.pk, status=Status.QUEUED, attempts=0).update(attempts=1)
    assert first.row is not None and stale == 0
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []


# --- attempts -------------------------------------------------------------------------------------


def test_a_provider_that_keeps_refusing_fails_the_row_after_the_last_attempt(gmail_account, gmail_mailbox):
    row = _queued(gmail_account)
    gmail_mailbox.store.fail_next(
        outbox.MAX_SEND_ATTEMPTS, status=429, method="messages.send", email=gmail_mailbox.email
    )
    outcomes = []
    for _ in range(outbox.MAX_SEND_ATTEMPTS):
        outcomes.append(outbox.outgoing_send(outgoing_id=row.pk).outcome)
        assert _row(row).handed_off_at is None  # a 429 means Gmail did not take it
        OutgoingMessage.objects.filter(pk=row.pk, status=Status.QUEUED).update(next_attempt_at=timezone.now())
    assert outcomes == ["retry"] * (outbox.MAX_SEND_ATTEMPTS - 1) + ["failed"]
    stored = _row(row)
    assert stored.status == Status.FAILED and "throttling" in stored.last_error and stored.lease_expires_at is None
    assert stored.last_error_code == "throttled"
    assert stored.error_message == "Google's sending limit for this mailbox was reached."  # failed: no "tries again"
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []


def test_a_retry_waits_with_backoff_or_the_providers_retry_after(gmail_account, gmail_mailbox):
    row = _queued(gmail_account)
    gmail_mailbox.store.fail_next(1, status=429, retry_after=7, method="messages.send", email=gmail_mailbox.email)
    result = outbox.outgoing_send(outgoing_id=row.pk)
    assert result.outcome == "retry" and result.retry_after == 7
    due = _row(row).next_attempt_at - timezone.now()
    assert timedelta(seconds=6) < due <= timedelta(seconds=7)


@pytest.mark.parametrize("jitter", ["low", "high"])
def test_five_attempts_back_off_from_30_seconds_doubling_with_a_fifth_of_jitter(
    gmail_account, gmail_mailbox, monkeypatch, jitter
):
    # The jitter at either end of its range (random.uniform(0.8, 1.2)), so the delays are exact.
    monkeypatch.setattr(random, "uniform", lambda low, high: low if jitter == "low" else high)
    factor = 0.8 if jitter == "low" else 1.2
    row = _queued(gmail_account)
    gmail_mailbox.store.fail_next(5, status=429, method="messages.send", email=gmail_mailbox.email)
    results = []
    for _ in range(5):
        started = timezone.now()
        results.append(outbox.outgoing_send(outgoing_id=row.pk))
        if results[-1].outcome == "retry":
            delay = timedelta(seconds=results[-1].retry_after)
            assert started + delay <= _row(row).next_attempt_at <= timezone.now() + delay
        OutgoingMessage.objects.filter(pk=row.pk, status=Status.QUEUED).update(next_attempt_at=timezone.now())
    assert [r.outcome for r in results] == ["retry", "retry", "retry", "retry", "failed"]
    assert [r.retry_after for r in results[:4]] == pytest.approx([30 * factor, 60 * factor, 120 * factor, 240 * factor])
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []


def test_a_send_result_cannot_be_altered_by_its_receiver(gmail_account, gmail_mailbox):
    result = outbox.outgoing_send(outgoing_id=_queued(gmail_account).pk)
    assert result == outbox.SendResult(outbox.SendOutcome.SENT) and hash(result) == hash(outbox.SendResult("sent"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.outcome = outbox.SendOutcome.FAILED


def test_a_lost_answer_on_the_last_attempt_is_unknown_not_failed(gmail_account, gmail_mailbox, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    row = _queued(gmail_account, attempts=outbox.MAX_SEND_ATTEMPTS - 1)
    gmail_mailbox.store.fail_next(1, status=503, method="messages.send", email=gmail_mailbox.email)
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "unknown"
    stored = _row(row)
    assert stored.status == Status.UNKNOWN and stored.handed_off_at is not None and "503" in stored.last_error


def test_a_check_that_keeps_failing_ends_unknown_and_never_sends(gmail_account, gmail_mailbox, settings, caplog):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    row = _queued(gmail_account, handed_off_at=timezone.now() - timedelta(minutes=1))
    gmail_mailbox.store.fail_next(200, status=500, method="messages.list", email=gmail_mailbox.email)
    outcomes = []
    for _ in range(outbox.MAX_SEND_ATTEMPTS):
        outcomes.append(outbox.outgoing_send(outgoing_id=row.pk).outcome)
        OutgoingMessage.objects.filter(pk=row.pk, status=Status.QUEUED).update(next_attempt_at=timezone.now())
    assert outcomes == ["retry"] * (outbox.MAX_SEND_ATTEMPTS - 1) + ["unknown"]
    stored = _row(row)
    assert stored.handed_off_at is not None and stored.last_error_code == "check_failed"
    assert stored.error_message == "It could not be checked whether this message went out."
    assert "HTTP 500" in stored.last_error  # the provider's answer, for administrators
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a provider's refusal is no crash
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []


def test_a_check_after_access_was_revoked_is_unknown(gmail_account, gmail_mailbox, sandbox_settings, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    row = _queued(gmail_account, handed_off_at=timezone.now() - timedelta(minutes=1))
    sandbox_settings.tokens.revoke_user(gmail_account.email)
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "unknown"
    assert _row(row).last_error_code == "check_failed"
    assert gmail_account.__class__.objects.get(pk=gmail_account.pk).needs_reconnect
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []


def test_a_message_not_found_after_the_settle_time_is_sent_once(gmail_account, gmail_mailbox, settings):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 30
    row = _queued(gmail_account, handed_off_at=timezone.now() - timedelta(seconds=31))
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "sent"
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    stored = _row(row)
    assert stored.remote_id == sent.id and stored.status == Status.SENT and stored.sent_at and stored.filed_at
    assert stored.lease_expires_at is None and stored.last_error == stored.last_error_code == ""


def test_an_unexpected_error_before_the_handoff_fails_without_sending(gmail_account, gmail_mailbox):
    row = _queued(gmail_account)
    OutgoingMessage.objects.filter(pk=row.pk).update(raw=None)  # a broken row: nothing to send
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "failed"
    stored = _row(row)
    assert (stored.last_error_code, stored.last_error) == ("unexpected", "TypeError") and stored.handed_off_at is None
    assert stored.error_message == "Sending stopped on an unexpected error."


def _disk_full(execute, sql, params, many, context):
    """A database wrapper: storing a message fails, as on a full disk."""
    if sql.startswith("INSERT INTO") and '"mailbox_message" (' in sql:
        raise OperationalError("database or disk is full")
    return execute(sql, params, many, context)


def test_a_crash_after_gmail_took_the_message_is_checked_not_failed(gmail_account, gmail_mailbox, settings, caplog):
    """The local database fails while filing the copy Gmail just accepted: the row must not say "failed"."""
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    row = _queued(gmail_account)
    with connection.execute_wrapper(_disk_full):
        result = outbox.outgoing_send(outgoing_id=row.pk)
    stored = _row(row)
    assert result.outcome == "retry" and stored.status == Status.QUEUED and stored.handed_off_at is not None
    assert (stored.last_error_code, stored.last_error) == ("unexpected", "OperationalError")
    assert f"Sending outgoing message {row.pk} crashed" in caplog.messages
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "sent"  # found at Gmail, not sent again
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert Message.objects.filter(account=gmail_account, remote_id=sent.id).exists()


def test_a_check_that_crashes_is_retried_then_unknown_with_the_errors_name(
    gmail_account, gmail_mailbox, settings, caplog
):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    row = _queued(gmail_account)
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "sent"
    Message.objects.filter(account=gmail_account, remote_id=_row(row).remote_id).delete()
    # Say its answer was lost: back in the queue with the handoff recorded. The check finds it and crashes filing it.
    OutgoingMessage.objects.filter(pk=row.pk).update(
        status=Status.QUEUED, remote_id="", handed_off_at=timezone.now() - timedelta(minutes=1)
    )
    with connection.execute_wrapper(_disk_full):
        assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "retry"
        assert f"Checking whether outgoing message {row.pk} went out crashed" in caplog.messages
        OutgoingMessage.objects.filter(pk=row.pk).update(
            attempts=outbox.MAX_SEND_ATTEMPTS - 1, next_attempt_at=timezone.now()
        )
        assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "unknown"
    assert (_row(row).last_error_code, _row(row).last_error) == ("check_failed", "OperationalError")
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1


@pytest.mark.parametrize(
    ("thread_key", "in_reply_to", "same_thread"),
    [
        ("gmail-thread-7", None, True),  # Gmail's own thread
        (None, None, False),  # a thread Mailhub made for a message without any Message-ID ("remote:")
        (None, "older@example.org", False),  # one Mailhub made from the headers ("mid:")
    ],
)
def test_filing_a_reply_later_joins_the_providers_thread_of_the_message_it_answers(
    gmail_account, gmail_mailbox, thread_key, in_reply_to, same_thread
):
    """The sweep files a sent copy a dead worker left unfiled. A reply to a mail without Message-ID carries no
    In-Reply-To: only a provider's thread can place it; a thread Mailhub made from headers cannot."""
    source = store.message_upsert(
        account=gmail_account,
        remote_id="src",
        raw=raw_message(in_reply_to=in_reply_to).replace(b"Message-ID:", b"X-No-Id:", 1),
        thread_key=thread_key,
    )
    reply = _queued(gmail_account, kind=OutgoingMessage.Kind.REPLY, source=source)
    assert outbox.outgoing_send(outgoing_id=reply.pk).outcome == "sent"
    sent_id = _row(reply).remote_id
    Message.objects.filter(account=gmail_account, remote_id=sent_id).delete()  # as if never filed
    OutgoingMessage.objects.filter(pk=reply.pk).update(filed_at=None)
    assert outbox.outgoing_file(outgoing_id=reply.pk)
    filed = Message.objects.get(account=gmail_account, remote_id=sent_id)
    assert (filed.thread_id == source.thread_id) == same_thread and filed.is_read  # the user wrote it
    assert _row(reply).filed_at is not None
    assert outbox.outgoing_file(outgoing_id=reply.pk)  # nothing left to file: done


# --- the sweep ------------------------------------------------------------------------------------


def test_sweep_takes_back_rows_of_dead_workers_and_lost_tasks(gmail_account, settings):
    settings.MAILHUB_OUTBOX_OVERDUE_SECONDS = 60
    now = timezone.now()
    dead = _queued(
        gmail_account,
        status=Status.SENDING,
        lease_expires_at=now - timedelta(seconds=1),
        handed_off_at=now - timedelta(minutes=2),
    )
    alive = _queued(gmail_account, status=Status.SENDING, lease_expires_at=now + timedelta(seconds=30))
    lost = _queued(gmail_account, next_attempt_at=now - timedelta(seconds=61))
    never = _queued(gmail_account, next_attempt_at=None)
    recent = _queued(gmail_account, next_attempt_at=now - timedelta(seconds=59))
    later = _queued(gmail_account, next_attempt_at=now + timedelta(minutes=10))

    result = outbox.outbox_sweep(now=now)

    assert sorted(result.send) == sorted([dead.pk, lost.pk, never.pk])
    stored = _row(dead)
    assert stored.status == Status.QUEUED and stored.lease_expires_at is None
    assert stored.handed_off_at is not None  # the provider is asked before it goes again
    assert _row(alive).status == Status.SENDING
    for row in (dead, lost, never):
        assert _row(row).next_attempt_at == now  # dispatched now: the next sweep waits as long again
    for row in (recent, later):
        assert _row(row).next_attempt_at == row.next_attempt_at
    # 59 s on: "recent" is overdue now, and "alive"'s worker has died meanwhile; the rest were just dispatched.
    assert sorted(outbox.outbox_sweep(now=now + timedelta(seconds=59)).send) == sorted([alive.pk, recent.pk])
    assert sorted(outbox.outbox_sweep(now=now + timedelta(seconds=61)).send) == sorted([dead.pk, lost.pk, never.pk])


def test_sweep_files_sent_copies_a_dead_worker_left_unfiled(gmail_account, settings):
    settings.MAILHUB_OUTBOX_OVERDUE_SECONDS = 60
    now = timezone.now()
    unfiled = _queued(gmail_account, status=Status.SENT, sent_at=now - timedelta(minutes=2))
    just_sent = _queued(gmail_account, status=Status.SENT, sent_at=now - timedelta(seconds=30))
    filed = _queued(gmail_account, status=Status.SENT, sent_at=now - timedelta(minutes=2), filed_at=now)
    too_old = _queued(gmail_account, status=Status.SENT, sent_at=now - timedelta(days=8))
    assert {just_sent.pk, filed.pk, too_old.pk}.isdisjoint(outbox.outbox_sweep(now=now).file)
    assert outbox.outbox_sweep(now=now).file == [unfiled.pk]


def test_sweep_takes_at_most_500_rows_a_run(gmail_account, settings):
    settings.MAILHUB_OUTBOX_OVERDUE_SECONDS = 60
    now = timezone.now()
    OutgoingMessage.objects.bulk_create(
        OutgoingMessage(
            account=gmail_account, status=Status.QUEUED, next_attempt_at=now - timedelta(minutes=5, seconds=n)
        )
        for n in range(501)
    )
    first = outbox.outbox_sweep(now=now).send
    assert len(first) == 500
    assert len(outbox.outbox_sweep(now=now).send) == 1  # the one left over; the 500 were just dispatched
    assert OutgoingMessage.objects.filter(next_attempt_at=now).count() == 501


def test_without_configuration_the_documented_defaults_apply(gmail_account, gmail_mailbox, settings):
    """README: a 300 s lease, 30 s to settle after a lost answer, re-dispatch 60 s after the due time."""
    del settings.MAILHUB_SEND_LEASE_SECONDS, settings.MAILHUB_SEND_SETTLE_SECONDS
    del settings.MAILHUB_OUTBOX_OVERDUE_SECONDS
    row = _queued(gmail_account)
    assert outbox._outgoing_claim(row.pk).row is not None
    assert timedelta(seconds=295) < _row(row).lease_expires_at - timezone.now() <= timedelta(seconds=300)
    handed_off = _queued(gmail_account, handed_off_at=timezone.now())
    result = outbox.outgoing_send(outgoing_id=handed_off.pk)
    assert result.outcome == "retry" and 25 < result.retry_after <= 30  # asked once settled, not sent again
    now = timezone.now()
    stale = _queued(gmail_account, next_attempt_at=now - timedelta(seconds=60.5))
    fresh = _queued(gmail_account, next_attempt_at=now - timedelta(seconds=59.5))
    swept = outbox.outbox_sweep(now=now).send
    assert stale.pk in swept and fresh.pk not in swept
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []


def test_the_overdue_time_is_configurable(gmail_account, settings):
    settings.MAILHUB_OUTBOX_OVERDUE_SECONDS = 5
    now = timezone.now()
    late = _queued(gmail_account, next_attempt_at=now - timedelta(seconds=6))
    assert outbox.outbox_sweep(now=now).send == [late.pk]


def test_the_send_task_comes_back_when_the_row_says(gmail_account, gmail_mailbox, monkeypatch):
    row = _queued(gmail_account, status=Status.SENDING, lease_expires_at=timezone.now() + timedelta(seconds=20))
    scheduled = []
    monkeypatch.setattr(tasks.outgoing_send, "apply_async", lambda args, countdown: scheduled.append((args, countdown)))
    assert tasks.outgoing_send(row.pk) == "wait"
    ((args, countdown),) = scheduled
    assert args == (row.pk,) and 15 < countdown <= 20
    OutgoingMessage.objects.filter(pk=row.pk).update(status=Status.QUEUED, lease_expires_at=None)
    assert tasks.outgoing_send(row.pk) == "sent" and len(scheduled) == 1


def test_a_draft_kept_without_a_message_id_gets_one_in_its_row_and_its_bytes(gmail_account):
    draft = OutgoingMessage.objects.create(account=gmail_account, subject="old draft", body_text="x")
    OutgoingMessage.objects.filter(pk=draft.pk).update(message_id="")  # as drafts of earlier versions were kept
    queued = _row(outbox.outgoing_queue(outgoing=OutgoingMessage.objects.get(pk=draft.pk)))
    assert queued.message_id.endswith("@gmail.com")
    assert message_from_bytes(bytes(queued.raw), policy=policy.default)["Message-ID"] == f"<{queued.message_id}>"


@pytest.mark.parametrize("display_name", ["Alice Liddell", ""])
def test_the_bytes_that_go_out_carry_sender_recipients_date_and_mime_version(gmail_account, display_name):
    gmail_account.display_name = display_name
    gmail_account.save(update_fields=["display_name"])
    before = timezone.now().replace(microsecond=0)
    outgoing = outbox.outgoing_queue(
        outgoing=OutgoingMessage.objects.create(
            account=gmail_account,
            to=[{"name": "Bob", "email": "bob@example.org"}, "carol@example.org"],
            cc=[{"name": "Dan", "email": "dan@example.org"}, {"name": "Nobody"}],  # a person without an address
            subject="Numbers",
            body_text="x",
        )
    )
    mime = message_from_bytes(bytes(_row(outgoing).raw), policy=policy.default)
    assert mime["From"] == (f"{display_name} <{gmail_account.email}>" if display_name else gmail_account.email)
    assert [(a.display_name, a.addr_spec) for a in mime["To"].addresses] == [
        ("Bob", "bob@example.org"),
        ("", "carol@example.org"),
    ]
    assert [a.addr_spec for a in mime["Cc"].addresses] == ["dan@example.org"]
    assert mime["MIME-Version"] == "1.0"
    assert before <= mime["Date"].datetime <= timezone.now()
    assert sorted(mime.keys()) == sorted(
        [
            "From",
            "To",
            "Cc",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ]
    )  # each once, nothing else (no Bcc: nobody was in it)


@pytest.mark.parametrize(("text", "html"), [("See you at 9.", "<p>See you at <b>9</b>.</p>"), ("", "")])
def test_the_bodies_go_out_as_written(gmail_account, text, html):
    outgoing = outbox.outgoing_queue(
        outgoing=OutgoingMessage.objects.create(
            account=gmail_account, to=["bob@example.org"], subject="x", body_text=text, body_html=html
        )
    )
    mime = message_from_bytes(bytes(_row(outgoing).raw), policy=policy.default)
    assert mime.get_body(("plain",)).get_content().rstrip("\n") == text
    if html:
        assert mime.get_content_type() == "multipart/alternative"
        assert mime.get_body(("html",)).get_content().rstrip("\n") == html
    else:
        assert mime.get_content_type() == "text/plain"


def test_attachments_go_out_with_their_names_types_and_bytes(gmail_account):
    outgoing = OutgoingMessage.objects.create(account=gmail_account, to=["bob@example.org"], body_text="see files")
    for filename, content_type, data in [
        ("report.pdf", "application/pdf", b"%PDF-1.7 report"),
        ("notes", "application", b"no subtype given"),
        ("blob", "", b"no type at all"),
    ]:
        OutgoingAttachment.objects.create(
            outgoing=outgoing, blob=store.blob_store(content=data), filename=filename, content_type=content_type
        )
    outbox.outgoing_queue(outgoing=outgoing)
    mime = message_from_bytes(bytes(_row(outgoing).raw), policy=policy.default)
    assert [(a.get_filename(), a.get_content_type(), a.get_content()) for a in mime.iter_attachments()] == [
        ("report.pdf", "application/pdf", b"%PDF-1.7 report"),
        ("notes", "application/octet-stream", b"no subtype given"),
        ("blob", "application/octet-stream", b"no type at all"),
    ]


def _headers_of(account, *, kind: str, source_raw: bytes) -> tuple[str | None, str | None]:
    """(In-Reply-To, References) of a message of ``kind`` written about ``source_raw``, as it will go out."""
    source = store.message_upsert(account=account, remote_id="source", raw=source_raw)
    outgoing = outbox.outgoing_queue(
        outgoing=OutgoingMessage.objects.create(
            account=account, kind=kind, source=source, to=["bob@example.org"], subject="Re: plan", body_text="ok"
        )
    )
    mime = message_from_bytes(bytes(_row(outgoing).raw), policy=policy.default)
    return mime["In-Reply-To"], mime["References"]


@pytest.mark.parametrize(
    ("in_reply_to", "references", "expected"),
    [
        (None, None, "<s@x>"),
        ("b@x", None, "<b@x> <s@x>"),  # no References: the parent it answered starts the chain
        ("b@x", "<a@x> <b@x>", "<a@x> <b@x> <s@x>"),  # References win over In-Reply-To
    ],
)
@pytest.mark.parametrize("kind", [OutgoingMessage.Kind.REPLY, OutgoingMessage.Kind.REPLY_ALL])
def test_a_reply_continues_the_references_of_the_message_it_answers(
    gmail_account, kind, in_reply_to, references, expected
):
    source_raw = raw_message(message_id="s@x", in_reply_to=in_reply_to, references=references)
    assert _headers_of(gmail_account, kind=kind, source_raw=source_raw) == ("<s@x>", expected)


def test_a_forward_or_new_message_about_a_message_is_no_reply_to_it(gmail_account):
    source_raw = raw_message(message_id="s@x", in_reply_to="b@x", references="<a@x> <b@x>")
    assert _headers_of(gmail_account, kind=OutgoingMessage.Kind.FORWARD, source_raw=source_raw) == (None, None)


def test_queueing_clears_the_last_error_and_makes_the_row_due_now(gmail_account):
    draft = OutgoingMessage.objects.create(
        account=gmail_account, subject="x", last_error_code="provider_failed", last_error="HTTP 503"
    )
    before = timezone.now()
    row = _row(outbox.outgoing_queue(outgoing=draft))
    assert row.status == Status.QUEUED and row.last_error == row.last_error_code == "" and row.error_message == ""
    assert before <= row.queued_at == row.next_attempt_at <= timezone.now()


def test_queueing_and_a_retry_dispatch_the_send_and_a_retry_asks_gmail_first(
    gmail_account, gmail_mailbox, eager_celery, settings, caplog
):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    row = _queued(gmail_account)  # the task runs when the queueing commits (eagerly here)
    assert _row(row).status == Status.SENT and len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1
    # Say that send's answer was lost and a later attempt failed for good: Gmail has it, the row says "failed".
    OutgoingMessage.objects.filter(pk=row.pk).update(
        status=Status.FAILED, remote_id="", attempts=5, handed_off_at=timezone.now() - timedelta(minutes=1)
    )
    with caplog.at_level(logging.INFO, logger="mailbox.outbox"):
        outbox.outgoing_retry(outgoing=row)
    stored = _row(row)
    assert stored.status == Status.SENT and stored.attempts == 1  # a fresh count of attempts
    assert f"Outgoing message {row.pk} was already at the provider; not sending it again" in caplog.messages
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1


def test_the_message_id_is_fixed_when_the_row_is_created(gmail_account):
    draft = OutgoingMessage.objects.create(account=gmail_account, subject="draft")
    chosen = draft.message_id
    assert chosen.endswith("@gmail.com") and "<" not in chosen
    draft.subject = "edited"
    draft.save()
    queued = outbox.outgoing_queue(outgoing=draft)
    assert _row(queued).message_id == chosen and f"Message-ID: <{chosen}>".encode() in bytes(_row(queued).raw)


@pytest.mark.parametrize(
    ("status", "code", "detail", "words", "detail_shown"),
    [
        (
            "queued",
            "throttled",
            "429",
            "Google's sending limit for this mailbox was reached. Mailhub tries again",
            False,
        ),
        ("failed", "throttled", "429", "Google's sending limit for this mailbox was reached.", False),
        ("failed", "action_required", "550 5.7.1 Rejected", "Google refused the message: 550 5.7.1 Rejected", True),
        ("failed", "action_required", "", "Google refused the message.", False),
        ("failed", "recipients_refused", "a@x.org", "Google refused these recipients, so nothing was sent: a", True),
        ("unknown", "check_failed", "HTTP 500", "It could not be checked whether this message went out.", False),
        ("failed", "access_revoked", "invalid_grant", "Access to this mailbox was revoked or has expired.", False),
        ("sent", "", "", "", False),
    ],
)
def test_users_read_words_chosen_by_the_code_not_the_providers_text(
    gmail_account, status, code, detail, words, detail_shown
):
    row = OutgoingMessage(account=gmail_account, status=status, last_error_code=code, last_error=detail)
    message = row.error_message
    assert message.startswith(words) and (message == "") == (words == "")
    if detail:
        assert (detail in message) == detail_shown  # the provider's own answer only where it says what was refused
    assert message.endswith("Mailhub tries again shortly.") == (status == "queued")


def test_the_outbox_words_are_translated(gmail_account, settings):
    from django.utils import translation

    row = OutgoingMessage(account=gmail_account, status="queued", last_error_code="unreachable", last_error="timeout")
    with translation.override("zh-hans"):
        assert row.error_message == "无法连接 Google 的邮件服务器。 Mailhub 稍后会重试。"
