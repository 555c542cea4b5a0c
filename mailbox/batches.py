"""Batch send: one message to many recipients, each receiving their own copy.

The list is read whole before anything is sent (pasted "Name <address>" lines, or a CSV file with an email
column whose other columns become template variables): a bad row names its row number and nothing is
created until it is fixed. Then every recipient gets an outbox row at once, in one transaction, each due
``interval`` after the previous one (the provider's sending limit), so a worker killed half-way leaves the
rest queued: the outbox's exactly-once path and its sweep send each of them once, and skip nobody. A recipient
a variable has no value for gets a failed row that says why; the others go.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from mailbox.forms import addresses_parse
from mailbox.mail_templates import outgoing_values, outgoing_variable_problems, variables_fill
from mailbox.models import Batch, OutgoingAttachment, OutgoingMessage
from mailbox.outbox import outgoing_queue
from providers import registry
from providers.errors import ErrorCode

MAX_RECIPIENTS = 10_000
PREVIEWS = 3
EMAIL_COLUMNS = ("email", "e-mail", "email address", "address")


@dataclass(frozen=True)
class Recipient:
    row: int  # 1-based line of the list or CSV file, for error messages
    email: str
    name: str = ""
    values: dict[str, str] = field(default_factory=dict)  # the CSV's other columns


class RecipientListError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def recipients_from_text(text: str) -> list[Recipient]:
    """One recipient per line: "address" or "Name <address>"."""
    found: list[Recipient] = []
    problems: list[str] = []
    for row, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            people = addresses_parse(line)
        except ValidationError as exc:
            problems.append(_("Line %(row)d: %(reason)s") % {"row": row, "reason": " ".join(exc.messages)})
            continue
        found += [Recipient(row=row, email=p["email"], name=p["name"]) for p in people]
    return _checked(found, problems)


def recipients_from_csv(data: bytes) -> list[Recipient]:
    """A CSV file with a header row: an email column, optionally name, and any others (variables)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RecipientListError([_("The file is not UTF-8 text: save it as CSV (UTF-8).")]) from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    email_column = next((columns[c] for c in EMAIL_COLUMNS if c in columns), None)
    if email_column is None:
        raise RecipientListError([_("The file has no column named email.")])
    name_column = columns.get("name")
    found: list[Recipient] = []
    problems: list[str] = []
    for record in reader:  # blank lines are skipped; line_num is the file's line (1 is the header)
        row = reader.line_num
        email = (record.get(email_column) or "").strip()
        try:
            validate_email(email)
        except ValidationError:
            problems.append(_("Row %(row)d: “%(email)s” is not an email address.") % {"row": row, "email": email})
            continue
        values = {_variable(k): (v or "").strip() for k, v in record.items() if k and isinstance(v, str)}
        found.append(
            Recipient(
                row=row, email=email, name=(record.get(name_column) or "").strip() if name_column else "", values=values
            )
        )
    return _checked(found, problems)


def _variable(column: str) -> str:
    """A column's variable name: "First name" is {{ first_name }}."""
    return "_".join(column.strip().lower().split())


def _checked(found: list[Recipient], problems: list[str]) -> list[Recipient]:
    seen: dict[str, int] = {}
    for recipient in found:
        first = seen.setdefault(recipient.email.lower(), recipient.row)
        if first != recipient.row:
            problems.append(
                _("Row %(row)d repeats %(email)s (row %(first)d): each recipient gets one copy.")
                % {"row": recipient.row, "email": recipient.email, "first": first}
            )
    if not found and not problems:
        problems.append(_("The list has no recipients."))
    if len(found) > MAX_RECIPIENTS:
        problems.append(_("A batch may have at most %(max)d recipients.") % {"max": MAX_RECIPIENTS})
    if problems:
        raise RecipientListError(problems)
    return found


def batch_interval(*, draft: OutgoingMessage) -> float:
    """Seconds between two messages of a batch from the draft's mailbox (0 when pacing is turned off)."""
    if not getattr(settings, "MAILHUB_BATCH_PACING", True):
        return 0.0
    return registry.get(draft.account.provider).send_interval(email=draft.account.email)


def _copy_for(draft: OutgoingMessage, recipient: Recipient) -> OutgoingMessage:
    """The draft as one recipient's own message (To is that recipient alone; Cc and Bcc are not copied)."""
    return OutgoingMessage(
        account=draft.account,
        status=OutgoingMessage.Status.DRAFT,
        to=[{"name": recipient.name, "email": recipient.email}],
        subject=draft.subject,
        body_text=draft.body_text,
        body_html=draft.body_html,
        from_alias=draft.from_alias,
        from_name=draft.from_name,
        signature=draft.signature,
        fills_variables=True,
        variables=recipient.values,
    )


@dataclass(frozen=True)
class Preview:
    recipient: Recipient
    subject: str = ""
    text: str = ""
    problem: str = ""


def batch_preview(*, draft: OutgoingMessage, recipients: list[Recipient]) -> list[Preview]:
    """The first few messages as their recipients will get them (or why one cannot be sent)."""
    previews = []
    for recipient in recipients[:PREVIEWS]:
        copy = _copy_for(draft, recipient)
        problems = outgoing_variable_problems(copy)
        if problems:
            previews.append(Preview(recipient=recipient, problem=" ".join(problems)))
            continue
        values = outgoing_values(copy)
        previews.append(
            Preview(
                recipient=recipient,
                subject=variables_fill(copy.subject, values),
                text=variables_fill(copy.body_text, values),
            )
        )
    return previews


@transaction.atomic
def batch_create(*, draft: OutgoingMessage, recipients: list[Recipient], user) -> Batch:
    """Queue one copy of ``draft`` per recipient, paced; the draft becomes the batch."""
    interval = batch_interval(draft=draft)
    batch = Batch.objects.create(user=user, account=draft.account, subject=draft.subject, interval_seconds=interval)
    attachments = list(draft.attachments.all())
    now = timezone.now()
    for index, recipient in enumerate(recipients):
        row = _copy_for(draft, recipient)
        row.batch = batch
        row.save()
        OutgoingAttachment.objects.bulk_create(OutgoingAttachment(outgoing=row, **a.copy_fields()) for a in attachments)
        problems = outgoing_variable_problems(row)
        if problems:
            OutgoingMessage.objects.filter(pk=row.pk).update(
                status=OutgoingMessage.Status.FAILED,
                last_error_code=ErrorCode.VARIABLE_MISSING,
                last_error=" ".join(problems)[:2000],
            )
            continue
        outgoing_queue(outgoing=row, scheduled_for=now + timedelta(seconds=interval * index))
    draft.delete()
    return batch


def batch_cancel_rest(*, batch: Batch) -> int:
    """Stop the batch: every message that has not started to go is marked not sent (Retry sends it after all);
    returns how many. The compare-and-set leaves alone one a worker has already claimed: that one still goes."""
    return OutgoingMessage.objects.filter(
        batch=batch, status=OutgoingMessage.Status.QUEUED, handed_off_at__isnull=True
    ).update(
        status=OutgoingMessage.Status.FAILED,
        last_error_code=ErrorCode.CANCELLED,
        last_error="",
        next_attempt_at=None,
        updated_at=timezone.now(),
    )
