from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from providers.models import ProviderApp, ProviderSettingsChange


@admin.register(ProviderApp)
class ProviderAppAdmin(admin.ModelAdmin):
    """Listed in the Django admin; editing happens on Settings → Mail settings (write-only secrets)."""

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return redirect("providers:mail_settings")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None) -> HttpResponse:
        return redirect("providers:mail_settings")


@admin.register(ProviderSettingsChange)
class ProviderSettingsChangeAdmin(admin.ModelAdmin):
    """The record of mail settings changes: read only, so it cannot be edited to hide a change."""

    list_display = ["changed_at", "changed_by_username", "provider", "fields"]
    list_filter = ["provider"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
