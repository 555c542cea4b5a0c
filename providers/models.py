from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from mailhub.fields import EncryptedTextField
from providers import registry

# Below one user's second of Gmail quota (250 units) a project limit is a mistake; the top is just a sanity bound.
QUOTA_PER_MINUTE_MIN = 250
QUOTA_PER_MINUTE_MAX = 1_000_000_000


class ProviderApp(models.Model):
    """A provider's settings, one row per provider: for Google and Microsoft the OAuth app an administrator
    registered there; for a provider without an app (the generic IMAP/SMTP one) only whether it is enabled."""

    provider = models.CharField(max_length=32, choices=registry.choices, unique=True)
    client_id = models.CharField(_("Client ID"), max_length=255, blank=True)
    client_secret = EncryptedTextField(_("Client secret"), blank=True)
    enabled = models.BooleanField(_("Enabled"), default=False)
    # Microsoft only: common, organizations, consumers or a tenant id.
    tenant = models.CharField(_("Tenant"), max_length=64, default="common", blank=True)
    # IMAP/SMTP only: users may name servers of their own; off, only the presets (Mailhub then opens connections
    # to no host an administrator did not list).
    custom_servers_allowed = models.BooleanField(_("Users may enter other servers than the presets"), default=True)
    # Google only: the Gmail API units all mailboxes may use together per minute (the project's quota).
    quota_units_per_minute = models.PositiveIntegerField(
        _("Gmail API quota of the project (units per minute)"),
        default=1_200_000,
        validators=[MinValueValidator(QUOTA_PER_MINUTE_MIN), MaxValueValidator(QUOTA_PER_MINUTE_MAX)],
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("mail provider app")

    def __str__(self) -> str:
        return registry.name(self.provider)

    @property
    def is_usable(self) -> bool:
        if not registry.get(self.provider).oauth_app:
            return self.enabled  # users bring their own servers and passwords
        return self.enabled and bool(self.client_id) and bool(self.client_secret)


class MailServerPreset(models.Model):
    """Servers an administrator offers for the generic IMAP/SMTP provider (say "Fastmail"), matched by domain."""

    class Security(models.TextChoices):
        SSL = "ssl", _("SSL/TLS")
        STARTTLS = "starttls", _("STARTTLS")
        NONE = "none", _("None (this machine only)")

    name = models.CharField(_("Name"), max_length=100)
    # Address domains this preset is offered for, separated by spaces or commas ("example.com example.org").
    domains = models.CharField(_("Address domains"), max_length=500, blank=True)
    imap_host = models.CharField(_("IMAP host"), max_length=255)
    imap_port = models.PositiveIntegerField(_("IMAP port"), default=993)
    imap_security = models.CharField(_("IMAP security"), max_length=16, choices=Security.choices, default="ssl")
    smtp_host = models.CharField(_("SMTP host"), max_length=255)
    smtp_port = models.PositiveIntegerField(_("SMTP port"), default=587)
    smtp_security = models.CharField(_("SMTP security"), max_length=16, choices=Security.choices, default="starttls")

    class Meta:
        ordering = ["name", "pk"]
        verbose_name = _("mail server preset")

    def __str__(self) -> str:
        return self.name

    @property
    def domain_list(self) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in self.domains.replace(",", " ").split() if d.strip()]


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
