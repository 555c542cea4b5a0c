"""The IMAP/SMTP connect and reconnect forms sign in to servers the user named: at most so many times a while,
or anyone signed in could try passwords against other people's mail servers (or scan ports) through Mailhub."""

from __future__ import annotations

import pytest

from accounts.models import MailAccount
from tests.providers.test_imap_provider import CONNECT, connect_form, new_address

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def test_checks_beyond_the_rate_are_refused_without_connecting(dovecot, client, alice, bob, imap_settings, settings):
    settings.MAILHUB_SERVER_CHECK_RATE = "3/m"
    client.force_login(alice)
    email = new_address()
    dovecot.set_password(email, "the-right-one-1")
    for attempt in range(3):
        response = client.post(CONNECT, connect_form(dovecot, email, password=f"guess-{attempt}"))
        assert response.status_code == 400 and "refused this username and password" in response.content.decode()
    tried = dovecot.log_tail(10**6).count(f"user=<{email}>")
    assert tried >= 3  # Dovecot logs every refused sign-in with the user's name
    response = client.post(CONNECT, connect_form(dovecot, email, password="the-right-one-1"))
    page = response.content.decode()
    assert response.status_code == 400 and "Too many sign-in checks" in page
    assert not MailAccount.objects.filter(email=email).exists()  # even the right password waits
    assert dovecot.log_tail(10**6).count(f"user=<{email}>") == tried  # no connection was made

    # Another user from the same address is limited too (by address), and an empty form costs nothing.
    client.force_login(bob)
    assert "Too many sign-in checks" in client.post(CONNECT, connect_form(dovecot, email)).content.decode()
    assert "Too many" not in client.post(CONNECT, {}).content.decode()
