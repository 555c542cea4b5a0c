"""Connecting a mailbox end to end: Django views → sandbox consent page → the shared callback.

google-auth-oauthlib and msal run unmodified over real HTTP(S) against the sandbox.
"""

import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from accounts import oauth
from accounts.models import MailAccount
from accounts.services import ReauthorizationRequired, account_access_token, account_mark_needs_reconnect
from mailbox.models import OutgoingMessage, SyncState
from providers.errors import ErrorCode
from providers.models import ProviderApp

pytestmark = pytest.mark.usefixtures("sandbox_settings")
GMAIL = "alice@gmail.test"
OUTLOOK = "alice@outlook.test"


def start(client, provider: str, **form) -> str:
    response = client.post(f"/accounts/connect/{provider}/", {"sync_window": "90", **form})
    assert response.status_code == 302, response.content
    return response["Location"]


def come_back(client, redirect_url: str):
    parts = urlsplit(redirect_url)
    assert parts.path == "/admin/settings/mail/oauth2"
    return client.get(f"{parts.path}?{parts.query}")


def connect(client, sandbox, provider: str, email: str, **form):
    idp = getattr(sandbox, provider)
    return come_back(client, idp.consent(start(client, provider, **form), email=email))


def flash(response) -> str:
    return " | ".join(str(m) for m in get_messages(response.wsgi_request))


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def test_google_connect_stores_the_mailbox_with_a_refresh_token(alice_client, alice, sandbox, google_app):
    authorize_url = start(alice_client, "google")
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["access_type"] == ["offline"]
    assert "https://www.googleapis.com/auth/gmail.modify" in query["scope"][0].split()
    assert "https://mail.google.com/" not in query["scope"][0].split()
    assert query["redirect_uri"] == ["http://testserver/admin/settings/mail/oauth2"]

    response = come_back(alice_client, sandbox.google.consent(authorize_url, email=GMAIL))
    assert response.status_code == 302 and response["Location"] == "/accounts/"
    account = MailAccount.objects.get(user=alice)
    assert (account.provider, account.email, account.status) == ("google", GMAIL, "active")
    issued = {t.value for t in sandbox.google.issued_tokens(email=GMAIL)}
    assert account.access_token in issued and account.refresh_token in issued
    assert account.token_expires_at > timezone.now() + timedelta(minutes=50)
    state = SyncState.objects.get(account=account)
    assert state.sync_since == timezone.localdate() - timedelta(days=90)
    listing = alice_client.get("/accounts/").content.decode()
    assert GMAIL in listing and account.access_token not in listing


@pytest.mark.dovecot
def test_microsoft_connect_takes_the_address_from_the_id_token(
    alice_client, alice, sandbox, microsoft_app, outlook_settings
):
    authorize_url = start(alice_client, "microsoft", sync_window="all")
    query = parse_qs(urlsplit(authorize_url).query)
    scopes = query["scope"][0].split()
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in scopes and "offline_access" in scopes
    assert query["code_challenge_method"] == ["S256"]
    response = come_back(alice_client, sandbox.microsoft.consent(authorize_url, email=OUTLOOK))
    assert response.status_code == 302, flash(response)
    account = MailAccount.objects.get(user=alice, provider="microsoft")
    assert account.email == OUTLOOK and account.refresh_token
    assert SyncState.objects.get(account=account).sync_since is None  # "everything"


def test_reconnecting_the_same_address_updates_instead_of_duplicating(alice_client, alice, sandbox, google_app):
    connect(alice_client, sandbox, "google", GMAIL)
    first = MailAccount.objects.get(user=alice)
    first.status, first.status_reason = MailAccount.Status.REAUTH_REQUIRED, "access_revoked"
    first.save()
    connect(alice_client, sandbox, "google", GMAIL)
    again = MailAccount.objects.get(user=alice)
    assert again.pk == first.pk and again.status == "active" and again.access_token != first.access_token
    connect(alice_client, sandbox, "google", "alice.work@gmail.test")
    assert MailAccount.objects.filter(user=alice).count() == 2


@pytest.mark.dovecot
def test_microsoft_account_without_an_outlook_mailbox_is_explained(
    alice_client, sandbox, microsoft_app, outlook_settings
):
    sandbox.microsoft.add_user("someone@gmail-backed.test", has_mailbox=False)
    response = connect(alice_client, sandbox, "microsoft", "someone@gmail-backed.test")
    assert "has no Outlook mailbox" in flash(response)
    assert not MailAccount.objects.exists()


def test_user_denies_consent(alice_client, sandbox, google_app):
    url = sandbox.google.consent(start(alice_client, "google"), email=GMAIL, allow=False)
    response = come_back(alice_client, url)
    assert "You cancelled the connection at Google" in flash(response)
    assert not MailAccount.objects.exists()


@pytest.mark.parametrize("state", [None, "forged-state"])
def test_missing_or_forged_state_is_refused(alice_client, sandbox, google_app, state):
    url = sandbox.google.consent(start(alice_client, "google"), email=GMAIL)
    code = parse_qs(urlsplit(url).query)["code"][0]
    query = f"code={code}" + (f"&state={state}" if state else "")
    response = alice_client.get(f"/admin/settings/mail/oauth2?{query}")
    assert "not one Mailhub is waiting for" in flash(response)
    assert not MailAccount.objects.exists()


def test_replayed_callback_is_refused(alice_client, sandbox, google_app):
    url = sandbox.google.consent(start(alice_client, "google"), email=GMAIL)
    come_back(alice_client, url)
    response = come_back(alice_client, url)
    assert "not one Mailhub is waiting for" in flash(response)
    assert MailAccount.objects.count() == 1


def test_expired_state_is_refused(alice_client, sandbox, google_app, monkeypatch):
    url = sandbox.google.consent(start(alice_client, "google"), email=GMAIL)
    monkeypatch.setattr(oauth, "STATE_TTL_SECONDS", 0)
    assert "expired" in flash(come_back(alice_client, url))
    assert not MailAccount.objects.exists()


def test_state_is_bound_to_the_user_who_started(client, alice, bob, sandbox, google_app):
    client.force_login(alice)
    url = sandbox.google.consent(start(client, "google"), email=GMAIL)
    client.force_login(bob)  # a different user in the same browser
    come_back(client, url)
    assert not MailAccount.objects.exists()


def test_a_code_already_used_is_refused(alice_client, sandbox, google_app):
    first = sandbox.google.consent(start(alice_client, "google"), email=GMAIL)
    come_back(alice_client, first)
    used_code = parse_qs(urlsplit(first).query)["code"][0]
    second = sandbox.google.consent(start(alice_client, "google"), email=GMAIL)
    state = parse_qs(urlsplit(second).query)["state"][0]
    response = alice_client.get(f"/admin/settings/mail/oauth2?code={used_code}&state={state}")
    assert "no longer valid" in flash(response)
    assert MailAccount.objects.count() == 1


@pytest.mark.parametrize("provider,email", [("google", GMAIL), ("microsoft", OUTLOOK)])
def test_token_endpoint_5xx_stores_nothing(alice_client, sandbox, google_app, microsoft_app, provider, email):
    url = getattr(sandbox, provider).consent(start(alice_client, provider), email=email)
    getattr(sandbox, provider).fail_token_endpoint(times=5, status=503)
    response = come_back(alice_client, url)
    assert "was not connected" in flash(response)
    assert not MailAccount.objects.exists()


def test_wrong_client_secret_is_explained(alice_client, sandbox, google_app):
    url = sandbox.google.consent(start(alice_client, "google"), email=GMAIL)
    google_app.client_secret = "not-the-secret"
    google_app.save()
    assert "client credentials" in flash(come_back(alice_client, url))
    assert not MailAccount.objects.exists()


def test_provider_disabled_between_start_and_callback(alice_client, sandbox, google_app):
    url = sandbox.google.consent(start(alice_client, "google"), email=GMAIL)
    ProviderApp.objects.filter(pk=google_app.pk).update(enabled=False)
    assert "disabled by an administrator" in flash(come_back(alice_client, url))
    assert not MailAccount.objects.exists()


def test_only_configured_providers_are_offered(alice_client, db):
    page = alice_client.get("/accounts/").content.decode()
    assert "An administrator must enter" in page
    response = alice_client.post("/accounts/connect/google/", {"sync_window": "90"})
    assert response.status_code == 302 and response["Location"] == "/accounts/"
    assert "not available" in flash(response)


def test_connect_requires_post_and_login(client, alice, google_app):
    assert client.post("/accounts/connect/google/").status_code == 302  # to login
    client.force_login(alice)
    assert client.get("/accounts/connect/google/").status_code == 405


def test_users_see_and_disconnect_only_their_own_mailboxes(client, alice, bob, sandbox, google_app):
    client.force_login(alice)
    connect(client, sandbox, "google", GMAIL)
    client.get("/accounts/")  # Alice reads her "connected" message
    account = MailAccount.objects.get(user=alice)
    client.force_login(bob)
    assert GMAIL not in client.get("/accounts/").content.decode()
    assert client.post(f"/accounts/{account.pk}/disconnect/").status_code == 404
    assert MailAccount.objects.filter(pk=account.pk).exists()


def test_disconnect_revokes_at_google_and_deletes_locally(alice_client, alice, sandbox, google_app):
    connect(alice_client, sandbox, "google", GMAIL)
    account = MailAccount.objects.get(user=alice)
    refresh = account.refresh_token
    response = alice_client.post(f"/accounts/{account.pk}/disconnect/")
    assert response.status_code == 302
    assert not MailAccount.objects.filter(pk=account.pk).exists()
    assert sandbox.tokens.get(refresh).revoked


def test_after_a_reconnect_the_old_failure_is_no_longer_shown(alice_client, alice, sandbox, google_app):
    connect(alice_client, sandbox, "google", GMAIL)
    account = MailAccount.objects.get(user=alice)
    account_mark_needs_reconnect(account=account, reason=ErrorCode.ACCESS_REVOKED)
    SyncState.objects.filter(account=account).update(
        status=SyncState.Status.STOPPED, last_error_code=ErrorCode.ACCESS_REVOKED, failure_count=3
    )
    revoked = SyncState.objects.get(account=account).error_message
    assert revoked and revoked in alice_client.get("/accounts/").content.decode()

    connect(alice_client, sandbox, "google", GMAIL)
    page = alice_client.get("/accounts/").content.decode()
    assert revoked not in page and "Reconnect" not in page
    state = SyncState.objects.get(account=account)
    assert (state.status, state.last_error_code, state.failure_count) == (SyncState.Status.IDLE, "", 0)


def test_the_disconnect_confirm_counts_the_unsent_mail_it_deletes(alice_client, alice, sandbox, google_app):
    connect(alice_client, sandbox, "google", GMAIL)
    account = MailAccount.objects.get(user=alice)
    assert "Disconnect this mailbox and delete its local copy?" in alice_client.get("/accounts/").content.decode()
    for status in ("draft", "queued", "failed", "sent"):
        OutgoingMessage.objects.create(account=account, status=status, subject=status)
    at_gmail = {"remote_draft_id": "r-1", "revision": 2, "pushed_revision": 2}
    OutgoingMessage.objects.create(account=account, status="draft", subject="also in Gmail's Drafts", **at_gmail)
    changed_since = {**at_gmail, "remote_draft_id": "r-2", "revision": 3}
    OutgoingMessage.objects.create(account=account, status="draft", subject="changed since", **changed_since)
    page = alice_client.get("/accounts/").content.decode()
    assert "and with it 4 unsent messages (drafts or in the outbox) that exist only in Mailhub." in page


@pytest.mark.dovecot
def test_refresh_before_expiry_and_persist_rotated_microsoft_token(
    alice_client, alice, sandbox, microsoft_app, outlook_settings
):
    connect(alice_client, sandbox, "microsoft", OUTLOOK)
    account = MailAccount.objects.get(user=alice)
    old_access, old_refresh = account.access_token, account.refresh_token
    assert account_access_token(account=account) == old_access  # still fresh: no refresh
    account.token_expires_at = timezone.now() + timedelta(minutes=2)  # inside the refresh margin
    account.save()
    new_access = account_access_token(account=account)
    stored = MailAccount.objects.get(pk=account.pk)
    assert new_access != old_access and stored.access_token == new_access
    assert stored.refresh_token != old_refresh  # Microsoft rotated it and we kept the new one
    assert sandbox.tokens.valid(stored.refresh_token, kind="refresh", provider="microsoft")
    assert not sandbox.tokens.valid(old_refresh, kind="refresh", provider="microsoft")


def test_google_refresh_keeps_the_refresh_token(alice_client, alice, sandbox, google_app):
    connect(alice_client, sandbox, "google", GMAIL)
    account = MailAccount.objects.get(user=alice)
    refresh = account.refresh_token
    new_access = account_access_token(account=account, force_refresh=True)
    stored = MailAccount.objects.get(pk=account.pk)
    assert stored.access_token == new_access and stored.refresh_token == refresh


@pytest.mark.dovecot
@pytest.mark.parametrize("provider,email", [("google", GMAIL), ("microsoft", OUTLOOK)])
def test_revoked_grant_becomes_reconnect_state_without_retrying(
    alice_client, alice, sandbox, google_app, microsoft_app, outlook_settings, provider, email
):
    connect(alice_client, sandbox, provider, email)
    account = MailAccount.objects.get(user=alice)
    getattr(sandbox, provider).revoke_user(email)
    with pytest.raises(ReauthorizationRequired):
        account_access_token(account=account, force_refresh=True)
    stored = MailAccount.objects.get(pk=account.pk)
    assert stored.status == MailAccount.Status.REAUTH_REQUIRED and "Reconnect" in stored.status_message
    calls = getattr(sandbox, provider).token_endpoint_calls
    with pytest.raises(ReauthorizationRequired):
        account_access_token(account=stored)
    assert getattr(sandbox, provider).token_endpoint_calls == calls  # no retry against the provider
    page = alice_client.get("/accounts/").content.decode()
    assert "Reconnect" in page and f'name="login_hint" value="{email}"' in page
    authorize_url = start(alice_client, provider, login_hint=email)
    assert parse_qs(urlsplit(authorize_url).query)["login_hint"] == [email]
    come_back(alice_client, getattr(sandbox, provider).consent(authorize_url))  # the hint picks the account
    assert MailAccount.objects.get(pk=account.pk).status == MailAccount.Status.ACTIVE


def test_temporary_refresh_failure_leaves_the_account_active(alice_client, alice, sandbox, google_app):
    from providers.errors import ProviderError

    connect(alice_client, sandbox, "google", GMAIL)
    account = MailAccount.objects.get(user=alice)
    sandbox.google.fail_token_endpoint(times=10, status=503)
    with pytest.raises(ProviderError):
        account_access_token(account=account, force_refresh=True)
    assert MailAccount.objects.get(pk=account.pk).status == "active"


def test_no_token_or_secret_reaches_the_logs(alice_client, alice, sandbox, google_app, caplog):
    caplog.set_level(logging.DEBUG)
    connect(alice_client, sandbox, "google", GMAIL)
    account = MailAccount.objects.get(user=alice)
    account_access_token(account=account, force_refresh=True)
    alice_client.post(f"/accounts/{account.pk}/disconnect/")
    secrets = [t.value for t in sandbox.google.issued_tokens(email=GMAIL)] + [google_app.client_secret]
    for secret in secrets:
        assert secret not in caplog.text


def test_connecting_an_imap_address_again_updates_that_mailbox_in_place(alice):
    from accounts.services import MailboxServers, account_connect_password, account_mark_needs_reconnect

    servers = MailboxServers("imap.example.com", 993, "ssl", "smtp.example.com", 587, "starttls")
    first, created = account_connect_password(
        user_id=alice.pk, email="me@example.com", username="me", password="old-secret-1", servers=servers
    )
    assert created
    account_mark_needs_reconnect(account=first, reason=ErrorCode.PASSWORD_REFUSED)
    moved = MailboxServers("mail.example.com", 143, "starttls", "mail.example.com", 465, "ssl")
    again, created = account_connect_password(
        user_id=alice.pk, email="me@example.com", username="me2", password="new-secret-2", servers=moved
    )
    assert not created and again.pk == first.pk
    stored = MailAccount.objects.get(pk=first.pk)
    assert (stored.username, stored.imap_host, stored.imap_port, stored.smtp_port) == (
        "me2",
        "mail.example.com",
        143,
        465,
    )
    assert (
        stored.password == "new-secret-2" and stored.status == MailAccount.Status.ACTIVE and stored.status_reason == ""
    )
    assert MailAccount.objects.filter(user=alice, email="me@example.com").count() == 1
