"""Exactly-once sending under injected faults, over real sockets.

Lost answers: a FaultProxy in front of the sandbox Gmail API and of the SMTP submission server lets the
request reach the provider and drops its answer (once, and three times in a row). Dead workers: a real
Celery worker (Redis, and the filesystem broker of ``make run``) whose pool child or main process is
SIGKILLed before the request, after the provider accepted it, and between SMTP and the APPEND to Sent; a
real beat runs the outbox sweep. Every case ends with the message at the provider exactly once, or the
row "unknown" with nothing sent twice; none stays "queued" or "sending".
"""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes

import pytest
from django.utils import timezone

from mailbox import outbox
from mailbox.models import OutgoingMessage
from tests.fixtures.faults import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

Status = OutgoingMessage.Status
END = (Status.SENT, Status.FAILED, Status.UNKNOWN)


def _queue(account, subject: str = "Quarterly numbers") -> OutgoingMessage:
    return outbox.outgoing_queue(
        outgoing=OutgoingMessage.objects.create(
            account=account,
            to=[{"name": "Bob", "email": "bob@example.org"}],
            subject=subject,
            body_text="Hello Bob",
        )
    )


def _send_until_settled(outgoing: OutgoingMessage, *, rounds: int = 12) -> OutgoingMessage:
    """What the task does, in this process: send, and come back (now, not after the delay) until it ends."""
    for _ in range(rounds):
        outbox.outgoing_send(outgoing_id=outgoing.pk)
        outgoing.refresh_from_db()
        if outgoing.status in END:
            return outgoing
        OutgoingMessage.objects.filter(pk=outgoing.pk, status=Status.QUEUED).update(next_attempt_at=timezone.now())
    return outgoing


def _sent_items(dovecot, account, outgoing: OutgoingMessage) -> int:
    with dovecot.client(account.email, folder="Sent Items") as imap:
        return len(imap.search(["HEADER", "Message-ID", f"<{outgoing.message_id}>"]))


# --- Lost answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("drops", [1, 3])
def test_gmail_answer_lost_is_found_at_gmail_not_sent_again(
    drops, gmail_account, gmail_mailbox, gmail_behind_proxy, settings
):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    outgoing = _queue(gmail_account)
    # The send's answer is lost, then (drops=3) the answers to the next two requests: the checks.
    lost = gmail_behind_proxy.proxy("api").drop_answers(after=b"/messages/send", times=drops)

    outgoing = _send_until_settled(outgoing)

    assert lost.is_set() and gmail_behind_proxy.proxy("api").dropped == drops
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert outgoing.status == Status.SENT and outgoing.remote_id == sent.id
    assert sent.raw == bytes(outgoing.raw)


@pytest.mark.dovecot
@pytest.mark.parametrize("drops", [1, 3])
def test_exchange_answer_lost_is_found_in_sent_items_not_sent_again(
    drops, dovecot, outlook_account, exchange_behind_proxy, settings
):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    account = outlook_account()
    outgoing = _queue(account)
    exchange_behind_proxy.proxy("smtp").drop_answers(after=b"\r\n.\r\n", times=1)
    if drops > 1:  # and the answers to the first checks of Sent Items
        exchange_behind_proxy.proxy("imap").drop_answers(after=b"SEARCH", times=drops - 1)

    outgoing = _send_until_settled(outgoing)

    assert outgoing.status == Status.SENT, outgoing.last_error
    assert len(dovecot.sink.messages) == 1 and _sent_items(dovecot, account, outgoing) == 1


@pytest.mark.dovecot
@pytest.mark.parametrize("drops", [1, 3])
def test_smtp_answer_lost_where_the_server_keeps_no_copy_is_unknown_and_not_sent_twice(
    drops, dovecot, outlook_account, dovecot_behind_proxy, settings, client
):
    settings.MAILHUB_SEND_SETTLE_SECONDS = 0
    account = outlook_account()
    outgoing = _queue(account)
    dovecot_behind_proxy.proxy("smtp").drop_answers(after=b"\r\n.\r\n", times=1)
    if drops > 1:
        dovecot_behind_proxy.proxy("imap").drop_answers(after=b"SEARCH", times=drops - 1)

    outgoing = _send_until_settled(outgoing)

    # Dovecot relayed it, and nothing can tell: the user decides.
    assert outgoing.status == Status.UNKNOWN and outgoing.last_error_code == "no_record"
    assert outgoing.error_message.startswith("The connection broke while the server was taking this message")
    assert len(dovecot.sink.messages) == 1 and _sent_items(dovecot, account, outgoing) == 0

    client.force_login(account.user)
    page = client.get("/outbox/").content.decode()
    assert "Check again" in page and "Send anyway" in page and outgoing.error_message[:40] in page
    # "Check again" asks again: still unknown, still one copy.
    client.post(f"/outbox/{outgoing.pk}/check/")
    assert _send_until_settled(outgoing).status == Status.UNKNOWN and len(dovecot.sink.messages) == 1
    # "Send anyway" is the user's explicit choice to send it again.
    client.post(f"/outbox/{outgoing.pk}/send-anyway/")
    outgoing = _send_until_settled(outgoing)
    assert outgoing.status == Status.SENT and len(dovecot.sink.messages) == 2
    assert _sent_items(dovecot, account, outgoing) == 1  # filed once, by the APPEND after the send


# --- Dead workers ---------------------------------------------------------------------------------


def _kill(worker, how: str, processes):
    """SIGKILL the pool child (the main process notices and stays) or the main process (a new one starts)."""
    if how == "child":
        worker.kill_child()
        return worker
    worker.kill_main()
    return processes.worker("after")


def _settled(outgoing: OutgoingMessage, processes, *, timeout: float = 60) -> OutgoingMessage:
    assert wait_for(lambda: OutgoingMessage.objects.get(pk=outgoing.pk).status in END, timeout=timeout), (
        f"stuck in {OutgoingMessage.objects.get(pk=outgoing.pk).status}:\n{processes.output()}"
    )
    outgoing.refresh_from_db()
    return outgoing


GMAIL_CASES = [
    (broker, kill, point)
    for broker in ("redis", "filesystem")
    for kill in ("child", "main")
    for point in ("before", "accepted")
]


@pytest.mark.faults
@pytest.mark.parametrize(("broker", "kill", "point"), GMAIL_CASES)
def test_gmail_worker_killed_mid_send(
    broker, kill, point, gmail_account, gmail_mailbox, gmail_behind_proxy, celery_processes
):
    proxy = gmail_behind_proxy.proxy("api")
    processes = celery_processes(broker, gmail_behind_proxy)
    worker = processes.worker()
    processes.beat()
    if point == "before":  # the request never reaches Gmail
        reached = proxy.hold_request(marker=b"/messages/send")
    else:  # Gmail has taken the message; its answer never comes back
        reached = proxy.hold_answer(after=b"/messages/send")
    outgoing = _queue(gmail_account)
    assert reached.wait(60), processes.output()
    _kill(worker, kill, processes)
    proxy.release()

    outgoing = _settled(outgoing, processes)

    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    assert outgoing.status == Status.SENT and outgoing.remote_id == sent.id


OUTLOOK_CASES = [
    ("redis", kill, point) for kill in ("child", "main") for point in ("before", "accepted", "before_append")
] + [("filesystem", kill, "before_append") for kill in ("child", "main")]


@pytest.mark.faults
@pytest.mark.dovecot
@pytest.mark.parametrize(("broker", "kill", "point"), OUTLOOK_CASES)
def test_outlook_worker_killed_mid_send(
    broker, kill, point, dovecot, outlook_account, dovecot_behind_proxy, celery_processes
):
    account = outlook_account()
    processes = celery_processes(broker, dovecot_behind_proxy)
    worker = processes.worker()
    processes.beat()
    if point == "before":
        reached = dovecot_behind_proxy.proxy("smtp").hold_request(marker=b" FROM:<")
    elif point == "accepted":  # Dovecot relayed it; the 250 never comes back
        reached = dovecot_behind_proxy.proxy("smtp").hold_answer(after=b"\r\n.\r\n")
    else:  # sent and recorded; killed before the copy went to Sent
        reached = dovecot_behind_proxy.proxy("imap").hold_request(marker=b"APPEND")
    outgoing = _queue(account)
    assert reached.wait(60), processes.output()
    _kill(worker, kill, processes)
    for proxy in dovecot_behind_proxy.proxies.values():
        proxy.release()

    outgoing = _settled(outgoing, processes)

    assert len(dovecot.sink.messages) == 1  # never twice
    if point == "accepted":
        assert outgoing.status == Status.UNKNOWN  # Dovecot keeps no copy of what it relayed
        return
    assert outgoing.status == Status.SENT
    assert wait_for(lambda: _sent_items(dovecot, account, outgoing) == 1, timeout=30), processes.output()
    assert wait_for(lambda: OutgoingMessage.objects.get(pk=outgoing.pk).filed_at is not None, timeout=30)
    assert _sent_items(dovecot, account, outgoing) == 1


# --- Scheduled send across a restart of everything ------------------------------------------------


@pytest.mark.faults
@pytest.mark.parametrize("broker", ["redis", "filesystem"])
def test_a_scheduled_message_goes_at_its_time_though_every_process_was_killed_before(
    broker, gmail_account, gmail_mailbox, gmail_behind_proxy, celery_processes
):
    processes = celery_processes(broker, gmail_behind_proxy)
    # A lost task is found 30 s late: sending on time proves the sweep gave the row a task for its time.
    processes.env["MAILHUB_OUTBOX_OVERDUE_SECONDS"] = "30"
    worker, beat = processes.worker(), processes.beat()
    assert wait_for(lambda: "ready" in worker.output(), timeout=30), processes.output()
    when = timezone.now() + timedelta(seconds=8)
    draft = OutgoingMessage.objects.create(
        account=gmail_account, to=[{"name": "Bob", "email": "bob@example.org"}], subject="At eight", body_text="x"
    )
    outgoing = outbox.outgoing_queue(outgoing=draft, scheduled_for=when)
    # The worker holds the task until its time; then every process dies with it, SIGKILLed.
    assert wait_for(lambda: "Task mailbox.tasks.outgoing_send" in worker.output(), timeout=30), processes.output()
    worker.stop()
    beat.stop()
    assert OutgoingMessage.objects.get(pk=outgoing.pk).status == Status.QUEUED
    processes.worker("after")
    processes.beat()

    outgoing = _settled(outgoing, processes)

    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)  # once
    assert outgoing.status == Status.SENT and outgoing.remote_id == sent.id
    assert outgoing.sent_at >= when  # not before its time
    assert outgoing.sent_at - when < timedelta(seconds=10), processes.output()  # and on time, not a sweep later


# --- A batch through a killed worker ----------------------------------------------------------------


@pytest.mark.faults
@pytest.mark.parametrize("kill", ["child", "main"])
def test_a_50_recipient_batch_from_csv_reaches_everyone_once_though_the_worker_is_killed(
    kill, alice, gmail_account, gmail_mailbox, gmail_behind_proxy, celery_processes, settings
):
    from mailbox import batches

    settings.MAILHUB_BATCH_PACING = False  # all due now: the kill lands in the middle of the sending
    store, email = gmail_mailbox.store, gmail_mailbox.email
    for _ in range(60):
        store.delay_next(0.15, method="messages.send", email=email)  # a slow Gmail: about 7 s for all
    processes = celery_processes("redis", gmail_behind_proxy)
    worker = processes.worker()
    processes.beat()
    listing = "email,name,code\n" + "".join(f"r{i}@example.org,Reader {i},C{i}\n" for i in range(50))
    draft = OutgoingMessage.objects.create(account=gmail_account, subject="Code {{ code }}", body_text="Hi {{ name }}")
    batch = batches.batch_create(draft=draft, recipients=batches.recipients_from_csv(listing.encode()), user=alice)

    assert wait_for(lambda: len(store.sent_messages(email)) >= 10, timeout=60), processes.output()
    _kill(worker, kill, processes)
    assert wait_for(lambda: batch.messages.filter(status=Status.SENT).count() == 50, timeout=120), (
        f"{list(batch.messages.values_list('status', flat=True))}\n{processes.output()}"
    )

    sent = store.sent_messages(email)
    subjects = sorted(message_from_bytes(m.raw)["Subject"] for m in sent)
    assert subjects == sorted(f"Code C{i}" for i in range(50))  # everyone, once, with their own value
