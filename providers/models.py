from django.db import models
from django.utils.translation import gettext_lazy as _

from mailhub.fields import EncryptedTextField


class ProviderApp(models.Model):
    """An OAuth app an administrator registered at Google or Microsoft (one per provider)."""

    class Provider(models.TextChoices):
        GOOGLE = "google", "Google"
        MICROSOFT = "microsoft", "Microsoft"

    provider = models.CharField(max_length=32, choices=Provider.choices, unique=True)
    client_id = models.CharField(_("Client ID"), max_length=255, blank=True)
    client_secret = EncryptedTextField(_("Client secret"), blank=True)
    enabled = models.BooleanField(_("Enabled"), default=False)
    # Microsoft only: common, organizations, consumers or a tenant id.
    tenant = models.CharField(_("Tenant"), max_length=64, default="common", blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("mail provider app")

    def __str__(self) -> str:
        return self.get_provider_display()

    @property
    def is_usable(self) -> bool:
        return self.enabled and bool(self.client_id) and bool(self.client_secret)
