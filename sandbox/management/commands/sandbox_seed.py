"""``manage.py sandbox_seed``: put mail into a sandbox Gmail mailbox.

    manage.py sandbox_seed --email alice@gmail.com --count 500            # into a running `manage.py sandbox`
    manage.py sandbox_seed --email alice@gmail.com --eml sandbox/corpus   # .eml files or folders of them
    manage.py sandbox_seed --email alice@gmail.com --mbox export.mbox --snapshot var/sandbox/gmail.json.gz

By default the messages go over loopback to the running sandbox's Gmail API (``--url``, the
sandbox's Google port); with ``--snapshot`` they are added to a snapshot file instead, which
``GmailStore.load`` reads (e.g. when the sandbox starts).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.corpus import generate_messages
from sandbox.gmail.store import GmailStore

CHUNK = 200


def mbox_messages(path: Path) -> Iterator[bytes]:
    """The messages of an mbox file (mboxo/mboxrd: ">From " lines are unescaped one level)."""
    current: list[bytes] | None = None
    with path.open("rb") as handle:
        for line in handle:
            if line.startswith(b"From "):
                if current is not None:
                    yield _mbox_message(current)
                current = []
                continue
            if current is None:
                continue
            current.append(line[1:] if re.match(rb">+From ", line) else line)
    if current is not None:
        yield _mbox_message(current)


def _mbox_message(lines: list[bytes]) -> bytes:
    data = b"".join(lines)
    return data[:-1] if data.endswith(b"\n\n") else data  # the blank line that separates messages


def eml_messages(paths: list[str]) -> Iterator[bytes]:
    for name in paths:
        path = Path(name)
        files = sorted(path.glob("*.eml")) if path.is_dir() else [path]
        for file in files:
            yield file.read_bytes()


def post_messages(url: str, email: str, raws: list[bytes]) -> list[str]:
    """Insert ``raws`` into a running sandbox through its control endpoint; returns the message ids."""
    body = json.dumps({"messages": [{"raw": base64.urlsafe_b64encode(raw).decode()} for raw in raws]}).encode()
    endpoint = f"{url.rstrip('/')}/gmail/v1/sandbox/users/{quote(email)}/messages"
    if not endpoint.startswith(("http://127.", "http://localhost", "https://127.", "https://localhost")):
        raise CommandError("The sandbox URL must be on loopback.")
    request = urllib.request.Request(  # noqa: S310 - loopback only, checked
        endpoint,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        return json.loads(response.read())["ids"]


class Command(BaseCommand):
    help = "Load generated messages, .eml files or an mbox into a sandbox Gmail mailbox."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True, help="The Gmail address of the mailbox.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--count", type=int, help="Generate this many realistic messages.")
        source.add_argument("--eml", nargs="+", help=".eml files, or folders whose *.eml are loaded.")
        source.add_argument("--mbox", help="An mbox file.")
        parser.add_argument("--seed", type=int, default=0, help="Generator seed (with --count).")
        target = parser.add_mutually_exclusive_group()
        target.add_argument(
            "--url", default="http://127.0.0.1:8701", help="A running sandbox's Google URL (default: %(default)s)."
        )
        target.add_argument("--snapshot", help="Add to this GmailStore snapshot file instead (.json.gz).")

    def handle(self, *args: Any, **options: Any) -> None:
        email = options["email"]
        if options["count"] is not None:
            raws: Iterator[bytes] = generate_messages(options["count"], to_address=email, seed=options["seed"])
        elif options["eml"]:
            raws = eml_messages(options["eml"])
        else:
            raws = mbox_messages(Path(options["mbox"]))
        if options["snapshot"]:
            total = self._into_snapshot(Path(options["snapshot"]), email, raws)
            self.stdout.write(self.style.SUCCESS(f"{total} messages added for {email} to {options['snapshot']}."))
            return
        total, batch = 0, []
        try:
            for raw in raws:
                batch.append(raw)
                if len(batch) == CHUNK:
                    total += len(post_messages(options["url"], email, batch))
                    batch = []
            if batch:
                total += len(post_messages(options["url"], email, batch))
        except OSError as exc:
            raise CommandError(f"Could not reach the sandbox at {options['url']} ({exc}); is it running?") from exc
        self.stdout.write(self.style.SUCCESS(f"{total} messages added for {email} at {options['url']}."))

    @staticmethod
    def _into_snapshot(path: Path, email: str, raws: Iterator[bytes]) -> int:
        store = GmailStore()
        if path.exists():
            store.load(path)
        ids = store.seed(email, raws)
        path.parent.mkdir(parents=True, exist_ok=True)
        store.save(path)
        return len(ids)
