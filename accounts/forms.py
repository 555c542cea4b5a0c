from datetime import date, timedelta
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from providers.forms import server_host_clean, server_security_check
from providers.models import MailServerPreset
from providers.services import server_preset_for_email

SYNC_WINDOWS = [
    ("30", _("Last 30 days")),
    ("90", _("Last 90 days")),
    ("365", _("Last year")),
    ("all", _("Everything")),
    ("date", _("Since a date…")),
]


class ConnectForm(forms.Form):
    """What to connect and how far back the first sync should go."""

    sync_window = forms.ChoiceField(label=_("Sync mail from"), choices=SYNC_WINDOWS, initial="90")
    sync_since = forms.DateField(label=_("Start date"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    login_hint = forms.EmailField(required=False, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("sync_window") == "date":
            since = data.get("sync_since")
            if since is None:
                self.add_error("sync_since", _("Pick the date to start from."))
            elif since > timezone.localdate():
                self.add_error("sync_since", _("The start date cannot be in the future."))
        return data

    def since(self) -> date | None:
        """The first day to sync, or None for everything."""
        window = self.cleaned_data["sync_window"]
        if window == "all":
            return None
        if window == "date":
            return self.cleaned_data["sync_since"]
        return timezone.localdate() - timedelta(days=int(window))


SECURITY_CHOICES = [("ssl", _("SSL/TLS")), ("starttls", _("STARTTLS")), ("none", _("None (this machine only)"))]
SERVER_FIELDS = ("imap_host", "imap_port", "imap_security", "smtp_host", "smtp_port", "smtp_security")


def _no_control_characters(value: str) -> str:
    """Line breaks or NUL in a username or password could end an IMAP or SMTP command early: refused."""
    if any(character in value for character in "\r\n\0"):
        raise forms.ValidationError(_("This must not contain line breaks."))
    return value


class ImapPasswordForm(forms.Form):
    """The mailbox's password (or app password). Never rendered back into the page."""

    password = forms.CharField(
        label=_("Password"),
        strip=False,
        max_length=1000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "current-password"}),
        help_text=_("Your mailbox's password, or an app password if your provider uses them."),
    )

    def clean_password(self) -> str:
        return _no_control_characters(self.cleaned_data["password"])


class ImapConnectForm(ConnectForm, ImapPasswordForm):
    """Connect an IMAP/SMTP mailbox: address, sign-in and servers (blank servers come from a preset).

    A preset is the one picked, else the one whose domains include the address's domain.
    """

    preset = forms.ModelChoiceField(
        label=_("Server preset"), queryset=MailServerPreset.objects.all(), required=False, empty_label=_("(none)")
    )
    email = forms.EmailField(label=_("Address"))
    username = forms.CharField(
        label=_("Username"), required=False, max_length=255, help_text=_("Leave blank to use the address.")
    )
    imap_host = forms.CharField(label=_("IMAP server"), required=False, max_length=255)
    imap_port = forms.IntegerField(label=_("IMAP port"), required=False, min_value=1, max_value=65535)
    imap_security = forms.ChoiceField(label=_("IMAP security"), choices=SECURITY_CHOICES, required=False)
    smtp_host = forms.CharField(label=_("SMTP server"), required=False, max_length=255)
    smtp_port = forms.IntegerField(label=_("SMTP port"), required=False, min_value=1, max_value=65535)
    smtp_security = forms.ChoiceField(label=_("SMTP security"), choices=SECURITY_CHOICES, required=False)

    field_order = ["preset", "email", "username", "password", *SERVER_FIELDS, "sync_window", "sync_since"]

    def __init__(self, *args: Any, custom_servers_allowed: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.custom_servers_allowed = custom_servers_allowed
        if not custom_servers_allowed:  # only the administrator's presets: the servers are theirs, not typed
            for name in SERVER_FIELDS:
                del self.fields[name]
            self.fields["preset"].help_text = _("Leave it to match your address, or pick one.")
        elif not MailServerPreset.objects.exists():
            del self.fields["preset"]

    def clean_username(self) -> str:
        return _no_control_characters(self.cleaned_data["username"])

    def clean_imap_host(self) -> str:
        value = self.cleaned_data["imap_host"]
        return server_host_clean(value) if value.strip() else ""

    def clean_smtp_host(self) -> str:
        value = self.cleaned_data["smtp_host"]
        return server_host_clean(value) if value.strip() else ""

    def clean(self) -> dict:
        data = super().clean()
        email = (data.get("email") or "").lower()
        data["email"] = email
        data["username"] = (data.get("username") or "").strip() or email
        preset = data.get("preset") or (server_preset_for_email(email=email) if email else None)
        if not self.custom_servers_allowed:
            if preset is None and "preset" not in self.errors and email:
                self.add_error("preset", _("No preset matches this address: pick one."))
            for name in SERVER_FIELDS:
                data[name] = getattr(preset, name, None)
            if preset is None:
                return data
        for name in SERVER_FIELDS:
            if data.get(name) in (None, "") and preset is not None:
                data[name] = getattr(preset, name)
            if data.get(name) in (None, "") and name not in self.errors:
                self.add_error(name, _("Required (or pick a preset)."))
        server_security_check(self, protocol="imap")
        server_security_check(self, protocol="smtp")
        return data


def imap_connect_initial(*, preset: MailServerPreset | None, email: str = "") -> dict:
    """What the connect form shows before anything is typed: the preset's servers and the address."""
    initial: dict = {"email": email, "sync_window": "90"}
    if preset is not None:
        initial["preset"] = preset.pk
        initial.update({name: getattr(preset, name) for name in SERVER_FIELDS})
    else:
        initial.update({"imap_port": 993, "imap_security": "ssl", "smtp_port": 587, "smtp_security": "starttls"})
    return initial
