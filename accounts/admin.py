from django.contrib import admin

from accounts.models import MailAccount


@admin.register(MailAccount)
class MailAccountAdmin(admin.ModelAdmin):
    list_display = ["email", "provider", "user", "status", "updated_at"]
    list_filter = ["provider", "status"]
    search_fields = ["email", "user__username"]
    # Tokens are never shown, not even to staff.
    fields = ["user", "provider", "email", "display_name", "status", "status_reason", "token_expires_at", "scopes"]
    readonly_fields = ["user", "provider", "email", "token_expires_at", "scopes"]

    def has_add_permission(self, request) -> bool:
        return False
