"""The provider-neutral write API of the local mail store. The sync engine (``mailbox.local``) and the outbox
write through it.

Contract:

- Every write is idempotent and keyed by ``(account, remote_id)``: folders by the provider's label id or
  folder name, messages by the provider's message id (Gmail's id; for IMAP, which has no stable one, the
  SHA-256 of the message's bytes: see :mod:`providers.imap.client`). So two rows are one message only
  when the provider says so or the bytes are the same, never by Message-ID and Date. Writing the same
  thing twice leaves the same rows, so a sync that is repeated or resumed after a crash cannot duplicate
  anything.
- The raw RFC 5322 bytes are always kept (zlib-compressed on the row); MIME is parsed once, when a
  message is first stored, by :func:`mailbox.mime.mime_parse`, which never raises. A message that
  fails to parse is stored with ``parse_error`` set.
- Attachments are stored once per SHA-256 (:class:`AttachmentBlob`): up to 64 KiB in the database row,
  bigger ones in Django's default storage.
- Threads: a caller that knows the provider's thread (Gmail) passes ``thread_key``. Otherwise (IMAP)
  the store threads by Message-ID / In-Reply-To / References within the account, across folders, and
  merges threads when a missing parent arrives later. Never by subject. The same Message-ID in two
  accounts gives two rows in two threads.
- Thread summaries (count, unread, last date, snippet, senders, starred, attachments) are recomputed
  after every write that can change them; a thread left without messages is deleted.
- Nothing here talks to a provider.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.files.base import ContentFile
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Count, Max, Q
from django.db.models.constants import OnConflict
from django.utils import timezone

from accounts.models import MailAccount
from mailbox.mime import ParsedAttachment, ParsedMessage, clean_text, mime_parse
from mailbox.models import Attachment, AttachmentBlob, Folder, Message, MessageFolder, Thread, raw_compress

logger = logging.getLogger(__name__)

FolderRef = Folder | int
SENDERS_IN_SUMMARY = 3
INLINE_BLOB_MAX = 64 * 1024  # attachment bytes kept in the database row rather than in a file
# From this many raw bytes a message is stored step by step, each step's copies let go before the next
# (compressed after parsing, attachments written before the INSERT, on PostgreSQL bound parameters):
# storing one then needs a small multiple of its size (`python -m bench memory`).
LARGE_MESSAGE = 1 << 20
_BLOB_CHUNK = 1 << 20


@dataclass
class IncomingMessage:
    """One message as a sync engine saw it at the provider."""

    remote_id: str
    raw: bytes
    folders: Sequence[FolderRef] = ()  # Folder rows or their ids
    is_read: bool = False
    is_starred: bool = False
    is_draft: bool = False
    thread_key: str | None = None  # the provider's thread id (Gmail); None: thread by headers
    internal_date: datetime | None = None  # when the provider received it; preferred for sorting
    uid_by_folder: dict[int, int] = field(default_factory=dict)  # folder id -> IMAP UID


@dataclass
class MessageState:
    """A stored message's mutable state at the provider (flags and folder/label membership)."""

    folders: Sequence[FolderRef]
    is_read: bool
    is_starred: bool
    is_draft: bool = False
    uid_by_folder: dict[int, int] = field(default_factory=dict)


# --- Folders ------------------------------------------------------------------------------------


def folder_upsert(
    *,
    account: MailAccount,
    remote_id: str,
    name: str,
    role: str = Folder.Role.USER,
    is_selectable: bool = True,
    delimiter: str = "/",
) -> Folder:
    """Create or update the folder/label ``remote_id`` of ``account``; IMAP state fields are left alone."""
    values = {"name": name, "role": role, "is_selectable": is_selectable, "delimiter": delimiter}
    folder, created = Folder.objects.get_or_create(account=account, remote_id=remote_id, defaults=values)
    if not created and any(getattr(folder, field) != value for field, value in values.items()):
        for field, value in values.items():
            setattr(folder, field, value)
        folder.save(update_fields=list(values))
    return folder


def folder_delete(*, account: MailAccount, remote_id: str) -> None:
    """Forget a folder/label that is gone at the provider. Messages stay (they may live elsewhere)."""
    with transaction.atomic():
        folder = Folder.objects.filter(account=account, remote_id=remote_id).first()
        if folder is None:
            return
        thread_ids = set(
            Message.objects.filter(messagefolder__folder=folder).values_list("thread_id", flat=True).distinct()
        )
        folder.delete()
        threads_refresh(thread_ids=thread_ids)


# --- Messages -----------------------------------------------------------------------------------


def message_upsert(
    *,
    account: MailAccount,
    remote_id: str,
    raw: bytes,
    folders: Sequence[FolderRef] = (),
    is_read: bool = False,
    is_starred: bool = False,
    is_draft: bool = False,
    thread_key: str | None = None,
    internal_date: datetime | None = None,
    uid_by_folder: dict[int, int] | None = None,
) -> Message:
    """Store one message (see :func:`messages_upsert`)."""
    item = IncomingMessage(
        remote_id=remote_id,
        raw=raw,
        folders=folders,
        is_read=is_read,
        is_starred=is_starred,
        is_draft=is_draft,
        thread_key=thread_key,
        internal_date=internal_date,
        uid_by_folder=uid_by_folder or {},
    )
    pk = messages_upsert(account=account, items=[item])[remote_id]
    return Message.objects.defer("raw_compressed", "body_text", "body_html").get(pk=pk)  # loaded when read


def messages_upsert(*, account: MailAccount, items: Sequence[IncomingMessage]) -> dict[str, int]:
    """Store a batch of messages in a few queries; returns their ids by remote id.

    A message already stored (same account and remote id) keeps its parsed content and thread;
    only its flags and folders are brought up to date. New messages are parsed, threaded and
    created in bulk with their attachments. Thread summaries are recomputed once for the batch.
    """
    if not items:
        return {}
    unique: dict[str, IncomingMessage] = {}
    for item in items:
        unique[item.remote_id] = item  # the last sighting of a remote id wins
    try:
        with transaction.atomic():
            return _messages_upsert(account=account, items=list(unique.values()))
    except IntegrityError:
        # Another writer (e.g. the outbox filing a sent message) stored one of these first:
        # go one by one, so each conflicting row is found and updated instead.
        if len(unique) == 1:
            with transaction.atomic():
                return _messages_upsert(account=account, items=list(unique.values()))
        stored: dict[str, int] = {}
        for item in unique.values():
            stored.update(messages_upsert(account=account, items=[item]))
        return stored


def _messages_upsert(*, account: MailAccount, items: list[IncomingMessage]) -> dict[str, int]:
    existing = {
        m.remote_id: m
        for m in Message.objects.filter(account=account, remote_id__in=[i.remote_id for i in items]).only(
            "id", "remote_id", "thread_id", "is_read", "is_starred", "is_draft"
        )
    }
    touched_threads: set[int] = set()
    states = {
        i.remote_id: MessageState(i.folders, i.is_read, i.is_starred, i.is_draft, i.uid_by_folder)
        for i in items
        if i.remote_id in existing
    }
    if states:
        touched_threads |= _states_apply(account=account, messages=existing, states=states)

    new_items = [i for i in items if i.remote_id not in existing]
    if not new_items:
        if touched_threads:
            threads_refresh(thread_ids=touched_threads)
        return {remote_id: m.pk for remote_id, m in existing.items()}
    # Compression runs in C without the GIL: a helper thread does it while this one parses. A large message
    # is compressed after it was parsed and its attachments were stored instead, so that the copies each step
    # makes of it are not all held at once (see LARGE_MESSAGE).
    small = [i for i in new_items if len(i.raw) < LARGE_MESSAGE]
    compressing = zip(
        [i.remote_id for i in small], _compressor().map(raw_compress, [i.raw for i in small]), strict=True
    )
    parsed: dict[str, ParsedMessage] = {}
    compressed: dict[str, bytes] = {}
    stored_attachments: dict[int, _StoredAttachment] = {}
    for item in new_items:
        parsed[item.remote_id] = mime_parse(item.raw)
        if len(item.raw) >= LARGE_MESSAGE:
            _attachments_store(parsed=[parsed[item.remote_id]], stored=stored_attachments)
            compressed[item.remote_id] = raw_compress(item.raw)
    compressed.update(compressing)
    thread_ids, merged_from = _threads_resolve(account=account, items=new_items, parsed=parsed)
    touched_threads |= set(thread_ids.values()) | merged_from

    message_ids = _messages_insert(
        account=account, items=new_items, parsed=parsed, thread_ids=thread_ids, compressed=compressed
    )
    memberships = []
    for item in new_items:
        message_id = message_ids[item.remote_id]
        for folder_id in _folder_ids(item.folders):
            memberships.append(
                MessageFolder(message_id=message_id, folder_id=folder_id, uid=item.uid_by_folder.get(folder_id))
            )
    MessageFolder.objects.bulk_create(memberships)
    _attachments_store(parsed=parsed.values(), stored=stored_attachments)
    _attachments_create(message_ids=message_ids, parsed=parsed, stored=stored_attachments)
    threads_refresh(thread_ids=touched_threads)
    return {**{remote_id: m.pk for remote_id, m in existing.items()}, **message_ids}


_THREAD_COLUMNS = (
    "account",
    "remote_id",
    "subject",
    "snippet",
    "senders",
    "last_message_at",
    "message_count",
    "unread_count",
    "is_starred",
    "has_attachments",
)
_MESSAGE_COLUMNS = (
    "account",
    "thread",
    "remote_id",
    "message_id",
    "in_reply_to",
    "references",
    "subject",
    "from_name",
    "from_address",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "date",
    "snippet",
    "body_text",
    "body_html",
    "size",
    "is_read",
    "is_starred",
    "is_draft",
    "has_attachments",
    "parse_error",
    "attachment_names",
    "raw_compressed",
    "created_at",
    "updated_at",
)


def _messages_insert(
    *,
    account: MailAccount,
    items: list[IncomingMessage],
    parsed: dict[str, ParsedMessage],
    thread_ids: dict[str, int],
    compressed: dict[str, bytes],
) -> dict[str, int]:
    """INSERT new messages; returns their ids by remote id.

    The sync's hottest write, done without model instances: building one per message and letting
    bulk_create prepare them cost more than parsing the mail did. On PostgreSQL a large message's raw bytes
    and body go in a second statement with bound parameters (see :func:`_large_fields_write`).
    """
    now = timezone.now()
    connection = connections[router.db_for_write(Message)]
    large: list[IncomingMessage] = []
    rows = []
    for item in items:
        p = parsed[item.remote_id]
        raw_compressed, text, html = compressed[item.remote_id], p.text, p.html
        if len(raw_compressed) + len(text) + len(html) >= LARGE_MESSAGE:
            large.append(item)
            raw_compressed = b""
            if connection.vendor == "postgresql":
                text, html = "", ""
        rows.append(
            (
                account.pk,
                thread_ids[item.remote_id],
                item.remote_id,
                p.message_id,
                p.in_reply_to,
                " ".join(f"<{r}>" for r in p.references),
                p.subject,
                p.from_name[:255],
                p.from_address[:320],
                p.to,
                p.cc,
                p.bcc,
                p.reply_to,
                item.internal_date or p.date or now,
                p.snippet,
                text,
                html,
                len(item.raw),
                item.is_read,
                item.is_starred,
                item.is_draft,
                p.has_attachments,
                p.parse_error,
                " ".join(clean_text(a.filename) for a in p.attachments if a.filename),
                raw_compressed,
                now,
                now,
            )
        )
    _rows_insert(Message, _MESSAGE_COLUMNS, rows)
    del rows
    ids: dict[str, int] = {}
    remote_ids = [item.remote_id for item in items]
    for start in range(0, len(remote_ids), 500):
        ids.update(
            Message.objects.filter(account=account, remote_id__in=remote_ids[start : start + 500]).values_list(
                "remote_id", "id"
            )
        )
    for item in large:
        p = parsed[item.remote_id]
        _large_fields_write(
            connection,
            message_id=ids[item.remote_id],
            raw_compressed=compressed[item.remote_id],
            text=p.text,
            html=p.html,
        )
    return ids


def _large_fields_write(connection, *, message_id: int, raw_compressed: bytes, text: str, html: str) -> None:
    """Write a large message's raw bytes (on PostgreSQL its body too) after its row was inserted without them.

    Bound into the multi-row INSERT they were copied twice more at once: SQLite copies a bound value and
    then builds the record around it; Django's psycopg cursor binds on the client, spelling the bytes out
    in hex inside the SQL text. SQLite now gets a zero-filled blob written in place a chunk at a time
    (incremental blob I/O); PostgreSQL gets server-side bound parameters, the raw bytes in binary.
    """
    table, pk = Message._meta.db_table, Message._meta.pk.column
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(
                f'UPDATE "{table}" SET "raw_compressed" = zeroblob(%s) WHERE "{pk}" = %s',  # noqa: S608 (model meta)
                [len(raw_compressed), message_id],
            )
        view = memoryview(raw_compressed)
        with connection.connection.blobopen(table, "raw_compressed", message_id) as blob:
            for start in range(0, len(view), _BLOB_CHUNK):
                blob.write(view[start : start + _BLOB_CHUNK])
        return
    if connection.vendor != "postgresql":
        Message.objects.filter(pk=message_id).update(raw_compressed=raw_compressed, body_text=text, body_html=html)
        return
    import psycopg

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f'UPDATE "{table}" SET "raw_compressed" = %b, "body_text" = %s, "body_html" = %s WHERE "{pk}" = %s',  # noqa: S608 (model meta)
            [raw_compressed, text, html, message_id],
        )


def _rows_insert(
    model: type[models.Model], names: Sequence[str], rows: list[tuple], *, ignore_conflicts: bool = False
) -> None:
    """INSERT ``rows`` (values of the fields ``names``) with multi-row statements, as large as the database takes.

    Rows go in a few statements, not one each: on SQLite the search index's trigger flushes a new FTS5
    segment per statement, which made one statement per message cost more than the message itself.
    """
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    fields = _table_fields(model, names)
    head = connection.ops.insert_statement(on_conflict=OnConflict.IGNORE if ignore_conflicts else None)
    head += f" {quote(model._meta.db_table)} ({', '.join(quote(_column(f)) for f in fields)}) VALUES "
    tail = ""
    if ignore_conflicts:
        tail = " " + connection.ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, None, None)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    db_values = _db_values(fields, connection)
    batch = max(connection.ops.bulk_batch_size(fields, rows), 1)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            params = [value for row in chunk for value in db_values(row)]
            cursor.execute(head + ", ".join([row_sql] * len(chunk)) + tail, params)


def _table_fields(model: type[models.Model], names: Iterable[str]) -> list[models.Field]:
    """The fields called ``names``, in that order; a reverse relation among them is a programming error."""
    fields = []
    for name in names:
        model_field = model._meta.get_field(name)
        if not isinstance(model_field, models.Field):
            raise TypeError(f"{model.__name__}.{name} is not a field of its table")
        fields.append(model_field)
    return fields


def _column(model_field: models.Field) -> str:
    if model_field.column is None:
        raise TypeError(f"{model_field} has no column")
    return model_field.column


# Field types whose Python values the database driver cannot take as they are.
_PREPARED_TYPES = {"JSONField", "DateTimeField", "BinaryField"}


def _db_values(fields: Sequence[models.Field], connection) -> Callable[[Sequence], list]:
    """A function turning a row of Python values for ``fields`` into what the database driver takes.

    Only the types that need it go through the field's own preparation: calling it for every value
    was a noticeable share of a sync's inserts.
    """
    prepare = [
        (lambda value, field=f: field.get_db_prep_save(value, connection))
        if f.get_internal_type() in _PREPARED_TYPES
        else None
        for f in fields
    ]
    return lambda row: [p(v) if p else v for p, v in zip(prepare, row, strict=True)]


def _folder_ids(folders: Iterable[FolderRef]) -> list[int]:
    return list(dict.fromkeys(f.pk if isinstance(f, Folder) else int(f) for f in folders))


def messages_state_set(*, account: MailAccount, states: dict[str, MessageState]) -> int:
    """Bring stored messages' flags and folders to ``states`` (remote id -> state); returns rows found.

    Remote ids not stored are ignored (the caller fetches and upserts those).
    """
    if not states:
        return 0
    with transaction.atomic():
        messages = {
            m.remote_id: m
            for m in Message.objects.filter(account=account, remote_id__in=list(states)).only(
                "id", "remote_id", "thread_id", "is_read", "is_starred", "is_draft"
            )
        }
        touched = _states_apply(account=account, messages=messages, states=states)
        threads_refresh(thread_ids=touched)
    return len(messages)


def _states_apply(*, account: MailAccount, messages: dict[str, Message], states: dict[str, MessageState]) -> set[int]:
    """Set flags and folder memberships of ``messages``; returns the thread ids whose summary may change."""
    touched: set[int] = set()
    changed = []
    for remote_id, message in messages.items():
        state = states.get(remote_id)
        if state is None:
            continue
        flags = (state.is_read, state.is_starred, state.is_draft)
        if (message.is_read, message.is_starred, message.is_draft) != flags:
            message.is_read, message.is_starred, message.is_draft = flags
            changed.append(message)
            touched.add(message.thread_id)
    if changed:
        Message.objects.bulk_update(changed, ["is_read", "is_starred", "is_draft"])

    ids = [m.pk for r, m in messages.items() if r in states]
    current: dict[int, dict[int, int | None]] = defaultdict(dict)
    for message_id, folder_id, uid in MessageFolder.objects.filter(message_id__in=ids).values_list(
        "message_id", "folder_id", "uid"
    ):
        current[message_id][folder_id] = uid
    to_delete: list[Q] = []
    to_create: list[MessageFolder] = []
    to_update: list[tuple[int, int, int | None]] = []
    for remote_id, message in messages.items():
        state = states.get(remote_id)
        if state is None:
            continue
        wanted = _folder_ids(state.folders)
        have = current.get(message.pk, {})
        gone = set(have) - set(wanted)
        if gone:
            to_delete.append(Q(message_id=message.pk, folder_id__in=gone))
        for folder_id in wanted:
            uid = state.uid_by_folder.get(folder_id)
            if folder_id not in have:
                to_create.append(MessageFolder(message_id=message.pk, folder_id=folder_id, uid=uid))
            elif uid is not None and have[folder_id] != uid:
                to_update.append((message.pk, folder_id, uid))
        if gone or len(wanted) != len(set(wanted) & set(have)):
            touched.add(message.thread_id)
    if to_delete:
        query = Q()
        for clause in to_delete:
            query |= clause
        MessageFolder.objects.filter(query).delete()
    if to_create:
        MessageFolder.objects.bulk_create(to_create, ignore_conflicts=True)
    for message_id, folder_id, uid in to_update:
        MessageFolder.objects.filter(message_id=message_id, folder_id=folder_id).update(uid=uid)
    return touched


def message_flags_update(
    *,
    account: MailAccount,
    remote_ids: Iterable[str],
    is_read: bool | None = None,
    is_starred: bool | None = None,
    is_draft: bool | None = None,
) -> int:
    """Set the given flags (None: leave as is) on the stored messages; returns how many rows matched."""
    values = {
        name: value
        for name, value in (("is_read", is_read), ("is_starred", is_starred), ("is_draft", is_draft))
        if value is not None
    }
    remote_ids = list(remote_ids)
    if not values or not remote_ids:
        return 0
    with transaction.atomic():
        query = Message.objects.filter(account=account, remote_id__in=remote_ids)
        thread_ids = set(query.values_list("thread_id", flat=True))
        count = query.update(**values, updated_at=timezone.now())
        threads_refresh(thread_ids=thread_ids)
    return count


def message_folders_set(
    *,
    account: MailAccount,
    remote_id: str,
    folders: Sequence[FolderRef],
    uid_by_folder: dict[int, int] | None = None,
) -> bool:
    """Make ``folders`` exactly the stored message's folders (with IMAP UIDs); False if not stored."""
    message = Message.objects.filter(account=account, remote_id=remote_id).only("id").first()
    if message is None:
        return False
    with transaction.atomic():
        rows = Message.objects.filter(pk=message.pk).only(
            "id", "remote_id", "thread_id", "is_read", "is_starred", "is_draft"
        )
        current = {m.remote_id: m for m in rows}
        m = current[remote_id]
        state = MessageState(folders, m.is_read, m.is_starred, m.is_draft, uid_by_folder or {})
        threads_refresh(thread_ids=_states_apply(account=account, messages=current, states={remote_id: state}))
    return True


def message_folders_change(
    *,
    account: MailAccount,
    remote_ids: Iterable[str],
    add: Sequence[FolderRef] = (),
    remove: Sequence[FolderRef] = (),
) -> int:
    """Add and remove folder/label memberships of stored messages (Gmail label changes); returns rows touched."""
    remote_ids = list(remote_ids)
    add_ids, remove_ids = _folder_ids(add), _folder_ids(remove)
    if not remote_ids or not (add_ids or remove_ids):
        return 0
    with transaction.atomic():
        query = Message.objects.filter(account=account, remote_id__in=remote_ids)
        messages = list(query.values_list("id", "thread_id"))
        message_ids = [m for m, _ in messages]
        if remove_ids:
            MessageFolder.objects.filter(message_id__in=message_ids, folder_id__in=remove_ids).delete()
        if add_ids:
            MessageFolder.objects.bulk_create(
                [MessageFolder(message_id=m, folder_id=f) for m in message_ids for f in add_ids],
                ignore_conflicts=True,
            )
        threads_refresh(thread_ids={t for _, t in messages})
    return len(messages)


def messages_delete(*, account: MailAccount, remote_ids: Iterable[str]) -> int:
    """Delete stored messages (gone at the provider); returns how many rows went. Unknown ids are ignored."""
    remote_ids = list(remote_ids)
    if not remote_ids:
        return 0
    deleted = 0
    with transaction.atomic():
        for start in range(0, len(remote_ids), 500):
            chunk = remote_ids[start : start + 500]
            query = Message.objects.filter(account=account, remote_id__in=chunk)
            thread_ids = set(query.values_list("thread_id", flat=True))
            deleted += query.count()
            query.delete()
            threads_refresh(thread_ids=thread_ids)
    return deleted


@functools.cache
def _compressor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailhub-compress")


os.register_at_fork(after_in_child=_compressor.cache_clear)  # a forked worker has no copy of the thread


# --- Threads ------------------------------------------------------------------------------------


def thread_provider_key(thread: Thread) -> str | None:
    """The provider's own key of a stored thread (Gmail's threadId); None for a thread the store made by headers."""
    return None if thread.remote_id.startswith(("mid:", "remote:")) else thread.remote_id


def _header_thread_key(message_id: str) -> str:
    return "mid:" + hashlib.sha1(message_id.encode("utf-8", "replace"), usedforsecurity=False).hexdigest()


def _threads_resolve(
    *, account: MailAccount, items: list[IncomingMessage], parsed: dict[str, ParsedMessage]
) -> tuple[dict[str, int], set[int]]:
    """Pick (creating where needed) the thread of each new message; returns ({remote_id: thread id}, merged)."""
    keys: dict[str, str] = {}
    by_header = [i for i in items if not i.thread_key]
    known: dict[str, int] = {}  # Message-ID -> thread id, for messages already stored
    merged_from: set[int] = set()
    if by_header:
        wanted = set()
        for item in by_header:
            p = parsed[item.remote_id]
            wanted.update(p.references)
            if p.in_reply_to:
                wanted.add(p.in_reply_to)
            if p.message_id:
                wanted.add(p.message_id)  # the same mail already stored from another folder
        wanted.discard("")
        wanted_list = list(wanted)
        for start in range(0, len(wanted_list), 500):
            for mid, thread_id in Message.objects.filter(
                account=account, message_id__in=wanted_list[start : start + 500]
            ).values_list("message_id", "thread_id"):
                known.setdefault(mid, thread_id)

    thread_by_key: dict[str, int] = {}
    direct: dict[str, int] = {}
    batch_key_by_mid: dict[str, str] = {}
    for item in items:
        p = parsed[item.remote_id]
        if item.thread_key:
            keys[item.remote_id] = item.thread_key[:255]
            continue
        ancestry = [p.message_id, *p.references, p.in_reply_to]
        found = next((known[mid] for mid in ancestry if mid and mid in known), None)
        if found is not None:
            direct[item.remote_id] = found
            if p.message_id:
                known.setdefault(p.message_id, found)
            continue
        in_batch = next((batch_key_by_mid[mid] for mid in ancestry if mid and mid in batch_key_by_mid), None)
        root = (p.references[0] if p.references else p.in_reply_to) or p.message_id
        key = in_batch or (_header_thread_key(root) if root else f"remote:{item.remote_id}"[:255])
        keys[item.remote_id] = key
        if p.message_id:
            batch_key_by_mid.setdefault(p.message_id, key)

    needed = set(keys.values())
    if needed:
        for remote_id, thread_id in Thread.objects.filter(account=account, remote_id__in=list(needed)).values_list(
            "remote_id", "id"
        ):
            thread_by_key[remote_id] = thread_id
        missing = needed - set(thread_by_key)
        if missing:
            # A new thread is named after its earliest message, not the batch's last one (a reply).
            oldest_last = sorted(
                (i for i in items if i.remote_id in keys),
                key=lambda i: i.internal_date or parsed[i.remote_id].date or timezone.now(),
                reverse=True,
            )
            subjects = {keys[i.remote_id]: parsed[i.remote_id].subject for i in oldest_last}
            empty_summary = ("", "", None, 0, 0, False, False)
            rows = [(account.pk, key, subjects.get(key, ""), *empty_summary) for key in missing]
            _rows_insert(Thread, _THREAD_COLUMNS, rows, ignore_conflicts=True)
            for remote_id, thread_id in Thread.objects.filter(account=account, remote_id__in=list(missing)).values_list(
                "remote_id", "id"
            ):
                thread_by_key[remote_id] = thread_id
    result = {i.remote_id: direct.get(i.remote_id) or thread_by_key[keys[i.remote_id]] for i in items}

    # A parent that arrives after its replies: pull the replies' threads into the parent's.
    new_mids = {
        parsed[i.remote_id].message_id: result[i.remote_id] for i in by_header if parsed[i.remote_id].message_id
    }
    if new_mids:
        mids = list(new_mids)
        for start in range(0, len(mids), 500):
            children = Message.objects.filter(account=account, in_reply_to__in=mids[start : start + 500]).values_list(
                "in_reply_to", "thread_id"
            )
            for parent_mid, child_thread in children:
                target = new_mids[parent_mid]
                if child_thread != target and child_thread in _header_threads(account=account, ids={child_thread}):
                    Message.objects.filter(thread_id=child_thread).update(thread_id=target)
                    merged_from.add(child_thread)
    return result, merged_from


def _header_threads(*, account: MailAccount, ids: set[int]) -> set[int]:
    """Those of ``ids`` the store threaded by headers (a provider's own threads are never merged)."""
    return set(
        Thread.objects.filter(account=account, pk__in=ids)
        .filter(Q(remote_id__startswith="mid:") | Q(remote_id__startswith="remote:"))
        .values_list("id", flat=True)
    )


def threads_refresh(*, thread_ids: Iterable[int]) -> None:
    """Recompute the summary fields of these threads from their messages; delete threads left empty."""
    thread_ids = [t for t in set(thread_ids) if t is not None]
    for start in range(0, len(thread_ids), 500):
        _threads_refresh(thread_ids[start : start + 500])


def _threads_refresh(thread_ids: list[int]) -> None:
    stats = {
        row["thread_id"]: row
        for row in Message.objects.filter(thread_id__in=thread_ids)
        .values("thread_id")
        .annotate(
            count=Count("id"),
            unread=Count("id", filter=Q(is_read=False)),
            last=Max("date"),
            starred=Count("id", filter=Q(is_starred=True)),
            with_attachments=Count("id", filter=Q(has_attachments=True)),
        )
    }
    empty = [t for t in thread_ids if t not in stats]
    if empty:
        Thread.objects.filter(pk__in=empty).delete()
    if not stats:
        return
    # Newest first per thread: the latest message gives the snippet, the first few senders the list.
    latest: dict[int, Mapping[str, Any]] = {}
    senders: dict[int, list[str]] = defaultdict(list)
    rows = (
        Message.objects.filter(thread_id__in=list(stats))
        .order_by("thread_id", "-date", "-id")
        .values("thread_id", "snippet", "from_name", "from_address", "subject")
    )
    for row in rows:
        thread_id = row["thread_id"]
        latest.setdefault(thread_id, row)
        name = row["from_name"] or row["from_address"]
        if name and name not in senders[thread_id] and len(senders[thread_id]) < SENDERS_IN_SUMMARY:
            senders[thread_id].append(name)
    fields = [
        "message_count",
        "unread_count",
        "last_message_at",
        "is_starred",
        "has_attachments",
        "snippet",
        "senders",
        "subject",
    ]
    changed: list[dict] = []
    for thread in Thread.objects.filter(pk__in=list(stats)).only("id", *fields):
        counts = stats[thread.pk]
        values = {
            "message_count": counts["count"],
            "unread_count": counts["unread"],
            "last_message_at": counts["last"],
            "is_starred": counts["starred"] > 0,
            "has_attachments": counts["with_attachments"] > 0,
            "snippet": latest[thread.pk]["snippet"],
            "senders": ", ".join(senders[thread.pk]),
            "subject": thread.subject or latest[thread.pk]["subject"],
        }
        if any(getattr(thread, name) != value for name, value in values.items()):
            changed.append({"id": thread.pk, **values})
    _threads_update(fields, changed)


def _threads_update(fields: list[str], rows: list[dict]) -> None:
    """One parametrised UPDATE per changed thread, sent with executemany.

    Cheaper than bulk_update's CASE expressions and than a queryset ``update()`` per row (whose query
    compilation dominated a sync's thread refresh); values are prepared as for :func:`_rows_insert`.
    """
    if not rows:
        return
    connection = connections[router.db_for_write(Thread)]
    quote = connection.ops.quote_name
    model_fields = _table_fields(Thread, fields)
    assignments = ", ".join(f"{quote(_column(f))} = %s" for f in model_fields)
    sql = f"UPDATE {quote(Thread._meta.db_table)} SET {assignments} WHERE {quote(_column(Thread._meta.pk))} = %s"  # noqa: S608 (identifiers from model meta)
    db_values = _db_values(model_fields, connection)
    params = [[*db_values([row[f.name] for f in model_fields]), row["id"]] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


# --- Attachments --------------------------------------------------------------------------------


def blob_store(*, content: bytes) -> AttachmentBlob:
    """The blob holding ``content``, storing it only if no blob has that SHA-256 yet."""
    digest = hashlib.sha256(content).hexdigest()
    return _blobs_store({digest: content})[digest]


def _blobs_store(contents: dict[str, bytes]) -> dict[str, AttachmentBlob]:
    """The blobs of ``contents`` (sha256 -> bytes), storing only the digests not stored yet.

    Up to ``INLINE_BLOB_MAX`` bytes stay in the row (one INSERT for the batch, no file per attachment:
    writing files cost a sync more than parsing its mail); bigger blobs go to Django's storage.
    """
    blobs = {b.sha256: b for b in AttachmentBlob.objects.filter(sha256__in=list(contents))}
    fresh: list[AttachmentBlob] = []
    for digest, content in contents.items():
        if digest in blobs:
            continue
        blob = AttachmentBlob(sha256=digest, size=len(content))
        if len(content) <= INLINE_BLOB_MAX:
            blob.content = content
        else:
            blob.file.save(digest, ContentFile(content), save=False)
        fresh.append(blob)
    if not fresh:
        return blobs
    # A digest a concurrent writer stored meanwhile is skipped, not an error.
    AttachmentBlob.objects.bulk_create(fresh, ignore_conflicts=True)
    stored = {b.sha256: b for b in AttachmentBlob.objects.filter(sha256__in=[b.sha256 for b in fresh])}
    for blob in fresh:
        if blob.file and stored[blob.sha256].file.name != blob.file.name:  # the other writer won; same bytes
            blob.file.delete(save=False)
    blobs.update(stored)
    return blobs


@dataclass
class _StoredAttachment:
    blob: AttachmentBlob
    size: int


def _attachments_store(*, parsed: Iterable[ParsedMessage], stored: dict[int, _StoredAttachment]) -> None:
    """Store the attachments of ``parsed`` not in ``stored`` yet as blobs, and let go of their bytes.

    ``stored`` maps ``id(attachment)`` to its blob and size; the attachment's content is emptied, so a big
    attachment is not held until the whole batch has been written.
    """
    contents: dict[str, bytes] = {}
    digests: dict[int, tuple[str, ParsedAttachment]] = {}  # each attachment is hashed once
    for p in parsed:
        for a in p.attachments:
            if id(a) not in stored:
                digest = hashlib.sha256(a.content).hexdigest()
                digests[id(a)] = (digest, a)
                contents.setdefault(digest, a.content)
    if not contents:
        return
    blobs = _blobs_store(contents)
    contents.clear()
    for key, (digest, a) in digests.items():
        stored[key] = _StoredAttachment(blob=blobs[digest], size=len(a.content))
        a.content = b""


def _attachments_create(
    *, message_ids: dict[str, int], parsed: dict[str, ParsedMessage], stored: dict[int, _StoredAttachment]
) -> None:
    rows = []
    for remote_id, p in parsed.items():
        for a in p.attachments:
            rows.append(
                Attachment(
                    message_id=message_ids[remote_id],
                    blob=stored[id(a)].blob,
                    filename=clean_text(a.filename)[:255],
                    content_type=a.content_type[:255],
                    size=stored[id(a)].size,
                    content_id=a.content_id[:255],
                    is_inline=a.is_inline,
                )
            )
    if rows:
        Attachment.objects.bulk_create(rows)
