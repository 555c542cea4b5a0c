import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from mailhub.config import mail_security
from providers import registry
from providers.models import QUOTA_PER_MINUTE_MAX, QUOTA_PER_MINUTE_MIN, MailServerPreset, ProviderApp
from providers.validators import is_domain_name

# ProviderApp fields only some providers use (each provider lists its own in Provider.extra_settings).
EXTRA_SETTINGS = ("tenant", "custom_servers_allowed", "quota_units_per_minute")
QUOTA_RANGE_ERROR = _(
    "Enter a whole number of units per minute from 250 to 1,000,000,000 (Google's default is 1,200,000)."
)


class GroupedIntegerField(forms.IntegerField):
    """A whole number that may be typed with thousands separators: "1,200,000", "1 200 000" or "1_200_000"."""

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, str):
            value = re.sub(r"[,\s_']", "", value)
        return super().to_python(value)


class ProviderAppForm(forms.ModelForm):
    """Client credentials for one provider. The secret is write-only: blank keeps the stored one."""

    client_secret = forms.CharField(
        label=_("Client secret"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    quota_units_per_minute = GroupedIntegerField(
        label=_("Gmail API quota of the project (units per minute)"),
        required=False,
        min_value=QUOTA_PER_MINUTE_MIN,
        max_value=QUOTA_PER_MINUTE_MAX,
        widget=forms.TextInput(attrs={"inputmode": "numeric"}),
        error_messages={
            "invalid": QUOTA_RANGE_ERROR,
            "min_value": QUOTA_RANGE_ERROR,
            "max_value": QUOTA_RANGE_ERROR,
        },
        help_text=_(
            "The Gmail API units all connected Gmail mailboxes may use together per minute, as your Google Cloud "
            "project's quota page shows it. Google's default is 1,200,000; each mailbox also stays under 250 units "
            "per second. Mailhub paces every worker to stay under both. Blank keeps the current value."
        ),
    )

    class Meta:
        model = ProviderApp
        fields = ["enabled", "client_id", "client_secret", "tenant", "custom_servers_allowed", "quota_units_per_minute"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider = registry.get(self.instance.provider)
        for name in EXTRA_SETTINGS:
            if name not in self.provider.extra_settings:
                del self.fields[name]
        if "tenant" in self.fields:
            self.fields["tenant"].help_text = _(
                "common (any account), organizations (work or school), consumers (personal), or your tenant id"
            )
        if "custom_servers_allowed" in self.fields:
            self.fields["custom_servers_allowed"].help_text = _(
                "Off: users can only pick one of the presets below, so Mailhub connects to no other host."
            )
        if not self.provider.oauth_app:  # no app to register: on/off (and, for IMAP/SMTP, its own settings)
            del self.fields["client_id"], self.fields["client_secret"]
            self.fields["enabled"].help_text = self.provider.enable_help
            return
        secret_stored = bool(self.instance.pk and self.instance.client_secret)
        self.fields["client_secret"].help_text = (
            _("A secret is stored. Leave blank to keep it.") if secret_stored else _("Not set yet.")
        )

    def clean_client_id(self) -> str:
        client_id = self.cleaned_data["client_id"].strip()
        if client_id and re.search(r"\s", client_id):
            raise forms.ValidationError(_("The Client ID must not contain spaces."))
        return self._provider_clean("client_id", client_id)

    def clean_client_secret(self) -> str:
        # Blank keeps what is stored; the stored secret is never sent to the browser.
        return self.cleaned_data["client_secret"] or self.instance.client_secret

    def clean_quota_units_per_minute(self) -> int:
        value = self.cleaned_data.get("quota_units_per_minute")
        return self.instance.quota_units_per_minute if value is None else value

    def clean_tenant(self) -> str:
        return self._provider_clean("tenant", (self.cleaned_data.get("tenant") or "").strip())

    def _provider_clean(self, field: str, value: str) -> str:
        try:
            return self.provider.setting_clean(field, value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("enabled") and self.provider.oauth_app:
            if not data.get("client_id"):
                self.add_error("client_id", _("Required to enable this provider."))
            if not data.get("client_secret"):
                self.add_error("client_secret", _("Required to enable this provider."))
        return data


HOST = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$|^\[?[0-9a-fA-F:.]+\]?$")


def server_host_clean(value: str) -> str:
    """A host name or an IP address, without scheme, port or spaces."""
    host = value.strip().lower()
    if not HOST.match(host):
        raise forms.ValidationError(_("Enter a host name such as imap.example.com, without a port or a scheme."))
    return host


def server_security_check(form: forms.BaseForm, *, protocol: str) -> None:
    """Plain text only to this machine (or with the override), as for Outlook's servers; errors on the form."""
    host, security = form.cleaned_data.get(f"{protocol}_host"), form.cleaned_data.get(f"{protocol}_security")
    if not host or not security:
        return
    try:
        mail_security(
            variable=f"{protocol}_security",
            value=security,
            host=host,
            allow_plaintext=settings.INSECURE_ALLOW_PLAINTEXT_MAIL,
        )
    except ImproperlyConfigured:
        form.add_error(
            f"{protocol}_security",
            _(
                "Without SSL/TLS or STARTTLS the password would cross the network readable: "
                "allowed only to this machine."
            ),
        )


class MailServerPresetForm(forms.ModelForm):
    """One preset of servers users can pick when they connect an IMAP/SMTP mailbox."""

    class Meta:
        model = MailServerPreset
        fields = [
            "name",
            "domains",
            "imap_host",
            "imap_port",
            "imap_security",
            "smtp_host",
            "smtp_port",
            "smtp_security",
        ]
        help_texts = {"domains": _("Addresses at these domains get this preset, e.g. example.com example.org")}

    def clean_domains(self) -> str:
        domains = self.cleaned_data["domains"].replace(",", " ").lower().split()
        domains = [d.lstrip("@") for d in domains]
        bad = [d for d in domains if not is_domain_name(d)]
        if bad:
            raise forms.ValidationError(_("Not a domain: %(domains)s") % {"domains": ", ".join(bad)})
        return " ".join(dict.fromkeys(domains))

    def clean_imap_host(self) -> str:
        return server_host_clean(self.cleaned_data["imap_host"])

    def clean_smtp_host(self) -> str:
        return server_host_clean(self.cleaned_data["smtp_host"])

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        server_security_check(self, protocol="imap")
        server_security_check(self, protocol="smtp")
        return data


MailServerPresetFormSet = forms.modelformset_factory(
    MailServerPreset, form=MailServerPresetForm, extra=1, can_delete=True
)
