"""Read queries for the mail UI. Every function takes the user and only ever returns that user's rows."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Exists, F, JSONField, OuterRef, Q, QuerySet, Subquery
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
    """Each account with its folders, unread message counts and sync state (two queries in all; the counts are the
    folders' own, kept by the database: see :mod:`mailbox.folder_counts`).
    ``off``: :func:`providers_off`, when the page has it already."""
    accounts = list(accounts_for_user(user=user).select_related("sync_state"))
    if off is None:
        off = providers_off() if accounts else set()
    # A mailbox's own Drafts are drafts in Mailhub (mailbox.drafts): the one Drafts above the accounts lists them.
    folders = Folder.objects.filter(account__user=user, is_selectable=True).exclude(role=Folder.Role.DRAFTS)
    by_account: dict[int, list[FolderNav]] = {a.id: [] for a in accounts}
    for folder in folders:
        by_account[folder.account_id].append(FolderNav(folder=folder, unread=max(0, folder.unread_count)))
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
    folders = Folder.objects.filter(account=account).annotate(n_messages=F("message_count"))
    return sorted(folders, key=_folder_order)


def account_get(*, user, account_id: int) -> MailAccount:
    return get_object_or_404(accounts_for_user(user=user), pk=account_id)


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


def _threads_in(*, account_id: int, folder_ids: list[int]) -> QuerySet[Thread]:
    """One mailbox's threads with a message in one of ``folder_ids``. With the mailbox a constant, PostgreSQL
    weighs both ways and picks the cheaper: walking the newest threads (index thread_recent) while probing each
    for a membership, when the folder holds much of the mail (an Inbox: 1 ms at 1M messages, where gathering the
    folder's 37,000 memberships first took 200 ms), or starting from the folder's memberships when it holds few."""
    in_folder = MessageFolder.objects.filter(message__thread=OuterRef("pk"), folder_id__in=folder_ids)
    return Thread.objects.filter(account_id=account_id).filter(Exists(in_folder))


def threads_in_folder(*, folder: Folder) -> QuerySet[Thread]:
    """One folder's threads (``folder`` already checked to be the user's)."""
    return _threads_in(account_id=folder.account_id, folder_ids=[folder.pk])


def threads_in_inboxes(*, user) -> list[QuerySet[Thread]]:
    """The user's inbox threads, a query per mailbox: :func:`thread_page` merges them. One query over all the
    user's mailboxes can follow no index in date order (they are per mailbox), so PostgreSQL gathered every inbox
    thread and sorted them (1.4 s at 1M messages)."""
    inboxes: dict[int, list[int]] = {}
    for account_id, folder_id in inbox_folders(user=user).order_by("account_id", "pk").values_list("account_id", "pk"):
        inboxes.setdefault(account_id, []).append(folder_id)
    return [_threads_in(account_id=a, folder_ids=ids) for a, ids in inboxes.items()]


def threads_all_mail(*, account: MailAccount) -> QuerySet[Thread]:
    """Gmail's "All Mail": every thread of the account with a message outside Trash and Spam, archived mail
    (in no folder at all) included. Gmail's API has no label for it, so it is built here."""
    kept = Message.objects.filter(thread=OuterRef("pk")).exclude(
        folders__role__in=[Folder.Role.TRASH, Folder.Role.SPAM]
    )
    return Thread.objects.filter(account=account).filter(Exists(kept))


def inbox_folders(*, user) -> QuerySet[Folder]:
    return Folder.objects.filter(account__user=user, role=Folder.Role.INBOX)


Threads = QuerySet[Thread] | Sequence[QuerySet[Thread]]


def _newest_first(thread: Thread) -> tuple[datetime, int]:
    assert thread.last_message_at is not None  # thread_page lists only threads that have one
    return thread.last_message_at, thread.id


def _rows(parts: Sequence[QuerySet[Thread]], *, after: Q | None, newest_first: bool, count: int) -> list[Thread]:
    """The first ``count`` threads of all ``parts`` together past ``after``, each part read in index order."""
    order = ["-last_message_at", "-id"] if newest_first else ["last_message_at", "id"]
    rows: list[Thread] = []
    for part in parts:
        part = part.filter(last_message_at__isnull=False)
        rows += (part.filter(after) if after is not None else part).order_by(*order)[:count]
    if len(parts) > 1:
        rows.sort(key=_newest_first, reverse=newest_first)
    rows = rows[:count]
    # Each mailbox loaded once, not joined to every row: a mailbox row decrypts its tokens when loaded.
    accounts = MailAccount.objects.in_bulk({t.account_id for t in rows})
    for thread in rows:
        thread.account = accounts[thread.account_id]
    return rows


def thread_page(
    *, threads: Threads, cursor: str | None, before: str | None = None, limit: int = PAGE_SIZE
) -> ThreadPage:
    """Newest first, keyset-paginated on (last_message_at, id): no OFFSET, so page 100 costs what page 1 does.

    ``threads``: one query, or one per mailbox, merged here (each then reads its mailbox's newest threads from
    an index). ``cursor`` pages towards older mail (the rows after it); ``before`` back towards newer mail (the
    rows just before it, still shown newest first).
    """
    parts = [threads] if isinstance(threads, QuerySet) else list(threads)
    older_than = _cursor_decode(cursor) if cursor else None
    newer_than = _cursor_decode(before) if before and not older_than else None
    if newer_than:
        when, ident = newer_than
        after = Q(last_message_at__gt=when) | Q(last_message_at=when, id__gt=ident)
        rows = _rows(parts, after=after, newest_first=False, count=limit + 1)
        has_newer = len(rows) > limit
        rows = rows[:limit][::-1]
        return ThreadPage(
            threads=rows,
            next_cursor=_cursor_encode(rows[-1]) if rows else None,
            newer_cursor=_cursor_encode(rows[0]) if has_newer else None,
        )
    older: Q | None = None
    if older_than:
        when, ident = older_than
        older = Q(last_message_at__lt=when) | Q(last_message_at=when, id__lt=ident)
    rows = _rows(parts, after=older, newest_first=True, count=limit + 1)
    next_cursor = _cursor_encode(rows[limit - 1]) if len(rows) > limit else None
    newer_cursor = _cursor_encode(rows[0]) if older_than and rows else None
    return ThreadPage(threads=rows[:limit], next_cursor=next_cursor, newer_cursor=newer_cursor)


def with_recipients(threads: Threads) -> Threads:
    """Threads with ``recipients``: the To of each one's newest message (for Sent, where the sender is the user)."""
    newest = Message.objects.filter(thread=OuterRef("pk")).order_by("-date", "-id").values("to")[:1]
    if isinstance(threads, QuerySet):
        return threads.annotate(recipients=Subquery(newest, output_field=JSONField()))
    return [part.annotate(recipients=Subquery(newest, output_field=JSONField())) for part in threads]


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

    Cheap enough to be asked every few seconds by every open page: each account's newest thread comes from its
    index (thread_recent), reading and moving mail show in its folders' counts (kept by the database, see
    :mod:`mailbox.folder_counts`); nothing scans the mail. Counting the unread messages instead took time that grew
    with them (25,000 unread of 1M messages: 30 ms a poll). Mail read in no folder at all (Gmail's archived mail)
    changes no folder's count: the page learns of it with the next change it does see.
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
    folders = Folder.objects.filter(account_id__in=[row[0] for row in accounts]).values_list(
        "pk", "message_count", "unread_count"
    )
    counts = counts if counts is not None else sidebar_counts(user=user)
    off = off if off is not None else providers_off()
    state = repr((accounts, sorted(folders), sorted(counts.items()), sorted(off)))
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
