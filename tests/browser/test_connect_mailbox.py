"""An admin saves Google credentials; a user connects a Google and a Microsoft mailbox in Chromium."""

import pytest

from accounts.models import MailAccount
from providers.models import ProviderApp
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/**")


def test_admin_configures_google_and_user_connects_both_mailboxes(
    page, live_server, sandbox, outlook_settings, admin_user, alice, microsoft_app
):
    client = sandbox.google.register_client("browser-test.apps.googleusercontent.com", "browser-test-secret")

    sign_in(page, live_server, "admin", "admin-password-1")
    page.goto(f"{live_server.url}/admin/settings/mail/")
    assert page.input_value("#redirect-uri") == f"{live_server.url}/admin/settings/mail/oauth2"
    page.fill("#id_google-client_id", client.client_id)
    page.fill("#id_google-client_secret", client.client_secret)
    page.check("#id_google-enabled")
    screenshot(page, "mail-settings")
    page.click("#provider-google button[type=submit]")
    assert "Google settings saved." in page.inner_text(".flash")
    assert page.input_value("#id_google-client_secret") == ""  # write-only
    assert ProviderApp.objects.get(provider="google").is_usable

    page.context.clear_cookies()
    sign_in(page, live_server, "alice", "alice-password-1")
    page.goto(f"{live_server.url}/accounts/")
    page.click("#connect-google")
    page.wait_for_url(f"{sandbox.google_url}/**")
    screenshot(page, "google-consent")
    page.fill("input[name=email]", "alice@gmail.test")
    page.click("button[value=allow]")
    page.wait_for_url(f"{live_server.url}/accounts/")
    assert "alice@gmail.test is connected" in page.inner_text(".flash")

    page.click("#connect-microsoft")
    # The browser context does not trust the sandbox CA (as a newcomer's would not): the sign-in page it is
    # sent to must open without a certificate warning, while msal itself keeps talking HTTPS.
    page.wait_for_url(f"{sandbox.microsoft.sign_in_url}/**")
    assert sandbox.microsoft_url.startswith("https://")
    screenshot(page, "microsoft-consent")
    page.fill("input[name=email]", "alice@outlook.test")
    page.click("button[value=allow]")
    page.wait_for_url(f"{live_server.url}/accounts/")
    rows = page.inner_text("#accounts")
    assert "alice@gmail.test" in rows and "alice@outlook.test" in rows
    screenshot(page, "mail-accounts")
    assert set(MailAccount.objects.filter(user=alice).values_list("provider", flat=True)) == {"google", "microsoft"}
