"""Drafts for the compose form: new, reply, reply all and forward, and saving the form into a draft.

Sending is not here: a finished draft goes to ``mailbox.outbox.outgoing_queue``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import formats
from django.utils.translation import gettext as _

from accounts.models import MailAccount
from mailbox.identities import own_addresses, reply_alias
from mailbox.models import Message, OutgoingAttachment, OutgoingMessage
from mailbox.sanitize import html_to_text, html_written
from mailbox.signatures import signature_default
from mailbox.store import blob_store

_CONTENT_FIELDS = (
    *("account", "from_alias", "from_name", "signature"),
    *("to", "cc", "bcc", "subject", "body_html", "body_text"),
)
_PREFIX = {"reply": "Re:", "reply_all": "Re:", "forward": "Fwd:"}
_PREFIX_RE = {
    "Re:": re.compile(r"^\s*(re|aw|答复|回复)\s*[:：]", re.I),
    "Fwd:": re.compile(r"^\s*(fwd?|wg|转发)\s*[:：]", re.I),
}


def _subject_prefixed(subject: str, prefix: str) -> str:
    return subject if _PREFIX_RE[prefix].match(subject or "") else f"{prefix} {subject}".strip()


def _quoted(source: Message) -> str:
    text = source.body_text or html_to_text(source.body_html)
    when = formats.date_format(source.date, "DATETIME_FORMAT") if source.date else ""
    who = f"{source.from_name} <{source.from_address}>" if source.from_name else source.from_address
    header = _("On %(date)s, %(sender)s wrote:") % {"date": when, "sender": who}
    return "\n\n" + header + "\n" + "\n".join("> " + line for line in text.splitlines())


def _forwarded(source: Message) -> str:
    text = source.body_text or html_to_text(source.body_html)
    to = ", ".join(p.get("email", "") for p in source.to or [])
    lines = [
        "",
        "",
        "---------- " + _("Forwarded message") + " ----------",
        _("From: %(sender)s") % {"sender": f"{source.from_name} <{source.from_address}>"},
        _("Date: %(date)s") % {"date": formats.date_format(source.date, "DATETIME_FORMAT") if source.date else ""},
        _("Subject: %(subject)s") % {"subject": source.subject},
        _("To: %(to)s") % {"to": to},
        "",
        text,
    ]
    return "\n".join(lines)


def _without(people: Iterable[dict], emails: set[str]) -> list[dict]:
    kept, seen = [], set(emails)
    for person in people or []:
        key = (person.get("email") or "").lower()
        if key and key not in seen:
            seen.add(key)
            kept.append({"name": person.get("name") or "", "email": person["email"]})
    return kept


@transaction.atomic
def draft_from_source_create(*, source: Message, kind: str) -> OutgoingMessage:
    """A reply, reply-all or forward draft of ``source``, from the account that received it."""
    account = source.account
    own = own_addresses(account)
    draft = OutgoingMessage(account=account, kind=kind, source=source, status=OutgoingMessage.Status.DRAFT)
    alias = reply_alias(account=account, recipients=[*source.to, *source.cc])
    if alias is not None:
        draft.from_alias, draft.from_name = alias.address, alias.name
    draft.subject = _subject_prefixed(source.subject, _PREFIX[kind])
    if kind in {"reply", "reply_all"}:
        sender = source.reply_to or [{"name": source.from_name, "email": source.from_address}]
        if source.from_address.lower() in own:  # replying to our own sent message: write to its recipients
            sender = source.to
        draft.to = _without(sender, own)
        if kind == "reply_all":
            draft.cc = _without([*source.to, *source.cc], own | {p["email"].lower() for p in draft.to})
        draft.in_reply_to = source.message_id
        references = source.references.split() if source.references else []
        if source.message_id:
            references.append(f"<{source.message_id}>")
        draft.references = " ".join(references)
        draft.body_text = _quoted(source)
    else:
        draft.body_text = _forwarded(source)
    draft.quote_marker = draft.body_text.strip().splitlines()[0] if draft.body_text.strip() else ""
    draft.signature = signature_default(account=account, from_alias=draft.from_alias, reply=True)
    draft.save()
    if kind == "forward":
        OutgoingAttachment.objects.bulk_create(
            OutgoingAttachment(
                outgoing=draft,
                blob_id=a.blob_id,
                filename=a.filename or _("attachment"),
                content_type=a.content_type,
                size=a.size,
            )
            for a in source.attachments.all()
        )
    return draft


@transaction.atomic
def draft_save(
    *, draft: OutgoingMessage | None, account: MailAccount, data: dict, files: Iterable, remove_ids: Iterable[int]
) -> OutgoingMessage:
    """Write the compose form's cleaned ``data`` into ``draft`` (a new draft when None); add and remove files."""
    draft = draft or OutgoingMessage(status=OutgoingMessage.Status.DRAFT)
    draft.account = account
    draft.from_alias, draft.from_name = data.get("from_alias", ""), data.get("from_name", "")
    draft.signature = data.get("signature")
    draft.to, draft.cc, draft.bcc = data["to"], data["cc"], data["bcc"]
    draft.subject = data.get("subject") or ""
    if data.get("body_format") == "html" and data.get("body_html"):
        draft.body_html = html_written(html=data["body_html"])
        draft.body_text = html_to_text(draft.body_html)
    else:
        draft.body_html = ""
        draft.body_text = data.get("body_text") or ""
    if draft.pk is None:
        draft.revision = 1
        draft.save()
    else:
        draft.revision = F("revision") + 1  # counted in the database: the drafts sync compares it
        draft.save(update_fields=[*_CONTENT_FIELDS, "revision", "updated_at"])
        draft.refresh_from_db(fields=["revision"])
    draft.attachments.filter(id__in=list(remove_ids)).delete()
    for upload in files:
        OutgoingAttachment.objects.create(outgoing=draft, **upload_fields(upload))
    return draft


def upload_fields(upload) -> dict:
    """An uploaded file's bytes stored (shared with any identical file) and the fields an attachment keeps."""
    content = upload.read()
    return {
        "blob": blob_store(content=content),
        "filename": upload.name[:255],
        "content_type": upload.content_type or "application/octet-stream",
        "size": len(content),
    }


def attachments_size(*, draft: OutgoingMessage | None) -> int:
    return sum(draft.attachments.values_list("size", flat=True)) if draft else 0
