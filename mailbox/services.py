"""Sync orchestration, write-back and the outbox. Provider-neutral: provider code is reached via the registry.

- :func:`account_sync` runs one sync of one account under a lock kept in its SyncState (never two at
  once; the lock expires if its worker dies) and records how it went in plain words.
- :func:`messages_change` applies a user's action locally at once and queues the write-back.
- :func:`outgoing_queue` / :func:`outgoing_send` / :func:`outgoing_retry`: the outbox. The raw MIME
  is built once, so a retry sends the very same message, and a send interrupted by a crash is
  checked against the provider before it is sent again.
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import MailAccount
from accounts.services import ReauthorizationRequired
from mailbox import store
from mailbox.models import Folder, Message, OutgoingMessage, SyncState
from providers import registry
from providers.base import ActionRequired, ChangeKind, MailClient, MessageChange, ProviderError

logger = logging.getLogger(__name__)

DEFAULT_SYNC_DAYS = 90
LOCK_TTL = timedelta(minutes=5)  # extended by every progress report, so only a dead worker's lock expires
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 3600.0
MAX_SEND_ATTEMPTS = 5
# A row "sending" for longer than this was abandoned by a crashed worker (a send takes seconds).
SENDING_LEASE = timedelta(minutes=5)

_lock_owner: contextvars.ContextVar[str] = contextvars.ContextVar("mailhub_sync_lock_owner", default="")


class _Default:
    pass


DEFAULT_SINCE = _Default()


@dataclass(frozen=True)
class SyncResult:
    """How one :func:`account_sync` call ended; ``retry_after`` (seconds) is set when worth retrying."""

    outcome: str  # "ok" | "busy" | "stopped" | "retry" | "error" | "missing"
    retry_after: float | None = None


# --- Sync state ---------------------------------------------------------------------------------


def sync_state_get(*, account: MailAccount) -> SyncState:
    state, _ = SyncState.objects.get_or_create(account=account)
    return state


def sync_state_progress(
    *,
    account: MailAccount,
    done: int | None = None,
    total: int | None = None,
    resume: dict | None = None,
    cursor: str | None = None,
) -> None:
    """Record a sync's progress (and where to resume it); also keeps the running sync's lock alive.

    Sync engines call this after each batch they have stored, so a crash loses at most one batch of work.
    """
    values: dict = {}
    if done is not None:
        values["progress_done"] = done
    if total is not None:
        values["progress_total"] = total
    if resume is not None:
        values["resume"] = resume
    if cursor is not None:
        values["cursor"] = cursor
    owner = _lock_owner.get()
    if owner:
        values["lock_expires_at"] = timezone.now() + LOCK_TTL
    if values:
        SyncState.objects.filter(account=account).update(**values)


def sync_lock_heartbeat(*, account: MailAccount) -> None:
    """Keep the running sync's lock alive during a long wait (e.g. a provider's Retry-After)."""
    owner = _lock_owner.get()
    if owner:
        SyncState.objects.filter(account=account, lock_owner=owner).update(lock_expires_at=timezone.now() + LOCK_TTL)


def _lock_acquire(*, account: MailAccount) -> str | None:
    owner = uuid.uuid4().hex
    now = timezone.now()
    got = (
        SyncState.objects.filter(account=account)
        .filter(Q(lock_owner="") | Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lt=now))
        .update(lock_owner=owner, lock_expires_at=now + LOCK_TTL, status=SyncState.Status.RUNNING, started_at=now)
    )
    return owner if got else None


def _lock_release(*, account: MailAccount, owner: str, **values) -> None:
    SyncState.objects.filter(account=account, lock_owner=owner).update(lock_owner="", lock_expires_at=None, **values)


def _backoff_seconds(*, failures: int, retry_after: float | None) -> float:
    if retry_after is not None and retry_after > 0:
        return float(retry_after)
    delay = min(BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0), BACKOFF_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


def account_sync(*, account_id: int) -> SyncResult:
    """Run one sync of the account: the first (full) sync until it has finished, then incremental ones.

    Never runs two syncs of one account at once. An account whose authorisation is gone is STOPPED
    (no retry; the user must reconnect). A temporary provider failure is recorded with a backoff
    (the provider's Retry-After when it gave one) and returned as ``retry``.
    """
    account = MailAccount.objects.filter(pk=account_id).first()
    if account is None:
        return SyncResult("missing")
    state = sync_state_get(account=account)
    if account.needs_reconnect:
        SyncState.objects.filter(pk=state.pk).update(
            status=SyncState.Status.STOPPED, last_error=account.status_detail or "This mailbox must be reconnected."
        )
        return SyncResult("stopped")
    owner = _lock_acquire(account=account)
    if owner is None:
        return SyncResult("busy")
    token = _lock_owner.set(owner)
    started = time.monotonic()
    try:
        client = registry.get(account.provider).mail_client(account=account)
        state.refresh_from_db()
        if state.stage == SyncState.Stage.INCREMENTAL:
            client.incremental_sync()
        else:
            if state.stage == SyncState.Stage.PENDING:
                SyncState.objects.filter(pk=state.pk).update(stage=SyncState.Stage.FULL)
            client.full_sync()
            SyncState.objects.filter(pk=state.pk).update(stage=SyncState.Stage.INCREMENTAL, resume={})
    except ReauthorizationRequired as exc:
        logger.info("Sync of account %s stopped: reauthorisation required", account_id)
        _lock_release(
            account=account, owner=owner, status=SyncState.Status.STOPPED, last_error=str(exc),
            last_error_at=timezone.now(),
        )
        return SyncResult("stopped")
    except ProviderError as exc:
        state.refresh_from_db(fields=["failure_count"])
        failures = state.failure_count + 1
        delay = _backoff_seconds(failures=failures, retry_after=exc.retry_after)
        logger.warning("Sync of account %s failed (%s); retrying in %.0fs", account_id, exc, delay)
        _lock_release(
            account=account, owner=owner, status=SyncState.Status.ERROR, last_error=str(exc),
            last_error_at=timezone.now(), failure_count=failures,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
        )
        return SyncResult("retry", retry_after=delay)
    except Exception as exc:
        logger.exception("Sync of account %s crashed", account_id)
        state.refresh_from_db(fields=["failure_count"])
        failures = state.failure_count + 1
        delay = _backoff_seconds(failures=failures, retry_after=None)
        _lock_release(
            account=account, owner=owner, status=SyncState.Status.ERROR,
            last_error=f"The sync stopped on an unexpected error ({type(exc).__name__}); it will be tried again.",
            last_error_at=timezone.now(), failure_count=failures,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
        )
        return SyncResult("error")
    finally:
        _lock_owner.reset(token)
    _lock_release(
        account=account, owner=owner, status=SyncState.Status.IDLE, last_success_at=timezone.now(),
        last_error="", failure_count=0, next_attempt_at=None,
        last_duration_ms=int((time.monotonic() - started) * 1000),
    )
    return SyncResult("ok")


def account_sync_queue(*, account: MailAccount) -> None:
    """"Sync now": queue a sync of ``account`` once the current transaction commits."""
    from mailbox.tasks import sync_account

    sync_state_get(account=account)
    transaction.on_commit(lambda: sync_account.delay(account.pk))


def default_sync_since() -> date:
    return timezone.localdate() - timedelta(days=DEFAULT_SYNC_DAYS)


def account_sync_start(*, account: MailAccount, since: date | None | _Default = DEFAULT_SINCE) -> SyncState:
    """Set how far back to sync (default: the last 90 days; None: everything) and queue the first sync.

    On an account that has synced before, this starts a full sync again with the new range, which
    reconciles with what is stored.
    """
    state = sync_state_get(account=account)
    state.sync_since = default_sync_since() if isinstance(since, _Default) else since
    state.stage = SyncState.Stage.PENDING
    state.status = SyncState.Status.IDLE
    state.resume = {}
    state.progress_done = state.progress_total = 0
    state.failure_count = 0
    state.next_attempt_at = None
    state.last_error = ""
    state.save()
    account_sync_queue(account=account)
    return state


def accounts_due_for_sync() -> list[int]:
    """Accounts beat should sync now: connected, not running, not waiting out a backoff.

    A STOPPED sync state does not exclude an account that is connected again (its status is active).
    """
    now = timezone.now()
    busy = Q(sync_state__lock_owner__gt="") & Q(sync_state__lock_expires_at__gt=now)
    waiting = Q(sync_state__next_attempt_at__gt=now)
    return list(
        MailAccount.objects.filter(status=MailAccount.Status.ACTIVE)
        .exclude(busy)
        .exclude(waiting)
        .values_list("pk", flat=True)
    )


# --- Write-back ---------------------------------------------------------------------------------


def _role_folders(account: MailAccount) -> dict[str, Folder]:
    folders: dict[str, Folder] = {}
    for folder in Folder.objects.filter(account=account).exclude(role=Folder.Role.USER):
        folders.setdefault(folder.role, folder)
    return folders


def _change_local(*, account: MailAccount, remote_ids: list[str], change: MessageChange) -> None:
    kind = change.kind
    if kind in (ChangeKind.READ, ChangeKind.UNREAD):
        store.message_flags_update(account=account, remote_ids=remote_ids, is_read=kind == ChangeKind.READ)
        return
    roles = _role_folders(account)
    if kind in (ChangeKind.STAR, ChangeKind.UNSTAR):
        store.message_flags_update(account=account, remote_ids=remote_ids, is_starred=kind == ChangeKind.STAR)
        starred = roles.get(Folder.Role.STARRED)  # Gmail shows stars as a label too
        if starred is not None:
            change_sets = ([starred], []) if kind == ChangeKind.STAR else ([], [starred])
            store.message_folders_change(account=account, remote_ids=remote_ids, add=change_sets[0],
                                         remove=change_sets[1])
        return
    inbox, trash, spam = roles.get(Folder.Role.INBOX), roles.get(Folder.Role.TRASH), roles.get(Folder.Role.SPAM)
    target = None
    if change.folder_remote_id:
        target = Folder.objects.filter(account=account, remote_id=change.folder_remote_id).first()
    add: list[Folder] = []
    remove: list[Folder] = []
    if kind == ChangeKind.ARCHIVE:
        remove = [inbox]
    elif kind == ChangeKind.TRASH:
        add, remove = [trash], [inbox, spam]
    elif kind == ChangeKind.UNTRASH:
        add, remove = [inbox], [trash]
    elif kind == ChangeKind.MOVE and target is not None:
        remove = [f for f in (inbox, trash, spam) if f != target]
        add = [target]
    elif kind == ChangeKind.ADD_LABEL and target is not None:
        add = [target]
    elif kind == ChangeKind.REMOVE_LABEL and target is not None:
        remove = [target]
    store.message_folders_change(
        account=account, remote_ids=remote_ids, add=[f for f in add if f], remove=[f for f in remove if f]
    )


def messages_change(*, user, message_ids: Sequence[int], change: MessageChange) -> int:
    """Apply ``change`` to the user's own messages among ``message_ids`` locally now, and queue the write-back.

    Returns how many messages were changed; ids of other users' messages are ignored.
    """
    from mailbox.tasks import apply_change

    rows = Message.objects.filter(pk__in=list(message_ids), account__user=user).values_list(
        "account_id", "pk", "remote_id"
    )
    by_account: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for account_id, pk, remote_id in rows:
        by_account[account_id].append((pk, remote_id))
    count = 0
    with transaction.atomic():
        for account in MailAccount.objects.filter(pk__in=list(by_account)):
            pairs = by_account[account.pk]
            _change_local(account=account, remote_ids=[r for _, r in pairs], change=change)
            ids = [pk for pk, _ in pairs]
            count += len(ids)
            transaction.on_commit(
                lambda a=account.pk, i=ids: apply_change.delay(a, i, str(change.kind), change.folder_remote_id)
            )
    return count


def messages_change_apply(*, account_id: int, message_ids: Sequence[int], change: MessageChange) -> SyncResult:
    """Write a change back to the provider (the task behind :func:`messages_change`)."""
    account = MailAccount.objects.filter(pk=account_id).first()
    if account is None or account.needs_reconnect:
        return SyncResult("stopped")
    messages = list(Message.objects.filter(account=account, pk__in=list(message_ids)))
    if not messages:
        return SyncResult("ok")
    try:
        _mail_client(account).apply_changes(messages=messages, change=change)
    except ReauthorizationRequired:
        return SyncResult("stopped")
    except ProviderError as exc:
        logger.warning("Write-back for account %s failed: %s", account_id, exc)
        return SyncResult("retry", retry_after=exc.retry_after)
    return SyncResult("ok")


def _mail_client(account: MailAccount) -> MailClient:
    return registry.get(account.provider).mail_client(account=account)


# --- Outbox -------------------------------------------------------------------------------------


def _address_list(people: list) -> list[str]:
    out = []
    for person in people or []:
        if isinstance(person, str):
            out.append(person)
        elif person.get("email"):
            out.append(formataddr((person.get("name") or "", person["email"])))
    return out


def outgoing_build_raw(*, outgoing: OutgoingMessage) -> bytes:
    """The RFC 5322 bytes of ``outgoing`` (sets its Message-ID and reply headers if not chosen yet)."""
    account = outgoing.account
    if not outgoing.message_id:
        domain = account.email.rpartition("@")[2] or "mailhub.invalid"
        outgoing.message_id = make_msgid(domain=domain).strip("<>")
    source = outgoing.source
    replying = outgoing.kind in (OutgoingMessage.Kind.REPLY, OutgoingMessage.Kind.REPLY_ALL)
    if replying and source is not None and source.message_id and not outgoing.in_reply_to:
        outgoing.in_reply_to = source.message_id
        refs = source.references.split() if source.references else []
        if not refs and source.in_reply_to:
            refs = [f"<{source.in_reply_to}>"]
        outgoing.references = " ".join([*refs, f"<{source.message_id}>"])
    msg = EmailMessage()
    msg["From"] = formataddr((account.display_name or "", account.email))
    for header, people in (("To", outgoing.to), ("Cc", outgoing.cc), ("Bcc", outgoing.bcc)):
        addresses = _address_list(people)
        if addresses:
            msg[header] = ", ".join(addresses)
    msg["Subject"] = outgoing.subject
    msg["Date"] = format_datetime(timezone.now())
    msg["Message-ID"] = f"<{outgoing.message_id}>"
    if outgoing.in_reply_to:
        msg["In-Reply-To"] = f"<{outgoing.in_reply_to}>"
    if outgoing.references:
        msg["References"] = outgoing.references
    msg["MIME-Version"] = "1.0"
    msg.set_content(outgoing.body_text or "")
    if outgoing.body_html:
        msg.add_alternative(outgoing.body_html, subtype="html")
    for attachment in outgoing.attachments.select_related("blob"):
        maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition("/")
        with attachment.blob.open() as handle:
            data = handle.read()
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=attachment.filename)
    return msg.as_bytes()


def outgoing_queue(*, outgoing: OutgoingMessage) -> OutgoingMessage:
    """Freeze the message (raw MIME built once, Message-ID chosen once) and queue it for sending."""
    from mailbox.tasks import send_outgoing

    with transaction.atomic():
        outgoing.raw = outgoing_build_raw(outgoing=outgoing)
        outgoing.status = OutgoingMessage.Status.QUEUED
        outgoing.queued_at = timezone.now()
        outgoing.last_error = ""
        outgoing.save()
        transaction.on_commit(lambda: send_outgoing.delay(outgoing.pk))
    return outgoing


def outgoing_retry(*, outgoing: OutgoingMessage) -> OutgoingMessage:
    """Queue a failed message again (the same bytes; the provider is checked first if it may have gone)."""
    from mailbox.tasks import send_outgoing

    with transaction.atomic():
        updated = OutgoingMessage.objects.filter(pk=outgoing.pk, status=OutgoingMessage.Status.FAILED).update(
            status=OutgoingMessage.Status.QUEUED, queued_at=timezone.now(), updated_at=timezone.now()
        )
        if updated:
            transaction.on_commit(lambda: send_outgoing.delay(outgoing.pk))
    outgoing.refresh_from_db()
    return outgoing


def _outgoing_claim(outgoing_id: int) -> tuple[OutgoingMessage | None, bool]:
    """Move the row to "sending" under a row lock; returns it (None: nothing to do) and whether it may have gone."""
    with transaction.atomic():
        row = OutgoingMessage.objects.select_for_update().select_related("account").filter(pk=outgoing_id).first()
        if row is None:
            return None, False
        now = timezone.now()
        if row.status == OutgoingMessage.Status.SENDING and row.updated_at > now - SENDING_LEASE:
            return None, False  # another worker is sending it right now
        if row.status not in (OutgoingMessage.Status.QUEUED, OutgoingMessage.Status.SENDING):
            return None, False
        maybe_sent = row.status == OutgoingMessage.Status.SENDING or row.attempts > 0
        row.status = OutgoingMessage.Status.SENDING
        row.attempts += 1
        row.save(update_fields=["status", "attempts", "updated_at"])
        return row, maybe_sent


def _outgoing_finish(*, outgoing: OutgoingMessage, status: str, **values) -> None:
    OutgoingMessage.objects.filter(pk=outgoing.pk).update(status=status, updated_at=timezone.now(), **values)


def outgoing_send(*, outgoing_id: int) -> SyncResult:
    """Send one queued message: queued → sending → sent (or failed, with its reason). Never sends twice.

    A message that may already have gone (an earlier attempt crashed or timed out) is looked up at the
    provider first (``client.find_sent``); a provider that cannot check makes it FAILED instead of
    risking a duplicate. Temporary failures return ``retry`` (the row goes back to "queued") until
    MAX_SEND_ATTEMPTS; then the row is FAILED and kept for the user.
    """
    outgoing, maybe_sent = _outgoing_claim(outgoing_id)
    if outgoing is None:
        return SyncResult("busy")
    account = outgoing.account
    try:
        client = _mail_client(account)
        remote_id = None
        if maybe_sent:
            finder = getattr(client, "find_sent", None)
            if finder is None:
                _outgoing_finish(
                    outgoing=outgoing, status=OutgoingMessage.Status.FAILED,
                    last_error="An earlier attempt was interrupted and may have been sent; check the Sent folder "
                    "before retrying.",
                )
                return SyncResult("error")
            remote_id = finder(outgoing=outgoing)
        if remote_id is None:
            remote_id = client.send(outgoing=outgoing)
    except (ReauthorizationRequired, ActionRequired) as exc:
        _outgoing_finish(outgoing=outgoing, status=OutgoingMessage.Status.FAILED, last_error=str(exc))
        return SyncResult("stopped")
    except ProviderError as exc:
        if outgoing.attempts >= MAX_SEND_ATTEMPTS:
            _outgoing_finish(outgoing=outgoing, status=OutgoingMessage.Status.FAILED, last_error=str(exc))
            return SyncResult("error")
        _outgoing_finish(outgoing=outgoing, status=OutgoingMessage.Status.QUEUED, last_error=str(exc))
        delay = _backoff_seconds(failures=outgoing.attempts, retry_after=exc.retry_after)
        return SyncResult("retry", retry_after=delay)
    except Exception as exc:
        logger.exception("Sending outgoing message %s crashed", outgoing_id)
        _outgoing_finish(
            outgoing=outgoing, status=OutgoingMessage.Status.FAILED,
            last_error=f"Sending failed on an unexpected error ({type(exc).__name__}).",
        )
        return SyncResult("error")
    _outgoing_finish(
        outgoing=outgoing, status=OutgoingMessage.Status.SENT, remote_id=remote_id, sent_at=timezone.now(),
        last_error="",
    )
    _outgoing_file_sent(outgoing=outgoing, remote_id=remote_id)
    return SyncResult("ok")


def _outgoing_file_sent(*, outgoing: OutgoingMessage, remote_id: str) -> None:
    """Show the sent message in the local Sent folder, unless the client has already stored it."""
    account = outgoing.account
    if Message.objects.filter(account=account, remote_id=remote_id).exists():
        return
    sent = Folder.objects.filter(account=account, role=Folder.Role.SENT).first()
    source = outgoing.source
    thread_key = None
    if source is not None and not source.thread.remote_id.startswith(("mid:", "remote:")):
        thread_key = source.thread.remote_id  # the provider's own thread (Gmail)
    store.message_upsert(
        account=account, remote_id=remote_id, raw=bytes(outgoing.raw), folders=[sent] if sent else [],
        is_read=True, thread_key=thread_key,
    )
