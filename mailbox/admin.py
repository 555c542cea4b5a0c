"""Read-mostly admin views of the local store, for operators diagnosing a sync."""

from django.contrib import admin

from mailbox.models import Folder, Message, OutgoingMessage, SyncState, Thread


@admin.register(SyncState)
class SyncStateAdmin(admin.ModelAdmin):
    list_display = ["account", "stage", "status", "progress_done", "progress_total", "last_success_at", "last_error"]
    list_filter = ["stage", "status"]
    search_fields = ["account__email"]
    readonly_fields = [
        "account", "cursor", "resume", "progress_done", "progress_total", "started_at", "last_success_at",
        "last_error", "last_error_at", "lock_owner", "lock_expires_at", "failure_count", "next_attempt_at",
        "last_duration_ms",
    ]


@admin.register(Folder)
class FolderAdmin(admin.ModelAdmin):
    list_display = ["name", "role", "account", "remote_id"]
    list_filter = ["role"]
    search_fields = ["name", "account__email"]


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ["subject", "account", "message_count", "unread_count", "last_message_at"]
    search_fields = ["subject", "account__email"]
    readonly_fields = ["account", "remote_id"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["subject", "from_address", "account", "date", "is_read", "parse_error"]
    list_filter = ["is_read", "is_starred"]
    search_fields = ["subject", "from_address", "message_id", "account__email"]
    # Bodies and raw bytes stay out of the admin: mail is read in the app, where HTML is sanitised.
    fields = ["account", "thread", "remote_id", "message_id", "subject", "from_name", "from_address", "date",
              "size", "is_read", "is_starred", "is_draft", "has_attachments", "parse_error"]
    readonly_fields = fields


@admin.register(OutgoingMessage)
class OutgoingMessageAdmin(admin.ModelAdmin):
    list_display = ["subject", "account", "status", "attempts", "last_error", "sent_at"]
    list_filter = ["status"]
    search_fields = ["subject", "account__email", "message_id"]
    fields = ["account", "status", "kind", "subject", "message_id", "remote_id", "attempts", "last_error",
              "queued_at", "sent_at"]
    readonly_fields = ["account", "kind", "subject", "message_id", "remote_id", "attempts", "queued_at", "sent_at"]
