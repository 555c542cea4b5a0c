"""Settings → Mail settings: a named permission, validation, write-only secrets, the redirect URI, the history."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from providers.models import MAIL_ADMIN_GROUP, ProviderApp, ProviderSettingsChange

URL = "/admin/settings/mail/"
MS_CLIENT_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


def _post(client, provider, **fields):
    data = {"provider": provider, **{f"{provider}-{k}": v for k, v in fields.items()}}
    return client.post(URL, data)


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_url_is_the_documented_one():
    assert reverse("providers:mail_settings") == URL


def test_anonymous_is_sent_to_login(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert "login" in response["Location"]


def test_a_user_without_the_permission_is_refused(client, alice):
    client.force_login(alice)
    assert client.get(URL).status_code == 403
    assert _post(client, "google", client_id="x", client_secret="y", enabled="on").status_code == 403
    assert not ProviderApp.objects.filter(client_id="x").exists()


def test_staff_status_alone_cannot_replace_credentials_or_disable_a_provider(client, alice):
    ProviderApp.objects.create(provider="google", client_id="good.apps", client_secret="good-secret", enabled=True)
    alice.is_staff = True
    alice.save()
    client.force_login(alice)
    assert client.get(URL).status_code == 403
    assert _post(client, "google", client_id="evil.apps", client_secret="evil-secret").status_code == 403
    app = ProviderApp.objects.get(provider="google")
    assert (app.client_id, app.client_secret, app.enabled) == ("good.apps", "good-secret", True)
    assert "Mail settings" not in client.get("/accounts/").content.decode()  # no link to a page they cannot use


def test_the_mail_admin_group_created_by_the_migration_grants_the_page(client, alice):
    alice.groups.add(Group.objects.get(name=MAIL_ADMIN_GROUP))
    client.force_login(alice)
    assert client.get(URL).status_code == 200
    assert _post(client, "google", client_id="g.apps", client_secret="s", enabled="on").status_code == 302
    assert ProviderApp.objects.get(provider="google").is_usable
    assert 'href="/admin/settings/mail/"' in client.get("/accounts/").content.decode()


def test_every_change_is_recorded_with_who_when_and_which_fields_but_never_the_secret(client, alice):
    alice.groups.add(Group.objects.get(name=MAIL_ADMIN_GROUP))
    client.force_login(alice)
    _post(client, "google", client_id="one.apps", client_secret="GOCSPX-first-secret", enabled="on")
    _post(client, "google", client_id="one.apps", client_secret="", enabled="on")  # nothing changed
    _post(client, "google", client_id="one.apps", client_secret="GOCSPX-second-secret", enabled="on")
    _post(client, "google", client_id="one.apps", client_secret="")  # disabled
    changes = list(ProviderSettingsChange.objects.order_by("id"))
    assert [c.fields for c in changes] == [["enabled", "client_id", "client_secret"], ["client_secret"], ["enabled"]]
    assert all(c.changed_by == alice and c.changed_by_username == "alice" and c.provider == "google" for c in changes)
    assert all(c.changed_at is not None for c in changes)
    stored = str(list(ProviderSettingsChange.objects.values()))
    assert "GOCSPX" not in stored and "one.apps" not in stored
    page = client.get(URL).content.decode()
    history = page[page.index('id="settings-history"') :]
    assert history.count("<tr><td>") == 3 and "client_secret" in history and "alice" in history
    assert "GOCSPX" not in page
    alice.delete()
    assert ProviderSettingsChange.objects.filter(changed_by_username="alice", changed_by=None).count() == 3


def test_page_shows_both_providers_and_the_exact_redirect_uri(staff_client):
    response = staff_client.get(URL)
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="provider-google"' in body and 'id="provider-microsoft"' in body
    assert 'value="http://testserver/admin/settings/mail/oauth2"' in body
    assert 'data-copy-target="redirect-uri"' in body


def test_redirect_uri_uses_site_origin_when_set(staff_client, settings):
    settings.SITE_ORIGIN = "https://mail.example.org/"
    body = staff_client.get(URL).content.decode()
    assert 'value="https://mail.example.org/admin/settings/mail/oauth2"' in body


def test_saving_google_credentials_stores_an_encrypted_secret_never_shown_again(staff_client):
    response = _post(
        staff_client,
        "google",
        client_id="123.apps.googleusercontent.com",
        client_secret="GOCSPX-very-secret",
        enabled="on",
    )
    assert response.status_code == 302
    app = ProviderApp.objects.get(provider="google")
    assert app.is_usable and app.client_secret == "GOCSPX-very-secret"
    page = staff_client.get(URL).content.decode()
    assert "GOCSPX-very-secret" not in page
    assert "A secret is stored" in page


def test_blank_secret_keeps_the_stored_one(staff_client):
    _post(staff_client, "google", client_id="a.apps.googleusercontent.com", client_secret="first", enabled="on")
    _post(staff_client, "google", client_id="b.apps.googleusercontent.com", client_secret="", enabled="on")
    app = ProviderApp.objects.get(provider="google")
    assert app.client_id == "b.apps.googleusercontent.com"
    assert app.client_secret == "first"


def test_enabling_without_credentials_says_what_is_missing(staff_client):
    response = _post(staff_client, "google", client_id="", client_secret="", enabled="on")
    assert response.status_code == 400
    body = response.content.decode()
    assert body.count("Required to enable this provider.") == 2
    assert not ProviderApp.objects.get(provider="google").enabled


def test_microsoft_client_id_must_be_a_guid_and_tenant_is_checked(staff_client):
    response = _post(staff_client, "microsoft", client_id="not-a-guid", client_secret="s", tenant="bad tenant!")
    body = response.content.decode()
    assert response.status_code == 400
    assert "Application (client) ID" in body
    assert "tenant id (GUID)" in body


@pytest.mark.parametrize("tenant", ["common", "Organizations", "consumers", MS_CLIENT_ID, "contoso.onmicrosoft.com"])
def test_microsoft_tenants_accepted(staff_client, tenant):
    response = _post(staff_client, "microsoft", client_id=MS_CLIENT_ID, client_secret="s", tenant=tenant, enabled="on")
    assert response.status_code == 302
    assert ProviderApp.objects.get(provider="microsoft").tenant == (tenant.lower() if "-" not in tenant else tenant)


def test_saving_one_provider_leaves_the_other_untouched(staff_client):
    _post(staff_client, "microsoft", client_id=MS_CLIENT_ID, client_secret="ms-secret", tenant="common", enabled="on")
    _post(staff_client, "google", client_id="g.apps.googleusercontent.com", client_secret="g-secret", enabled="on")
    microsoft = ProviderApp.objects.get(provider="microsoft")
    assert microsoft.client_secret == "ms-secret" and microsoft.enabled


def test_django_admin_links_to_mail_settings(staff_client):
    response = staff_client.get("/admin/providers/providerapp/")
    assert response.status_code == 302 and response["Location"] == URL


@pytest.mark.parametrize(
    ("domains", "error"),
    [
        ("Example.COM, @example.org example.com", None),
        ("example.com not_a_domain", "not_a_domain"),
        ("localhost", "localhost"),
        ("example.com/inbox", "example.com/inbox"),
    ],
)
def test_a_presets_address_domains_are_checked_and_normalised(db, domains, error):
    from providers.forms import MailServerPresetForm

    servers = {"imap_host": "imap.example.com", "imap_port": 993, "imap_security": "ssl"}
    servers |= {"smtp_host": "smtp.example.com", "smtp_port": 587, "smtp_security": "starttls"}
    form = MailServerPresetForm(data={"name": "Example", "domains": domains, **servers})
    if error is None:
        assert form.is_valid(), form.errors
        assert form.cleaned_data["domains"] == "example.com example.org"
    else:
        assert not form.is_valid() and form.errors["domains"] == [f"Not a domain: {error}"]


def test_turning_off_a_provider_that_mailboxes_use_asks_first(staff_client, alice):
    from accounts.models import MailAccount

    ProviderApp.objects.create(provider="google", client_id="g.apps", client_secret="g-secret", enabled=True)
    MailAccount.objects.create(user=alice, provider="google", email="alice@gmail.test")
    assert "1 mailbox connected" in staff_client.get(URL).content.decode()

    asked = _post(staff_client, "google", client_id="g.apps")  # "Enabled" unticked
    assert asked.status_code == 200
    assert "1 mailbox is connected through Google." in asked.content.decode()
    assert ProviderApp.objects.get(provider="google").enabled  # nothing saved yet
    assert not ProviderSettingsChange.objects.exists()

    confirmed = staff_client.post(URL, {"provider": "google", "google-client_id": "g.apps", "confirm_off": "1"})
    assert confirmed.status_code == 302
    assert not ProviderApp.objects.get(provider="google").enabled


def test_turning_off_a_provider_nobody_uses_does_not_ask(staff_client):
    ProviderApp.objects.create(provider="google", client_id="g.apps", client_secret="g-secret", enabled=True)
    assert _post(staff_client, "google", client_id="g.apps").status_code == 302
    assert not ProviderApp.objects.get(provider="google").enabled


@pytest.mark.parametrize("value", ["lots", "1.5", "0", "-5", "249", "1000000001"])
def test_the_gmail_project_quota_must_be_a_whole_number_in_range(staff_client, value):
    response = _post(staff_client, "google", client_id="q.apps", client_secret="s", quota_units_per_minute=value)
    assert response.status_code == 400
    body = response.content.decode()
    assert (
        "Enter a whole number of units per minute from 250 to 1,000,000,000 (Google&#x27;s default is 1,200,000)."
        in body
    )
    assert ProviderApp.objects.get(provider="google").quota_units_per_minute == 1_200_000


def test_the_gmail_project_quota_is_saved_shown_and_recorded(staff_client):
    page = staff_client.get(URL).content.decode()
    assert 'name="google-quota_units_per_minute" value="1200000"' in page
    assert "Gmail API quota of the project (units per minute)" in page and "default is 1,200,000" in page
    assert "google-quota_units_per_minute" not in page[page.index('id="provider-microsoft"') :]
    response = _post(staff_client, "google", client_id="q.apps", client_secret="s", quota_units_per_minute="600 000")
    assert response.status_code == 302
    assert ProviderApp.objects.get(provider="google").quota_units_per_minute == 600_000
    assert 'name="google-quota_units_per_minute" value="600000"' in staff_client.get(URL).content.decode()
    assert [c.fields for c in ProviderSettingsChange.objects.all()] == [
        ["client_id", "client_secret", "quota_units_per_minute"]
    ]
    _post(staff_client, "google", client_id="q.apps", client_secret="", quota_units_per_minute="")  # blank keeps it
    assert ProviderApp.objects.get(provider="google").quota_units_per_minute == 600_000
