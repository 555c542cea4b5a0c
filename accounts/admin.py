from django.contrib import admin

from accounts.forms import SERVER_FIELDS
from accounts.models import MailAccount


@admin.register(MailAccount)
class MailAccountAdmin(admin.ModelAdmin):
    list_display = ["email", "provider", "user", "status", "updated_at"]
    list_filter = ["provider", "status"]
    search_fields = ["email", "user__username"]
    # Tokens and passwords are never shown, not even to staff.
    fields = ["user", "provider", "email", "display_name", "status", "status_reason", "token_expires_at", "scopes"]
    fields += ["username", *SERVER_FIELDS]  # the generic IMAP/SMTP provider's sign-in name and servers
    readonly_fields = ["user", "provider", "email", "token_expires_at", "scopes", "username", *SERVER_FIELDS]

    def has_add_permission(self, request) -> bool:
        return False
