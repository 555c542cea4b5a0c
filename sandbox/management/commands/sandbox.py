"""``manage.py sandbox``: serve the Google and Microsoft stand-ins on loopback in the foreground."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from sandbox.server import DEMO_USERS, Sandbox


class Command(BaseCommand):
    help = (
        "Serve local stand-ins for Google's and Microsoft's OAuth endpoints (and the Gmail API when present), "
        "register demo clients and users, and print the environment variables that point Mailhub at them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--google-port", type=int, default=8701, help="HTTP port for Google (0: any free port).")
        parser.add_argument(
            "--microsoft-port", type=int, default=8702, help="HTTPS port for Microsoft (0: any free port)."
        )
        parser.add_argument(
            "--introspection-port",
            type=int,
            default=8703,
            help="Plain-HTTP port for Microsoft token introspection (0: any free port).",
        )
        parser.add_argument(
            "--tls-dir", default=None, help="Where the sandbox CA and certificate live (default: var/sandbox/tls)."
        )
        parser.add_argument("--env-file", default=None, help="Also write the export lines to this file.")
        parser.add_argument(
            "--gmail-snapshot",
            default=None,
            help="Load Gmail mailboxes from a snapshot written by `manage.py sandbox_seed --snapshot`.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tls_dir = Path(options["tls_dir"] or Path(settings.VAR_DIR) / "sandbox" / "tls")
        sandbox = Sandbox(
            google_port=options["google_port"],
            microsoft_port=options["microsoft_port"],
            introspection_port=options["introspection_port"],
            tls_dir=tls_dir,
        )
        credentials = sandbox.register_demo()
        if options["gmail_snapshot"] and sandbox.has_gmail_api:
            sandbox.gmail.load(options["gmail_snapshot"])
        sandbox.start()
        exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in sandbox.env().items())
        if options["env_file"]:
            Path(options["env_file"]).write_text(exports + "\n")

        out = self.stdout.write
        out(self.style.SUCCESS("Mailhub sandbox is running (Ctrl-C to stop)."))
        out(f"  Google (HTTP):            {sandbox.google_url}")
        out(f"  Gmail API mounted:        {'yes' if sandbox.has_gmail_api else 'no (sandbox.gmail not found)'}")
        out(f"  Microsoft (HTTPS):        {sandbox.microsoft_url}  (CA: {sandbox.ca_path})")
        out(f"  Introspection (HTTP):     {sandbox.microsoft_introspection_url}")
        out(f"  Introspection (HTTPS):    {sandbox.microsoft_introspection_https_url}")
        out("\nDemo OAuth clients (sandbox only; any redirect URI is accepted):")
        out(f"  Google    client id: {credentials['google_client_id']}")
        out(f"            secret:    {credentials['google_client_secret']}")
        out(f"  Microsoft client id: {credentials['microsoft_client_id']}  tenant: common")
        out(f"            secret:    {credentials['microsoft_client_secret']}")
        out("\nDemo users (any other address typed on a consent page works too):")
        for provider, email, name, has_mailbox in DEMO_USERS:
            out(f"  {provider:<10} {email:<28} {name}{'' if has_mailbox else '  (no Outlook mailbox)'}")
        out("\nPoint Mailhub at the sandbox:")
        out(exports)

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        try:
            stop.wait()
        finally:
            sandbox.stop()
            out("Sandbox stopped.")
