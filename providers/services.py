from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from providers.models import ProviderApp


def oauth_redirect_uri(*, request: HttpRequest) -> str:
    """The one callback both providers send users back to, as the provider's console must list it."""
    path = reverse("oauth_callback")
    if settings.SITE_ORIGIN:
        return settings.SITE_ORIGIN.rstrip("/") + path
    return request.build_absolute_uri(path)


def provider_apps_usable() -> list[ProviderApp]:
    """The provider apps users may connect mailboxes with (enabled and fully configured)."""
    return [app for app in ProviderApp.objects.order_by("provider") if app.is_usable]


def provider_app_usable(*, provider_id: str) -> ProviderApp | None:
    app = ProviderApp.objects.filter(provider=provider_id).first()
    return app if app and app.is_usable else None
