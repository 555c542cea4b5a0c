"""The outbox: every message is sent exactly once, through a state machine the user can see.

``OutgoingMessage.status``: draft → queued → sending → sent, or failed (it certainly did not go), or
unknown (the provider may or may not have it: the user checks again or sends anyway).

- **One path.** :func:`outgoing_send` is the only code that sends. The Celery task, its reschedules, the
  sweep and the user's buttons all end up there, and it claims the row first: a compare-and-set from
  "queued" (or "sending" with a run-out lease) to "sending" with a lease of ``MAILHUB_SEND_LEASE_SECONDS``.
  A task that finds the lease held comes back when it ends; a task that comes before a queued row is due
  is a duplicate and does nothing.
- **Handoff.** The provider calls ``handoff()`` immediately before the bytes leave, which commits
  ``handed_off_at``. Errors raised before it, and definite refusals after it, mean the message did not go:
  temporary ones are retried with backoff, the rest fail. After a handoff whose answer was lost
  (SendUncertain, a killed worker) nothing is sent again until the provider has been asked
  (``find_sent``, by the Message-ID fixed when the row was queued), no earlier than
  ``MAILHUB_SEND_SETTLE_SECONDS`` after the handoff. Found: sent. Not found at a provider that keeps a copy
  of everything it accepted (``keeps_sent_copy``): it did not go, send it. Otherwise: unknown.
- **Nothing stuck.** :func:`outbox_sweep` (beat) re-dispatches queued rows whose task is overdue (lost with
  a killed worker or a broker without acknowledgements, like the filesystem broker of ``make run``) and
  rows whose "sending" lease ran out, and files sent copies that a dead worker did not file.
- Transport-level retries of the send call are off in every provider (see ``providers.google.mail``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.services import account_mark_needs_reconnect
from mailbox import store
from mailbox.identities import sender_of
from mailbox.local import account_client, outgoing_of
from mailbox.mail_templates import outgoing_values, variables_fill
from mailbox.models import Folder, Message, OutgoingMessage, SendProblem, new_message_id
from mailbox.signatures import html_signed, signature_html, text_signed
from providers.base import MailClient
from providers.errors import ActionRequired, ErrorCode, ProviderError, ReconnectRequired, SendUncertain

logger = logging.getLogger(__name__)

Status = OutgoingMessage.Status
MAX_SEND_ATTEMPTS = 5  # claims of one row (sends and checks) before it is failed or unknown
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 1800.0
EARLY_TOLERANCE = timedelta(seconds=2)  # a task this close to its row's due time is the row's own task
SWEEP_BATCH = 500
# A task whose ETA is further out would outlive the broker's visibility timeout (an hour) and be delivered again;
# a row due later is dispatched by the sweep when it is due within schedule_lookahead().
DISPATCH_AHEAD = timedelta(minutes=50)
FILE_SENT_WITHIN = timedelta(days=7)  # the sweep stops trying to file a sent copy after this


class SendOutcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # back in the queue: the task comes back after ``retry_after``
    WAIT = "wait"  # another worker holds the row: come back after ``retry_after``
    FAILED = "failed"
    UNKNOWN = "unknown"
    NOTHING = "nothing"  # no such row, not due yet, or nothing left to do (sent, failed, a draft)


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    retry_after: float | None = None


def _seconds(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def send_lease() -> timedelta:
    return timedelta(seconds=_seconds("MAILHUB_SEND_LEASE_SECONDS", 300))


def send_settle() -> timedelta:
    """How long a message the provider accepted may take to show up where ``find_sent`` looks."""
    return timedelta(seconds=_seconds("MAILHUB_SEND_SETTLE_SECONDS", 30))


def schedule_lookahead() -> timedelta:
    """How far ahead the sweep gives scheduled rows a task for their time: a few sweeps' worth."""
    return timedelta(seconds=max(120.0, 3 * _seconds("MAILHUB_OUTBOX_SWEEP_SECONDS", 30)))


def outbox_overdue() -> timedelta:
    """A queued row whose task has not run this long after it was due has lost its task."""
    return timedelta(seconds=_seconds("MAILHUB_OUTBOX_OVERDUE_SECONDS", 60))


# --- Writing the message ------------------------------------------------------------------------


def _address_list(people: list) -> list[str]:
    out = []
    for person in people or []:
        if isinstance(person, str):
            out.append(person)
        elif person.get("email"):
            out.append(formataddr((person.get("name") or "", person["email"])))
    return out


def outgoing_build_raw(*, outgoing: OutgoingMessage, date: datetime | None = None) -> bytes:
    """The RFC 5322 bytes of ``outgoing`` (sets its Message-ID and reply headers if not chosen yet), dated
    ``date`` (the time it is due to go) or now."""
    if not outgoing.message_id:
        outgoing.message_id = new_message_id(outgoing.account.email)
    _reply_headers_set(outgoing)
    # A template's variables, checked before the message was queued (outgoing_variable_problems).
    values = outgoing_values(outgoing) if outgoing.fills_variables else None
    return _mime(outgoing, message_id=outgoing.message_id, date=date or timezone.now(), values=values)


def draft_build_raw(*, outgoing: OutgoingMessage) -> bytes:
    """The bytes of the copy kept in the mailbox's Drafts at the provider: as it would be sent, but under its own
    Message-ID (``draft_key``, chosen here once) and with any template variables left for the recipient."""
    if not outgoing.draft_key:
        outgoing.draft_key = new_message_id(outgoing.account.email)
    _reply_headers_set(outgoing)
    return _mime(outgoing, message_id=outgoing.draft_key, date=timezone.now(), values=None)


def _reply_headers_set(outgoing: OutgoingMessage) -> None:
    source = outgoing.source
    replying = outgoing.kind in (OutgoingMessage.Kind.REPLY, OutgoingMessage.Kind.REPLY_ALL)
    if replying and source is not None and source.message_id and not outgoing.in_reply_to:
        outgoing.in_reply_to = source.message_id
        refs = source.references.split() if source.references else []
        if not refs and source.in_reply_to:
            refs = [f"<{source.in_reply_to}>"]
        outgoing.references = " ".join([*refs, f"<{source.message_id}>"])


def _mime(outgoing: OutgoingMessage, *, message_id: str, date: datetime, values: dict[str, str] | None) -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr(sender_of(outgoing))
    for header, people in (("To", outgoing.to), ("Cc", outgoing.cc), ("Bcc", outgoing.bcc)):
        addresses = _address_list(people)
        if addresses:
            msg[header] = ", ".join(addresses)
    msg["Subject"] = variables_fill(outgoing.subject, values) if values is not None else outgoing.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{message_id}>"
    if outgoing.in_reply_to:
        msg["In-Reply-To"] = f"<{outgoing.in_reply_to}>"
    if outgoing.references:
        msg["References"] = outgoing.references
    msg["MIME-Version"] = "1.0"
    text, html = outgoing.body_text or "", outgoing.body_html
    if values is not None:
        text, html = variables_fill(text, values), variables_fill(html, values, html=True)
    if outgoing.signature is not None:
        text = text_signed(text, outgoing.signature.text, quote_marker=outgoing.quote_marker)
        html = html and html_signed(html, signature_html(outgoing.signature), quote_marker=outgoing.quote_marker)
    msg.set_content(text)
    if html:
        html, pictures = _pictures_as_parts(html)
        msg.add_alternative(html, subtype="html")
        html_part = msg.get_body(("html",))
        if html_part is not None:  # always: it was just added
            for cid, subtype, data in pictures:
                html_part.add_related(data, maintype="image", subtype=subtype, cid=f"<{cid}>", disposition="inline")
    for attachment in outgoing.attachments.select_related("blob"):
        maintype, _sep, subtype = (attachment.content_type or "application/octet-stream").partition("/")
        with attachment.blob.open() as handle:
            data = handle.read()
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=attachment.filename)
    return msg.as_bytes()


_DATA_IMAGE = re.compile(r'src="data:image/(png|gif|jpeg|webp);base64,([A-Za-z0-9+/=\s]+)"')


def _pictures_as_parts(html: str) -> tuple[str, list[tuple[str, str, bytes]]]:
    """Pictures pasted into the editor (data: images) as parts of the message the HTML names by cid:, the way
    mail clients send them (a data: image is shown by few of them). Returns the HTML and (cid, subtype, bytes)."""
    parts: dict[str, tuple[str, str, bytes]] = {}

    def part(match: re.Match[str]) -> str:
        payload = re.sub(r"\s+", "", match.group(2))
        if payload not in parts:
            try:
                data = base64.b64decode(payload, validate=True)
            except binascii.Error:
                return 'src=""'
            parts[payload] = (make_msgid(idstring="img", domain="mailhub.invalid").strip("<>"), match.group(1), data)
        return f'src="cid:{parts[payload][0]}"'

    return _DATA_IMAGE.sub(part, html), list(parts.values())


# --- What users do ------------------------------------------------------------------------------


def _dispatch(outgoing_id: int, *, eta: datetime | None = None) -> None:
    from mailbox import tasks

    if eta is None or eta <= timezone.now():
        transaction.on_commit(lambda: tasks.outgoing_send.delay(outgoing_id))
    else:
        transaction.on_commit(lambda: tasks.outgoing_send.apply_async((outgoing_id,), eta=eta))


def outgoing_queue(
    *, outgoing: OutgoingMessage, hold: timedelta = timedelta(0), scheduled_for: datetime | None = None
) -> OutgoingMessage:
    """Freeze the message (raw MIME built once, Message-ID chosen once) and queue it for sending: now, after
    ``hold`` (the user's undo-send delay, during which :func:`outgoing_unsend` takes it back), or at
    ``scheduled_for``. A task is dispatched for the due time unless that is beyond ``DISPATCH_AHEAD``; the
    sweep dispatches such a row as its time comes (:func:`outbox_sweep`)."""
    now = timezone.now()
    due = scheduled_for or now + hold
    with transaction.atomic():
        outgoing.raw = outgoing_build_raw(outgoing=outgoing, date=due)
        outgoing.status = Status.QUEUED
        outgoing.queued_at, outgoing.next_attempt_at, outgoing.scheduled_for = now, due, scheduled_for
        outgoing.last_error = outgoing.last_error_code = ""
        outgoing.save()
        if due - now <= DISPATCH_AHEAD:
            _dispatch(outgoing.pk, eta=due)
    return outgoing


def outgoing_unsend(*, outgoing: OutgoingMessage) -> bool:
    """Undo send, or cancel a scheduled send: the queued message goes back to Drafts as it was written. False
    when it is too late: a worker has claimed it (a compare-and-set, so the two never both win)."""
    back = OutgoingMessage.objects.filter(pk=outgoing.pk, status=Status.QUEUED, handed_off_at__isnull=True).update(
        status=Status.DRAFT,
        raw=None,
        queued_at=None,
        next_attempt_at=None,
        scheduled_for=None,
        attempts=0,
        last_error="",
        last_error_code="",
        updated_at=timezone.now(),
    )
    outgoing.refresh_from_db()
    return bool(back)


def _requeue_by_user(*, outgoing: OutgoingMessage, from_status: str, forget_handoff: bool) -> OutgoingMessage:
    now = timezone.now()
    values: dict = {"status": Status.QUEUED, "attempts": 0, "next_attempt_at": now, "updated_at": now}
    if forget_handoff:
        values["handed_off_at"] = None
    with transaction.atomic():
        if OutgoingMessage.objects.filter(pk=outgoing.pk, status=from_status).update(**values):
            _dispatch(outgoing.pk)
    outgoing.refresh_from_db()
    return outgoing


def outgoing_retry(*, outgoing: OutgoingMessage) -> OutgoingMessage:
    """Queue a failed message again: the same bytes; the provider is asked first if an attempt may have gone."""
    return _requeue_by_user(outgoing=outgoing, from_status=Status.FAILED, forget_handoff=False)


def outgoing_check_again(*, outgoing: OutgoingMessage) -> OutgoingMessage:
    """For an "unknown" row: ask the provider again (and send it only if the provider proves it did not go)."""
    return _requeue_by_user(outgoing=outgoing, from_status=Status.UNKNOWN, forget_handoff=False)


def outgoing_send_anyway(*, outgoing: OutgoingMessage) -> OutgoingMessage:
    """For an "unknown" row: the user accepts that recipients may get it twice; send it again."""
    return _requeue_by_user(outgoing=outgoing, from_status=Status.UNKNOWN, forget_handoff=True)


# --- Sending ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    row: OutgoingMessage | None
    wait: float | None = None  # seconds until another worker's lease on the row ends


def _outgoing_claim(outgoing_id: int) -> _Claim:
    """Take the row for this worker (queued, or sending with a run-out lease → sending, with a fresh lease).

    A compare-and-set on the values read, so two workers never both win, on PostgreSQL and SQLite alike.
    """
    row = OutgoingMessage.objects.select_related("account").filter(pk=outgoing_id).first()
    if row is None:
        return _Claim(None)
    now = timezone.now()
    if row.status == Status.SENDING and row.lease_expires_at and row.lease_expires_at > now:
        return _Claim(None, wait=(row.lease_expires_at - now).total_seconds())
    if row.status == Status.QUEUED and row.next_attempt_at and row.next_attempt_at > now + EARLY_TOLERANCE:
        return _Claim(None)  # an early duplicate: the row's own task (or the sweep) comes when it is due
    if row.status not in (Status.QUEUED, Status.SENDING):
        return _Claim(None)
    lease = now + send_lease()
    # next_attempt_at too: a row taken back to Drafts and queued again meanwhile is a new message, not this read.
    won = OutgoingMessage.objects.filter(
        pk=row.pk,
        status=row.status,
        attempts=row.attempts,
        lease_expires_at=row.lease_expires_at,
        next_attempt_at=row.next_attempt_at,
    ).update(status=Status.SENDING, attempts=row.attempts + 1, lease_expires_at=lease, updated_at=now)
    if not won:
        return _Claim(None)
    row.status, row.attempts, row.lease_expires_at = Status.SENDING, row.attempts + 1, lease
    return _Claim(row)


def _finish(row: OutgoingMessage, status: str, **values) -> None:
    """Leave "sending" (only if this worker's claim still holds the row)."""
    OutgoingMessage.objects.filter(pk=row.pk, status=Status.SENDING, lease_expires_at=row.lease_expires_at).update(
        status=status, lease_expires_at=None, updated_at=timezone.now(), **values
    )


def _retry_delay(attempts: int) -> float:
    delay = min(RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0), RETRY_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class _Problem:
    """Why a row is not sent (yet): a code users read words for (``OutgoingMessage.error_message``) and what the
    provider said, for the user where it matters (a refusal) and for administrators."""

    code: str
    detail: str = ""

    @classmethod
    def of(cls, exc: ProviderError) -> _Problem:
        return cls(exc.code, exc.detail or str(exc))

    def fields(self) -> dict[str, str]:
        return {"last_error_code": self.code, "last_error": self.detail[:2000]}


_NO_PROBLEM = {"last_error_code": "", "last_error": ""}


def _requeue(row: OutgoingMessage, *, delay: float, problem: _Problem, **values) -> SendResult:
    due = timezone.now() + timedelta(seconds=delay)
    _finish(row, Status.QUEUED, next_attempt_at=due, **problem.fields(), **values)
    return SendResult(SendOutcome.RETRY, retry_after=delay)


def _fail(row: OutgoingMessage, *, problem: _Problem, **values) -> SendResult:
    _finish(row, Status.FAILED, **problem.fields(), **values)
    return SendResult(SendOutcome.FAILED)


def _unknown(row: OutgoingMessage, *, problem: _Problem) -> SendResult:
    _finish(row, Status.UNKNOWN, **problem.fields())
    return SendResult(SendOutcome.UNKNOWN)


def _sent(row: OutgoingMessage, *, remote_id: str) -> SendResult:
    _finish(row, Status.SENT, remote_id=remote_id, sent_at=timezone.now(), **_NO_PROBLEM)
    return SendResult(SendOutcome.SENT)


def _same_problem(row: OutgoingMessage) -> _Problem:
    return _Problem(row.last_error_code, row.last_error)


def outgoing_send(*, outgoing_id: int) -> SendResult:
    """Move one queued message on: send it, find it at the provider, or record why it cannot (module docstring)."""
    claim = _outgoing_claim(outgoing_id)
    if claim.row is None:
        return SendResult(SendOutcome.WAIT, retry_after=claim.wait) if claim.wait else SendResult(SendOutcome.NOTHING)
    outgoing = claim.row
    try:
        client = account_client(outgoing.account)
    except ProviderError as exc:  # e.g. the provider was disabled
        return _fail(outgoing, problem=_Problem.of(exc))
    if outgoing.handed_off_at is not None:
        checked = _outgoing_check(outgoing, client, handed_off_at=outgoing.handed_off_at)
        if checked is not None:
            return checked
    return _outgoing_attempt(outgoing, client)


def _outgoing_check(outgoing: OutgoingMessage, client: MailClient, *, handed_off_at: datetime) -> SendResult | None:
    """An earlier attempt handed the message over: ask the provider. None: proven not sent, send it."""
    settled_at = handed_off_at + send_settle()
    now = timezone.now()
    if now < settled_at:
        return _requeue(outgoing, delay=(settled_at - now).total_seconds(), problem=_same_problem(outgoing))
    try:
        remote_id = client.find_sent(outgoing=outgoing_of(outgoing))
    except (ReconnectRequired, ActionRequired) as exc:
        _account_needs_person(outgoing, exc)
        return _unknown(outgoing, problem=_Problem(SendProblem.CHECK_FAILED, str(exc)))
    except Exception as exc:
        if not isinstance(exc, ProviderError):
            logger.exception("Checking whether outgoing message %s went out crashed", outgoing.pk)
        if outgoing.attempts >= MAX_SEND_ATTEMPTS:
            detail = str(exc) if isinstance(exc, ProviderError) else type(exc).__name__
            return _unknown(outgoing, problem=_Problem(SendProblem.CHECK_FAILED, detail))
        return _requeue(outgoing, delay=_retry_delay(outgoing.attempts), problem=_same_problem(outgoing))
    if remote_id:
        logger.info("Outgoing message %s was already at the provider; not sending it again", outgoing.pk)
        result = _sent(outgoing, remote_id=remote_id)
        _outgoing_file(outgoing, client, remote_id=remote_id)
        return result
    if not client.keeps_sent_copy:
        return _unknown(outgoing, problem=_Problem(SendProblem.NO_RECORD))
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(handed_off_at=None)
    outgoing.handed_off_at = None
    return None


def _outgoing_attempt(outgoing: OutgoingMessage, client: MailClient) -> SendResult:
    handed_off = False

    def handoff() -> None:
        nonlocal handed_off
        OutgoingMessage.objects.filter(pk=outgoing.pk).update(handed_off_at=timezone.now())
        handed_off = True

    try:
        remote_id = client.send(outgoing=outgoing_of(outgoing), handoff=handoff)
    except SendUncertain as exc:
        return _after_uncertain(outgoing, problem=_Problem.of(exc))
    except (ReconnectRequired, ActionRequired) as exc:
        _account_needs_person(outgoing, exc)
        return _fail(outgoing, problem=_Problem.of(exc), handed_off_at=None)
    except ProviderError as exc:
        if outgoing.attempts >= MAX_SEND_ATTEMPTS:
            return _fail(outgoing, problem=_Problem.of(exc), handed_off_at=None)
        delay = exc.retry_after if exc.retry_after else _retry_delay(outgoing.attempts)
        return _requeue(outgoing, delay=delay, problem=_Problem.of(exc), handed_off_at=None)
    except Exception as exc:
        logger.exception("Sending outgoing message %s crashed", outgoing.pk)
        problem = _Problem(ErrorCode.UNEXPECTED, type(exc).__name__)
        if handed_off:
            return _after_uncertain(outgoing, problem=problem)
        return _fail(outgoing, problem=problem)
    result = _sent(outgoing, remote_id=remote_id)
    _outgoing_file(outgoing, client, remote_id=remote_id)
    return result


def _account_needs_person(outgoing: OutgoingMessage, exc: ProviderError) -> None:
    """A ReconnectRequired marks the account for reconnecting, as the sync does."""
    if isinstance(exc, ReconnectRequired):
        account_mark_needs_reconnect(account=outgoing.account, reason=exc.code)


def _after_uncertain(outgoing: OutgoingMessage, *, problem: _Problem) -> SendResult:
    """The answer to a handoff was lost: come back once the provider has had time to show the message."""
    if outgoing.attempts >= MAX_SEND_ATTEMPTS:
        return _unknown(outgoing, problem=problem)
    return _requeue(outgoing, delay=send_settle().total_seconds(), problem=problem)


# --- Filing the sent copy -----------------------------------------------------------------------


def _outgoing_file(outgoing: OutgoingMessage, client: MailClient, *, remote_id: str) -> None:
    """Put the sent message in Sent (where the server does not) and in the local store; the sweep retries."""
    try:
        client.file_sent(outgoing=outgoing_of(outgoing), remote_id=remote_id)
        _outgoing_file_local(outgoing=outgoing, remote_id=remote_id)
    except ProviderError as exc:
        logger.warning("Sent message %s not filed in Sent yet (%s); will retry", outgoing.pk, exc)
        return
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(filed_at=timezone.now())


def _outgoing_file_local(*, outgoing: OutgoingMessage, remote_id: str) -> None:
    """Show the sent message in the local Sent folder, unless the client has already stored it."""
    account = outgoing.account
    if Message.objects.filter(account=account, remote_id=remote_id).exists():
        return
    sent = Folder.objects.filter(account=account, role=Folder.Role.SENT).first()
    source = outgoing.source
    thread_key = store.thread_provider_key(source.thread) if source is not None else None
    store.message_upsert(
        account=account,
        remote_id=remote_id,
        raw=outgoing.raw_bytes(),
        folders=[sent] if sent else [],
        is_read=True,
        thread_key=thread_key,
    )


def outgoing_file(*, outgoing_id: int) -> bool:
    """File a sent message that a dead worker left unfiled (the sweep's task). True when it is filed."""
    outgoing = (
        OutgoingMessage.objects.select_related("account")
        .filter(pk=outgoing_id, status=Status.SENT, filed_at__isnull=True)
        .first()
    )
    if outgoing is None:
        return True
    try:
        client = account_client(outgoing.account)
    except ProviderError:
        return False
    _outgoing_file(outgoing, client, remote_id=outgoing.remote_id)
    return OutgoingMessage.objects.filter(pk=outgoing_id, filed_at__isnull=False).exists()


# --- The sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    send: list[int]
    file: list[int]
    scheduled: list[tuple[int, datetime]] = field(default_factory=list)  # (id, due): dispatch with that ETA


def outbox_sweep(*, now: datetime | None = None) -> SweepResult:
    """Rows a lost task or a dead worker left behind, made due again: returns the ids to dispatch.

    "sending" rows whose lease ran out go back to "queued" (their handoff, if any, is kept, so the provider is
    asked first); queued rows overdue by ``outbox_overdue()`` are marked as just dispatched, so the next sweep
    waits as long again before dispatching them once more.
    """
    now = now or timezone.now()
    dead = OutgoingMessage.objects.filter(status=Status.SENDING, lease_expires_at__lt=now)
    for pk, lease in dead.values_list("pk", "lease_expires_at")[:SWEEP_BATCH]:
        OutgoingMessage.objects.filter(pk=pk, status=Status.SENDING, lease_expires_at=lease).update(
            status=Status.QUEUED, lease_expires_at=None, next_attempt_at=now - outbox_overdue()
        )
    overdue = now - outbox_overdue()
    due = Q(next_attempt_at__lte=overdue) | Q(next_attempt_at__isnull=True)
    send = list(
        OutgoingMessage.objects.filter(due, status=Status.QUEUED)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    OutgoingMessage.objects.filter(pk__in=send, status=Status.QUEUED).update(next_attempt_at=now)
    file = list(
        OutgoingMessage.objects.filter(
            status=Status.SENT, filed_at__isnull=True, sent_at__lte=overdue, sent_at__gte=now - FILE_SENT_WITHIN
        ).values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    # Scheduled rows due soon get a task for their time: rows scheduled too far ahead got none when queued, and a
    # task held by a worker that has since died is gone with it. Extra tasks are harmless (the claim decides).
    due_soon = OutgoingMessage.objects.filter(
        status=Status.QUEUED,
        scheduled_for__isnull=False,
        next_attempt_at__gt=now,
        next_attempt_at__lte=now + schedule_lookahead(),
    )
    scheduled = [(pk, due) for pk, due in due_soon.values_list("pk", "next_attempt_at")[:SWEEP_BATCH] if due]
    if send or file:
        logger.info("Outbox sweep: %d to send, %d to file", len(send), len(file))
    return SweepResult(send=send, file=file, scheduled=scheduled)
