from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.forms import BaseModelFormSet, ModelForm
from django.http import HttpRequest
from django.urls import reverse

from providers.models import MailServerPreset, ProviderApp, ProviderSettingsChange

# What an administrator can change on Settings → Mail settings; the secret's value is compared, never recorded.
SETTINGS_FIELDS = (
    "enabled",
    "client_id",
    "client_secret",
    "tenant",
    "custom_servers_allowed",
    "quota_units_per_minute",
)


def oauth_redirect_uri(*, request: HttpRequest) -> str:
    """The one callback both providers send users back to, as the provider's console must list it."""
    path = reverse("oauth_callback")
    if settings.SITE_ORIGIN:
        return settings.SITE_ORIGIN.rstrip("/") + path
    return request.build_absolute_uri(path)


def provider_apps_usable() -> list[ProviderApp]:
    """The provider apps users may connect mailboxes with (enabled and fully configured)."""
    return [app for app in ProviderApp.objects.order_by("provider") if app.is_usable]


# How many connected mailboxes each provider serves. The accounts app owns mailboxes and providers may not
# import it, so it hands this counter over when Django starts (accounts.apps).
MailboxCounter = Callable[[], dict[str, int]]
_mailbox_counter: MailboxCounter = dict


def mailbox_counter_set(counter: MailboxCounter) -> None:
    global _mailbox_counter
    _mailbox_counter = counter


def mailboxes_by_provider() -> dict[str, int]:
    return _mailbox_counter()


def provider_app_usable(*, provider_id: str) -> ProviderApp | None:
    app = ProviderApp.objects.filter(provider=provider_id).first()
    return app if app and app.is_usable else None


@transaction.atomic
def provider_app_update(*, form: ModelForm, user: User) -> ProviderSettingsChange | None:
    """Save a valid settings form and record which fields changed (names only); None when nothing did."""
    app: ProviderApp = form.instance
    before = {}
    if app.pk:
        stored = ProviderApp.objects.select_for_update().get(pk=app.pk)
        before = {name: getattr(stored, name) for name in SETTINGS_FIELDS}
    form.save()
    changed = [name for name in SETTINGS_FIELDS if getattr(app, name) != before.get(name, _UNSET)]
    if not changed:
        return None
    return ProviderSettingsChange.objects.create(
        provider=app.provider, changed_by=user, changed_by_username=user.get_username(), fields=changed
    )


@transaction.atomic
def server_presets_update(
    *, formset: "BaseModelFormSet[MailServerPreset, Any]", user: User
) -> ProviderSettingsChange | None:
    """Save a valid formset of IMAP/SMTP presets; record that presets changed (no values), None when none did."""
    if not formset.has_changed():
        return None
    formset.save()
    return ProviderSettingsChange.objects.create(
        provider="imap",
        changed_by=user,
        changed_by_username=user.get_username(),
        fields=["presets"],
    )


def server_presets() -> list[MailServerPreset]:
    return list(MailServerPreset.objects.all())


def server_preset_for_email(*, email: str) -> MailServerPreset | None:
    """The first preset (by name) whose domains include the address's domain."""
    domain = email.rpartition("@")[2].strip().lower()
    if not domain:
        return None
    return next((preset for preset in server_presets() if domain in preset.domain_list), None)


def provider_settings_history(*, limit: int = 50) -> list[ProviderSettingsChange]:
    return list(ProviderSettingsChange.objects.all()[:limit])


_UNSET = object()
