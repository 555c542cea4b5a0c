from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from mailhub.http import AuthenticatedHttpRequest
from providers import registry
from providers.forms import MailServerPresetFormSet, ProviderAppForm
from providers.models import MAIL_SETTINGS_PERMISSION, ProviderApp
from providers.services import (
    mailboxes_by_provider,
    oauth_redirect_uri,
    provider_app_update,
    provider_settings_history,
    server_presets_update,
)


@login_required
@permission_required(MAIL_SETTINGS_PERMISSION, raise_exception=True)
def mail_settings(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Settings → Mail settings: one form per provider; the posted one is validated, saved and recorded.

    Needs ``providers.change_providerapp`` (the "Mail admin" group has it); being staff is not enough.
    """
    apps = {provider: ProviderApp.objects.get_or_create(provider=provider)[0] for provider in registry.PROVIDERS}
    was_enabled = {provider: app.enabled for provider, app in apps.items()}
    mailboxes = mailboxes_by_provider()
    posted = request.POST.get("provider") if request.method == "POST" else None
    forms = {
        provider: ProviderAppForm(request.POST if provider == posted else None, instance=app, prefix=provider)
        for provider, app in apps.items()
    }
    # The generic IMAP/SMTP provider's section also holds its server presets, saved with it.
    presets = MailServerPresetFormSet(request.POST if posted == "imap" else None, prefix="presets")
    presets_valid = posted != "imap" or presets.is_valid()
    valid = posted in forms and forms[posted].is_valid() and presets_valid
    # Turning off a provider that mailboxes use stops their sync and sending: the admin confirms it first.
    confirm_off = None
    if valid and posted and was_enabled[posted] and not forms[posted].cleaned_data["enabled"]:
        confirm_off = posted if mailboxes.get(posted) and request.POST.get("confirm_off") != "1" else None
    if valid and posted and not confirm_off:
        provider_app_update(form=forms[posted], user=request.user)
        if posted == "imap":
            server_presets_update(formset=presets, user=request.user)
        messages.success(request, _("%(provider)s settings saved.") % {"provider": apps[posted]})
        return redirect("providers:mail_settings")
    if posted and not confirm_off:
        messages.error(request, _("The settings were not saved: correct the fields marked below."))
    return render(
        request,
        "providers/mail_settings.html",
        {
            "sections": [(apps[p], forms[p], mailboxes.get(p, 0)) for p in apps],
            "confirm_off": confirm_off,
            "presets": presets,
            "redirect_uri": oauth_redirect_uri(request=request),
            "history": provider_settings_history(),
        },
        status=400 if posted and not confirm_off else 200,
    )
