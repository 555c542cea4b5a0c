"""A full sign-in and mailbox connection through the real `make run` web server, then every log line is read.

gunicorn is started with the exact command `make run` uses (mailhub.run.process_commands), with DEBUG logging,
against this test's database and the sandbox Google. Nothing secret may appear in its access log or its
application log: not the password, not the OAuth code or state, not a token, not the client secret.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from accounts.models import MailAccount
from mailhub.log_redaction import secrets_redact
from tests.fixtures.web import gunicorn_start

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "alice-password-1"
GMAIL = "alice.logs@gmail.test"


@pytest.fixture
def web_server(sandbox, tmp_path):
    env = {
        **sandbox.env(),
        "LOG_LEVEL": "DEBUG",
        "CELERY_TASK_ALWAYS_EAGER": "true",  # the first sync runs inside the web process: its logs are read too
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    log_path = tmp_path / "web.log"
    with gunicorn_start(env=env, log_path=log_path, var_dir=tmp_path / "var") as origin:
        yield origin, log_path


def _csrf(session: requests.Session, url: str) -> str:
    session.get(url, timeout=10)
    return session.cookies["csrftoken"]


def test_a_full_connect_flow_leaves_no_secret_in_any_log_line(web_server, sandbox, alice, google_app, settings):
    origin, log_path = web_server
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # what the server knows
    alice.set_password(PASSWORD)
    alice.save()
    session = requests.Session()
    session.trust_env = False

    token = _csrf(session, f"{origin}/login/")
    wrong = session.post(f"{origin}/login/", data={"csrfmiddlewaretoken": token, "username": "alice",
                                                  "password": "wrong-" + PASSWORD}, timeout=10)  # fmt: skip
    assert wrong.status_code == 200
    signed_in = session.post(
        f"{origin}/login/?next=/accounts/",
        timeout=10,
        allow_redirects=False,
        data={"csrfmiddlewaretoken": token, "username": "alice", "password": PASSWORD},
    )
    assert signed_in.status_code == 302, signed_in.text[:500]

    token = _csrf(session, f"{origin}/accounts/")
    start = session.post(f"{origin}/accounts/connect/google/", data={"csrfmiddlewaretoken": token,
                         "sync_window": "90"}, allow_redirects=False, timeout=10)  # fmt: skip
    authorize_url = start.headers["Location"]
    state = parse_qs(urlsplit(authorize_url).query)["state"][0]
    callback_url = sandbox.google.consent(authorize_url, email=GMAIL)
    code = parse_qs(urlsplit(callback_url).query)["code"][0]
    # A browser sends the provider's consent page as the Referer: it holds the state too.
    back = session.get(callback_url, headers={"Referer": authorize_url}, allow_redirects=False, timeout=60)
    assert back.status_code == 302 and back.headers["Location"] == "/accounts/"
    account = MailAccount.objects.get(user=alice, email=GMAIL)
    session.get(f"{origin}/accounts/", timeout=10)
    token = session.cookies["csrftoken"]
    session.post(f"{origin}/accounts/{account.pk}/disconnect/", data={"csrfmiddlewaretoken": token}, timeout=30)

    secrets = {
        "password": PASSWORD,
        "code": code,
        "state": state,
        "client secret": google_app.client_secret,
        "session cookie": session.cookies.get("sessionid") or "(none)",
        **{f"token {n}": t.value for n, t in enumerate(sandbox.google.issued_tokens(email=GMAIL))},
    }
    assert len(secrets) >= 7  # at least an access and a refresh token were issued
    log = log_path.read_text(errors="replace")
    for name, value in secrets.items():
        assert value not in log, f"the {name} is in the log"
    assert '"GET /admin/settings/mail/oauth2 HTTP/1.1" 302' in log  # the access log was captured
    assert '"POST /login/ HTTP/1.1" 302' in log and "AXES: New login failure" in log  # and the app's own lines
    assert "?" not in "".join(line for line in log.splitlines() if ' HTTP/1.1" ' in line)


def test_the_redaction_filter_blanks_secret_parameters():
    line = "GET /cb?code=4/abc-123&state=xyz&scope=email Referer: https://x/auth?state=xyz password=hunter2"
    assert secrets_redact(line) == (
        "GET /cb?code=[redacted]&state=[redacted]&scope=email Referer: https://x/auth?state=[redacted] "
        "password=[redacted]"
    )
    assert secrets_redact("Authorization: Bearer ya29.a0AfH6SMB-secret") == "Authorization: Bearer [redacted]"
    assert secrets_redact("postcode=12345 barcode=9") == "postcode=12345 barcode=9"
