"""Start-up settings: an unknown security, port or URL value stops the process with a message naming it;
plain-text IMAP/SMTP is an explicit ``none``, refused for a host other than this machine without the override;
and the IMAP/SMTP code checks the value again before it connects (``SSL`` now means TLS, never clear text)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from mailhub.config import host_is_loopback, mail_security
from providers.imap.connection import imap_connect
from providers.imap.smtp import smtp_connect
from providers.microsoft.exchange import imap_server, smtp_server

ROOT = Path(settings.BASE_DIR)
PRINT = "from django.conf import settings as s; print(s.{name})"


def start(tmp_path, name: str = "MICROSOFT_IMAP_SECURITY", **env: str) -> subprocess.CompletedProcess:
    """A fresh Python process that loads the settings (as manage.py, gunicorn and celery do) and prints one."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MICROSOFT_", "GOOGLE_", "SITE_"))}
    environ |= {"DJANGO_SETTINGS_MODULE": "mailhub.settings", "MAILHUB_VAR_DIR": str(tmp_path / "var"), **env}
    command = [sys.executable, "-c", "import django; django.setup(); " + PRINT.format(name=name)]
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)  # noqa: S603


@pytest.mark.parametrize(
    "variable,value",
    [
        ("MICROSOFT_IMAP_SECURITY", "tls"),
        ("MICROSOFT_SMTP_SECURITY", "SSL/TLS"),
        ("MICROSOFT_SMTP_SECURITY", "plain"),
        ("MICROSOFT_IMAP_PORT", "99999"),
        ("MICROSOFT_SMTP_PORT", "587x"),
        ("SITE_ORIGIN", "mail.example.com"),
        ("SITE_ORIGIN", "https://mail.example.com/mailhub"),
        ("GOOGLE_TOKEN_URI", "http://tokens.example.net/token"),
        ("GOOGLE_API_ROOT", "ftp://gmail.example/"),
        ("MICROSOFT_AUTHORITY_HOST", "http://127.0.0.1:9999"),
        ("DEBUG", "ture"),
        ("SECURE_HSTS_SECONDS", "a year"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: https"),
        ("LOG_LEVEL", "LOUD"),
        ("MAILHUB_SYNC_INTERVAL_SECONDS", "0"),
    ],
)
def test_an_unknown_value_stops_the_process_naming_the_variable(tmp_path, variable, value):
    result = start(tmp_path, **{variable: value})
    assert result.returncode != 0 and result.stdout == ""
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: " + variable), result.stderr[-500:]


def test_manage_py_stops_too(tmp_path):
    env = {**os.environ, "MAILHUB_VAR_DIR": str(tmp_path / "var"), "MICROSOFT_SMTP_SECURITY": "tls"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,  # noqa: S603
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "MICROSOFT_SMTP_SECURITY='tls' is not one of: ssl, starttls, none." in result.stderr


@pytest.mark.parametrize("value,expected", [("SSL", "ssl"), (" StartTLS ", "starttls"), ("ssl", "ssl")])
def test_known_values_in_any_case_are_accepted(tmp_path, value, expected):
    assert start(tmp_path, MICROSOFT_IMAP_SECURITY=value).stdout.strip() == expected


def test_plain_text_is_refused_for_a_remote_host_unless_overridden(tmp_path):
    refused = start(tmp_path, MICROSOFT_IMAP_SECURITY="none")  # default host outlook.office365.com
    assert refused.returncode != 0
    assert "would send the login token in clear text to outlook.office365.com" in refused.stderr
    assert "INSECURE_ALLOW_PLAINTEXT_MAIL=true" in refused.stderr
    local = start(tmp_path, MICROSOFT_SMTP_SECURITY="none", MICROSOFT_SMTP_HOST="127.0.0.1",
                  name="MICROSOFT_SMTP_SECURITY")  # fmt: skip
    assert local.returncode == 0 and local.stdout.strip() == "none"
    overridden = start(tmp_path, MICROSOFT_IMAP_SECURITY="none", INSECURE_ALLOW_PLAINTEXT_MAIL="true")
    assert overridden.returncode == 0 and overridden.stdout.strip() == "none"


def test_https_site_origin_sets_everything_https_needs(tmp_path):
    def value(name, **env):
        return start(tmp_path, name=name, SITE_ORIGIN="https://mail.example.com", **env).stdout.strip()

    assert value("SESSION_COOKIE_SECURE") == value("CSRF_COOKIE_SECURE") == value("SECURE_SSL_REDIRECT") == "True"
    assert value("SECURE_HSTS_SECONDS") == "31536000" and value("ALLOWED_HOSTS") == "['mail.example.com']"
    assert value("CSRF_TRUSTED_ORIGINS") == "['https://mail.example.com']"
    assert value("SECURE_PROXY_SSL_HEADER", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto") == (
        "('HTTP_X_FORWARDED_PROTO', 'https')"
    )
    plain = start(tmp_path, name="SESSION_COOKIE_SECURE", SITE_ORIGIN="http://127.0.0.1:8000").stdout.strip()
    assert plain == "False"


def test_host_is_loopback_without_dns():
    assert all(map(host_is_loopback, ["localhost", "127.0.0.1", "127.8.9.1", "::1", "[::1]", "app.localhost"]))
    remote = ["outlook.office365.com", "10.0.0.1", "localhost.example.com", "0.0.0.0"]  # noqa: S104
    assert not any(map(host_is_loopback, remote))
    with pytest.raises(ImproperlyConfigured):
        mail_security(variable="X", value="none", host="192.168.1.10", allow_plaintext=False)
    assert mail_security(variable="X", value="none", host="192.168.1.10", allow_plaintext=True) == "none"


# --- The IMAP and SMTP code itself ------------------------------------------------------------------


class FirstBytes:
    """A loopback server that greets like IMAP or SMTP and records the first bytes the client sends."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.received = b""
        self.connected = threading.Event()
        self.done = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.connected.set()
        with conn:
            conn.settimeout(5)
            conn.sendall(self.greeting)
            with contextlib.suppress(OSError):
                self.received = conn.recv(64)
        self.done.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def imap_listener():
    server = FirstBytes(b"* OK IMAP ready\r\n")
    yield server
    server.close()


@pytest.fixture
def smtp_listener():
    server = FirstBytes(b"220 smtp ready\r\n")
    yield server
    server.close()


TLS_HANDSHAKE = b"\x16\x03"  # a TLS record carrying a ClientHello


@pytest.mark.parametrize("value", ["SSL", "Ssl", "STARTTLS"])
def test_imap_in_any_case_starts_tls_before_anything_else(settings, imap_listener, value):
    settings.MICROSOFT_IMAP_HOST, settings.MICROSOFT_IMAP_PORT = "127.0.0.1", imap_listener.port
    settings.MICROSOFT_IMAP_SECURITY = value
    with pytest.raises(Exception):  # noqa: B017 - the listener speaks no TLS; what it received is the point
        imap_connect(imap_server(), name="Outlook", timeout=5)
    assert imap_listener.done.wait(5)
    if value.lower() == "ssl":
        assert imap_listener.received.startswith(TLS_HANDSHAKE)
    else:  # STARTTLS: the only plain-text command is the one that asks for TLS
        assert imap_listener.received.split(b" ", 1)[-1].upper() in {b"CAPABILITY\r\n", b"STARTTLS\r\n"}


@pytest.mark.parametrize("value", ["SSL", "sSl"])
def test_smtp_ssl_in_any_case_starts_tls(settings, smtp_listener, value):
    settings.MICROSOFT_SMTP_HOST, settings.MICROSOFT_SMTP_PORT = "127.0.0.1", smtp_listener.port
    settings.MICROSOFT_SMTP_SECURITY = value
    with pytest.raises(Exception):  # noqa: B017
        smtp_connect(smtp_server(), name="Outlook", timeout=5)
    assert smtp_listener.done.wait(5) and smtp_listener.received.startswith(TLS_HANDSHAKE)


@pytest.mark.parametrize("value", ["tls", "", "plain", "ssl3"])
def test_an_unknown_value_never_connects(settings, imap_listener, smtp_listener, value):
    settings.MICROSOFT_IMAP_HOST, settings.MICROSOFT_IMAP_PORT = "127.0.0.1", imap_listener.port
    settings.MICROSOFT_SMTP_HOST, settings.MICROSOFT_SMTP_PORT = "127.0.0.1", smtp_listener.port
    settings.MICROSOFT_IMAP_SECURITY = settings.MICROSOFT_SMTP_SECURITY = value
    with pytest.raises(ImproperlyConfigured, match="MICROSOFT_IMAP_SECURITY"):
        imap_connect(imap_server(), name="Outlook", timeout=5)
    with pytest.raises(ImproperlyConfigured, match="MICROSOFT_SMTP_SECURITY"):
        smtp_connect(smtp_server(), name="Outlook", timeout=5)
    assert not imap_listener.connected.is_set() and not smtp_listener.connected.is_set()


def test_plain_text_to_a_remote_host_never_connects(settings):
    settings.MICROSOFT_IMAP_HOST, settings.MICROSOFT_IMAP_SECURITY = "imap.example.net", "none"
    settings.MICROSOFT_SMTP_HOST, settings.MICROSOFT_SMTP_SECURITY = "smtp.example.net", "none"
    settings.INSECURE_ALLOW_PLAINTEXT_MAIL = False
    with pytest.raises(ImproperlyConfigured, match="clear text to imap.example.net"):
        imap_connect(imap_server(), name="Outlook", timeout=5)
    with pytest.raises(ImproperlyConfigured, match="clear text to smtp.example.net"):
        smtp_connect(smtp_server(), name="Outlook", timeout=5)


def test_plain_text_to_this_machine_still_works_for_test_servers(settings, smtp_listener):
    settings.MICROSOFT_SMTP_HOST, settings.MICROSOFT_SMTP_PORT = "127.0.0.1", smtp_listener.port
    settings.MICROSOFT_SMTP_SECURITY = "none"
    with pytest.raises(Exception):  # noqa: B017 - the listener hangs up after the first bytes
        smtp_connect(smtp_server(), name="Outlook", timeout=5)
    assert smtp_listener.done.wait(5) and smtp_listener.received.upper().startswith(b"EHLO")
