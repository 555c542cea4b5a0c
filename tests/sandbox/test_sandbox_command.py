"""`manage.py sandbox` as its own process: serves both providers, prints the env, loads a Gmail snapshot."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from django.conf import settings
from django.core.management import call_command
from google.auth.transport.requests import AuthorizedSession
from google.oauth2.credentials import Credentials

from sandbox.server import DEMO_GOOGLE_CLIENT_ID, DEMO_GOOGLE_CLIENT_SECRET, DEMO_USERS

OUTLOOK_DEMO = next(email for provider, email, _, has_mailbox in DEMO_USERS if provider == "microsoft" and has_mailbox)


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


def _google_tokens(sandbox, email: str) -> dict:
    """Consent as ``email`` and trade the code for tokens, as the app's connect flow does."""
    consent = requests.post(
        f"{sandbox.google_url}/o/oauth2/auth",
        params={
            "client_id": DEMO_GOOGLE_CLIENT_ID,
            "redirect_uri": "http://localhost/cb",
            "response_type": "code",
            "scope": "https://www.googleapis.com/auth/gmail.modify",
            "access_type": "offline",
        },
        data={"decision": "allow", "email": email},
        allow_redirects=False,
        timeout=10,
    )
    code = requests.utils.unquote(re.search(r"code=([^&]+)", consent.headers["Location"]).group(1))
    return _google_token_call(sandbox, grant_type="authorization_code", code=code, redirect_uri="http://localhost/cb")


def _google_token_call(sandbox, **form: str) -> dict:
    form = {**form, "client_id": DEMO_GOOGLE_CLIENT_ID, "client_secret": DEMO_GOOGLE_CLIENT_SECRET}
    return requests.post(f"{sandbox.google_url}/token", data=form, timeout=10).json()


def test_a_restarted_demo_sandbox_honours_its_tokens_and_keeps_its_mail(tmp_path):
    from sandbox.corpus import generate_messages
    from sandbox.server import Sandbox

    address, state = "alice@gmail.com", tmp_path / "state"
    first = Sandbox(tls_dir=tmp_path / "tls")
    first.register_demo()
    assert not first.state_load(state)  # nothing saved yet: the demo seeds
    first.start()
    first.gmail.add_user(address)
    for raw in generate_messages(5, to_address=address):
        first.gmail.insert_message(address, raw)
    tokens = _google_tokens(first, address)
    api = f"{first.google_url}/gmail/v1/users/me"
    history_id = AuthorizedSession(Credentials(tokens["access_token"])).get(f"{api}/profile", timeout=10).json()
    first.state_save(state)
    first.stop()

    again = Sandbox(tls_dir=tmp_path / "tls")
    again.register_demo()
    assert again.state_load(state)
    again.start()
    try:
        session = AuthorizedSession(Credentials(tokens["access_token"]))  # the old access token still works
        api = f"{again.google_url}/gmail/v1/users/me"
        assert session.get(f"{api}/profile", timeout=10).json()["messagesTotal"] == 5
        refreshed = _google_token_call(again, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refreshed["access_token"] != tokens["access_token"]
        # An app that was up to date asks for history from where it stood: nothing new, and no 404 forcing
        # a full resync.
        history = session.get(f"{api}/history", params={"startHistoryId": history_id["historyId"]}, timeout=10)
        assert history.status_code == 200 and "history" not in history.json()
        # A revoked token stays revoked across the restart.
        again.tokens.revoke(tokens["refresh_token"])
        again.state_save(state)
    finally:
        again.stop()
    third = Sandbox(tls_dir=tmp_path / "tls")
    third.register_demo()
    third.state_load(state)
    third.start()
    try:
        refused = _google_token_call(third, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refused["error"] == "invalid_grant"
    finally:
        third.stop()


def test_a_restarted_demo_dovecot_keeps_its_mail_and_is_seeded_once(sandbox):
    from sandbox.management.commands.demo import Command

    # Dovecot's mail user must traverse the folder: pytest's tmp_path is private, /tmp is not.
    root = Path(tempfile.mkdtemp(prefix="mailhub-test-demo-")) / "dovecot"
    root.parent.chmod(0o755)
    try:
        assert Command()._dovecot_root(root) == root
        first = Command()._start_outlook(sandbox, root, 4)
        assert first is not None
        assert len(first.uids(OUTLOOK_DEMO)) == 4
        first.stop()
        again = Command()._start_outlook(sandbox, root, 4)
        assert again is not None
        try:
            assert len(again.uids(OUTLOOK_DEMO)) == 4  # the same four, not seeded a second time
        finally:
            again.stop()
    finally:
        shutil.rmtree(root.parent)


def test_a_private_checkout_keeps_the_demo_dovecot_in_a_shared_folder_of_its_own(tmp_path):
    from sandbox.management.commands.demo import Command

    tmp_path.parent.chmod(0o700)  # as pytest makes it, and as var/ is (it holds the keys)
    wanted = tmp_path / "var" / "sandbox" / "dovecot"
    chosen, other = Command()._dovecot_root(wanted), Command()._dovecot_root(tmp_path / "elsewhere")
    try:
        assert chosen.name.startswith(f"mailhub-demo-dovecot-{os.getuid()}-")
        assert chosen.stat().st_mode & 0o777 == 0o755
        assert Command()._dovecot_root(wanted) == chosen  # the next run finds the same mail
        assert other != chosen  # another checkout keeps its own
    finally:
        shutil.rmtree(chosen)
        shutil.rmtree(other)
