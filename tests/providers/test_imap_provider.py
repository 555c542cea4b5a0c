"""The generic IMAP/SMTP provider against the real Dovecot (its passwd-file passdb holds the passwords):
connect with a checked password, sync, write-back and send through Outlook's transport, and Reconnect after
the password changed on the server."""

from __future__ import annotations

import logging
import socket
import threading
import uuid

import pytest
from django.db import connection

from accounts.models import MailAccount
from mailbox.local import account_client, local_messages
from mailbox.models import Folder, Message, OutgoingMessage, SyncState
from mailbox.sync import account_sync
from mailhub.fields import decrypt
from providers import registry
from providers.base import ChangeKind, MessageChange
from providers.imap.client import ImapMailClient
from providers.models import MailServerPreset
from sandbox.dovecot import free_port
from tests.fixtures.dovecot import imap_servers
from tests.providers.test_outlook_send import queued
from tests.providers.test_outlook_sync import db_view, seed, server_view

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]

CONNECT = "/accounts/connect/imap/"
PASSWORD = "Correct-Horse-7-battery"


def new_address() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@imap-sandbox.test"


def connect_form(dovecot, email: str, *, password: str = PASSWORD, **overrides) -> dict[str, object]:
    return {
        "email": email,
        "username": "",
        "password": password,
        **imap_servers(dovecot),
        "sync_window": "all",
        **overrides,
    }


def page_errors(response) -> str:
    return response.content.decode()


@pytest.fixture
def alice_client(client, alice, imap_settings):
    client.force_login(alice)
    return client


# --- connecting ----------------------------------------------------------------------------------


def test_the_provider_is_one_registry_entry_with_its_own_client():
    provider = registry.get("imap")
    assert (provider.id, provider.name) == ("imap", "IMAP/SMTP")


def test_connect_checks_both_servers_saves_the_encrypted_password_and_the_first_sync_stores_the_mailbox(
    dovecot, alice_client, alice
):
    email = new_address()
    dovecot.set_password(email, PASSWORD)
    seed(dovecot, email, 12)
    assert 'id="connect-imap"' in alice_client.get("/accounts/").content.decode()
    assert alice_client.get(CONNECT).status_code == 200

    response = alice_client.post(CONNECT, connect_form(dovecot, email.upper()))

    assert response.status_code == 302, page_errors(response)
    account = MailAccount.objects.get(user=alice, provider="imap")
    assert (account.email, account.username, account.status) == (email, email, MailAccount.Status.ACTIVE)
    assert (account.imap_port, account.smtp_security) == (dovecot.imaps_port, "starttls")
    # Encrypted at rest: the column holds a Fernet token that decrypts to the password.
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM accounts_mailaccount WHERE id = %s", [account.pk])
        [raw] = cursor.fetchone()
    assert PASSWORD not in raw and decrypt(raw) == PASSWORD
    assert PASSWORD not in alice_client.get("/accounts/").content.decode()

    assert account_sync(account_id=account.pk).outcome == "ok"  # the task queued on connect, run here
    assert Message.objects.filter(account=account).count() == 12
    assert db_view(account) == server_view(dovecot, email)


class TinyImapServer:
    """A loopback IMAP server of a few lines: it greets with ``capability`` and answers every sign-in with
    ``login_reply`` (an IMAP2bis server; a server whose authentication service is down)."""

    def __init__(self, *, capability: bytes, login_reply: bytes = b"NO [AUTHENTICATIONFAILED] Failed") -> None:
        self.capability, self.login_reply = capability, login_reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"* OK [CAPABILITY " + self.capability + b"] ready\r\n")
            lines = conn.makefile("rb")
            for line in lines:
                tag, _, command = line.strip().partition(b" ")
                verb = command.split(b" ", 1)[0].upper()
                if verb == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY " + self.capability + b"\r\n" + tag + b" OK done\r\n")
                elif verb == b"AUTHENTICATE":
                    conn.sendall(b"+ \r\n")
                    lines.readline()  # the credentials
                    conn.sendall(tag + b" " + self.login_reply + b"\r\n")
                elif verb == b"LOGIN":
                    conn.sendall(tag + b" " + self.login_reply + b"\r\n")
                else:
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def not_imap_server():
    server = TinyImapServer(capability=b"IMAP2 AUTH=PLAIN")
    yield server
    server.close()


@pytest.fixture
def unavailable_imap_server():
    """Says IMAP4rev1, but its authentication service is down: ``NO [UNAVAILABLE]`` (RFC 5530)."""
    server = TinyImapServer(
        capability=b"IMAP4rev1 AUTH=PLAIN", login_reply=b"NO [UNAVAILABLE] Temporary authentication failure"
    )
    yield server
    server.close()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong password", "refused this username and password"),
        ("unreachable host", "could not be reached"),
        ("untrusted certificate", "certificate that is not trusted"),
        ("no IMAP4rev1", "does not speak IMAP4rev1"),
        ("wrong SMTP port", "The SMTP server at 127.0.0.1:"),
    ],
)
def test_each_failed_check_says_what_is_wrong_keeps_the_form_and_saves_nothing(
    dovecot, alice_client, imap_settings, not_imap_server, case, expected
):
    email = new_address()
    dovecot.set_password(email, PASSWORD)
    typed = connect_form(dovecot, email, username=f"login-{email}")
    if case == "wrong password":
        typed["password"] = "Not-The-Password-42"
    elif case == "unreachable host":
        typed["imap_port"] = free_port()
    elif case == "untrusted certificate":
        imap_settings.IMAP_CA_BUNDLE = ""  # the system's trust store does not know the test CA
    elif case == "no IMAP4rev1":
        typed.update(imap_port=not_imap_server.port, imap_security="none")
    elif case == "wrong SMTP port":
        typed["smtp_port"] = free_port()
    if case != "wrong password":
        typed["username"] = email

    response = alice_client.post(CONNECT, typed)

    body = response.content.decode()
    assert response.status_code == 400
    assert expected in body, body
    assert not MailAccount.objects.filter(provider="imap").exists()
    assert f'value="{email}"' in body and f'value="{typed["username"]}"' in body  # kept what was typed
    assert typed["password"] not in body  # except the password


def test_a_preset_matched_by_the_address_domain_fills_the_servers(dovecot, alice_client, alice):
    MailServerPreset.objects.create(
        name="Sandbox mail",
        domains="imap-sandbox.test other.test",
        imap_host="127.0.0.1",
        imap_port=dovecot.imaps_port,
        imap_security="ssl",
        smtp_host="127.0.0.1",
        smtp_port=dovecot.submission_port,
        smtp_security="starttls",
    )
    email = new_address()
    page = alice_client.get(CONNECT, {"email": email}).content.decode()
    assert f'value="{dovecot.imaps_port}"' in page and f'value="{dovecot.submission_port}"' in page

    dovecot.set_password(email, PASSWORD)
    blank_servers = {name: "" for name in imap_servers(dovecot)}
    response = alice_client.post(CONNECT, connect_form(dovecot, email, **blank_servers))

    assert response.status_code == 302, page_errors(response)
    account = MailAccount.objects.get(user=alice, email=email)
    assert (account.imap_port, account.smtp_port) == (dovecot.imaps_port, dovecot.submission_port)


def test_plain_text_to_another_machine_is_refused_before_any_connection(dovecot, alice_client):
    email = new_address()
    response = alice_client.post(
        CONNECT, connect_form(dovecot, email, imap_host="imap.example.net", imap_security="none")
    )
    assert response.status_code == 400
    assert "allowed only to this machine" in response.content.decode()


def test_the_provider_is_offered_only_when_an_administrator_enabled_it(client, alice, db):
    client.force_login(alice)
    assert 'id="connect-imap"' not in client.get("/accounts/").content.decode()
    assert client.get(CONNECT).status_code == 302


# --- sync, write-back, send: Outlook's transport with a password -----------------------------------


def client_for(account) -> ImapMailClient:
    client = account_client(account)  # through the registry, as the engines make it
    assert isinstance(client, ImapMailClient)
    return client


def test_full_then_incremental_sync_after_a_new_message(dovecot, imap_account):
    account = imap_account()
    seed(dovecot, account.email, 20)
    client_for(account).full_sync()
    assert Message.objects.filter(account=account).count() == 20
    roles = dict(Folder.objects.filter(account=account).values_list("remote_id", "role"))
    assert roles["Sent Items"] == "sent" and roles["INBOX"] == "inbox"

    seed(dovecot, account.email, 1, seed=7)
    dovecot.set_flags(account.email, "INBOX", dovecot.uids(account.email)[:2], [b"\\Flagged"])
    client_for(account).incremental_sync()

    assert Message.objects.filter(account=account).count() == 21
    assert db_view(account) == server_view(dovecot, account.email)


def test_flag_change_and_move_are_written_back(dovecot, imap_account):
    account = imap_account()
    seed(dovecot, account.email, 3)
    client_for(account).full_sync()
    first, second = Message.objects.filter(account=account).order_by("date")[:2]

    client_for(account).apply_changes(messages=local_messages([first]), change=MessageChange(kind=ChangeKind.STAR))
    client_for(account).apply_changes(messages=local_messages([second]), change=MessageChange(kind=ChangeKind.ARCHIVE))

    flagged = [uid for uid, flags in dovecot.snapshot(account.email).items() if b"\\Flagged" in flags]
    assert len(dovecot.uids(account.email, "Archive")) == 1 and len(dovecot.uids(account.email)) == 2
    client_for(account).incremental_sync()
    assert db_view(account) == server_view(dovecot, account.email)
    assert Message.objects.get(pk=first.pk).is_starred and flagged
    assert list(Message.objects.get(pk=second.pk).folders.values_list("remote_id", flat=True)) == ["Archive"]


def test_send_reaches_the_sink_once_and_is_filed_in_sent(dovecot, imap_account):
    from mailbox.outbox import outgoing_send

    account = imap_account()
    client_for(account).full_sync()
    outgoing = queued(account)

    assert outgoing_send(outgoing_id=outgoing.pk).outcome == "sent"
    [sent] = dovecot.sink.wait_for(1)
    assert sent.mail_from == account.email and sent.rcpt_tos == ["bob@example.org"]
    assert sent.message()["Message-ID"] == f"<{outgoing.message_id}>"
    assert "with ESMTPSA" in sent.message()["Received"]  # STARTTLS and AUTH with the password
    assert len(dovecot.uids(account.email, "Sent Items")) == 1
    client_for(account).incremental_sync()
    assert Message.objects.filter(account=account, message_id=outgoing.message_id).count() == 1
    assert OutgoingMessage.objects.get(pk=outgoing.pk).status == OutgoingMessage.Status.SENT
    assert len(dovecot.sink.messages) == 1


# --- a password changed on the server: Reconnect -------------------------------------------------


def test_a_changed_password_stops_the_sync_in_reconnect_and_the_new_password_resumes_it(
    dovecot, imap_account, client, alice, caplog
):
    caplog.set_level(logging.DEBUG)
    account = imap_account()
    seed(dovecot, account.email, 4)
    assert account_sync(account_id=account.pk).outcome == "ok"
    old_password = account.password
    dovecot.set_password(account.email, "Changed-On-The-Server-9")  # the user changed it elsewhere

    seed(dovecot, account.email, 1, seed=5)
    assert account_sync(account_id=account.pk).outcome == "stopped"
    account.refresh_from_db()
    assert account.status == MailAccount.Status.REAUTH_REQUIRED and account.needs_reconnect
    assert account.status_reason == "password_refused" and "new password" in account.status_message
    assert SyncState.objects.get(account=account).status == SyncState.Status.STOPPED
    assert account_sync(account_id=account.pk).outcome == "stopped"  # no retry loop

    client.force_login(alice)
    listing = client.get("/accounts/").content.decode()
    reconnect = f"/accounts/{account.pk}/password/"
    assert f'href="{reconnect}"' in listing
    wrong = client.post(reconnect, {"password": old_password})
    assert wrong.status_code == 400 and "refused this username and password" in wrong.content.decode()
    assert old_password not in wrong.content.decode()
    assert MailAccount.objects.get(pk=account.pk).status == MailAccount.Status.REAUTH_REQUIRED

    assert client.post(reconnect, {"password": "Changed-On-The-Server-9"}).status_code == 302
    account.refresh_from_db()
    assert account.status == MailAccount.Status.ACTIVE and account.password == "Changed-On-The-Server-9"
    assert account_sync(account_id=account.pk).outcome == "ok"
    assert Message.objects.filter(account=account).count() == 5
    for secret in (old_password, "Changed-On-The-Server-9"):
        assert secret not in caplog.text


def test_the_password_never_reaches_a_log_or_a_page(dovecot, alice_client, caplog):
    caplog.set_level(logging.DEBUG)
    email = new_address()
    dovecot.set_password(email, PASSWORD)
    failed = alice_client.post(CONNECT, connect_form(dovecot, email, password="Wrong-" + PASSWORD))
    assert alice_client.post(CONNECT, connect_form(dovecot, email)).status_code == 302
    account = MailAccount.objects.get(email=email)
    assert account_sync(account_id=account.pk).outcome == "ok"

    assert PASSWORD not in failed.content.decode()
    assert PASSWORD not in caplog.text
    assert PASSWORD not in alice_client.get("/accounts/").content.decode()
    assert PASSWORD not in alice_client.get(f"/accounts/{account.pk}/password/").content.decode()


def test_the_django_admin_shows_the_servers_but_never_the_password(dovecot, imap_account, client, admin_user):
    account = imap_account(password="Admin-Must-Not-See-5")
    client.force_login(admin_user)
    page = client.get(f"/admin/accounts/mailaccount/{account.pk}/change/").content.decode()
    assert account.imap_host in page and str(account.imap_port) in page
    assert "Admin-Must-Not-See-5" not in page


# --- Mail settings: on/off and presets --------------------------------------------------------------


def preset_post(**preset) -> dict[str, str]:
    data = {
        "provider": "imap",
        "imap-enabled": "on",
        "imap-custom_servers_allowed": "on",
        "presets-TOTAL_FORMS": "1",
        "presets-INITIAL_FORMS": "0",
        "presets-MIN_NUM_FORMS": "0",
        "presets-MAX_NUM_FORMS": "1000",
    }
    fields = {
        "name": "Fastmail",
        "domains": "fastmail.com, @FastMail.fm",
        "imap_host": "imap.fastmail.com",
        "imap_port": "993",
        "imap_security": "ssl",
        "smtp_host": "smtp.fastmail.com",
        "smtp_port": "465",
        "smtp_security": "ssl",
        **preset,
    }
    data.update({f"presets-0-{name}": value for name, value in fields.items()})
    return data


def test_an_administrator_enables_the_provider_and_adds_a_preset_users_then_get(client, admin_user, alice):
    from providers.models import ProviderApp, ProviderSettingsChange

    client.force_login(admin_user)
    page = client.get("/admin/settings/mail/").content.decode()
    assert 'id="provider-imap"' in page and 'id="server-presets"' in page

    response = client.post("/admin/settings/mail/", preset_post())

    assert response.status_code == 302
    assert ProviderApp.objects.get(provider="imap").is_usable
    preset = MailServerPreset.objects.get()
    assert (preset.domains, preset.smtp_port) == ("fastmail.com fastmail.fm", 465)
    assert ["presets"] in ProviderSettingsChange.objects.filter(provider="imap").values_list("fields", flat=True)
    client.force_login(alice)
    form = client.get(CONNECT, {"email": "someone@fastmail.fm"}).content.decode()
    assert 'value="imap.fastmail.com"' in form and 'value="smtp.fastmail.com"' in form


def test_a_preset_with_plain_text_to_another_host_is_refused_and_nothing_is_saved(client, admin_user):
    from providers.models import ProviderApp

    client.force_login(admin_user)
    response = client.post("/admin/settings/mail/", preset_post(imap_security="none"))

    assert response.status_code == 400
    assert "allowed only to this machine" in response.content.decode()
    assert not MailServerPreset.objects.exists()
    assert not ProviderApp.objects.get(provider="imap").enabled


def test_imap_with_starttls_connects_too(dovecot, alice_client, alice):
    email = new_address()
    dovecot.set_password(email, PASSWORD)
    response = alice_client.post(
        CONNECT, connect_form(dovecot, email, imap_port=dovecot.imap_port, imap_security="starttls")
    )
    assert response.status_code == 302, page_errors(response)
    account = MailAccount.objects.get(user=alice, email=email)
    seed(dovecot, email, 2)
    assert account_sync(account_id=account.pk).outcome == "ok"
    assert Message.objects.filter(account=account).count() == 2


def test_a_send_refused_for_a_changed_password_fails_it_and_asks_to_reconnect(dovecot, imap_account):
    from mailbox.outbox import outgoing_send

    account = imap_account()
    client_for(account).full_sync()
    dovecot.set_password(account.email, "Changed-Again-31")
    dovecot.kick(account.email)
    outgoing = queued(account)

    outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.status == OutgoingMessage.Status.FAILED and outgoing.last_error_code == "password_refused"
    assert "new password" in outgoing.error_message
    assert MailAccount.objects.get(pk=account.pk).status == MailAccount.Status.REAUTH_REQUIRED
    assert dovecot.sink.messages == []


def test_with_custom_servers_off_only_a_preset_is_used_whatever_was_posted(
    dovecot, alice_client, alice, not_imap_server
):
    from providers.models import ProviderApp

    ProviderApp.objects.filter(provider="imap").update(custom_servers_allowed=False)
    MailServerPreset.objects.create(
        name="Sandbox mail",
        domains="imap-sandbox.test",
        imap_host="127.0.0.1",
        imap_port=dovecot.imaps_port,
        imap_security="ssl",
        smtp_host="127.0.0.1",
        smtp_port=dovecot.submission_port,
        smtp_security="starttls",
    )
    page = alice_client.get(CONNECT).content.decode()
    assert 'name="imap_host"' not in page and 'name="preset"' in page

    email = new_address()
    dovecot.set_password(email, PASSWORD)
    # Servers smuggled into the POST are ignored: the preset for the domain is used.
    typed = connect_form(dovecot, email, imap_port=not_imap_server.port, imap_security="none")
    assert alice_client.post(CONNECT, typed).status_code == 302
    assert MailAccount.objects.get(user=alice, email=email).imap_port == dovecot.imaps_port

    other = "someone@elsewhere.test"
    response = alice_client.post(CONNECT, connect_form(dovecot, other))
    assert response.status_code == 400 and "No preset matches this address" in response.content.decode()
    assert not MailAccount.objects.filter(email=other).exists()


@pytest.mark.parametrize("field", ["username", "password"])
def test_line_breaks_in_the_sign_in_are_refused_before_any_connection(dovecot, alice_client, field):
    email = new_address()
    typed = connect_form(dovecot, email, imap_port=free_port())  # nothing listens: a connection would say so
    typed[field] = "first\r\nA1 LOGOUT"
    response = alice_client.post(CONNECT, typed)
    assert response.status_code == 400
    body = response.content.decode()
    assert "must not contain line breaks" in body and "could not be reached" not in body


def test_a_server_that_cannot_check_the_sign_in_now_is_retried_not_sent_to_reconnect(
    dovecot, imap_account, alice_client, unavailable_imap_server
):
    account = imap_account()
    MailAccount.objects.filter(pk=account.pk).update(imap_port=unavailable_imap_server.port, imap_security="none")

    assert account_sync(account_id=account.pk).outcome == "retry"
    account.refresh_from_db()
    assert account.status == MailAccount.Status.ACTIVE
    assert "could not check the sign-in just now" in SyncState.objects.get(account=account).last_error

    typed = connect_form(dovecot, new_address(), imap_port=unavailable_imap_server.port, imap_security="none")
    response = alice_client.post(CONNECT, typed)
    assert response.status_code == 400 and "Try again in a moment" in response.content.decode()


def test_starttls_asked_of_a_server_without_it_is_refused_and_nothing_goes_in_clear_text(dovecot, alice_client):
    no_starttls = TinyImapServer(capability=b"IMAP4rev1 AUTH=PLAIN")
    try:
        typed = connect_form(dovecot, new_address(), imap_port=no_starttls.port, imap_security="starttls")
        response = alice_client.post(CONNECT, typed)
    finally:
        no_starttls.close()
    assert response.status_code == 400 and "does not offer STARTTLS" in response.content.decode()


def test_an_imap4_server_without_rev1_is_refused_before_sign_in(dovecot, alice_client):
    imap4_only = TinyImapServer(capability=b"IMAP4 AUTH=PLAIN", login_reply=b"OK logged in")
    try:
        typed = connect_form(dovecot, new_address(), imap_port=imap4_only.port, imap_security="none")
        response = alice_client.post(CONNECT, typed)
    finally:
        imap4_only.close()
    assert response.status_code == 400 and "does not speak IMAP4rev1" in response.content.decode()
    assert not MailAccount.objects.exists()


def test_smtp_with_tls_from_the_first_byte_connects_and_sends(dovecot, alice_client, alice):
    from mailbox.outbox import outgoing_send

    email = new_address()
    dovecot.set_password(email, PASSWORD)
    typed = connect_form(dovecot, email, smtp_port=dovecot.submissions_port, smtp_security="ssl")
    response = alice_client.post(CONNECT, typed)
    assert response.status_code == 302, page_errors(response)

    account = MailAccount.objects.get(user=alice, email=email)
    assert outgoing_send(outgoing_id=queued(account).pk).outcome == "sent"
    [sent] = dovecot.sink.wait_for(1)
    assert sent.mail_from == email and "with ESMTPSA" in sent.message()["Received"]


def test_checks_are_limited_per_user_so_the_form_cannot_guess_passwords(dovecot, alice_client, alice, bob, settings):
    settings.MAILHUB_SERVER_CHECK_RATE = "3/d"  # a day: the test never straddles the limit's window boundary
    email = new_address()
    dovecot.set_password(email, PASSWORD)
    for attempt in range(3):
        wrong = alice_client.post(CONNECT, connect_form(dovecot, email, password=f"Guess-{attempt}"))
        assert "refused this username and password" in wrong.content.decode()
    tried = dovecot.log_tail(10**6).count(f"user=<{email}>")
    assert tried >= 3  # Dovecot logs each refused sign-in with the user's name
    limited = alice_client.post(CONNECT, connect_form(dovecot, email))
    assert limited.status_code == 400 and "Too many sign-in checks" in limited.content.decode()
    assert not MailAccount.objects.exists()  # even the right password waits
    assert dovecot.log_tail(10**6).count(f"user=<{email}>") == tried  # and no connection was made
    assert "Too many" not in alice_client.post(CONNECT, {}).content.decode()  # an invalid form costs nothing

    alice_client.force_login(bob)  # another user has an allowance of their own
    assert alice_client.post(CONNECT, connect_form(dovecot, email)).status_code == 302
