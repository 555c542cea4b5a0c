"""Read queries for the mail UI. Every function takes the user and only ever returns that user's rows."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, JSONField, OuterRef, Q, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import MailAccount
from accounts.services import providers_off
from mailbox.models import (
    Attachment,
    Batch,
    Folder,
    Message,
    MessageFolder,
    OutgoingAttachment,
    OutgoingMessage,
    SendingPreferences,
    Signature,
    SyncState,
    Thread,
)
from providers import registry

PAGE_SIZE = 50
_ROLE_ORDER = ["inbox", "starred", "important", "sent", "drafts", "archive", "all", "spam", "trash", "user"]


@dataclass
class FolderNav:
    folder: Folder
    unread: int


@dataclass
class AccountNav:
    account: MailAccount
    sync: SyncState | None
    folders: list[FolderNav] = field(default_factory=list)
    provider_off: bool = False  # an administrator turned the provider off: no sync, no sending

    @property
    def inbox(self) -> Folder | None:
        return next((f.folder for f in self.folders if f.folder.role == Folder.Role.INBOX), None)

    @property
    def all_mail_built(self) -> bool:
        """Folders are labels, so archived mail is in none of them, and the account has no "All mail" of its own
        (Gmail's API has none): the sidebar offers ours."""
        labels = registry.get(self.account.provider).folders_are_labels
        return labels and not any(f.folder.role == Folder.Role.ALL for f in self.folders)

    @property
    def first_sync_running(self) -> bool:
        return bool(self.sync and self.sync.stage in {SyncState.Stage.PENDING, SyncState.Stage.FULL})

    @property
    def synced_recently(self) -> bool:
        last = self.sync.last_success_at if self.sync else None
        return bool(last and (timezone.now() - last).total_seconds() < 60)

    @property
    def progress_percent(self) -> int:
        if not self.sync or not self.sync.progress_total:
            return 0
        return min(100, round(100 * self.sync.progress_done / self.sync.progress_total))


@dataclass
class ThreadPage:
    threads: list[Thread]
    next_cursor: str | None  # older mail
    newer_cursor: str | None = None  # the page before this one (``before=``), None on the newest page


def accounts_for_user(*, user) -> QuerySet[MailAccount]:
    return MailAccount.objects.filter(user=user).order_by("email")


def accounts_for_sending(*, user) -> QuerySet[MailAccount]:
    """The user's mailboxes that can send now (their provider is on)."""
    return accounts_for_user(user=user).exclude(provider__in=providers_off())


def sidebar_get(*, user, off: set[str] | None = None) -> list[AccountNav]:
    """Each account with its folders, unread message counts and sync state (three queries in all).
    ``off``: :func:`providers_off`, when the page has it already."""
    accounts = list(accounts_for_user(user=user).select_related("sync_state"))
    if off is None:
        off = providers_off() if accounts else set()
    # A mailbox's own Drafts are drafts in Mailhub (mailbox.drafts): the one Drafts above the accounts lists them.
    folders = Folder.objects.filter(account__user=user, is_selectable=True).exclude(role=Folder.Role.DRAFTS)
    unread = _unread_by_folder(account_ids=[a.id for a in accounts])
    by_account: dict[int, list[FolderNav]] = {a.id: [] for a in accounts}
    for folder in folders:
        by_account[folder.account_id].append(FolderNav(folder=folder, unread=unread.get(folder.id, 0)))
    navs = []
    for account in accounts:
        items = sorted(by_account[account.id], key=lambda f: _folder_order(f.folder))
        navs.append(
            AccountNav(
                account=account,
                sync=getattr(account, "sync_state", None),
                folders=items,
                provider_off=account.provider in off,
            )
        )
    return navs


def _folder_order(folder: Folder) -> tuple:
    return (_ROLE_ORDER.index(folder.role) if folder.role in _ROLE_ORDER else 99, folder.tree_key)


def folders_tree(*, account: MailAccount) -> list[Folder]:
    """The account's folders, system ones first, then the user's as a tree; each with ``n_messages``."""
    folders = Folder.objects.filter(account=account).annotate(n_messages=Count("messagefolder"))
    return sorted(folders, key=_folder_order)


def account_get(*, user, account_id: int) -> MailAccount:
    return get_object_or_404(accounts_for_user(user=user), pk=account_id)


def _unread_by_folder(*, account_ids: list[int]) -> dict[int, int]:
    """Unread messages per folder, starting from the (few) unread messages under their partial index."""
    if not account_ids:
        return {}
    placeholders = ", ".join(["%s"] * len(account_ids))
    unread_ids = f"SELECT id FROM mailbox_message WHERE account_id IN ({placeholders}) AND NOT is_read"  # noqa: S608
    # On PostgreSQL an array of ids makes the planner probe the membership index instead of hashing every row.
    match = f"= ANY(ARRAY({unread_ids}))" if connection.vendor == "postgresql" else f"IN ({unread_ids})"
    sql = f"SELECT folder_id, COUNT(*) FROM mailbox_messagefolder WHERE message_id {match} GROUP BY folder_id"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, account_ids)
        return dict(cursor.fetchall())


def deletable_forever(*, user, message_ids: list[int]) -> list[int]:
    """Those of the user's ``message_ids`` that are in a Trash folder whose provider can delete for good."""
    providers = [p for p in registry.PROVIDERS if registry.get(p).deletes_forever]
    in_trash = Message.objects.filter(
        pk__in=message_ids, account__user=user, account__provider__in=providers, folders__role=Folder.Role.TRASH
    )
    return list(in_trash.values_list("pk", flat=True).distinct())


def folder_get(*, user, folder_id: int) -> Folder:
    return get_object_or_404(Folder.objects.select_related("account"), pk=folder_id, account__user=user)


def _cursor_encode(thread: Thread) -> str:
    if thread.last_message_at is None:  # thread_page lists only threads that have one
        raise ValueError(f"thread {thread.id} has no last message date to page from")
    raw = f"{thread.last_message_at.isoformat()}|{thread.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor_decode(cursor: str) -> tuple[datetime, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        parsed = parse_datetime(when)
        return (parsed, int(ident)) if parsed else None
    except (ValueError, UnicodeDecodeError):
        return None


def threads_in_folders(*, user, folders: QuerySet[Folder] | list[Folder]) -> QuerySet[Thread]:
    in_folder = MessageFolder.objects.filter(message__thread=OuterRef("pk"), folder__in=folders)
    return Thread.objects.filter(account__user=user).filter(Exists(in_folder))


def threads_in_folder(*, folder: Folder) -> QuerySet[Thread]:
    """One folder's threads (``folder`` already checked to be the user's): the folder's memberships drive the
    query, which beats probing every recent thread when the folder holds a small share of the mail."""
    in_folder = Message.objects.filter(account_id=folder.account_id, messagefolder__folder=folder).values("thread_id")
    return Thread.objects.filter(account_id=folder.account_id, id__in=in_folder)


def threads_all_mail(*, account: MailAccount) -> QuerySet[Thread]:
    """Gmail's "All Mail": every thread of the account with a message outside Trash and Spam, archived mail
    (in no folder at all) included. Gmail's API has no label for it, so it is built here."""
    kept = Message.objects.filter(thread=OuterRef("pk")).exclude(
        folders__role__in=[Folder.Role.TRASH, Folder.Role.SPAM]
    )
    return Thread.objects.filter(account=account).filter(Exists(kept))


def inbox_folders(*, user) -> QuerySet[Folder]:
    return Folder.objects.filter(account__user=user, role=Folder.Role.INBOX)


def thread_page(
    *, threads: QuerySet[Thread], cursor: str | None, before: str | None = None, limit: int = PAGE_SIZE
) -> ThreadPage:
    """Newest first, keyset-paginated on (last_message_at, id): no OFFSET, so page 100 costs what page 1 does.

    ``cursor`` pages towards older mail (the rows after it); ``before`` back towards newer mail (the rows
    just before it, still shown newest first).
    """
    qs = threads.filter(last_message_at__isnull=False).select_related("account")
    newest_first = qs.order_by("-last_message_at", "-id")
    older_than = _cursor_decode(cursor) if cursor else None
    newer_than = _cursor_decode(before) if before and not older_than else None
    if newer_than:
        when, ident = newer_than
        after = qs.filter(Q(last_message_at__gt=when) | Q(last_message_at=when, id__gt=ident))
        rows = list(after.order_by("last_message_at", "id")[: limit + 1])
        has_newer = len(rows) > limit
        rows = rows[:limit][::-1]
        return ThreadPage(
            threads=rows,
            next_cursor=_cursor_encode(rows[-1]) if rows else None,
            newer_cursor=_cursor_encode(rows[0]) if has_newer else None,
        )
    if older_than:
        when, ident = older_than
        newest_first = newest_first.filter(Q(last_message_at__lt=when) | Q(last_message_at=when, id__lt=ident))
    rows = list(newest_first[: limit + 1])
    next_cursor = _cursor_encode(rows[limit - 1]) if len(rows) > limit else None
    newer_cursor = _cursor_encode(rows[0]) if older_than and rows else None
    return ThreadPage(threads=rows[:limit], next_cursor=next_cursor, newer_cursor=newer_cursor)


def with_recipients(threads: QuerySet[Thread]) -> QuerySet[Thread]:
    """Threads with ``recipients``: the To of each one's newest message (for Sent, where the sender is the user)."""
    newest = Message.objects.filter(thread=OuterRef("pk")).order_by("-date", "-id").values("to")[:1]
    return threads.annotate(recipients=Subquery(newest, output_field=JSONField()))


def thread_get(*, user, thread_id: int) -> Thread:
    return get_object_or_404(Thread.objects.select_related("account"), pk=thread_id, account__user=user)


def thread_messages(*, thread: Thread) -> list[Message]:
    """Oldest first (the page expands the newest); attachments prefetched; raw bytes left in the DB. Not the
    provider's copies of drafts: those are drafts in Mailhub (:func:`thread_drafts`)."""
    messages = thread.messages.filter(is_draft=False).defer("raw_compressed").prefetch_related("attachments")
    return list(messages.order_by("date", "id"))


def thread_drafts(*, user, thread: Thread) -> QuerySet[OutgoingMessage]:
    """The user's drafts in ``thread``: replies to one of its messages, and those whose copy at the provider the
    thread holds (a draft's copy carries the draft's own Message-ID, ``draft_key``)."""
    copies = thread.messages.filter(is_draft=True).exclude(message_id="").values("message_id")
    return drafts_for_user(user=user).filter(Q(source__thread=thread) | Q(draft_key__in=copies))


def message_get(*, user, message_id: int) -> Message:
    return get_object_or_404(
        Message.objects.defer("raw_compressed").select_related("account", "thread"), pk=message_id, account__user=user
    )


def attachment_get(*, user, attachment_id: int) -> Attachment:
    return get_object_or_404(
        Attachment.objects.select_related("blob", "message"), pk=attachment_id, message__account__user=user
    )


def outgoing_attachment_get(*, user, attachment_id: int) -> OutgoingAttachment:
    return get_object_or_404(
        OutgoingAttachment.objects.select_related("blob"), pk=attachment_id, outgoing__account__user=user
    )


def inline_part_get(*, user, message_id: int, content_id: str) -> Attachment:
    qs = Attachment.objects.select_related("blob").filter(message_id=message_id, message__account__user=user)
    return get_object_or_404(qs.filter(content_id=content_id)[:1])


def thread_message_ids(*, user, thread_ids: list[int]) -> list[int]:
    return list(Message.objects.filter(thread_id__in=thread_ids, account__user=user).values_list("id", flat=True))


def correspondents_suggest(*, user, prefix: str, limit: int = 8) -> list[dict[str, str]]:
    """People the user has had mail from, matching a prefix of their address or name."""
    prefix = prefix.strip()
    if len(prefix) < 1:
        return []
    rows = (
        Message.objects.filter(account__user=user)
        .filter(Q(from_address__istartswith=prefix) | Q(from_name__istartswith=prefix))
        .exclude(from_address="")
        .values_list("from_name", "from_address")
        .distinct()[: limit * 3]
    )
    seen: dict[str, dict[str, str]] = {}
    for name, email in rows:
        key = email.lower()
        if key not in seen:
            seen[key] = {"name": name, "email": email}
    own = {a.lower() for a in accounts_for_user(user=user).values_list("email", flat=True)}
    sent = OutgoingMessage.objects.filter(account__user=user, status=OutgoingMessage.Status.SENT).values_list(
        "to", flat=True
    )[:200]
    for recipients in sent:
        for person in recipients or []:
            email = (person.get("email") or "").strip()
            name = person.get("name") or ""
            if email.lower() not in seen and (
                email.lower().startswith(prefix.lower()) or name.lower().startswith(prefix.lower())
            ):
                seen[email.lower()] = {"name": name, "email": email}
    return [p for k, p in seen.items() if k not in own][:limit]


def drafts_for_user(*, user) -> QuerySet[OutgoingMessage]:
    return (
        OutgoingMessage.objects.filter(account__user=user, status=OutgoingMessage.Status.DRAFT)
        .select_related("account")
        .order_by("-updated_at")
    )


def outbox_for_user(*, user) -> QuerySet[OutgoingMessage]:
    """The user's messages on their way or gone, but a batch's (those are on the batch's own page)."""
    return (
        OutgoingMessage.objects.filter(account__user=user, batch__isnull=True)
        .exclude(status=OutgoingMessage.Status.DRAFT)
        .select_related("account")
        .order_by("-updated_at")
    )


def batches_for(*, user) -> QuerySet[Batch]:
    """The user's batches, newest first, each with its count of messages per status."""
    statuses = OutgoingMessage.Status
    counts = {f"n_{s}": Count("messages", filter=Q(messages__status=s)) for s in statuses.values}
    return Batch.objects.filter(user=user).annotate(n_all=Count("messages"), **counts)


def batch_get(*, user, batch_id: int) -> Batch:
    return get_object_or_404(batches_for(user=user), pk=batch_id)


def signatures_for(*, user) -> QuerySet[Signature]:
    return Signature.objects.filter(user=user)


def sending_preferences(*, user) -> SendingPreferences:
    """The user's sending preferences, or the defaults (unsaved) when they never changed them."""
    return SendingPreferences.objects.filter(user=user).first() or SendingPreferences(user=user)


def outgoing_get(*, user, outgoing_id: int, status: str | None = None) -> OutgoingMessage:
    qs = OutgoingMessage.objects.select_related("account").filter(account__user=user)
    if status:
        qs = qs.filter(status=status)
    return get_object_or_404(qs, pk=outgoing_id)


def mail_version(*, user, counts: dict[str, int] | None = None, off: set[str] | None = None) -> str:
    """A short fingerprint of what the user's open pages show: it changes when new mail arrives, mail is read or
    unread, a sync starts, progresses, fails or ends, an account's state changes, or an outbox row moves on.

    Cheap enough to be asked every few seconds by every open page: each account's newest thread and unread count
    come from their indexes (thread_recent; message_unread_ids, counted index-only), never from a scan of its mail.
    ``counts`` and ``off``: the page's :func:`sidebar_counts` and :func:`providers_off`, when it has them already.
    """
    newest = Thread.objects.filter(account=OuterRef("pk")).order_by("-last_message_at", "-id")
    accounts = list(
        accounts_for_user(user=user)
        .annotate(newest_id=Subquery(newest.values("id")[:1]), newest_at=Subquery(newest.values("last_message_at")[:1]))
        .values_list(
            "pk",
            "status",
            "newest_id",
            "newest_at",
            "sync_state__status",
            "sync_state__stage",
            "sync_state__progress_done",
            "sync_state__progress_total",
            "sync_state__last_error_code",
        )
    )
    unread = (
        Message.objects.filter(account_id__in=[row[0] for row in accounts], is_read=False)
        .values("account_id")
        .annotate(n=Count("*"))
        .values_list("account_id", "n")
    )
    counts = counts if counts is not None else sidebar_counts(user=user)
    off = off if off is not None else providers_off()
    state = repr((accounts, sorted(unread), sorted(counts.items()), sorted(off)))
    return hashlib.blake2b(state.encode(), digest_size=8).hexdigest()


def live_watch(*, user, counts: dict[str, int] | None = None, off: set[str] | None = None) -> dict:
    """What ``mailbox/_changes.html`` needs: the version of the user's mail a page is rendered from."""
    version = mail_version(user=user, counts=counts, off=off)
    return {"mail_version": version, "live_seconds": settings.MAILHUB_LIVE_SECONDS}


def sidebar_counts(*, user) -> dict[str, int]:
    """Drafts; outbox rows that need the user (failed, or not known to have gone); rows still on their way."""
    statuses = OutgoingMessage.Status
    counts = dict(
        OutgoingMessage.objects.filter(account__user=user)
        .exclude(status=statuses.SENT)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return {
        "drafts": counts.get(statuses.DRAFT, 0),
        "failed": counts.get(statuses.FAILED, 0) + counts.get(statuses.UNKNOWN, 0),
        "queued": counts.get(statuses.QUEUED, 0) + counts.get(statuses.SENDING, 0),
    }
