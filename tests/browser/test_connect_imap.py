"""An admin enables the IMAP/SMTP provider with a preset; a user connects a Dovecot mailbox with a password in
Chromium, first with a wrong one."""

import pytest

from accounts.models import MailAccount
from providers.models import MailServerPreset, ProviderApp
from tests.browser.test_connect_mailbox import sign_in
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.dovecot, pytest.mark.django_db(transaction=True)]


def test_admin_adds_a_preset_and_a_user_connects_an_imap_mailbox_with_a_password(
    page, live_server, dovecot, imap_settings, admin_user, alice
):
    ProviderApp.objects.filter(provider="imap").update(enabled=False)
    email = "carol@imap-browser.test"
    dovecot.set_password(email, "Browser-Password-8")

    sign_in(page, live_server, "admin", "admin-password-1")
    page.goto(f"{live_server.url}/admin/settings/mail/")
    page.check("#id_imap-enabled")
    page.fill("#id_presets-0-name", "Sandbox Dovecot")
    page.fill("#id_presets-0-domains", "imap-browser.test")
    page.fill("#id_presets-0-imap_host", "127.0.0.1")
    page.fill("#id_presets-0-imap_port", str(dovecot.imaps_port))
    page.fill("#id_presets-0-smtp_host", "127.0.0.1")
    page.fill("#id_presets-0-smtp_port", str(dovecot.submission_port))
    page.click("#provider-imap button[type=submit]")
    assert "settings saved" in page.inner_text(".flash")
    assert MailServerPreset.objects.get().imap_port == dovecot.imaps_port
    screenshot(page, "mail-settings-imap")

    page.context.clear_cookies()
    sign_in(page, live_server, "alice", "alice-password-1")
    page.goto(f"{live_server.url}/accounts/")
    page.click("#connect-imap")
    page.fill("#imap-presets input[name=email]", email)
    page.click("#imap-presets button[type=submit]")  # fill in the servers of the preset for the domain
    assert page.input_value("#id_imap_port") == str(dovecot.imaps_port)
    page.fill("#id_email", email)
    page.fill("#id_password", "Not-It-1")
    page.click("#imap-connect-submit")
    assert "refused this username and password" in page.inner_text("#connect-error")
    assert page.input_value("#id_email") == email and page.input_value("#id_password") == ""
    screenshot(page, "imap-connect-wrong-password")

    page.fill("#id_password", "Browser-Password-8")
    page.click("#imap-connect-submit")
    assert f"{email} is connected" in page.inner_text(".flash")
    screenshot(page, "imap-connected")
    account = MailAccount.objects.get(user=alice, email=email)
    assert account.provider == "imap" and account.password == "Browser-Password-8"


def test_a_changed_password_shows_reconnect_which_asks_for_the_new_one(page, live_server, dovecot, imap_account):
    from mailbox.sync import account_sync

    account = imap_account(password="Before-Change-1")
    assert account_sync(account_id=account.pk).outcome == "ok"
    dovecot.set_password(account.email, "After-Change-2")
    assert account_sync(account_id=account.pk).outcome == "stopped"

    sign_in(page, live_server, "alice", "alice-password-1")
    page.goto(f"{live_server.url}/accounts/")
    row = page.locator(f'tr[data-account="{account.email}"]')
    assert "Reconnect required" in row.inner_text() and "new password" in row.inner_text()
    screenshot(page, "imap-reconnect-required")
    row.locator("a", has_text="Reconnect").click()
    page.fill("#id_password", "After-Change-2")
    screenshot(page, "imap-reconnect-form")
    page.click("#imap-reconnect-submit")
    assert f"{account.email} is reconnected" in page.inner_text(".flash")
    assert "Connected" in page.locator(f'tr[data-account="{account.email}"]').inner_text()
    account.refresh_from_db()
    assert account.status == MailAccount.Status.ACTIVE and account.password == "After-Change-2"
