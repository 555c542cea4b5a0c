"""Re-key stored IMAP (Outlook) messages from Message-ID + Date to the SHA-256 of their bytes.

Before this, two different messages sharing a Message-ID and a Date were stored as one row (the second
never got a row of its own). Now ``Message.remote_id`` is ``sha256:`` and the hex SHA-256 of the exact
bytes the server returned (``providers.imap.connection.content_remote_id``; the same formula is frozen
below, as a migration must not import code that may change later).

What it does, for every account of an IMAP provider:

- each row gets the key of its stored raw bytes (``raw_compressed``); rows whose bytes are identical
  (there should be none) are merged into the oldest one, which takes over their folder memberships
  (their threads' counts are recounted);
- every membership of these accounts forgets its UID (``MessageFolder.uid`` set to NULL): a UID may
  have pointed at a message that was merged into the row by mistake. The next sync re-links each
  pending membership to its UID from the server's sizes, arrival times and header blocks without
  downloading bodies, downloads only where that is ambiguous (the merged messages among them, which
  so get their own rows), and drops what the server no longer has (see ``providers.imap.client``);
- sent messages in the outbox get the new key of their bytes too.

Gmail rows are keyed by Gmail's own id and are not touched. Reversing only leaves the new keys in place
(they are valid keys; the old ones cannot be recomputed without their identity rule).
"""

import hashlib
import zlib

from django.db import migrations

IMAP_PROVIDERS = ("microsoft",)
BATCH = 500


def content_key(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def imap_messages_rekey(apps, schema_editor) -> None:
    Message = apps.get_model("mailbox", "Message")
    MessageFolder = apps.get_model("mailbox", "MessageFolder")
    OutgoingMessage = apps.get_model("mailbox", "OutgoingMessage")
    MailAccount = apps.get_model("accounts", "MailAccount")
    for account_id in MailAccount.objects.filter(provider__in=IMAP_PROVIDERS).values_list("pk", flat=True):
        _account_rekey(Message, MessageFolder, account_id)
        MessageFolder.objects.filter(message__account_id=account_id).update(uid=None)
        for outgoing in OutgoingMessage.objects.filter(account_id=account_id).exclude(remote_id="").exclude(
            raw=None
        ).only("pk", "raw"):
            OutgoingMessage.objects.filter(pk=outgoing.pk).update(remote_id=content_key(bytes(outgoing.raw)))


def _account_rekey(Message, MessageFolder, account_id: int) -> None:  # noqa: N803 - historical models
    keep: dict[str, int] = {}  # new key -> the row that keeps it
    changed: list = []
    merged: dict[int, int] = {}  # row merged away -> the row it merges into
    rows = Message.objects.filter(account_id=account_id).order_by("pk").only("pk", "remote_id", "raw_compressed")
    for row in rows.iterator(chunk_size=BATCH):
        key = content_key(zlib.decompress(bytes(row.raw_compressed)))
        if key in keep:
            merged[row.pk] = keep[key]
            continue
        keep[key] = row.pk
        if row.remote_id != key:
            row.remote_id = key
            row.raw_compressed = b""  # not saved; only frees the memory until the batch is written
            changed.append(row)
    for duplicate, target in merged.items():
        folders = set(MessageFolder.objects.filter(message_id=target).values_list("folder_id", flat=True))
        for membership in MessageFolder.objects.filter(message_id=duplicate):
            if membership.folder_id not in folders:
                MessageFolder.objects.create(message_id=target, folder_id=membership.folder_id, uid=None)
                folders.add(membership.folder_id)
    if merged:
        duplicates = Message.objects.filter(pk__in=list(merged))
        thread_ids = set(duplicates.values_list("thread_id", flat=True))
        duplicates.delete()
        _threads_recount(Message, thread_ids)
    # Old keys ("msgid:..." and 48-digit "sha256:...") never equal a new one, so no row collides midway.
    Message.objects.bulk_update(changed, ["remote_id"], batch_size=BATCH)


def _threads_recount(Message, thread_ids: set[int]) -> None:  # noqa: N803 - historical model
    """Message and unread counts of threads that lost a merged row; a thread left empty goes."""
    Thread = Message._meta.get_field("thread").related_model
    for thread in Thread.objects.filter(pk__in=list(thread_ids)):
        rows = Message.objects.filter(thread_id=thread.pk)
        if not rows.exists():
            thread.delete()
            continue
        thread.message_count = rows.count()
        thread.unread_count = rows.filter(is_read=False).count()
        thread.save(update_fields=["message_count", "unread_count"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("mailbox", "0007_outbox_state_machine"),
    ]

    operations = [migrations.RunPython(imap_messages_rekey, migrations.RunPython.noop, elidable=True)]
