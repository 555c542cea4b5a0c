import re

from django import forms
from django.utils.translation import gettext_lazy as _

from providers.models import ProviderApp

GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
TENANT_ALIASES = {"common", "organizations", "consumers"}
DOMAIN = re.compile(r"^[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+$")


class ProviderAppForm(forms.ModelForm):
    """Client credentials for one provider. The secret is write-only: blank keeps the stored one."""

    client_secret = forms.CharField(
        label=_("Client secret"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = ProviderApp
        fields = ["enabled", "client_id", "client_secret", "tenant"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.provider != ProviderApp.Provider.MICROSOFT:
            del self.fields["tenant"]
        else:
            self.fields["tenant"].help_text = _(
                "common (any account), organizations (work or school), consumers (personal), or your tenant id"
            )
        secret_stored = bool(self.instance.pk and self.instance.client_secret)
        self.fields["client_secret"].help_text = (
            _("A secret is stored. Leave blank to keep it.") if secret_stored else _("Not set yet.")
        )

    def clean_client_id(self) -> str:
        client_id = self.cleaned_data["client_id"].strip()
        if client_id and self.instance.provider == ProviderApp.Provider.MICROSOFT and not GUID.match(client_id):
            raise forms.ValidationError(
                _("A Microsoft Application (client) ID looks like 00000000-0000-0000-0000-000000000000.")
            )
        if client_id and re.search(r"\s", client_id):
            raise forms.ValidationError(_("The Client ID must not contain spaces."))
        return client_id

    def clean_client_secret(self) -> str:
        # Blank keeps what is stored; the stored secret is never sent to the browser.
        return self.cleaned_data["client_secret"] or self.instance.client_secret

    def clean_tenant(self) -> str:
        tenant = (self.cleaned_data.get("tenant") or "common").strip()
        if tenant.lower() in TENANT_ALIASES:
            return tenant.lower()
        if GUID.match(tenant) or DOMAIN.match(tenant):
            return tenant
        raise forms.ValidationError(
            _("Use common, organizations, consumers, a tenant id (GUID) or a domain such as contoso.onmicrosoft.com.")
        )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("enabled"):
            if not data.get("client_id"):
                self.add_error("client_id", _("Required to enable this provider."))
            if not data.get("client_secret"):
                self.add_error("client_secret", _("Required to enable this provider."))
        return data
