"""Batch send: a list read whole (bad rows named, nothing sent), one copy per recipient through the outbox,
paced to the provider's limits, variables filled per recipient (sandbox Gmail API; no worker processes:
``test_outbox_faults.py`` kills a real one mid-batch)."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from mailbox import batches, outbox
from mailbox.models import Batch, OutgoingMessage
from providers.errors import ErrorCode

pytestmark = pytest.mark.django_db(transaction=True)
Status = OutgoingMessage.Status
CSV = (
    "\ufeffEmail;Name;Company\n"
    "ann@example.org;Ann Lee;ACME\n"
    "bob@example.org;Bob Stone;\n"
    "\n"
    "cid@example.org;Cid;Initech\n"
).encode()


def _draft(account, **values) -> OutgoingMessage:
    fields = {"subject": "Offer for {{ company }}", "body_text": "Dear {{ first_name }},\nfor {{ company }}."}
    return OutgoingMessage.objects.create(account=account, **{**fields, **values})


def test_a_csv_file_gives_each_recipient_its_own_values():
    recipients = batches.recipients_from_csv(CSV)
    assert [(r.row, r.email, r.name, r.values["company"]) for r in recipients] == [
        (2, "ann@example.org", "Ann Lee", "ACME"),
        (3, "bob@example.org", "Bob Stone", ""),
        (5, "cid@example.org", "Cid", "Initech"),
    ]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"name\nAnn\n", "The file has no column named email."),
        (b"email\nann@example.org\nnot-an-address\n", "Row 3: \u201cnot-an-address\u201d is not an email address."),
        (b"email\nann@example.org\nANN@example.org\n", "Row 3 repeats ANN@example.org (row 2)"),
        (b"email\n", "The list has no recipients."),
        (b"\xff\xfee\x00", "The file is not UTF-8 text"),
    ],
)
def test_a_bad_list_names_the_row_and_gives_nobody(data, problem):
    with pytest.raises(batches.RecipientListError) as refused:
        batches.recipients_from_csv(data)
    assert any(problem in p for p in refused.value.problems), refused.value.problems


def test_a_pasted_list_reads_names_and_addresses():
    recipients = batches.recipients_from_text("Ann Lee <ann@example.org>\n\nbob@example.org, cid@example.org\n")
    assert [(r.row, r.email, r.name) for r in recipients] == [
        (1, "ann@example.org", "Ann Lee"),
        (3, "bob@example.org", ""),
        (3, "cid@example.org", ""),
    ]
    with pytest.raises(batches.RecipientListError, match="Line 2"):
        batches.recipients_from_text("ann@example.org\nbob@\n")


def test_each_recipient_gets_one_copy_paced_and_filled_and_one_without_a_value_is_told_why(
    gmail_account, gmail_mailbox, alice
):
    draft = _draft(gmail_account, cc=[{"name": "", "email": "boss@example.org"}])
    started = timezone.now()
    batch = batches.batch_create(draft=draft, recipients=batches.recipients_from_csv(CSV), user=alice)

    assert not OutgoingMessage.objects.filter(pk=draft.pk).exists()  # the draft became the batch
    rows = list(batch.messages.order_by("pk"))
    assert [(r.to[0]["email"], r.status) for r in rows] == [
        ("ann@example.org", Status.QUEUED),
        ("bob@example.org", Status.FAILED),
        ("cid@example.org", Status.QUEUED),
    ]
    assert rows[1].last_error_code == ErrorCode.VARIABLE_MISSING
    assert "{{ company }} has no value for bob@example.org." in rows[1].last_error and rows[1].raw is None
    # Gmail (a consumer account: about 500 a day): one message every 172.8 s.
    assert batch.interval_seconds == pytest.approx(172.8)
    assert rows[0].next_attempt_at - started < timedelta(seconds=2)
    assert rows[2].next_attempt_at - rows[0].next_attempt_at == timedelta(seconds=2 * 172.8)

    OutgoingMessage.objects.filter(batch=batch, status=Status.QUEUED).update(next_attempt_at=timezone.now())
    for row in rows:
        outbox.outgoing_send(outgoing_id=row.pk)
    sent = [
        message_from_bytes(m.raw, policy=policy.default) for m in gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    ]
    assert [(m["To"], m["Subject"], m["Cc"]) for m in sent] == [
        ("Ann Lee <ann@example.org>", "Offer for ACME", None),
        ("Cid <cid@example.org>", "Offer for Initech", None),
    ]
    assert sent[0].get_body(("plain",)).get_content() == "Dear Ann,\nfor ACME.\n"


def test_pacing_off_queues_everyone_at_once(gmail_account, alice, settings):
    settings.MAILHUB_BATCH_PACING = False
    recipients = batches.recipients_from_text("\n".join(f"r{i}@example.org" for i in range(5)))
    batch = batches.batch_create(
        draft=_draft(gmail_account, subject="Hi", body_text="x"), recipients=recipients, user=alice
    )
    due = {row.next_attempt_at for row in batch.messages.all()}
    assert batch.interval_seconds == 0 and len(due) == 1


def test_the_composer_previews_then_sends_a_list_and_the_batch_page_follows_it(client, alice, bob, ui_mail):
    client.force_login(alice)
    account = ui_mail.alice_gmail
    form = {
        "account": account.pk,
        "subject": "Offer for {{ company }}",
        "body_text": "Dear {{ first_name }}",
        "body_format": "text",
    }
    upload = SimpleUploadedFile("list.csv", CSV, content_type="text/csv")
    preview = client.post(reverse("mailbox:compose"), {**form, "action": "batch_preview", "batch_csv": upload})
    page = preview.content.decode()
    assert preview.status_code == 200 and "3 recipients. The first messages:" in page
    assert "Offer for ACME" in page and "{{ company }} has no value for bob@example.org." in page
    assert not Batch.objects.exists()

    draft = OutgoingMessage.objects.get(subject="Offer for {{ company }}")
    bad = SimpleUploadedFile("list.csv", b"email\nann@example.org\nnope\n", content_type="text/csv")
    refused = client.post(reverse("mailbox:draft", args=[draft.pk]), {**form, "action": "batch_send", "batch_csv": bad})
    assert refused.status_code == 400 and "Row 3:" in refused.content.decode() and not Batch.objects.exists()

    sent = client.post(
        reverse("mailbox:draft", args=[draft.pk]),
        {**form, "action": "batch_send", "batch_list": "Ann Lee <ann@example.org>\nCid <cid@example.org>"},
    )
    batch = Batch.objects.get()
    assert sent["Location"] == reverse("mailbox:batch", args=[batch.pk])
    page = client.get(sent["Location"]).content.decode()
    assert "0 of 2 sent" in page and "ann@example.org" in page and "cid@example.org" in page
    outbox_page = client.get(reverse("mailbox:outbox")).content.decode()
    assert reverse("mailbox:batch", args=[batch.pk]) in outbox_page and 'id="outbox-table"' in outbox_page
    assert "ann@example.org" not in outbox_page.split('id="outbox-table"')[1]  # batch rows are on its own page

    client.force_login(bob)
    assert client.get(reverse("mailbox:batch", args=[batch.pk])).status_code == 404


def test_stopping_a_batch_spares_nobody_already_on_the_way_and_retry_sends_one_after_all(
    client, alice, bob, gmail_account, gmail_mailbox
):
    recipients = batches.recipients_from_text("a@example.org\nb@example.org\nc@example.org")
    draft = _draft(gmail_account, subject="Hi", body_text="x")
    batch = batches.batch_create(draft=draft, recipients=recipients, user=alice)
    first, second, third = batch.messages.order_by("pk")
    OutgoingMessage.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now())
    assert outbox._outgoing_claim(first.pk).row is not None  # a worker has the first one

    client.force_login(bob)
    assert client.post(reverse("mailbox:batch_cancel", args=[batch.pk])).status_code == 404
    client.force_login(alice)
    stopped = client.post(reverse("mailbox:batch_cancel", args=[batch.pk]), follow=True)
    assert "Stopped: 2 messages will not be sent." in stopped.content.decode()
    assert [m.status for m in batch.messages.order_by("pk")] == [Status.SENDING, Status.FAILED, Status.FAILED]
    third.refresh_from_db()
    assert third.last_error_code == ErrorCode.CANCELLED and "Cancelled before it went" in third.error_message
    assert outbox.outgoing_send(outgoing_id=third.pk).outcome == "nothing"  # its task finds it stopped

    client.post(reverse("mailbox:outbox_retry", args=[second.pk]))
    assert outbox.outgoing_send(outgoing_id=second.pk).outcome == "sent"
    sent_to = [
        message_from_bytes(m.raw, policy=policy.default)["To"]
        for m in gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    ]
    assert sent_to == ["b@example.org"]
