import re
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from providers import registry
from providers.models import ProviderApp


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider = registry.get(self.instance.provider)
        if "tenant" not in self.provider.extra_settings:
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
        if client_id and re.search(r"\s", client_id):
            raise forms.ValidationError(_("The Client ID must not contain spaces."))
        return self._provider_clean("client_id", client_id)

    def clean_client_secret(self) -> str:
        # Blank keeps what is stored; the stored secret is never sent to the browser.
        return self.cleaned_data["client_secret"] or self.instance.client_secret

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
        if data.get("enabled"):
            if not data.get("client_id"):
                self.add_error("client_id", _("Required to enable this provider."))
            if not data.get("client_secret"):
                self.add_error("client_secret", _("Required to enable this provider."))
        return data
