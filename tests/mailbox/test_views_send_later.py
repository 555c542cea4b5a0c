"""Undo send, Schedule send and the sending preferences, as a user reaches them: compose, the toast, the outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from mailbox import outbox
from mailbox.models import OutgoingMessage, SendingPreferences

pytestmark = pytest.mark.django_db
Status = OutgoingMessage.Status


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def _compose(client, account, action: str, **extra):
    data = {
        "account": account.id,
        "to": "Carol Jones <carol@example.org>",
        "subject": "Plan",
        "body_text": "Here it is.",
        "body_format": "text",
        "action": action,
        **extra,
    }
    return client.post(reverse("mailbox:compose"), data)


def _next_year() -> int:
    return timezone.now().year + 1


def test_send_offers_undo_for_the_users_delay_and_undo_opens_the_draft_again(alice_client, ui_mail):
    sent = _compose(alice_client, ui_mail.alice_gmail, "send")
    assert sent.status_code == 302 and sent["Location"] == reverse("mailbox:outbox")
    row = OutgoingMessage.objects.get(subject="Plan")
    assert row.status == Status.QUEUED
    assert timedelta(seconds=9) < row.next_attempt_at - timezone.now() <= timedelta(seconds=10)

    page = alice_client.get(reverse("mailbox:outbox")).content.decode()
    assert "Sending…" in page and "undo-seconds-10" in page and 'id="undo-button"' in page

    undone = alice_client.post(reverse("mailbox:undo"), {"next": reverse("mailbox:outbox")})
    assert undone["Location"] == reverse("mailbox:draft", args=[row.id])
    row.refresh_from_db()
    assert row.status == Status.DRAFT and row.subject == "Plan" and row.body_text == "Here it is."
    draft_page = alice_client.get(undone["Location"]).content.decode()
    assert "Not sent: the message is back in Drafts." in draft_page and "Here it is." in draft_page


def test_undo_after_the_message_has_started_to_go_says_so_and_changes_nothing(alice_client, ui_mail):
    _compose(alice_client, ui_mail.alice_gmail, "send")
    row = OutgoingMessage.objects.get(subject="Plan")
    OutgoingMessage.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert outbox._outgoing_claim(row.pk).row is not None  # a worker has it

    late = alice_client.post(reverse("mailbox:undo"), {"next": reverse("mailbox:outbox")}, follow=True)
    assert "Too late: the message is already on its way." in late.content.decode()
    row.refresh_from_db()
    assert row.status == Status.SENDING


def test_with_undo_send_off_send_queues_at_once_and_offers_no_undo(alice_client, ui_mail, alice):
    saved = alice_client.post(reverse("mailbox:preferences"), {"undo_send_seconds": "0"})
    assert saved.status_code == 302
    assert SendingPreferences.objects.get(user=alice).undo_send_seconds == 0
    _compose(alice_client, ui_mail.alice_gmail, "send")
    row = OutgoingMessage.objects.get(subject="Plan")
    assert row.next_attempt_at - timezone.now() <= timedelta(seconds=1)
    page = alice_client.get(reverse("mailbox:outbox")).content.decode()
    assert "will be sent shortly" in page and 'id="undo-button"' not in page


def test_the_preferences_page_offers_the_delays_and_refuses_others(alice_client, alice):
    page = alice_client.get(reverse("mailbox:preferences")).content.decode()
    assert 'name="undo_send_seconds"' in page and '<option value="10" selected>' in page
    refused = alice_client.post(reverse("mailbox:preferences"), {"undo_send_seconds": "600"})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert not SendingPreferences.objects.filter(user=alice).exists()


def test_schedule_send_waits_in_the_outbox_where_it_can_be_changed_or_cancelled(alice_client, ui_mail):
    scheduled = _compose(
        alice_client,
        ui_mail.alice_gmail,
        "schedule",
        send_at=f"{_next_year()}-03-02T08:15",
        time_zone="Europe/Stockholm",
    )
    assert scheduled["Location"] == reverse("mailbox:outbox")
    row = OutgoingMessage.objects.get(subject="Plan")
    assert row.status == Status.QUEUED
    assert row.scheduled_for.isoformat() == f"{_next_year()}-03-02T07:15:00+00:00"

    page = alice_client.get(reverse("mailbox:outbox")).content.decode()
    assert "Scheduled for " in page and "change or cancel it below." in page
    assert f'datetime="{_next_year()}-03-02T07:15:00+00:00"' in page  # shown in the browser's zone by the page
    unsend = reverse("mailbox:outbox_unsend", args=[row.id])
    assert f'action="{unsend}"' in page and 'value="edit"' in page and 'value="drafts"' in page

    change = alice_client.post(unsend, {"then": "edit"})
    assert change["Location"] == reverse("mailbox:draft", args=[row.id])
    row.refresh_from_db()
    assert row.status == Status.DRAFT and row.scheduled_for is None

    _compose_again = alice_client.post(
        reverse("mailbox:draft", args=[row.id]),
        {
            "account": ui_mail.alice_gmail.id,
            "to": "carol@example.org",
            "subject": "Plan",
            "body_text": "Here it is.",
            "body_format": "text",
            "action": "schedule",
            "send_at": f"{_next_year()}-03-03T08:15",
            "time_zone": "Europe/Stockholm",
        },
    )
    row.refresh_from_db()
    assert row.status == Status.QUEUED and row.scheduled_for.day == 3
    cancel = alice_client.post(unsend, {"then": "drafts"}, follow=True)
    assert "Not sent: the message is back in Drafts." in cancel.content.decode()
    row.refresh_from_db()
    assert row.status == Status.DRAFT


def test_a_time_that_has_passed_is_refused_and_the_draft_is_kept(alice_client, ui_mail):
    refused = _compose(alice_client, ui_mail.alice_gmail, "schedule", send_at="2001-01-01T08:00", time_zone="UTC")
    assert refused.status_code == 400
    assert "That time has passed: choose a time ahead." in refused.content.decode()
    assert 'value="2001-01-01T08:00"' in refused.content.decode()  # what was typed stays in the field
    row = OutgoingMessage.objects.get(subject="Plan")
    assert row.status == Status.DRAFT and row.body_text == "Here it is."


def test_nobody_else_can_take_back_a_message(alice_client, ui_mail, client, bob):
    _compose(alice_client, ui_mail.alice_gmail, "send")
    row = OutgoingMessage.objects.get(subject="Plan")
    client.force_login(bob)
    assert client.post(reverse("mailbox:outbox_unsend", args=[row.id]), {"then": "edit"}).status_code == 404
    assert client.post(reverse("mailbox:undo"), {"next": "/"}).status_code == 302  # Bob's own session: nothing
    row.refresh_from_db()
    assert row.status == Status.QUEUED


def test_the_name_on_each_mailbox_is_set_in_preferences_and_goes_on_the_mail(alice_client, ui_mail):
    gmail = ui_mail.alice_gmail
    page = alice_client.get(reverse("mailbox:preferences")).content.decode()
    assert f'name="name_{gmail.pk}"' in page and gmail.email in page
    data = {"undo_send_seconds": "10", f"name_{gmail.pk}": "  Alice Martin ", f"name_{ui_mail.alice_outlook.pk}": ""}
    assert alice_client.post(reverse("mailbox:preferences"), data).status_code == 302
    gmail.refresh_from_db()
    assert gmail.display_name == "Alice Martin"
    _compose(alice_client, gmail, "send")
    row = OutgoingMessage.objects.get(subject="Plan")
    assert f"From: Alice Martin <{gmail.email}>".encode() in bytes(row.raw)

    injected = alice_client.post(reverse("mailbox:preferences"), {**data, f"name_{gmail.pk}": "Eve\r\nBcc: x@y.z"})
    assert injected.status_code == 200
    gmail.refresh_from_db()
    assert gmail.display_name == "Alice Martin"
