"""Undo send and scheduled send: a queued message waits for its time, goes through the one exactly-once path,
and can be taken back to Drafts, untouched, until a worker has claimed it (sandbox Gmail API, no worker
processes; ``test_outbox_faults.py`` kills real ones)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from mailbox import outbox, store, tasks
from mailbox.forms import ScheduleForm
from mailbox.models import OutgoingAttachment, OutgoingMessage

pytestmark = pytest.mark.django_db(transaction=True)
Status = OutgoingMessage.Status


def _draft(account, **values) -> OutgoingMessage:
    fields = {"to": [{"name": "Bob", "email": "bob@example.org"}], "subject": "Numbers", "body_text": "Q3: 42"}
    return OutgoingMessage.objects.create(account=account, **{**fields, **values})


def _row(row: OutgoingMessage) -> OutgoingMessage:
    return OutgoingMessage.objects.get(pk=row.pk)


def _date_header(raw: bytes) -> datetime:
    return parsedate_to_datetime(message_from_bytes(raw, policy=policy.default)["Date"])


@pytest.fixture
def dispatched(monkeypatch) -> list[tuple[int, datetime | None]]:
    """The send tasks queued (id, ETA), instead of queueing them: the tests decide when they run."""
    calls: list[tuple[int, datetime | None]] = []
    monkeypatch.setattr(tasks.outgoing_send, "delay", lambda pk: calls.append((pk, None)))
    monkeypatch.setattr(tasks.outgoing_send, "apply_async", lambda args, eta=None, **_: calls.append((args[0], eta)))
    return calls


# --- Undo send -------------------------------------------------------------------------------------


def test_send_waits_for_the_undo_delay_and_undo_brings_the_draft_back_untouched(
    gmail_account, gmail_mailbox, dispatched
):
    draft = _draft(gmail_account, cc=[{"name": "", "email": "carol@example.org"}], body_html="<p>Q3: <b>42</b></p>")
    OutgoingAttachment.objects.create(
        outgoing=draft, blob=store.blob_store(content=b"a,b\n"), filename="q3.csv", content_type="text/csv", size=4
    )
    before = timezone.now()
    outbox.outgoing_queue(outgoing=draft, hold=timedelta(seconds=10))

    queued = _row(draft)
    assert queued.status == Status.QUEUED and queued.scheduled_for is None
    assert timedelta(seconds=10) <= queued.next_attempt_at - before < timedelta(seconds=11)
    assert dispatched == [(draft.pk, queued.next_attempt_at)]  # its task comes when the delay is over
    assert abs(_date_header(bytes(queued.raw)) - queued.next_attempt_at) < timedelta(seconds=1)
    assert outbox.outgoing_send(outgoing_id=draft.pk).outcome == "nothing"  # not yet: Undo is still on offer

    assert outbox.outgoing_unsend(outgoing=draft) is True
    back = _row(draft)
    assert back.status == Status.DRAFT
    assert back.raw is None and back.next_attempt_at is None and back.queued_at is None and back.attempts == 0
    assert (back.to, back.cc, back.subject, back.body_text, back.body_html) == (
        queued.to,
        queued.cc,
        "Numbers",
        "Q3: 42",
        "<p>Q3: <b>42</b></p>",
    )
    assert [a.filename for a in back.attachments.all()] == ["q3.csv"]
    # The task still comes at the end of the delay: it finds a draft and sends nothing.
    assert outbox.outgoing_send(outgoing_id=draft.pk).outcome == "nothing"
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []
    assert outbox.outgoing_unsend(outgoing=draft) is False  # a draft is not in the outbox


def test_once_a_worker_has_claimed_it_undo_is_too_late_and_it_goes_once(gmail_account, gmail_mailbox, dispatched):
    draft = _draft(gmail_account)
    outbox.outgoing_queue(outgoing=draft, hold=timedelta(seconds=1))
    OutgoingMessage.objects.filter(pk=draft.pk).update(next_attempt_at=timezone.now())
    claim = outbox._outgoing_claim(draft.pk)
    assert claim.row is not None

    assert outbox.outgoing_unsend(outgoing=draft) is False
    assert _row(draft).status == Status.SENDING
    assert outbox._outgoing_attempt(claim.row, outbox.account_client(gmail_account)).outcome == "sent"
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1


def test_a_handed_off_message_cannot_be_taken_back(gmail_account, dispatched):
    draft = _draft(gmail_account)
    outbox.outgoing_queue(outgoing=draft, hold=timedelta(seconds=10))
    OutgoingMessage.objects.filter(pk=draft.pk).update(handed_off_at=timezone.now())  # bytes may be at Gmail
    assert outbox.outgoing_unsend(outgoing=draft) is False
    assert _row(draft).status == Status.QUEUED


def test_a_claim_that_read_the_row_before_an_undo_and_an_edit_does_not_send_the_old_text(
    gmail_account, gmail_mailbox, dispatched, monkeypatch
):
    """Undo, edit and Send again between a worker's read of the row and its claim: the worker must not win
    the new row with the old bytes it read."""
    draft = _draft(gmail_account)
    outbox.outgoing_queue(outgoing=draft)
    real_now = timezone.now

    def undo_and_send_an_edit_meanwhile() -> datetime:
        monkeypatch.setattr(timezone, "now", real_now)
        assert outbox.outgoing_unsend(outgoing=draft)
        draft.subject = "Numbers (corrected)"
        draft.save()
        outbox.outgoing_queue(outgoing=draft)
        return real_now()

    monkeypatch.setattr(timezone, "now", undo_and_send_an_edit_meanwhile)  # runs right after the claim's read
    assert outbox._outgoing_claim(draft.pk).row is None

    assert outbox.outgoing_send(outgoing_id=draft.pk).outcome == "sent"
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert message_from_bytes(sent.raw, policy=policy.default)["Subject"] == "Numbers (corrected)"


# --- Scheduled send --------------------------------------------------------------------------------


def test_a_scheduled_message_goes_at_its_time_dated_then_and_not_before(gmail_account, gmail_mailbox, dispatched):
    when = (timezone.now() + timedelta(seconds=2)).replace(microsecond=0) + timedelta(seconds=1)
    draft = _draft(gmail_account)
    outbox.outgoing_queue(outgoing=draft, scheduled_for=when)

    queued = _row(draft)
    assert queued.scheduled_for == when and queued.next_attempt_at == when
    assert dispatched == [(draft.pk, when)]
    assert outbox.outgoing_send(outgoing_id=draft.pk).outcome == "nothing"
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []

    time.sleep(max(0.0, (when - timezone.now()).total_seconds()))
    assert outbox.outgoing_send(outgoing_id=draft.pk).outcome == "sent"
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert _date_header(sent.raw) == when  # the Date says when it went, not when it was written


def test_a_message_scheduled_far_ahead_gets_its_task_from_the_sweep_when_its_time_comes(gmail_account, dispatched):
    now = timezone.now()
    when = now + timedelta(days=3)
    draft = _draft(gmail_account)
    outbox.outgoing_queue(outgoing=draft, scheduled_for=when)
    assert dispatched == []  # an ETA days ahead would outlive the broker's visibility timeout

    assert outbox.outbox_sweep(now=now).scheduled == []
    assert outbox.outbox_sweep(now=when - outbox.schedule_lookahead() - timedelta(seconds=1)).scheduled == []
    assert outbox.outbox_sweep(now=when - timedelta(seconds=30)).scheduled == [(draft.pk, when)]
    assert outbox.outbox_sweep(now=when - timedelta(seconds=30)).send == []
    # A lost task (every process restarted): once overdue, the sweep sends it like any queued row.
    assert outbox.outbox_sweep(now=when + outbox.outbox_overdue()).send == [draft.pk]


def test_the_sweep_task_queues_a_scheduled_row_for_its_time(gmail_account, dispatched, monkeypatch):
    when = timezone.now() + timedelta(seconds=40)
    draft = _draft(gmail_account)
    outbox.outgoing_queue(outgoing=draft, scheduled_for=when)
    dispatched.clear()
    assert tasks.outbox_sweep() == 1
    assert dispatched == [(draft.pk, when)]


def test_a_scheduled_message_can_be_cancelled_until_it_goes(gmail_account, gmail_mailbox, dispatched):
    draft = _draft(gmail_account)
    outbox.outgoing_queue(outgoing=draft, scheduled_for=timezone.now() + timedelta(hours=5))
    assert outbox.outgoing_unsend(outgoing=draft) is True
    back = _row(draft)
    assert back.status == Status.DRAFT and back.scheduled_for is None
    assert outbox.outbox_sweep(now=timezone.now() + timedelta(hours=6)).send == []


# --- Choosing the time -----------------------------------------------------------------------------


def _schedule(send_at: str, time_zone: str = "") -> ScheduleForm:
    form = ScheduleForm({"send_at": send_at, "time_zone": time_zone})
    form.is_valid()
    return form


def test_the_time_is_read_in_the_browsers_time_zone():
    year = timezone.now().year + 1
    form = _schedule(f"{year}-01-31T08:00", "Asia/Tokyo")
    assert form.is_valid(), form.errors
    assert form.cleaned_data["scheduled_for"] == datetime(year, 1, 31, 8, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert form.cleaned_data["scheduled_for"].astimezone(UTC) == datetime(year, 1, 30, 23, 0, tzinfo=UTC)


def test_without_a_known_time_zone_the_servers_is_used(settings):
    year = timezone.now().year + 1
    for zone in ("", "Mars/Olympus_Mons", "../../etc/passwd"):
        form = _schedule(f"{year}-06-01T09:30", zone)
        assert form.is_valid(), form.errors
        expected = datetime(year, 6, 1, 9, 30, tzinfo=ZoneInfo(settings.TIME_ZONE))
        assert form.cleaned_data["scheduled_for"] == expected


@pytest.mark.parametrize(
    ("send_at", "error"),
    [
        ("", "Choose when to send it."),
        ("tomorrow", "Enter a date and a time"),
        ("2001-01-01T08:00", "That time has passed"),
        (f"{datetime.now().year + 3}-01-01T08:00", "within a year"),
    ],
)
def test_a_time_that_cannot_be_used_is_a_clear_error(send_at, error):
    form = _schedule(send_at, "Europe/Stockholm")
    assert not form.is_valid()
    assert error in " ".join(form.errors["send_at"])
