"""Mail accounts: list, connect (OAuth start), the shared OAuth callback, disconnect."""

import logging
import time
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LogoutView
from django.db import transaction
from django.db.models import Count, F, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import oauth
from accounts.forms import ConnectForm
from accounts.models import MailAccount
from accounts.services import account_connect, account_disconnect, providers_off
from mailbox.selectors import live_watch
from mailbox.sync import account_connected
from mailhub.http import AuthenticatedHttpRequest
from providers import registry
from providers.errors import NoMailbox, ProviderError
from providers.services import oauth_redirect_uri, provider_app_usable, provider_apps_usable

logger = logging.getLogger(__name__)


@login_required
def account_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    # The Disconnect confirm says how many unsent messages exist only in Mailhub: outbox rows, and drafts but
    # those whose latest version is also in the mailbox's Drafts at the provider (mailbox.drafts).
    at_provider = (
        Q(outgoing__status="draft")
        & ~Q(outgoing__remote_draft_id="")
        & Q(outgoing__revision__lte=F("outgoing__pushed_revision"))
    )
    unsent = Count("outgoing", filter=~Q(outgoing__status="sent") & ~at_provider)
    accounts = MailAccount.objects.filter(user=request.user).select_related("sync_state").annotate(unsent=unsent)
    providers = provider_apps_usable()
    oauth_providers = [app for app in providers if app.provider != "imap"]  # imap: a password form of its own
    return render(
        request,
        "accounts/account_list.html",
        {
            "accounts": accounts,
            "providers_off": providers_off(),
            "providers": providers,
            "oauth_providers": oauth_providers,
            "imap_enabled": len(oauth_providers) < len(providers),
            "form": ConnectForm(),
            **live_watch(user=request.user),
        },
    )


@login_required
@require_POST
def connect(request: AuthenticatedHttpRequest, provider_id: str) -> HttpResponse:
    app = provider_app_usable(provider_id=provider_id)
    if app is None:
        messages.error(request, _("This provider is not available. An administrator must configure it first."))
        return redirect("accounts:list")
    form = ConnectForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("accounts:list")
    state = oauth.new_state()
    redirect_uri = oauth_redirect_uri(request=request)
    try:
        authorization = registry.get(provider_id).begin_authorization(app=app, redirect_uri=redirect_uri, state=state)
    except ProviderError as exc:
        messages.error(request, str(exc))
        return redirect("accounts:list")
    since = form.since()
    oauth.pending_save(
        session=request.session,
        state=state,
        pending=oauth.PendingAuthorization(
            provider=provider_id,
            user_id=request.user.pk,
            created_at=time.time(),
            redirect_uri=redirect_uri,
            flow=authorization.flow,
            sync_since=since.isoformat() if since else None,
        ),
    )
    url = authorization.url
    if form.cleaned_data.get("login_hint"):  # reconnecting: preselect the mailbox at the provider
        url += "&" + urlencode({"login_hint": form.cleaned_data["login_hint"]})
    return HttpResponseRedirect(url)


@login_required
def oauth_callback(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Where Google and Microsoft send the user back: check state, handle cancel, exchange, store."""
    try:
        pending = oauth.pending_pop(session=request.session, state=request.GET.get("state"), user_id=request.user.pk)
    except oauth.StateError as exc:
        messages.error(request, str(exc))
        return redirect("accounts:list")
    provider = registry.get(pending.provider)
    app = provider_app_usable(provider_id=pending.provider)
    if app is None:
        messages.error(
            request,
            _("%(provider)s was disabled by an administrator while you were signing in.") % {"provider": provider.name},
        )
        return redirect("accounts:list")
    try:
        grant = provider.complete_authorization(
            app=app, redirect_uri=pending.redirect_uri, flow=pending.flow, params=request.GET.dict()
        )
    except NoMailbox as exc:
        messages.error(request, str(exc))
        return redirect("accounts:list")
    except ProviderError as exc:
        messages.error(request, _("The mailbox was not connected: %(reason)s") % {"reason": exc})
        return redirect("accounts:list")
    try:
        with transaction.atomic():
            account, created = account_connect(user_id=request.user.pk, provider_id=pending.provider, grant=grant)
            account_connected(account=account, created=created, since=pending.since)
    except ProviderError as exc:
        messages.error(request, _("The mailbox was not connected: %(reason)s") % {"reason": exc})
        return redirect("accounts:list")
    if created:
        messages.success(request, _("%(email)s is connected. The first sync has started.") % {"email": account.email})
    else:
        messages.success(request, _("%(email)s is reconnected.") % {"email": account.email})
    return redirect("accounts:list")


@login_required
@require_POST
def disconnect(request: AuthenticatedHttpRequest, account_id: int) -> HttpResponse:
    account = get_object_or_404(MailAccount, pk=account_id, user=request.user)
    email = account.email
    account_disconnect(account=account)
    messages.success(request, _("%(email)s was disconnected and its local copy deleted.") % {"email": email})
    return redirect("accounts:list")


class SignOutView(LogoutView):
    """Sign out (POST only) and land on Mailhub's sign-in page, not the admin's "Logged out" page."""

    next_page = "login"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        messages.info(request, _("You have signed out."))
        return response
