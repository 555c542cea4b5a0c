"""`manage.py sandbox` as its own process: serves both providers, prints the env, loads a Gmail snapshot."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings
from django.core.management import call_command
from google.auth.transport.requests import AuthorizedSession
from google.oauth2.credentials import Credentials

from sandbox.server import DEMO_GOOGLE_CLIENT_ID, DEMO_GOOGLE_CLIENT_SECRET


def _start(tmp_path: Path, snapshot: Path) -> tuple[subprocess.Popen, Path]:
    env_file = tmp_path / "sandbox.env"
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "manage.py",
            "sandbox",
            "--google-port",
            "0",
            "--microsoft-port",
            "0",
            "--introspection-port",
            "0",
            "--tls-dir",
            str(tmp_path / "tls"),
            "--env-file",
            str(env_file),
            "--gmail-snapshot",
            str(snapshot),
        ],
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    deadline = time.monotonic() + 30
    while not env_file.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert env_file.exists(), process.stdout.read().decode() if process.poll() is not None else "no env file"
    return process, env_file


def test_sandbox_command_serves_oauth_and_the_seeded_gmail_mailbox(tmp_path):
    snapshot = tmp_path / "gmail.json.gz"
    call_command("sandbox_seed", "--email", "carol@gmail.test", "--count", "25", "--snapshot", str(snapshot))
    process, env_file = _start(tmp_path, snapshot)
    try:
        env = dict(re.findall(r"export (\w+)=(\S+)", env_file.read_text()))
        assert env["OAUTHLIB_INSECURE_TRANSPORT"] == "1" and env["MICROSOFT_CA_BUNDLE"].endswith(".pem")
        discovery = requests.get(
            f"{env['MICROSOFT_AUTHORITY_HOST']}/common/v2.0/.well-known/openid-configuration",
            verify=env["MICROSOFT_CA_BUNDLE"],
            timeout=10,
        )
        assert discovery.json()["token_endpoint"].startswith(env["MICROSOFT_AUTHORITY_HOST"])

        consent = requests.post(
            env["GOOGLE_AUTH_URI"],
            params={
                "client_id": DEMO_GOOGLE_CLIENT_ID,
                "redirect_uri": "http://localhost/cb",
                "response_type": "code",
                "scope": "https://www.googleapis.com/auth/gmail.modify",
                "access_type": "offline",
            },
            data={"decision": "allow", "email": "carol@gmail.test"},
            allow_redirects=False,
            timeout=10,
        )
        code = re.search(r"code=([^&]+)", consent.headers["Location"]).group(1)
        token = requests.post(
            env["GOOGLE_TOKEN_URI"],
            data={
                "grant_type": "authorization_code",
                "code": requests.utils.unquote(code),
                "redirect_uri": "http://localhost/cb",
                "client_id": DEMO_GOOGLE_CLIENT_ID,
                "client_secret": DEMO_GOOGLE_CLIENT_SECRET,
            },
            timeout=10,
        ).json()
        session = AuthorizedSession(Credentials(token["access_token"]))
        profile = session.get(f"{env['GOOGLE_API_ROOT']}gmail/v1/users/me/profile", timeout=10).json()
        assert profile == {**profile, "emailAddress": "carol@gmail.test", "messagesTotal": 25}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    assert "Sandbox stopped." in process.stdout.read().decode()


def test_demo_tells_at_start_which_mailboxes_of_an_earlier_run_need_reconnecting(db, django_user_model):
    from accounts.models import MailAccount
    from sandbox.management.commands.demo import Command

    user = django_user_model.objects.create_user("demo-user")
    earlier = MailAccount.objects.create(user=user, provider="google", email="a@gmail.test")
    imap = MailAccount.objects.create(user=user, provider="imap", email="b@example.org")
    assert Command()._mark_earlier_mailboxes() == 1
    earlier.refresh_from_db()
    imap.refresh_from_db()
    assert earlier.needs_reconnect and "revoked" in earlier.status_message
    assert not imap.needs_reconnect  # its password still works: the sandbox never held it
    assert Command()._mark_earlier_mailboxes() == 0
