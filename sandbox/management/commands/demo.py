"""``make demo``: the app, worker and beat against the local sandbox, with demo logins and mailboxes."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from accounts.models import MailAccount
from accounts.services import account_mark_needs_reconnect
from mailhub.run import run_all
from providers.errors import ErrorCode
from providers.models import ProviderApp
from sandbox.corpus import generate_messages
from sandbox.dovecot import DovecotServer
from sandbox.server import DEMO_USERS, Sandbox

ADMIN = ("admin", "admin-demo-password")
STATE_SAVE_SECONDS = 15
DEMO_ALIAS = "sales@mailhub-demo.example"  # a verified "Send mail as" address of the demo Gmail account
USER = ("demo", "demo-password")


class Command(BaseCommand):
    help = "Start Mailhub against the local Google/Microsoft sandbox, with an admin, a user and demo mail."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--messages", type=int, default=300, help="Messages to seed into each demo mailbox.")
        parser.add_argument("--bind", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        folder = Path(settings.VAR_DIR) / "sandbox"
        sandbox = Sandbox(tls_dir=folder / "tls")
        credentials = sandbox.register_demo()
        restored = sandbox.state_load(folder / "state")
        sandbox.start()
        gmail_address = next(email for provider, email, _, _ in DEMO_USERS if provider == "google")
        if not restored:
            self._seed_gmail(sandbox, gmail_address, options["messages"])
        extra_env = {**sandbox.env(), "MAILHUB_BIND": options["bind"]}
        outlook = self._start_outlook(sandbox, self._dovecot_root(folder / "dovecot"), options["messages"])
        if outlook is not None:
            extra_env.update(outlook.env())
        self._configure(credentials)
        stale = 0 if restored else self._mark_earlier_mailboxes()
        saver = _StateSaver(sandbox, folder / "state")
        saver.start()

        out = self.stdout.write
        out(self.style.SUCCESS(f"\nMailhub demo: http://{options['bind']}/"))
        out(f"  Admin:  {ADMIN[0]} / {ADMIN[1]}   (Mail settings are filled in with sandbox credentials)")
        out(f"  User:   {USER[0]} / {USER[1]}")
        out("  Connect mailbox → Google: sign in as " + gmail_address)
        if outlook is not None:
            outlook_address = next(e for p, e, _, has in DEMO_USERS if p == "microsoft" and has)
            out(f"  Connect mailbox → Microsoft: sign in as {outlook_address} (served by a local Dovecot)")
        out("  Everything here is local; nothing reaches Google or Microsoft.\n")
        if stale:
            out(
                self.style.WARNING(
                    f"  {stale} mailbox(es) connected in an earlier demo run must be reconnected: the sandbox starts "
                    "afresh each time, so their old sign-in is gone. Mail accounts → Reconnect.\n"
                )
            )
        try:
            run_all(extra_env=extra_env)
        finally:
            saver.stop()
            if outlook is not None:
                outlook.stop()
            sandbox.stop()

    def _configure(self, credentials: dict[str, str]) -> None:
        users = get_user_model().objects
        if not users.filter(username=ADMIN[0]).exists():
            users.create_superuser(ADMIN[0], "admin@example.com", ADMIN[1])
        if not users.filter(username=USER[0]).exists():
            users.create_user(USER[0], "demo@example.com", USER[1])
        for provider in ("google", "microsoft"):
            ProviderApp.objects.update_or_create(
                provider=provider,
                defaults={
                    "client_id": credentials[f"{provider}_client_id"],
                    "client_secret": credentials[f"{provider}_client_secret"],
                    "enabled": True,
                    "tenant": "common",
                },
            )

    def _mark_earlier_mailboxes(self) -> int:
        """Google and Microsoft mailboxes of an earlier run hold tokens this new sandbox never issued: the user
        is told at once to reconnect them, instead of meeting failed syncs."""
        stale = MailAccount.objects.filter(provider__in=("google", "microsoft")).exclude(
            status__in=(MailAccount.Status.REAUTH_REQUIRED, MailAccount.Status.NO_MAILBOX)
        )
        for account in stale:
            account_mark_needs_reconnect(account=account, reason=ErrorCode.ACCESS_REVOKED)
        return len(stale)

    def _seed_gmail(self, sandbox: Sandbox, address: str, count: int) -> None:
        if not sandbox.has_gmail_api:
            return
        sandbox.gmail.add_user(address)
        name = next(name for provider, email, name, _ in DEMO_USERS if email == address)
        sandbox.gmail.display_name_set(address, name)
        sandbox.gmail.send_as_add(address, DEMO_ALIAS, display_name=f"{name} (Sales)")
        for raw in generate_messages(count, to_address=address):
            sandbox.gmail.insert_message(address, raw)

    def _dovecot_root(self, wanted: Path) -> Path:
        """Dovecot's mail processes run as another user and must reach its folder. ``var/`` is private (it holds
        the keys), so the mail lives in a folder of its own under the shared temporary folder, named after
        ``wanted`` so that each checkout finds its own again; a folder there that is not ours is never used."""
        if _reachable_by_others(wanted.parent):
            return wanted
        shared = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path(tempfile.gettempdir())  # noqa: S108
        digest = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:16]
        root = shared / f"mailhub-demo-dovecot-{os.getuid()}-{digest}"
        try:
            root.mkdir(mode=0o755, exist_ok=True)
            if root.is_symlink() or root.stat().st_uid != os.getuid():
                raise PermissionError(f"{root} belongs to someone else")
        except OSError as exc:
            self.stderr.write(f"The Outlook demo mail is not kept across runs ({exc}).")
            return Path(tempfile.mkdtemp(prefix="mailhub-demo-dovecot-"))
        return root

    def _start_outlook(self, sandbox: Sandbox, root: Path, count: int) -> DovecotServer | None:
        """A local Dovecot standing in for Outlook's IMAP/SMTP, or None where it can't run here. Its mail is
        kept in ``root`` and seeded once, so a restarted demo finds the mailbox as it was left."""
        root.mkdir(parents=True, exist_ok=True)
        try:
            dovecot = DovecotServer(
                introspection_url=sandbox.microsoft_introspection_url, tls=sandbox.tls, root=root
            ).start()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            self.stderr.write(f"Outlook demo disabled: Dovecot could not start ({exc}).")
            return None
        address = next(e for p, e, _, has in DEMO_USERS if p == "microsoft" and has)
        seeded = root / "seeded"
        if not seeded.exists():
            dovecot.seed(address, count, seed=1)
            seeded.touch()
        return dovecot


def _reachable_by_others(folder: Path) -> bool:
    folder = folder.resolve()
    return all(path.stat().st_mode & stat.S_IXOTH for path in (folder, *folder.parents) if path.exists())


class _StateSaver:
    """Saves the sandbox's tokens and Gmail mail every few seconds and at exit, so even a killed demo restarts
    with its mailboxes still connected."""

    def __init__(self, sandbox: Sandbox, folder: Path) -> None:
        self._sandbox, self._folder = sandbox, folder
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sandbox-state")

    def start(self) -> None:
        self._sandbox.state_save(self._folder)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._sandbox.state_save(self._folder)

    def _run(self) -> None:
        while not self._stopped.wait(STATE_SAVE_SECONDS):
            self._sandbox.state_save(self._folder)
