"""The local store in the Django admin: read only, and only for holders of ``mailbox.read_all_mail``.

Being staff or a superuser shows none of it. A holder of the right sees lists and pages but can add, change
or delete nothing, and every list or page shown is written to ``MailAccessLog`` for the mailboxes' owners.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import flatten, unquote
from django.http import HttpRequest, HttpResponse

from mailbox.access import mail_access_record, mail_access_record_list, mail_read_all_allowed
from mailbox.models import Folder, MailAccessLog, Message, OutgoingMessage, SyncState, Thread
from mailhub.http import request_user


@admin.register(SyncState)
class SyncStateAdmin(admin.ModelAdmin):
    """Sync diagnostics for operators (no mail in it)."""

    list_display = ["account", "stage", "status", "progress_done", "progress_total", "last_success_at", "last_error"]
    list_filter = ["stage", "status"]
    search_fields = ["account__email"]
    readonly_fields = [
        "account",
        "cursor",
        "resume",
        "progress_done",
        "progress_total",
        "started_at",
        "last_success_at",
        "last_error_code",
        "last_error",
        "last_error_at",
        "lock_owner",
        "lock_expires_at",
        "failure_count",
        "next_attempt_at",
        "last_duration_ms",
    ]


class MailStoreAdmin(admin.ModelAdmin):
    """Read only; hidden without ``mailbox.read_all_mail``; every list and page shown is logged for the owner."""

    object_type = "mail"
    actions = None

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_staff and mail_read_all_allowed(user=request.user)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return flatten(self.get_fields(request, obj))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl") if response.status_code == 200 else None
        if changelist is not None:
            mail_access_record_list(
                reader=request_user(request),
                account_ids=[row.account_id for row in changelist.result_list],
                object_type=self.object_type,
                search=request.GET.get("q", ""),
                path=request.path,
            )
        return response

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        if response.status_code == 200:
            self._record_view(request, object_id)
        return response

    def history_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        response = super().history_view(request, object_id, extra_context)
        if response.status_code == 200:
            self._record_view(request, object_id)
        return response

    def _record_view(self, request: HttpRequest, object_id: str) -> None:
        obj = self.get_object(request, unquote(object_id))
        if obj is not None:
            mail_access_record(
                reader=request_user(request),
                account=obj.account,
                action=MailAccessLog.Action.VIEW,
                object_type=self.object_type,
                object_id=obj.pk,
                description=str(obj),
                path=request.path,
            )


@admin.register(Folder)
class FolderAdmin(MailStoreAdmin):
    object_type = "folder"
    list_display = ["name", "role", "account", "remote_id"]
    list_filter = ["role"]
    search_fields = ["name", "account__email"]
    fields = ["account", "name", "role", "remote_id", "is_selectable", "uidvalidity", "uidnext", "highestmodseq"]


@admin.register(Thread)
class ThreadAdmin(MailStoreAdmin):
    object_type = "thread"
    list_display = ["subject", "account", "message_count", "unread_count", "last_message_at"]
    search_fields = ["subject", "account__email"]
    fields = ["account", "remote_id", "subject", "senders", "message_count", "unread_count", "last_message_at"]


@admin.register(Message)
class MessageAdmin(MailStoreAdmin):
    object_type = "message"
    list_display = ["subject", "from_address", "account", "date", "is_read", "parse_error"]
    list_filter = ["is_read", "is_starred"]
    search_fields = ["subject", "from_address", "message_id", "account__email"]
    # Bodies and raw bytes stay out of the admin: mail is read in the app, where HTML is sanitised.
    fields = [
        "account",
        "thread",
        "remote_id",
        "message_id",
        "subject",
        "from_name",
        "from_address",
        "date",
        "size",
        "is_read",
        "is_starred",
        "is_draft",
        "has_attachments",
        "parse_error",
    ]


@admin.register(OutgoingMessage)
class OutgoingMessageAdmin(MailStoreAdmin):
    object_type = "outgoing message"
    list_display = ["subject", "account", "status", "attempts", "last_error_code", "sent_at"]
    list_filter = ["status"]
    search_fields = ["subject", "account__email", "message_id"]
    fields = [
        "account",
        "status",
        "kind",
        "subject",
        "message_id",
        "remote_id",
        "attempts",
        "last_error_code",
        "last_error",
        "queued_at",
        "sent_at",
    ]


@admin.register(MailAccessLog)
class MailAccessLogAdmin(admin.ModelAdmin):
    """The access log itself: readable by those allowed to view it, never editable or deletable here."""

    list_display = ["accessed_at", "reader_username", "account_email", "action", "object_type", "description"]
    list_filter = ["action", "object_type"]
    search_fields = ["reader_username", "account_email"]
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
