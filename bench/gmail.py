"""Gmail sync benchmark against the in-process sandbox Gmail API over real HTTP.

Runs on a throwaway test database (Django's test-database machinery: a temp SQLite file, or
``test_<name>`` on PostgreSQL when DATABASE_URL points there) and a temp MEDIA_ROOT; never touches
``var/mailhub.sqlite3``. ``BENCH_GMAIL_MESSAGES`` changes the mailbox size (default 10,000).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

QUOTA_CEILING_MESSAGES_PER_SECOND = 250 / 5  # 250 units/s per user, messages.get costs 5


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _account(*, sandbox, app, user, email: str):
    from django.utils import timezone

    from accounts.models import MailAccount
    from mailbox.models import SyncState

    scopes = (
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/gmail.modify",
    )
    sandbox.google.add_user(email)
    common = {"provider": "google", "client_id": app.client_id, "email": email, "scopes": scopes, "grant": email}
    access = sandbox.tokens.issue(kind="access", lifetime=7200, **common)
    refresh = sandbox.tokens.issue(kind="refresh", lifetime=None, **common)
    account = MailAccount.objects.create(
        user=user,
        provider="google",
        email=email,
        access_token=access.value,
        refresh_token=refresh.value,
        token_expires_at=timezone.now() + timedelta(hours=2),
        scopes=" ".join(scopes),
    )
    SyncState.objects.create(account=account, sync_since=None)
    return account


def _incremental_figures(store, account, email: str) -> dict:
    """One incremental sync's outcome, API requests and wall time, after the quota window drained."""
    time.sleep(1.1)  # let the quota window drain so pacing does not count
    store.reset_stats()
    seconds, outcome = _timed_sync(account)
    return {
        "outcome": outcome,
        "api_requests": store.stats(email).get("http_requests", 0),
        "milliseconds": round(seconds * 1000, 1),
    }


def _timed_sync(account) -> tuple[float, str]:
    from mailbox.sync import account_sync

    started = time.perf_counter()
    outcome = account_sync(account_id=account.pk).outcome
    return time.perf_counter() - started, outcome


@contextmanager
def google_sandbox(tmp: Path, **overrides) -> Iterator[tuple]:
    """(sandbox, Google app, user): the in-process sandbox with a registered client, the app's settings
    pointing at it (plus ``overrides``), a ProviderApp for it and a user to own the mailboxes."""
    from django.contrib.auth import get_user_model
    from django.test import override_settings

    from providers.models import ProviderApp
    from sandbox.server import Sandbox

    sandbox = Sandbox(tls_dir=tmp / "tls").start()
    try:
        client_id, secret = "bench.apps.googleusercontent.com", "GOCSPX-bench"
        sandbox.google.register_client(client_id, secret)
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        with override_settings(MEDIA_ROOT=str(tmp / "media"), **overrides, **sandbox.env()):
            app = ProviderApp.objects.create(provider="google", client_id=client_id, client_secret=secret, enabled=True)
            user = get_user_model().objects.create_user("bench", "bench@example.org", "bench-password-1")
            yield sandbox, app, user
    finally:
        sandbox.stop()


def _run(n: int, tmp: Path) -> dict:

    from mailbox.models import Message
    from sandbox.corpus import generate_messages

    with google_sandbox(tmp) as (sandbox, app, user):
        raws = list(generate_messages(n, to_address="owner@gmail.com"))
        emails = {mode: f"bench.{mode}.{uuid.uuid4().hex[:6]}@gmail.com" for mode in ("on", "off")}
        for email in emails.values():
            sandbox.gmail.seed(email, raws)
        del raws
        store = sandbox.gmail
        figures: dict = {"messages": n}

        # 1. Quota emulation on: the client paces itself for Google's 250 units/s.
        account_on = _account(sandbox=sandbox, app=app, user=user, email=emails["on"])
        store.quota_enabled = True
        store.reset_stats()
        seconds, outcome = _timed_sync(account_on)
        stats = store.stats(emails["on"])
        stored = Message.objects.filter(account=account_on).count()
        rate = stored / seconds
        figures["quota_on"] = {
            "outcome": outcome,
            "seconds": round(seconds, 2),
            "messages_per_second": round(rate, 1),
            "share_of_ceiling": round(rate / QUOTA_CEILING_MESSAGES_PER_SECOND, 3),
            "throttled_429s_seen": stats.get("throttled", 0),
            "messages_lost": n - stored,
            "http_requests": stats.get("http_requests", 0),
        }
        store.quota_enabled = False

        # 3. Incremental syncs of the quota-on mailbox (pacing on, as in production).
        store.quota_enabled = True
        _timed_sync(account_on)  # warm: token, connections
        figures["incremental_no_change"] = _incremental_figures(store, account_on, emails["on"])
        store.insert_message(emails["on"], next(generate_messages(1, to_address=emails["on"], seed=99)))
        figures["incremental_one_new"] = {
            **_incremental_figures(store, account_on, emails["on"]),
            "stored": Message.objects.filter(account=account_on).count() == n + 1,
        }
        store.quota_enabled = False
        from django.db import connection

        figures["database"] = connection.vendor
        return figures


GOOGLE_SCOPES = (
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/gmail.modify",
)


def _sandbox_process(n: int, tls: Path, email: str) -> tuple[int, dict]:
    """A sandbox in a forked process holding ``email``'s ``n`` messages, so the sync is measured alone (its CPU,
    its memory); returns the child's pid and its env, client and tokens."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: seed, serve, tell the parent where, then serve until killed
        try:
            from sandbox.corpus import generate_messages
            from sandbox.server import Sandbox

            os.close(read_end)
            sandbox = Sandbox(tls_dir=tls)
            client_id, secret = "ingest.apps.googleusercontent.com", "GOCSPX-ingest"
            sandbox.google.register_client(client_id, secret)
            sandbox.google.add_user(email)
            sandbox.gmail.seed(email, generate_messages(n, to_address=email))
            common = {"provider": "google", "client_id": client_id, "email": email}
            access = sandbox.tokens.issue(kind="access", lifetime=7200, scopes=GOOGLE_SCOPES, **common)
            refresh = sandbox.tokens.issue(kind="refresh", lifetime=None, scopes=GOOGLE_SCOPES, **common)
            sandbox.start()
            facts = {"env": sandbox.env(), "client": [client_id, secret], "tokens": [access.value, refresh.value]}
            os.write(write_end, json.dumps(facts).encode())
            os.close(write_end)
            signal.pause()
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        return pid, json.loads(pipe.read())


def _ingest(n: int, tmp: Path) -> dict:
    """A first sync of ``n`` messages with pacing off, the sandbox in a process of its own: the code's own speed
    and this process's peak memory (Django and the app loaded, then the sync)."""
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import override_settings
    from django.utils import timezone

    from accounts.models import MailAccount
    from mailbox.models import Message, SyncState
    from providers.models import ProviderApp

    email = f"ingest.{uuid.uuid4().hex[:6]}@gmail.com"
    connections.close_all()
    pid, facts = _sandbox_process(n, tmp / "ingest-tls", email)
    try:
        with override_settings(**facts["env"], GMAIL_QUOTA_UNITS_PER_SECOND=0, GMAIL_BATCH_SIZE=50):
            client_id, secret = facts["client"]
            app, _ = ProviderApp.objects.update_or_create(
                provider="google", defaults={"client_id": client_id, "client_secret": secret, "enabled": True}
            )
            user, _ = get_user_model().objects.get_or_create(username="ingest")
            account = MailAccount.objects.create(
                user=user, provider="google", email=email, access_token=facts["tokens"][0],
                refresh_token=facts["tokens"][1], token_expires_at=timezone.now() + timedelta(hours=2),
                scopes=" ".join(GOOGLE_SCOPES),
            )  # fmt: skip
            SyncState.objects.create(account=account, sync_since=None)
            rss_before = _peak_rss_mb()
            cpu_before = time.process_time()
            seconds, outcome = _timed_sync(account)
            cpu = time.process_time() - cpu_before
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    stored = Message.objects.filter(account=account).count()
    MailAccount.objects.filter(pk=account.pk).delete()
    ProviderApp.objects.filter(pk=app.pk).delete()
    return {
        "outcome": outcome,
        "seconds": round(seconds, 2),
        "messages_per_second": round(stored / seconds, 1),
        "cpu_ms_per_message": round(cpu * 1000 / max(stored, 1), 2),
        "messages_lost": n - stored,
        "peak_rss_mb_process": _peak_rss_mb(),
        "peak_rss_mb_before_sync": rss_before,
        "note": "the sandbox runs in a process of its own",
    }


@contextmanager
def throwaway_database(prefix: str) -> Iterator[Path]:
    """A temporary folder and a test database (a real SQLite file there, or ``test_<name>`` on PostgreSQL)."""
    from django.db import connection

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_dir:
        tmp = Path(tmp_dir)
        test_settings = connection.settings_dict.setdefault("TEST", {})
        if connection.vendor == "sqlite":
            test_settings["NAME"] = str(tmp / "bench.sqlite3")  # a real file, as in production, not :memory:
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            yield tmp
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)


def run() -> dict:
    n = int(os.environ.get("BENCH_GMAIL_MESSAGES", "10000"))
    with throwaway_database("mailhub-bench-gmail-") as tmp:
        ingest = _ingest(n, tmp)  # first: this process's peak memory is the sync's, before any in-process sandbox
        return {**_run(n, tmp), "quota_off": ingest}
