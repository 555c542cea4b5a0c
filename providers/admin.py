from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from providers.models import ProviderApp


@admin.register(ProviderApp)
class ProviderAppAdmin(admin.ModelAdmin):
    """Listed in the Django admin; editing happens on Settings → Mail settings (write-only secrets)."""

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return redirect("providers:mail_settings")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None) -> HttpResponse:
        return redirect("providers:mail_settings")
