"""The local mail store, shared by every provider: one shape for Gmail and IMAP alike."""

from __future__ import annotations

import io
import zlib
from email.utils import make_msgid
from typing import IO, TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from accounts.models import MailAccount
from providers.errors import ErrorCode, error_message

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


# Raster images: shown inline (cid: images, attachment previews) with nosniff; anything else only downloads.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})


class Folder(models.Model):
    """A Gmail label or an IMAP folder."""

    class Role(models.TextChoices):
        INBOX = "inbox", pgettext_lazy("folder", "Inbox")
        SENT = "sent", pgettext_lazy("folder", "Sent")
        DRAFTS = "drafts", pgettext_lazy("folder", "Drafts")
        TRASH = "trash", pgettext_lazy("folder", "Trash")
        SPAM = "spam", pgettext_lazy("folder", "Spam")
        ARCHIVE = "archive", pgettext_lazy("folder", "Archive")
        ALL = "all", pgettext_lazy("folder", "All mail")
        STARRED = "starred", pgettext_lazy("folder", "Starred")
        IMPORTANT = "important", pgettext_lazy("folder", "Important")
        USER = "user", _("Label")

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="folders")
    remote_id = models.CharField(max_length=512)  # Gmail label id, or the raw IMAP folder name
    name = models.CharField(max_length=512)  # for display (IMAP names decoded from modified UTF-7)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    is_selectable = models.BooleanField(default=True)
    delimiter = models.CharField(max_length=1, blank=True, default="/")  # between a nested name's levels
    # IMAP per-folder state (RFC 3501 / 7162); unused for Gmail.
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uidnext = models.BigIntegerField(null=True, blank=True)
    highestmodseq = models.BigIntegerField(null=True, blank=True)
    # Kept by the database itself (triggers, see mailbox.folder_counts); never written from here.
    message_count = models.IntegerField(default=0, editable=False)
    unread_count = models.IntegerField(default=0, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "remote_id"], name="unique_folder_per_account")]
        ordering = ["role", "name"]

    def __str__(self) -> str:
        return self.name

    COUNT_FIELDS = frozenset({"message_count", "unread_count"})

    def save(self, *args, **kwargs) -> None:
        # A row loaded before mail arrived must not put back the counts it was loaded with.
        if self.pk is not None and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            kwargs["update_fields"] = {
                f.name for f in self._meta.concrete_fields if not f.primary_key and f.name not in self.COUNT_FIELDS
            }
        super().save(*args, **kwargs)

    @property
    def label(self) -> str:
        """The name a user reads: the translated role for system folders, the folder's own name otherwise."""
        return self.name if self.role == self.Role.USER else str(self.get_role_display())

    @property
    def _nested(self) -> bool:
        return self.role == self.Role.USER and bool(self.delimiter)

    @property
    def depth(self) -> int:
        """How many folders a user folder is inside (its ``name`` is the full path); 0 for the others."""
        return self.name.count(self.delimiter) if self._nested else 0

    @property
    def leaf_label(self) -> str:
        """What a tree shows: the last level of a user folder's path, else :attr:`label`."""
        return self.name.rpartition(self.delimiter)[2] if self._nested else self.label

    @property
    def parent_path(self) -> str:
        """The full path of the folder this one is inside ("" at the top)."""
        return self.name.rpartition(self.delimiter)[0] if self._nested else ""

    @property
    def tree_key(self) -> tuple[str, ...]:
        """Sorts user folders as a tree: each right after the folder it is inside."""
        return tuple(level.casefold() for level in (self.name.split(self.delimiter) if self._nested else [self.name]))


class Thread(models.Model):
    """A conversation. Summary fields are kept up to date by the store so lists need no aggregation."""

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="threads")
    remote_id = models.CharField(max_length=255)  # Gmail threadId, or a key derived from the root Message-ID
    subject = models.TextField(blank=True)
    snippet = models.TextField(blank=True)
    senders = models.TextField(blank=True)  # display names of the latest senders, comma separated
    last_message_at = models.DateTimeField(null=True, blank=True)
    message_count = models.PositiveIntegerField(default=0)
    unread_count = models.PositiveIntegerField(default=0)
    is_starred = models.BooleanField(default=False)
    has_attachments = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "remote_id"], name="unique_thread_per_account"),
            # The store INSERTs threads with raw SQL, past model validation.
            models.CheckConstraint(condition=~models.Q(remote_id=""), name="thread_has_remote_id"),
        ]
        indexes = [
            models.Index(fields=["account", "-last_message_at", "-id"], name="thread_recent"),
            # The unified inbox pages across accounts: newest first without sorting every thread.
            models.Index(fields=["-last_message_at", "-id"], name="thread_recent_all"),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"


class Message(models.Model):
    """One message as stored by the provider, keyed by (account, provider message id)."""

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="messages")
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
    remote_id = models.CharField(max_length=255)  # Gmail message id; for IMAP see providers.imap.client
    message_id = models.CharField(max_length=998, blank=True)  # RFC 5322, without <>
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.TextField(blank=True)
    subject = models.TextField(blank=True)
    from_name = models.CharField(max_length=255, blank=True)
    from_address = models.CharField(max_length=320, blank=True, db_index=True)
    to = models.JSONField(default=list, blank=True)  # [{"name": ..., "email": ...}]
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    reply_to = models.JSONField(default=list, blank=True)
    date = models.DateTimeField(null=True, blank=True, db_index=True)
    snippet = models.TextField(blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    size = models.PositiveIntegerField(default=0)
    is_read = models.BooleanField(default=False)
    is_starred = models.BooleanField(default=False)
    is_draft = models.BooleanField(default=False)
    has_attachments = models.BooleanField(default=False)
    # Non-empty when the MIME could not be parsed; the raw bytes are kept either way.
    parse_error = models.TextField(blank=True)
    attachment_names = models.TextField(blank=True, default="")  # its attachments' file names, for search
    raw_compressed = models.BinaryField()
    folders = models.ManyToManyField(Folder, through="MessageFolder", related_name="messages")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "remote_id"], name="unique_message_per_account"),
            # The store INSERTs messages with raw SQL, past model validation: an empty id would make every
            # later message without one "the same" message.
            models.CheckConstraint(condition=~models.Q(remote_id=""), name="message_has_remote_id"),
        ]
        indexes = [
            models.Index(fields=["thread", "date"], name="message_in_thread"),
            # Threading looks up, within the account, the messages a new one refers to and its replies.
            models.Index(fields=["account", "message_id"], name="message_by_id"),
            models.Index(fields=["account", "in_reply_to"], name="message_reply_to"),
            # Unread counts per folder read only the (few) unread messages, index-only (the ids are in it).
            models.Index(fields=["account", "id"], condition=models.Q(is_read=False), name="message_unread_ids"),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"

    @property
    def raw(self) -> bytes:
        return zlib.decompress(bytes(self.raw_compressed))

    @raw.setter
    def raw(self, value: bytes) -> None:
        self.raw_compressed = raw_compress(value)


_COMPRESS_CHUNK = 1 << 20


def raw_compress(raw: bytes) -> bytes:
    """The stored form of a message's raw bytes (see ``Message.raw``): zlib, level 6.

    A big message is fed a MiB at a time into one growing buffer: ``zlib.compress`` collects its output in
    blocks and joins them at the end, so it briefly held the compressed message twice.
    """
    if len(raw) <= _COMPRESS_CHUNK:
        return zlib.compress(raw, 6)
    compressor = zlib.compressobj(6)
    out = io.BytesIO()
    view = memoryview(raw)
    for start in range(0, len(raw), _COMPRESS_CHUNK):
        out.write(compressor.compress(view[start : start + _COMPRESS_CHUNK]))
    out.write(compressor.flush())
    return out.getvalue()  # the buffer itself, trimmed, not a copy


class MessageFolder(models.Model):
    """A message's membership of a folder or label; ``uid`` is its IMAP UID there."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE)
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE)
    uid = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "folder"], name="unique_message_folder"),
            # IMAP UIDs are positive (RFC 3501 2.3.1.1); NULL: the UID there is not known yet. bulk_create skips
            # model validation, so the database checks it.
            models.CheckConstraint(
                condition=models.Q(uid__isnull=True) | models.Q(uid__gt=0), name="membership_uid_positive"
            ),
        ]
        indexes = [models.Index(fields=["folder", "uid"], name="folder_uid")]

    def __str__(self) -> str:
        return f"{self.message_id} in {self.folder_id}"


class AttachmentBlob(models.Model):
    """Attachment bytes, stored once per content hash: small ones in the row, the rest in Django's storage."""

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.PositiveBigIntegerField()
    content = models.BinaryField(null=True, blank=True)  # the bytes of a small blob; None when in ``file``
    file = models.FileField(upload_to="attachments/%Y/%m/", blank=True)

    def __str__(self) -> str:
        return self.sha256

    def open(self) -> IO[bytes]:
        """The bytes, as a file open for reading (the caller closes it)."""
        if self.content is not None:
            return io.BytesIO(bytes(self.content))
        return self.file.open("rb")


class Attachment(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    blob = models.ForeignKey(AttachmentBlob, on_delete=models.PROTECT, related_name="+")
    filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    content_id = models.CharField(max_length=255, blank=True)  # without <>, for inline cid: images
    is_inline = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.filename or "(unnamed)"

    @property
    def shows_inline(self) -> bool:
        """A raster image, safe to show in the page (SVG and HTML only ever download)."""
        return self.content_type.lower() in INLINE_IMAGE_TYPES

    @property
    def is_pdf(self) -> bool:
        """A PDF, previewed as page images; senders often label one application/octet-stream."""
        content_type = self.content_type.lower()
        return content_type == "application/pdf" or (
            content_type == "application/octet-stream" and self.filename.lower().endswith(".pdf")
        )


class SyncState(models.Model):
    """Where one account's sync stands: cursor, stage, progress, timings, last error, lock."""

    class Stage(models.TextChoices):
        PENDING = "pending", _("Waiting for first sync")
        FULL = "full", _("First sync")
        INCREMENTAL = "incremental", _("Up to date")

    class Status(models.TextChoices):
        IDLE = "idle", _("Idle")
        RUNNING = "running", _("Syncing")
        ERROR = "error", _("Error")
        STOPPED = "stopped", _("Stopped")  # authorisation lost: waits for the user to reconnect

    account = models.OneToOneField(MailAccount, on_delete=models.CASCADE, related_name="sync_state")
    sync_since = models.DateField(null=True, blank=True)  # None: sync everything
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.PENDING)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IDLE)
    cursor = models.CharField(max_length=255, blank=True)  # Gmail historyId; unused for IMAP
    resume = models.JSONField(default=dict, blank=True)  # provider-specific place to resume a full sync
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    identities_checked_at = models.DateTimeField(null=True, blank=True)  # when the aliases were last read
    drafts_checked_at = models.DateTimeField(null=True, blank=True)  # when the provider's Drafts were last listed
    # The last failure: its providers.errors.ErrorCode (users read error_message's words for it) and the
    # exception's text for administrators (never a secret; not shown to users).
    last_error_code = models.CharField(max_length=32, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    lock_owner = models.CharField(max_length=64, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    # Backoff after temporary provider failures: beat leaves the account alone until next_attempt_at.
    failure_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)  # of the last successful sync
    # A sync asked for while another ran: the running one syncs again when it ends (see sync.account_sync).
    sync_requested_at = models.DateTimeField(null=True, blank=True)
    # When beat last queued a sync: not queued again before that one started (see sync.accounts_due_for_sync).
    sync_queued_at = models.DateTimeField(null=True, blank=True)
    # The watcher holding this account's watch (mailbox.watch), until when, and since when its watch is open.
    watch_owner = models.CharField(max_length=128, blank=True, db_index=True)
    watch_expires_at = models.DateTimeField(null=True, blank=True)
    watched_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.account}: {self.stage}/{self.status}"

    @property
    def error_message(self) -> str:
        """The last failure in the user's words (empty when the last sync went well)."""
        if not self.last_error_code:
            return ""
        return error_message(self.last_error_code, provider=self.account.provider_name)


class SendProblem(models.TextChoices):
    """The outbox's own reasons for a row's state, beside the providers' ``ErrorCode``s."""

    CHECK_FAILED = "check_failed", _("The provider could not be asked whether the message went out")
    NO_RECORD = "no_record", _("The server keeps no record of what it accepted")


# What the outbox shows for a row's last problem, by code, where a send needs other words than a sync
# (``providers.errors.error_message`` has the rest). ``detail``: what the provider answered, kept on the row.
SEND_PROBLEM_WORDS: dict[str, StrOrPromise] = {
    ErrorCode.PROVIDER_FAILED: _("%(provider)s did not take the message this time."),
    ErrorCode.UNREACHABLE: _("%(provider)s's mail server could not be reached."),
    ErrorCode.THROTTLED: _("%(provider)s's sending limit for this mailbox was reached."),
    ErrorCode.ACTION_REQUIRED: _("%(provider)s refused the message."),
    ErrorCode.SEND_UNCERTAIN: _(
        "The connection broke while %(provider)s was taking the message, so it may or may not have gone out."
    ),
    ErrorCode.UNEXPECTED: _("Sending stopped on an unexpected error."),
    SendProblem.CHECK_FAILED: _("It could not be checked whether this message went out."),
    SendProblem.NO_RECORD: _(
        "The connection broke while the server was taking this message, and this server keeps no record of what "
        "it accepted: it may or may not have been sent. Check the recipients' replies or your Sent folder, then "
        "check again or send it anyway."
    ),
}
SEND_PROBLEM_WITH_DETAIL: dict[str, StrOrPromise] = {
    ErrorCode.ACTION_REQUIRED: _("%(provider)s refused the message: %(detail)s"),
    ErrorCode.RECIPIENTS_REFUSED: _("%(provider)s refused these recipients, so nothing was sent: %(detail)s"),
}
RETRIED_SOON = {ErrorCode.PROVIDER_FAILED, ErrorCode.UNREACHABLE, ErrorCode.THROTTLED, ErrorCode.SEND_UNCERTAIN}


class SendAsAlias(models.Model):
    """Another address a mailbox may send from (Gmail's verified "Send mail as" aliases), with the name
    recipients see. Kept in step with the provider by :func:`mailbox.identities.identities_refresh`; the
    mailbox's own address is not here (its name is ``MailAccount.display_name``)."""

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="aliases")
    address = models.CharField(max_length=254)
    name = models.CharField(max_length=255, blank=True)
    is_default = models.BooleanField(default=False)  # the provider's default From for new mail
    reply_to = models.CharField(max_length=254, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "address"], name="alias_unique_address")]
        ordering = ["address"]

    def __str__(self) -> str:
        return self.address


class Signature(models.Model):
    """A signature the user writes once; Mailhub puts it under their text (above any quoted mail) when sending."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signatures")
    name = models.CharField(max_length=100)
    text = models.TextField()  # what plain-text mail gets
    html = models.TextField(blank=True)  # what rich-text mail gets (sanitised); "" for a plain-text signature

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name


class SignatureDefault(models.Model):
    """The signature a From starts with: one for new mail, one for replies and forwards."""

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="signature_defaults")
    from_alias = models.CharField(max_length=254, blank=True)  # "" is the mailbox's own address
    for_new = models.ForeignKey(Signature, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    for_replies = models.ForeignKey(Signature, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "from_alias"], name="signature_default_per_from")]

    def __str__(self) -> str:
        return f"{self.account}/{self.from_alias}"


class MessageTemplate(models.Model):
    """A message written once and started from many times: subject, text and files, with variables such as
    ``{{ first_name }}`` filled from the recipient when it is sent (see :mod:`mailbox.templates`). A shared one
    is offered to everyone and changed only by users with ``mailbox.share_template``."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_templates")
    shared = models.BooleanField(default=False)
    name = models.CharField(max_length=100)
    subject = models.TextField(blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)  # rich text (sanitised); "" for a plain-text template
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "pk"]
        permissions = [("share_template", "Can share mail templates with everyone and change shared ones")]

    def __str__(self) -> str:
        return self.name


class AttachedFile(models.Model):
    """A file a user attached (to a message being written, or to a template): its bytes are a shared blob."""

    blob = models.ForeignKey(AttachmentBlob, on_delete=models.PROTECT, related_name="+")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.filename

    def copy_fields(self) -> dict:
        """What another attachment of the same file needs (the blob is shared, not copied)."""
        return {
            "blob_id": self.blob_id,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
        }


class TemplateAttachment(AttachedFile):
    template = models.ForeignKey(MessageTemplate, on_delete=models.CASCADE, related_name="attachments")


class SendingPreferences(models.Model):
    """How a user's messages leave: the seconds Send waits, with an Undo offered, before the message goes."""

    UNDO_SEND_CHOICES = [
        (0, _("Off")),
        (5, _("5 seconds")),
        (10, _("10 seconds")),
        (20, _("20 seconds")),
        (30, _("30 seconds")),
    ]

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sending")
    undo_send_seconds = models.PositiveSmallIntegerField(choices=UNDO_SEND_CHOICES, default=10)

    def __str__(self) -> str:
        return f"{self.user}: undo send {self.undo_send_seconds} s"


class Batch(models.Model):
    """One message sent to many, each recipient receiving their own copy: an outbox row per recipient (its
    ``variables`` filled from the recipient's CSV columns), paced to the provider's limits."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_batches")
    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="batches")
    subject = models.TextField(blank=True)
    interval_seconds = models.FloatField(default=0)  # between two messages' sending times
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.subject or "(no subject)"


class OutgoingMessage(models.Model):
    """A message being written or sent: a draft, or a row in the outbox.

    The outbox is a state machine (see ``mailbox.outbox``): draft → queued → sending → sent, or failed
    (it certainly did not go), or unknown (the provider may or may not have it; the user decides).
    ``handed_off_at`` is set, and committed, just before the bytes leave for the provider; while it is set
    the provider is asked whether the message went before it is ever sent again.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", pgettext_lazy("outgoing message", "Sent")
        FAILED = "failed", _("Failed")
        UNKNOWN = "unknown", _("Not sure it was sent")

    class Kind(models.TextChoices):
        NEW = "new", _("New message")
        REPLY = "reply", _("Reply")
        REPLY_ALL = "reply_all", _("Reply all")
        FORWARD = "forward", _("Forward")

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="outgoing")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.NEW)
    source = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to = models.JSONField(default=list, blank=True)
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    # Sent from an alias of the mailbox (address and name as they were when written); "" is its own address.
    from_alias = models.CharField(max_length=254, blank=True)
    from_name = models.CharField(max_length=255, blank=True)
    # Added under the text when it is sent (so reopening a draft never shows it twice); None: no signature.
    signature = models.ForeignKey(Signature, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The first line of the quoted or forwarded mail Mailhub wrote into the body: the signature goes above it.
    quote_marker = models.CharField(max_length=998, blank=True)
    # Started from a template: its {{ variables }} are filled from the recipient when sent (never sent as braces).
    fills_variables = models.BooleanField(default=False)
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.CASCADE, related_name="messages")
    variables = models.JSONField(default=dict, blank=True)  # a batch recipient's own values (CSV columns)
    subject = models.TextField(blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    message_id = models.CharField(max_length=998, blank=True)  # chosen once, so a retry is the same mail
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.TextField(blank=True)
    raw = models.BinaryField(null=True, blank=True)  # built when queued; a retry sends these exact bytes
    # The copy in the mailbox's Drafts at the provider (see mailbox.drafts): its id and the version last seen
    # there, the Message-ID it carries (never ``message_id``: a draft must not pass for the sent message), and
    # the revision of this row it holds (``revision`` grows with every save in Mailhub).
    remote_draft_id = models.CharField(max_length=998, blank=True)
    remote_draft_version = models.CharField(max_length=255, blank=True)
    draft_key = models.CharField(max_length=998, blank=True)
    revision = models.PositiveIntegerField(default=0)
    pushed_revision = models.PositiveIntegerField(default=0)
    # Kept as its own draft when another version of the same draft was saved later elsewhere.
    kept_from_conflict = models.BooleanField(default=False)
    remote_id = models.CharField(max_length=255, blank=True)  # the provider's id once sent
    attempts = models.PositiveIntegerField(default=0)
    # When a queued row is due (the undo-send delay, the time it was scheduled for, backoff, or waiting for a sent
    # copy to show up); the sweep re-dispatches overdue rows.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The time the user chose for it to go ("Schedule send"); None when it was sent at once.
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # While "sending": the worker that claimed the row holds it until then (a dead worker's claim runs out).
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    handed_off_at = models.DateTimeField(null=True, blank=True)
    # When the sent copy was filed in the mailbox's Sent folder (servers that do not file SMTP mail themselves).
    filed_at = models.DateTimeField(null=True, blank=True)
    # The last problem: its code (users read error_message's words) and the provider's own text (for admins).
    last_error_code = models.CharField(max_length=32, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="outgoing_due")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=["draft", "queued", "sending", "sent", "failed", "unknown"]),
                name="outgoing_status_known",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="sending") | models.Q(lease_expires_at__isnull=False),
                name="outgoing_sending_has_lease",
            ),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"

    #: Written only by ``mailbox.drafts`` (with update()): a save of a row loaded before a sync wrote them must
    #: not put back what they were.
    DRAFT_SYNC_FIELDS = frozenset({"remote_draft_id", "remote_draft_version", "draft_key", "pushed_revision"})

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            kwargs["update_fields"] = {
                f.name for f in self._meta.concrete_fields if not f.primary_key and f.name not in self.DRAFT_SYNC_FIELDS
            }
        if not self.message_id and self.account_id:  # fixed once: every attempt sends the same Message-ID
            self.message_id = new_message_id(self.account.email)
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "message_id"}
        super().save(*args, **kwargs)

    @property
    def error_message(self) -> str:
        """The last problem in the user's words ("" when there is none): chosen by its code, translated."""
        code = self.last_error_code
        if not code:
            return ""
        values = {"provider": self.account.provider_name, "detail": self.last_error}
        if code in SEND_PROBLEM_WITH_DETAIL and self.last_error:
            text = str(SEND_PROBLEM_WITH_DETAIL[code]) % values
        elif code in SEND_PROBLEM_WORDS:
            text = str(SEND_PROBLEM_WORDS[code]) % values
        else:  # the account must be reconnected, a setting changed...: the words every engine uses
            text = error_message(code, provider=values["provider"])
        if self.status == self.Status.QUEUED and code in RETRIED_SOON:
            return _("%(problem)s Mailhub tries again shortly.") % {"problem": text}
        return text

    def raw_bytes(self) -> bytes:
        """The frozen bytes to send or file; built when queued, so a row past the draft state has them."""
        if self.raw is None:
            raise TypeError(f"outgoing message {self.pk} has no raw bytes: it was never queued")
        return bytes(self.raw)


def new_message_id(sender: str) -> str:
    """A fresh RFC 5322 Message-ID (without <>) in the sender's domain."""
    return make_msgid(domain=sender.rpartition("@")[2] or "mailhub.invalid").strip("<>")


class RemoteDraftDeletion(models.Model):
    """A draft discarded in Mailhub whose copy at the provider is still to delete (at the next sync)."""

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="+")
    draft_id = models.CharField(max_length=998)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.draft_id


class OutgoingAttachment(AttachedFile):
    outgoing = models.ForeignKey(OutgoingMessage, on_delete=models.CASCADE, related_name="attachments")


class MailAccessLog(models.Model):
    """One use of the "read all mail" right (``mailbox.read_all_mail``): who saw whose mail, when and what.

    Written by the Django admin for every list or page of stored mail it shows, and listed to the mailbox's
    owner on their "Who read my mail" page. Nobody can edit or delete a row through the application.
    """

    class Action(models.TextChoices):
        LIST = "list", _("Listed")
        VIEW = "view", _("Opened")

    OBJECT_LABELS = {
        "mail": pgettext_lazy("access log", "mail"),
        "message": pgettext_lazy("access log", "message"),
        "thread": pgettext_lazy("access log", "conversation"),
        "folder": pgettext_lazy("access log", "folders"),
        "outgoing message": pgettext_lazy("access log", "outgoing message"),
    }

    reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="mail_reads"
    )
    reader_username = models.CharField(max_length=150)  # kept when the reader's user is deleted
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_access_log")
    account = models.ForeignKey(MailAccount, null=True, on_delete=models.SET_NULL, related_name="+")
    account_email = models.CharField(max_length=254)
    accessed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=8, choices=Action.choices)
    object_type = models.CharField(max_length=64)  # "message", "thread", "outgoing message", "folder"
    object_id = models.BigIntegerField(null=True, blank=True)  # None for a list
    description = models.TextField(blank=True)  # e.g. the subject opened, or "12 shown; search: invoice"
    path = models.CharField(max_length=500)

    class Meta:
        ordering = ["-accessed_at", "-id"]
        indexes = [models.Index(fields=["owner", "-accessed_at"], name="mail_access_by_owner")]
        permissions = [("read_all_mail", "Can read every user's mail (each use is logged for the owner)")]

    def __str__(self) -> str:
        return f"{self.reader_username} {self.action} {self.object_type} of {self.account_email}"

    @property
    def object_label(self) -> str:
        return str(self.OBJECT_LABELS.get(self.object_type, self.object_type))
