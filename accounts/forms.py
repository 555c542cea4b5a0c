from datetime import date, timedelta
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

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
