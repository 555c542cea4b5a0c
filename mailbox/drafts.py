"""Drafts kept in step with the mailbox's Drafts at the provider, both ways.

A draft saved in Mailhub is copied to the provider (Gmail drafts.create/update; IMAP APPEND ``\\Draft``, replacing
the previous version), and a draft written at the provider becomes a draft in Mailhub, finished there like any
other. :func:`drafts_sync` does both at the end of the account's syncs, under the sync's lock, so it never runs
twice at once for one mailbox: when a draft was saved or discarded here (saving queues a sync, :func:`draft_saved`),
when the mail sync stored or dropped a message in the mailbox's Drafts (:func:`drafts_fingerprint`), and at least
hourly; an idle mailbox's sync asks the provider nothing more.

Which version wins. A row has changes the provider has not seen while ``revision`` (a count of its saves
in Mailhub) is ahead of ``pushed_revision``; the provider's copy changed when its version differs from
``remote_draft_version``. When one side changed, its version is copied to the other. When both did (the draft was
written in two places between two syncs), the version saved last wins and the other is kept as a draft of its own
(``kept_from_conflict``): nothing anyone typed is lost. A draft gone from the provider (sent or deleted there) is
deleted here, unless it has changes made here since, which go back to the provider as a new draft.

A copy at the provider carries the draft's own Message-ID (``draft_key``), never the one the message will be sent
with, so the outbox's "did it go already?" check cannot mistake a draft for the sent message; the same Message-ID
lets a sync recognise a copy whose creation answer was lost instead of importing it as a second draft.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import MailAccount
from mailbox import store
from mailbox.mime import ParsedMessage, mime_parse
from mailbox.models import (
    Folder,
    Message,
    MessageFolder,
    OutgoingAttachment,
    OutgoingMessage,
    RemoteDraftDeletion,
    SyncState,
)
from mailbox.outbox import draft_build_raw
from mailbox.sanitize import html_to_text, html_written
from mailbox.store import blob_store
from providers.base import MailClient, RemoteDraft

logger = logging.getLogger(__name__)

Status = OutgoingMessage.Status
PUSH_DELAY_SECONDS = 2.0  # after a save: autosaves a few seconds apart then cost one sync, not one each
RECHECK_EVERY = timedelta(hours=1)  # the provider's Drafts are listed at least this often, changed or not


# --- What the compose views call -----------------------------------------------------------------


def draft_saved(*, draft: OutgoingMessage) -> None:
    """A draft changed in Mailhub: sync its account shortly, which copies the draft to the provider."""
    _sync_soon(draft.account_id)


def draft_discard(*, draft: OutgoingMessage) -> None:
    """Delete a draft here and, at the next sync, its copy at the provider."""
    with transaction.atomic():
        if draft.remote_draft_id:
            RemoteDraftDeletion.objects.create(account_id=draft.account_id, draft_id=draft.remote_draft_id)
        draft.delete()
    _sync_soon(draft.account_id)


def _sync_soon(account_id: int) -> None:
    from mailbox import tasks

    transaction.on_commit(lambda: tasks.account_sync_enqueue(account_id, countdown=PUSH_DELAY_SECONDS))


# --- The sync's step ------------------------------------------------------------------------------


def drafts_fingerprint(*, account: MailAccount) -> frozenset[str]:
    """The stored messages in the mailbox's Drafts: what the mail sync saw of the provider's drafts. Compared
    before and after a sync, it tells whether a draft changed at the provider without asking it."""
    in_drafts = MessageFolder.objects.filter(folder__account=account, folder__role=Folder.Role.DRAFTS)
    return frozenset(in_drafts.values_list("message__remote_id", flat=True))


def _due(*, account: MailAccount, state: SyncState, provider_changed: bool) -> bool:
    """Whether this sync must list the provider's drafts: something changed on either side, or an hour passed."""
    if provider_changed or state.drafts_checked_at is None:
        return True
    if state.drafts_checked_at < timezone.now() - RECHECK_EVERY:
        return True
    if RemoteDraftDeletion.objects.filter(account=account).exists():
        return True
    mine = OutgoingMessage.objects.filter(account=account)
    return (
        mine.filter(status=Status.DRAFT, batch__isnull=True, revision__gt=F("pushed_revision")).exists()
        or mine.exclude(status=Status.DRAFT).exclude(remote_draft_id="").exists()
    )


def drafts_sync(*, account: MailAccount, client: MailClient, provider_changed: bool) -> None:
    """Bring the account's drafts and the provider's Drafts into step (see the module docstring), when anything
    may have changed on either side (``provider_changed``: :func:`drafts_fingerprint` moved during the sync)."""
    state = SyncState.objects.get(account=account)
    if not _due(account=account, state=state, provider_changed=provider_changed):
        return
    again = _drafts_sync(account=account, client=client)
    SyncState.objects.filter(pk=state.pk).update(drafts_checked_at=None if again else timezone.now())


def _drafts_sync(*, account: MailAccount, client: MailClient) -> bool:
    """One pass both ways. Returns whether the next sync must list the provider's drafts again whatever the store
    shows: this pass changed them (what it wrote reaches the store only with the next mail sync), or a draft it
    listed was gone when it came to read it."""
    again = _provider_copies_delete(account=account, client=client)
    remote = client.drafts()
    if remote is None:
        return again  # the mailbox has no Drafts folder: drafts stay in Mailhub
    linked = set(_drafts_of(account).exclude(remote_draft_id="").values_list("remote_draft_id", flat=True))
    for found in remote:
        if found.draft_id not in linked:
            again |= _remote_draft_adopt(account=account, client=client, found=found)
    by_id = {found.draft_id: found for found in remote}
    for row in _drafts_of(account):
        again |= _draft_reconcile(row, client=client, found=by_id.get(row.remote_draft_id))
    return again


def _drafts_of(account: MailAccount):
    return (
        OutgoingMessage.objects.filter(account=account, status=Status.DRAFT, batch__isnull=True)
        .select_related("account", "signature", "source__thread")
        .order_by("pk")
    )


def _provider_copies_delete(*, account: MailAccount, client: MailClient) -> bool:
    """Delete at the provider the copies of drafts discarded in Mailhub, and of drafts that were sent from it.
    Whether it deleted any."""
    wrote = False
    for deletion in RemoteDraftDeletion.objects.filter(account=account):
        client.draft_delete(draft_id=deletion.draft_id)
        deletion.delete()
        wrote = True
    gone_on = OutgoingMessage.objects.filter(account=account).exclude(status=Status.DRAFT).exclude(remote_draft_id="")
    for pk, draft_id in gone_on.values_list("pk", "remote_draft_id"):
        client.draft_delete(draft_id=draft_id)
        # Should it come back to Drafts (undo send), it is copied to the provider again.
        OutgoingMessage.objects.filter(pk=pk, remote_draft_id=draft_id).update(remote_draft_id="", pushed_revision=0)
        wrote = True
    return wrote


def _remote_draft_adopt(*, account: MailAccount, client: MailClient, found: RemoteDraft) -> bool:
    """A draft at the provider no row links to: a copy of one of ours whose save answer was lost, or a new draft
    written at the provider (imported as a draft here). True when the next sync must look again: it deleted a
    second copy at the provider, or the draft was gone when read."""
    content = client.draft_get(draft_id=found.draft_id)
    if content is None:
        return True
    parsed = mime_parse(content.raw)
    key = parsed.message_id
    own = OutgoingMessage.objects.filter(account=account, draft_key=key).first() if key else None
    if own is None:
        _draft_import(account=account, parsed=parsed, found=content.draft)
    elif own.status == Status.DRAFT and not own.remote_draft_id:
        OutgoingMessage.objects.filter(pk=own.pk, remote_draft_id="").update(
            remote_draft_id=content.draft.draft_id, remote_draft_version=content.draft.version
        )
    elif own.remote_draft_id != content.draft.draft_id:
        client.draft_delete(draft_id=content.draft.draft_id)  # a second copy of ours (a repeated create)
        return True
    return False


def _draft_reconcile(row: OutgoingMessage, *, client: MailClient, found: RemoteDraft | None) -> bool:
    """Bring one draft into step; True when the next sync must look again (it saved the draft at the provider, or
    the provider's version changed again while being read)."""
    changed_here = row.revision > row.pushed_revision
    if row.remote_draft_id and found is None:
        if not changed_here:
            _gone_at_provider(row)
            return False
        row.remote_draft_id = row.remote_draft_version = ""  # sent or deleted there, but written on here: save anew
    elif found is not None and found.version != row.remote_draft_version:
        content = client.draft_get(draft_id=found.draft_id)
        if content is None:
            return True  # changed again meanwhile: the next sync sees how it ended
        parsed = mime_parse(content.raw)
        if not changed_here:
            _draft_overwrite(row, parsed=parsed, found=content.draft)
            return False
        if _saved_later_here(row, parsed=parsed):  # Mailhub's version goes over the provider's, kept here
            _draft_import(account=row.account, parsed=parsed, found=None, kept_from_conflict=True)
        else:
            _draft_copy_keep(row)
            _draft_overwrite(row, parsed=parsed, found=content.draft)
            return False
    elif not changed_here:
        return False
    _draft_push(row, client=client)
    return True


def _saved_later_here(row: OutgoingMessage, *, parsed: ParsedMessage) -> bool:
    """Whether Mailhub's last save of ``row`` is later than the provider's version (dated by its Date header)."""
    saved_there = parsed.date
    return saved_there is None or row.updated_at >= saved_there


def _draft_push(row: OutgoingMessage, *, client: MailClient) -> None:
    revision = row.revision
    raw = draft_build_raw(outgoing=row)
    source = row.source
    thread_key = store.thread_provider_key(source.thread) if source is not None and row.in_reply_to else None
    saved = client.draft_save(raw=raw, draft_id=row.remote_draft_id or None, thread_key=thread_key or "")
    OutgoingMessage.objects.filter(pk=row.pk).update(
        remote_draft_id=saved.draft_id,
        remote_draft_version=saved.version,
        draft_key=row.draft_key,
        pushed_revision=revision,
    )


def _gone_at_provider(row: OutgoingMessage) -> None:
    """Sent or deleted at the provider, and not changed here since: the draft is done with."""
    deleted, _ = OutgoingMessage.objects.filter(
        pk=row.pk, status=Status.DRAFT, revision=row.revision, remote_draft_id=row.remote_draft_id
    ).delete()
    if deleted:
        logger.info("Draft %s of account %s was sent or deleted at the provider", row.pk, row.account_id)


# --- Reading a provider's draft -------------------------------------------------------------------


def _content_fields(account: MailAccount, parsed: ParsedMessage) -> dict:
    """What a draft at the provider says, as a row's fields (its signature is part of its text by now)."""
    html = html_written(html=parsed.html) if parsed.html else ""
    alias = parsed.from_address if parsed.from_address.lower() != account.email.lower() else ""
    return {
        "to": parsed.to,
        "cc": parsed.cc,
        "bcc": parsed.bcc,
        "subject": parsed.subject,
        "body_text": parsed.text or html_to_text(html),
        "body_html": html,
        "in_reply_to": parsed.in_reply_to,
        "references": " ".join(f"<{ref}>" for ref in parsed.references),
        "from_alias": alias,
        "from_name": parsed.from_name if alias else "",
        "signature": None,
        "quote_marker": "",
    }


def _attachments_replace(row: OutgoingMessage, parsed: ParsedMessage) -> None:
    row.attachments.all().delete()
    OutgoingAttachment.objects.bulk_create(
        OutgoingAttachment(
            outgoing=row,
            blob=blob_store(content=part.content),
            filename=(part.filename or "attachment")[:255],
            content_type=part.content_type or "application/octet-stream",
            size=len(part.content),
        )
        for part in parsed.attachments
    )


@transaction.atomic
def _draft_import(
    *, account: MailAccount, parsed: ParsedMessage, found: RemoteDraft | None, kept_from_conflict: bool = False
) -> OutgoingMessage:
    """A draft row from a provider's draft: linked to it (``found``), or a copy kept after a conflict, which
    is saved to the provider as a draft of its own."""
    fields = _content_fields(account, parsed)
    source = (
        Message.objects.filter(account=account, message_id=fields["in_reply_to"]).order_by("-id").first()
        if fields["in_reply_to"]
        else None
    )
    row = OutgoingMessage(
        account=account,
        status=Status.DRAFT,
        kind=OutgoingMessage.Kind.REPLY if source is not None else OutgoingMessage.Kind.NEW,
        source=source,
        kept_from_conflict=kept_from_conflict,
        **fields,
    )
    if found is not None:
        row.remote_draft_id, row.remote_draft_version = found.draft_id, found.version
        row.draft_key = parsed.message_id  # an IMAP draft is named by it: later saves must keep it
    else:
        row.revision = 1  # never copied to the provider yet
    row.save()
    _attachments_replace(row, parsed)
    return row


@transaction.atomic
def _draft_overwrite(row: OutgoingMessage, *, parsed: ParsedMessage, found: RemoteDraft) -> None:
    """Take the provider's version into ``row``, unless the row was saved here meanwhile (the next sync decides)."""
    updated = OutgoingMessage.objects.filter(pk=row.pk, status=Status.DRAFT, revision=row.revision).update(
        **_content_fields(row.account, parsed),
        remote_draft_id=found.draft_id,
        remote_draft_version=found.version,
        pushed_revision=row.revision,
        kept_from_conflict=False,
        updated_at=timezone.now(),
    )
    if updated:
        _attachments_replace(row, parsed)


@transaction.atomic
def _draft_copy_keep(row: OutgoingMessage) -> OutgoingMessage:
    """Keep Mailhub's version of ``row`` as a draft of its own (the provider's version, saved later, wins)."""
    attachments = list(row.attachments.all())
    copy = OutgoingMessage.objects.get(pk=row.pk)
    copy.pk = None
    copy.remote_draft_id = copy.remote_draft_version = copy.draft_key = copy.message_id = ""
    copy.revision, copy.pushed_revision, copy.kept_from_conflict = 1, 0, True
    copy.save()
    OutgoingAttachment.objects.bulk_create(
        OutgoingAttachment(outgoing=copy, **attachment.copy_fields()) for attachment in attachments
    )
    return copy
