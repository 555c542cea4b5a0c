"""``make demo``: the app, worker and beat against the local sandbox, with demo logins and mailboxes."""

from __future__ import annotations

import subprocess
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
from sandbox.server import DEMO_USERS, Sandbox

ADMIN = ("admin", "admin-demo-password")
USER = ("demo", "demo-password")


class Command(BaseCommand):
    help = "Start Mailhub against the local Google/Microsoft sandbox, with an admin, a user and demo mail."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--messages", type=int, default=300, help="Messages to seed into each demo mailbox.")
        parser.add_argument("--bind", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        sandbox = Sandbox(tls_dir=Path(settings.VAR_DIR) / "sandbox" / "tls")
        credentials = sandbox.register_demo()
        sandbox.start()
        gmail_address = next(email for provider, email, _, _ in DEMO_USERS if provider == "google")
        self._seed_gmail(sandbox, gmail_address, options["messages"])
        extra_env = {**sandbox.env(), "MAILHUB_BIND": options["bind"]}
        outlook = self._start_outlook(sandbox, options["messages"])
        if outlook is not None:
            extra_env.update(outlook)
        self._configure(credentials)
        stale = self._mark_earlier_mailboxes()

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
        for raw in generate_messages(count, to_address=address):
            sandbox.gmail.insert_message(address, raw)

    def _start_outlook(self, sandbox: Sandbox, count: int) -> dict[str, str] | None:
        """A local Dovecot standing in for Outlook's IMAP/SMTP, or None where it can't run here."""
        from sandbox.dovecot import DovecotServer

        try:
            dovecot = DovecotServer(introspection_url=sandbox.microsoft_introspection_url, tls=sandbox.tls).start()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            self.stderr.write(f"Outlook demo disabled: Dovecot could not start ({exc}).")
            return None
        address = next(e for p, e, _, has in DEMO_USERS if p == "microsoft" and has)
        dovecot.seed(address, count, seed=1)
        return dovecot.env()
