from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from mailhub.fields import EncryptedTextField
from providers import registry


class ProviderApp(models.Model):
    """An OAuth app an administrator registered at Google or Microsoft (one per provider)."""

    provider = models.CharField(max_length=32, choices=registry.choices, unique=True)
    client_id = models.CharField(_("Client ID"), max_length=255, blank=True)
    client_secret = EncryptedTextField(_("Client secret"), blank=True)
    enabled = models.BooleanField(_("Enabled"), default=False)
    # Microsoft only: common, organizations, consumers or a tenant id.
    tenant = models.CharField(_("Tenant"), max_length=64, default="common", blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("mail provider app")

    def __str__(self) -> str:
        return registry.name(self.provider)

    @property
    def is_usable(self) -> bool:
        return self.enabled and bool(self.client_id) and bool(self.client_secret)


MAIL_ADMIN_GROUP = "Mail admin"  # created by migration 0002 with the permissions below
MAIL_SETTINGS_PERMISSION = "providers.change_providerapp"


class ProviderSettingsChange(models.Model):
    """One save of a provider's settings that changed something: who, when, which fields (never a value)."""

    provider = models.CharField(max_length=32, choices=registry.choices)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Kept as text too, so the record still says who once the user is deleted.
    changed_by_username = models.CharField(max_length=150)
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    fields = models.JSONField(default=list)  # field names, e.g. ["client_secret", "enabled"]

    class Meta:
        ordering = ["-changed_at", "-id"]
        verbose_name = _("mail settings change")

    def __str__(self) -> str:
        return f"{self.provider} by {self.changed_by_username} at {self.changed_at:%Y-%m-%d %H:%M}"
