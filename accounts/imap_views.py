"""The generic IMAP/SMTP provider's pages: connect a mailbox with a password, and enter a new one (Reconnect).

Nothing is saved before :func:`providers.imap.check.servers_check` has logged in to both servers. The
password is never rendered back, logged or put in a message.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_ratelimit.core import is_ratelimited

from accounts.forms import ImapConnectForm, ImapPasswordForm, imap_connect_initial
from accounts.models import MailAccount
from accounts.services import (
    IMAP_PROVIDER,
    MailboxServers,
    account_connect_password,
    account_password_update,
    account_servers,
)
from mailbox.sync import account_connected
from mailhub.http import AuthenticatedHttpRequest
from providers.imap.check import CheckFailed, Failure, servers_check
from providers.imap.provider import mail_server
from providers.imap.transport import PasswordLogin
from providers.models import MailServerPreset
from providers.services import provider_app_usable, server_preset_for_email, server_presets

# What a failed check tells the user, by its code (%(server)s: IMAP or SMTP; %(where)s: host:port).
CHECK_MESSAGES = {
    Failure.WRONG_PASSWORD: gettext_lazy("The %(server)s server at %(where)s refused this username and password."),
    Failure.UNREACHABLE: gettext_lazy(
        "The %(server)s server at %(where)s could not be reached. Check the host name, the port and the security."
    ),
    Failure.CERTIFICATE: gettext_lazy(
        "The %(server)s server at %(where)s presented a certificate that is not trusted (self-signed, expired or "
        "issued for another name). Check the host name, or ask the server's administrator."
    ),
    Failure.NOT_IMAP4REV1: gettext_lazy(
        "The server at %(where)s does not speak IMAP4rev1, which Mailhub needs. Check that the port is the "
        "server's IMAP port."
    ),
    Failure.NO_STARTTLS: gettext_lazy(
        "The %(server)s server at %(where)s does not offer STARTTLS. Choose SSL/TLS (usually port 993) if it has it."
    ),
    Failure.NO_SMTP_AUTH: gettext_lazy(
        "The SMTP server at %(where)s offers no sign-in (AUTH) on this connection. Use its submission port "
        "(usually 587 with STARTTLS, or 465 with SSL/TLS)."
    ),
    Failure.TRY_AGAIN: gettext_lazy(
        "The %(server)s server at %(where)s could not check the sign-in just now. Try again in a moment."
    ),
    Failure.CLOSED: gettext_lazy("The %(server)s server at %(where)s closed the connection during sign-in. Try again."),
    Failure.PRIVATE: gettext_lazy(
        "The %(server)s server at %(where)s is on this machine or a private network, and Mailhub connects only to "
        "mail servers on the internet. Use the server's public name, or ask an administrator to add it as a preset."
    ),
}


def check_failure_message(exc: CheckFailed) -> str:
    return str(CHECK_MESSAGES[exc.failure]) % {"server": exc.protocol.upper(), "where": exc.where}


@login_required
def imap_connect(request: AuthenticatedHttpRequest) -> HttpResponse:
    """GET: the form, pre-filled from ``?preset=`` or the domain of ``?email=``; POST: check, then connect."""
    app = provider_app_usable(provider_id=IMAP_PROVIDER)
    if app is None:
        messages.error(request, _("This provider is not available. An administrator must configure it first."))
        return redirect("accounts:list")
    if request.method != "POST":
        email = request.GET.get("email", "").strip()[:254]
        preset = _preset_chosen(request.GET.get("preset")) or server_preset_for_email(email=email)
        form = ImapConnectForm(
            initial=imap_connect_initial(preset=preset, email=email),
            custom_servers_allowed=app.custom_servers_allowed,
        )
        return _connect_page(request, form)
    form = ImapConnectForm(request.POST, custom_servers_allowed=app.custom_servers_allowed)
    if form.is_valid():
        data = form.cleaned_data
        servers = MailboxServers(**{name: data[name] for name in MailboxServers.__dataclass_fields__})
        login = PasswordLogin(username=data["username"], password=data["password"])
        problem = _check(request, servers=servers, login=login)
        if problem:
            form.add_error(None, problem)
        else:
            with transaction.atomic():
                account, created = account_connect_password(
                    user_id=request.user.pk,
                    email=data["email"],
                    username=data["username"],
                    password=data["password"],
                    servers=servers,
                )
                account_connected(account=account, created=created, since=form.since())
            done = _("%(email)s is connected. The first sync has started.")
            if not created:
                done = _("%(email)s is reconnected.")
            messages.success(request, done % {"email": data["email"]})
            return redirect("accounts:list")
    return _connect_page(request, form, status=400)


@login_required
def imap_reconnect(request: AuthenticatedHttpRequest, account_id: int) -> HttpResponse:
    """Reconnect for a password account: the new password, checked against both servers, then sync resumes."""
    account = get_object_or_404(MailAccount, pk=account_id, user=request.user, provider=IMAP_PROVIDER)
    form = ImapPasswordForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        login = PasswordLogin(username=account.username or account.email, password=form.cleaned_data["password"])
        problem = _check(request, servers=account_servers(account=account), login=login)
        if problem:
            form.add_error(None, problem)
        else:
            with transaction.atomic():
                account_password_update(account=account, password=form.cleaned_data["password"])
                account_connected(account=account, created=False, since=None)
            messages.success(request, _("%(email)s is reconnected.") % {"email": account.email})
            return redirect("accounts:list")
    return render(
        request,
        "accounts/imap_reconnect.html",
        {"account": account, "form": form},
        status=400 if form.is_bound else 200,
    )


def _check(request: AuthenticatedHttpRequest, *, servers: MailboxServers, login: PasswordLogin) -> str | None:
    """None when both servers take the sign-in, else what to tell the user."""
    if _checks_used_up(request):
        return _("Too many sign-in checks in a short time. Wait a few minutes, then try again.")
    try:
        _servers_check(servers=servers, login=login)
    except CheckFailed as exc:
        return check_failure_message(exc)
    return None


def _checks_used_up(request: AuthenticatedHttpRequest) -> bool:
    """Count one check against the user (MAILHUB_SERVER_CHECK_RATE, django-ratelimit); True once used up.

    Every check connects to servers the user named, with a password the user typed: unlimited, the form
    would let anyone signed in try passwords against other people's mail servers, or scan their ports. Per
    user, not per address: a whole office behind one address connects its mailboxes on the same morning.
    """
    rate = settings.MAILHUB_SERVER_CHECK_RATE
    return is_ratelimited(request, group="imap-server-check", key="user", rate=rate, increment=True)


def _servers_check(*, servers: MailboxServers, login: PasswordLogin) -> None:
    servers_check(
        imap_server=mail_server(
            host=servers.imap_host, port=servers.imap_port, security=servers.imap_security, protocol="imap"
        ),
        smtp_server=mail_server(
            host=servers.smtp_host, port=servers.smtp_port, security=servers.smtp_security, protocol="smtp"
        ),
        login=login,
    )


def _connect_page(request: AuthenticatedHttpRequest, form: ImapConnectForm, *, status: int = 200) -> HttpResponse:
    return render(
        request,
        "accounts/imap_connect.html",
        {"form": form, "presets": server_presets()},
        status=status,
    )


def _preset_chosen(value: str | None) -> MailServerPreset | None:
    if not value or not value.isdigit():
        return None
    return MailServerPreset.objects.filter(pk=int(value)).first()
