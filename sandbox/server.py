"""The whole sandbox: Google (HTTP, with the Gmail API mounted), Microsoft (HTTPS; its sign-in page also on
HTTP, so a browser never meets the sandbox CA) and introspection (HTTP).

sandbox = Sandbox(tls_dir=tmp).start()
sandbox.google.register_client("id", "secret")
os.environ.update(sandbox.env())
...
sandbox.stop()
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from sandbox.google_identity import GoogleIdentity
from sandbox.http import LoopbackServer, PrefixRouter, WSGIApp
from sandbox.identity import SigningKey
from sandbox.microsoft_identity import MicrosoftIdentity
from sandbox.tls import TlsFiles, tls_files_create
from sandbox.tokens import TokenRegistry

try:  # The Gmail API stand-in is written separately; without it only the identity endpoints exist.
    from sandbox.gmail.app import GmailApp, GmailStore
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the other package being present
    if exc.name not in ("sandbox.gmail", "sandbox.gmail.app"):
        raise  # a real bug inside the Gmail package must not silently unmount it
    GmailApp = GmailStore = None  # type: ignore[assignment,misc]

# Fixed demo credentials for `manage.py sandbox` and `make demo` (sandbox only, never real).
DEMO_GOOGLE_CLIENT_ID = "mailhub-demo.apps.googleusercontent.com"
DEMO_GOOGLE_CLIENT_SECRET = "GOCSPX-sandbox-demo-secret"
DEMO_MICROSOFT_CLIENT_ID = "00000000-0000-4000-8000-00000000d3e0"
DEMO_MICROSOFT_CLIENT_SECRET = "sandbox~demo-secret"
DEMO_USERS = (
    ("google", "alice@gmail.com", "Alice Example", True),
    ("google", "bob@gmail.com", "Bob Example", True),
    ("microsoft", "alice@outlook.example", "Alice Example", True),
    ("microsoft", "bob@outlook.example", "Bob Example", True),
    ("microsoft", "nomailbox@outlook.example", "No Mailbox", False),
)


STATE_TOKENS = "tokens.json"
STATE_GMAIL = "gmail.json.gz"


class Sandbox:
    """Google and Microsoft stand-ins on loopback, sharing one :class:`TokenRegistry`."""

    def __init__(
        self,
        *,
        google_port: int = 0,
        microsoft_port: int = 0,
        introspection_port: int = 0,
        tls_dir: Path | str | None = None,
        access_token_lifetime: float = 3600,
    ) -> None:
        self._tmp = None
        if tls_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mailhub-sandbox-tls-")
            tls_dir = self._tmp.name
        self.tls: TlsFiles = tls_files_create(folder=tls_dir)
        self.tokens = TokenRegistry()
        key = SigningKey()
        self.google = GoogleIdentity(tokens=self.tokens, signing_key=key, access_token_lifetime=access_token_lifetime)
        self.microsoft = MicrosoftIdentity(
            tokens=self.tokens, signing_key=key, access_token_lifetime=access_token_lifetime
        )
        self.gmail: Any = GmailStore() if GmailStore is not None else None

        google_mounts: dict[str, WSGIApp] = {"/": self.google}
        if self.gmail is not None:
            gmail_app = GmailApp(tokens=self.tokens, store=self.gmail)
            # google-api-python-client posts batches to "<rootUrl>batch" (no trailing slash).
            google_mounts.update(
                {prefix: gmail_app for prefix in ("/gmail/", "/batch", "/upload/", "/resumable/upload/")}
            )
        self._google_server = LoopbackServer(PrefixRouter(google_mounts), port=google_port)
        self._microsoft_server = LoopbackServer(
            self.microsoft, port=microsoft_port, ssl_context=self.tls.server_context()
        )
        self._introspection_server = LoopbackServer(self.microsoft.introspection_app, port=introspection_port)
        self._microsoft_sign_in_server = LoopbackServer(self.microsoft.sign_in_app)

        self.google.base_url = self.google_url
        self.microsoft.base_url = self.microsoft_url
        self.microsoft.sign_in_url = self._microsoft_sign_in_server.url
        self.microsoft.ca_path = str(self.tls.ca_path)
        self._started = False

    @property
    def has_gmail_api(self) -> bool:
        return self.gmail is not None

    @property
    def google_url(self) -> str:
        return self._google_server.url

    @property
    def microsoft_url(self) -> str:
        return self._microsoft_server.url

    @property
    def microsoft_introspection_url(self) -> str:
        """Plain-HTTP introspection (no CA to trust); the same endpoint is at ``<microsoft_url>/introspect``."""
        return f"{self._introspection_server.url}/introspect"

    @property
    def microsoft_introspection_https_url(self) -> str:
        return f"{self.microsoft_url}/introspect"

    @property
    def ca_path(self) -> str:
        return str(self.tls.ca_path)

    def microsoft_authority(self, tenant: str = "common") -> str:
        return f"{self.microsoft_url}/{tenant}"

    def env(self) -> dict[str, str]:
        """Settings/environment variables that point the app at this sandbox."""
        google = self.google_url
        return {
            "GOOGLE_AUTH_URI": f"{google}/o/oauth2/auth",
            "GOOGLE_TOKEN_URI": f"{google}/token",
            "GOOGLE_REVOKE_URI": f"{google}/revoke",
            "GOOGLE_USERINFO_URI": f"{google}/v1/userinfo",
            "GOOGLE_API_ROOT": f"{google}/",
            "MICROSOFT_AUTHORITY_HOST": self.microsoft_url,
            "MICROSOFT_SIGN_IN_ORIGIN": self.microsoft.sign_in_url,
            "MICROSOFT_CA_BUNDLE": self.ca_path,
            "OAUTHLIB_INSECURE_TRANSPORT": "1",
        }

    def register_demo(self) -> dict[str, str]:
        """Register the fixed demo clients (any redirect URI) and demo users; returns the credentials."""
        self.google.register_client(DEMO_GOOGLE_CLIENT_ID, DEMO_GOOGLE_CLIENT_SECRET, name="Mailhub (demo)")
        self.microsoft.register_client(DEMO_MICROSOFT_CLIENT_ID, DEMO_MICROSOFT_CLIENT_SECRET, name="Mailhub (demo)")
        for provider, email, name, has_mailbox in DEMO_USERS:
            identity = self.google if provider == "google" else self.microsoft
            identity.add_user(email, name=name, has_mailbox=has_mailbox)
        return {
            "google_client_id": DEMO_GOOGLE_CLIENT_ID,
            "google_client_secret": DEMO_GOOGLE_CLIENT_SECRET,
            "microsoft_client_id": DEMO_MICROSOFT_CLIENT_ID,
            "microsoft_client_secret": DEMO_MICROSOFT_CLIENT_SECRET,
        }

    def reset(self) -> None:
        """Clear failure injections, codes and issued tokens on both providers (clients and users stay)."""
        self.google.reset()
        self.microsoft.reset()

    def reset_failures(self) -> None:
        self.google.reset_failures()
        self.microsoft.reset_failures()

    def state_save(self, folder: Path) -> None:
        """Write the issued tokens and the Gmail mailboxes to ``folder``, so a restart keeps connected
        mailboxes working (``make demo``). Each file is replaced whole: a crash mid-write keeps the old one."""
        folder.mkdir(parents=True, exist_ok=True)
        tokens = folder / STATE_TOKENS
        tokens.with_suffix(".tmp").write_text(json.dumps(self.tokens.dump()))
        tokens.with_suffix(".tmp").replace(tokens)
        if self.gmail is not None:
            gmail = folder / STATE_GMAIL
            partial = gmail.with_name(gmail.name + ".tmp")
            self.gmail.save(partial)
            partial.replace(gmail)

    def state_load(self, folder: Path) -> bool:
        """Take back what :meth:`state_save` wrote; False when there is nothing to take back."""
        tokens = folder / STATE_TOKENS
        if not tokens.exists():
            return False
        self.tokens.load(json.loads(tokens.read_text()))
        if self.gmail is not None and (folder / STATE_GMAIL).exists():
            self.gmail.load(folder / STATE_GMAIL)
        return True

    def start(self) -> Sandbox:
        if not self._started:
            self._google_server.start()
            self._microsoft_server.start()
            self._introspection_server.start()
            self._microsoft_sign_in_server.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._google_server.stop()
            self._microsoft_server.stop()
            self._introspection_server.stop()
            self._microsoft_sign_in_server.stop()
            self._started = False
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
