from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from mailhub.fields import EncryptedTextField
from providers import registry
from providers.errors import ErrorCode, error_message


class MailAccount(models.Model):
    """A mailbox a user connected: by OAuth, with its (encrypted) tokens, or (the generic IMAP/SMTP provider)
    with its servers, a username and an (encrypted) password."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Connected")
        REAUTH_REQUIRED = "reauth_required", _("Reconnect required")
        NO_MAILBOX = "no_mailbox", _("No mailbox")
        ERROR = "error", _("Error")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_accounts")
    provider = models.CharField(max_length=32, choices=registry.choices)
    email = models.EmailField()
    display_name = models.CharField(max_length=255, blank=True)
    access_token = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    scopes = models.TextField(blank=True)
    # The generic IMAP/SMTP provider only: where the mailbox is and how to sign in (the password is never shown).
    username = models.CharField(max_length=255, blank=True)
    password = EncryptedTextField(blank=True)
    imap_host = models.CharField(max_length=255, blank=True)
    imap_port = models.PositiveIntegerField(null=True, blank=True)
    imap_security = models.CharField(max_length=16, blank=True)
    smtp_host = models.CharField(max_length=255, blank=True)
    smtp_port = models.PositiveIntegerField(null=True, blank=True)
    smtp_security = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.ACTIVE)
    # Why the account needs the user (an ErrorCode); the words shown are chosen from it (status_message).
    status_reason = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "provider", "email"], name="unique_mailbox_per_user"),
        ]
        ordering = ["email"]

    def __str__(self) -> str:
        return f"{self.email} ({self.provider})"

    @property
    def needs_reconnect(self) -> bool:
        return self.status in {self.Status.REAUTH_REQUIRED, self.Status.NO_MAILBOX}

    @property
    def status_message(self) -> str:
        """What the user is told about the account's state (empty while it works)."""
        if not self.needs_reconnect:
            return ""
        return error_message(self.status_reason or ErrorCode.ACCESS_REVOKED, provider=self.provider_name)

    @property
    def provider_off_message(self) -> str:
        """What users of this mailbox are told while an administrator has its provider turned off."""
        return error_message(ErrorCode.PROVIDER_OFF, provider=self.provider_name)

    @property
    def provider_name(self) -> str:
        return registry.name(self.provider)
