"""Servers users type in must be on the internet: Mailhub is never made to connect to its own machine or
network (Redis, PostgreSQL, a cloud metadata service, an intranet host) through the IMAP/SMTP provider."""

from __future__ import annotations

import pytest

from accounts.models import MailAccount
from mailbox.models import SyncState
from mailbox.sync import account_sync
from providers.imap.transport import MailServer, PrivateServerRefused
from providers.models import MailServerPreset
from tests.fixtures.dovecot import imap_servers
from tests.providers.test_imap_provider import CONNECT, PASSWORD, connect_form, new_address

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


@pytest.fixture
def private_refused(settings, imap_settings):
    settings.IMAP_ALLOW_PRIVATE_SERVERS = False
    return settings


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "10.1.2.3", "192.168.0.10", "169.254.169.254", "::1", "::ffff:127.0.0.1"]
)
def test_a_user_named_server_inside_this_machine_or_network_is_refused(private_refused, host):
    with pytest.raises(PrivateServerRefused):
        MailServer(host=host, port=993, security="ssl", public_only=True).checked_address()


def test_servers_on_the_internet_and_administrators_servers_are_not_checked(private_refused):
    MailServer(host="93.184.216.34", port=993, security="ssl", public_only=True).checked_address()
    MailServer(host="127.0.0.1", port=993, security="ssl").checked_address()  # Exchange's, from the settings


def test_connecting_to_a_private_server_is_refused_before_any_connection(dovecot, client, alice, private_refused):
    client.force_login(alice)
    email = new_address()
    dovecot.set_password(email, PASSWORD)
    response = client.post(CONNECT, connect_form(dovecot, email))
    page = response.content.decode()
    assert response.status_code == 400 and "private network" in page
    assert PASSWORD not in page
    assert not MailAccount.objects.filter(email=email).exists()
    assert f"user=<{email}>" not in dovecot.log_tail(20000)  # no sign-in was even tried


def test_a_host_an_administrator_named_in_a_preset_is_allowed(dovecot, client, alice, private_refused):
    servers = imap_servers(dovecot)
    MailServerPreset.objects.create(name="Office server", domains="imap-sandbox.test", **servers)
    client.force_login(alice)
    email = new_address()
    dovecot.set_password(email, PASSWORD)
    assert client.post(CONNECT, connect_form(dovecot, email)).status_code == 302
    assert MailAccount.objects.get(email=email).status == MailAccount.Status.ACTIVE


def test_a_stored_server_now_refused_stops_syncing_without_connecting(dovecot, imap_account, settings):
    account = imap_account()
    settings.IMAP_ALLOW_PRIVATE_SERVERS = False  # e.g. its name now resolves inside the network
    result = account_sync(account_id=account.pk)
    assert result.outcome == "retry" and result.retry_after >= 3000  # not retried soon: a person must act
    state = SyncState.objects.get(account=account)
    assert state.last_error_code == "action_required" and "not on the internet" in state.last_error


class RebindingResolver:
    """A name whose first answer is on the internet and every later one this machine (DNS rebinding)."""

    def __init__(self, real_getaddrinfo) -> None:
        self.real = real_getaddrinfo
        self.lookups = 0

    def __call__(self, host, port, *args, **kwargs):
        if host != "rebind.example":
            return self.real(host, port, *args, **kwargs)
        self.lookups += 1
        address = "93.184.216.34" if self.lookups == 1 else "127.0.0.1"
        return self.real(address, port, *args, **kwargs)


@pytest.mark.parametrize("protocol", ["imap", "smtp"])
def test_a_name_that_resolves_inside_after_the_check_is_refused_before_anything_is_sent(
    dovecot, private_refused, monkeypatch, protocol
):
    import socket

    from providers.imap.connection import imap_connect
    from providers.imap.smtp import smtp_connect

    private_refused.INSECURE_ALLOW_PLAINTEXT_MAIL = True  # plain text, so no certificate names get in the way
    resolver = RebindingResolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = dovecot.imap_port if protocol == "imap" else dovecot.submission_port
    server = MailServer(host="rebind.example", port=port, security="none", public_only=True)
    connect = imap_connect if protocol == "imap" else smtp_connect
    with pytest.raises(PrivateServerRefused, match="127.0.0.1"):
        connect(server, name="Example")
    assert resolver.lookups == 2  # the check saw the internet address; the connection went to this machine
