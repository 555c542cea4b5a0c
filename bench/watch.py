"""Freshness and cost of watched mailboxes: `python -m bench watch`.

BENCH_WATCH_MAILBOXES mailboxes (default 1,000: Gmail on the sandbox and Outlook on Dovecot, alternating) are
connected and synced; then the processes `make run` starts (a sync worker, the first-sync worker, the watch
worker with its thread pool, and beat) run on Redis and a throwaway database, with the production settings.

- Idle cost: over BENCH_WATCH_IDLE_SECONDS (default 120) with nothing delivered, the CPU seconds of every
  Celery process (IDLE keep-alives, Gmail history polls, the safety syncs beat still runs) per mailbox-hour,
  and the watch worker's memory per watched mailbox.
- Freshness: BENCH_WATCH_DELIVERIES (default 120) messages delivered at random moments (about one a second) to
  random mailboxes, at the sandbox Gmail and by APPEND to Dovecot; each one's delay until its row is in the
  database, p50/p95/max per provider. Targets: IMAP 5 s, Gmail 10 s p95.
- Safety syncs: every watched mailbox made due for the sync beat still runs every 15 min; its CPU per
  mailbox-hour, added to the idle cost (target: 2 CPU seconds per mailbox-hour in all).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from email.utils import make_msgid
from pathlib import Path

from bench.gmail import google_sandbox, throwaway_database

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_WATCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024
TARGETS = {"imap_p95_seconds": 5.0, "gmail_p95_seconds": 10.0, "cpu_seconds_per_mailbox_hour": 2.0}
MICROSOFT_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
)


def _raw(to: str) -> tuple[bytes, str]:
    message_id = make_msgid(domain="bench.example.org")
    lines = [f"From: bench@example.org", f"To: {to}", f"Subject: Fresh {message_id[1:9]}",  # noqa: F541
             f"Message-ID: {message_id}", "Content-Type: text/plain; charset=utf-8", "", "New mail.", ""]  # fmt: skip
    return "\r\n".join(lines).encode(), message_id.strip("<>")


# --- processes -------------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *(p for child in children for p in _tree(int(child)))]


def _cpu_seconds(pid: int) -> float:
    total = 0
    for each in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _rss_mb(pid: int) -> float:
    total = 0.0
    for each in _tree(pid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{each}/statm").read_text().split()[1]) * PAGE_KB / 1024
    return total


@contextlib.contextmanager
def _celery(env: dict[str, str], logs: Path) -> Iterator[dict[str, subprocess.Popen]]:
    from mailhub.run import process_commands

    commands = {name: argv for name, argv in process_commands().items() if name != "web"}
    started: dict[str, subprocess.Popen] = {}
    try:
        for name, argv in commands.items():
            log = (logs / f"{name}.log").open("ab")
            started[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        yield started
    finally:
        for process in started.values():
            process.terminate()
        for process in started.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _broker_use(url: str) -> None:
    """Queue this process's tasks on the workers' broker (not on the filesystem broker `make run` uses)."""
    from mailhub.celery import app

    os.environ["CELERY_BROKER_URL"] = url  # Celery reads it before its configuration
    app.conf.broker_url = url
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    app._pool = None
    app.amqp._producer_pool = None


def _queues_empty(url: str) -> bool:
    import redis

    from mailbox import tasks

    return not any(redis.Redis.from_url(url).llen(queue) for queue in tasks.SYNC_QUEUES)


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{host}:{port}/{db['NAME']}"


# --- mailboxes ---------------------------------------------------------------------------------------------


def _accounts(sandbox, dovecot, *, user, google_app, microsoft_app, count: int) -> list:
    from django.utils import timezone

    from accounts.models import MailAccount
    from bench.gmail import _account
    from mailbox.models import SyncState

    accounts = []
    for i in range(count):
        tag = uuid.uuid4().hex[:8]
        if i % 2 == 0:
            accounts.append(_account(sandbox=sandbox, app=google_app, user=user, email=f"w{i}.{tag}@gmail.com"))
            continue
        email = f"w{i}.{tag}@contoso-sandbox.test"
        sandbox.microsoft.add_user(email)
        common = {"provider": "microsoft", "client_id": microsoft_app.client_id, "email": email}
        access = sandbox.tokens.issue(kind="access", scopes=MICROSOFT_SCOPES, lifetime=7200, **common)
        refresh = sandbox.tokens.issue(kind="refresh", scopes=MICROSOFT_SCOPES, lifetime=None, **common)
        account = MailAccount.objects.create(
            user=user, provider="microsoft", email=email, access_token=access.value, refresh_token=refresh.value,
            token_expires_at=timezone.now() + timedelta(hours=2),
        )  # fmt: skip
        SyncState.objects.create(account=account)
        accounts.append(account)
    return accounts


def _wait(condition, *, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(int(share * len(ordered)), len(ordered) - 1)], 2) if ordered else 0.0


def _freshness(accounts, sandbox, dovecot, *, deliveries: int) -> dict:
    from mailbox.models import Message

    rng = random.Random(7)
    pending: dict[str, tuple[str, float]] = {}
    delays: dict[str, list[float]] = {"google": [], "microsoft": []}
    next_at = time.monotonic()
    sent = 0
    deadline = float("inf")  # 60 s after the last delivery
    while sent < deliveries or (pending and time.monotonic() < deadline):
        now = time.monotonic()
        if sent < deliveries and now >= next_at:
            account = rng.choice(accounts)
            raw, message_id = _raw(account.email)
            if account.provider == "google":
                sandbox.gmail.insert_message(account.email, raw)
            else:
                dovecot.append(account.email, raw)
            pending[message_id] = (account.provider, time.monotonic())
            sent += 1
            next_at = now + rng.expovariate(1.0)
            if sent == deliveries:
                deadline = time.monotonic() + 60
        arrived = Message.objects.filter(message_id__in=list(pending)).values_list("message_id", flat=True)
        seen = time.monotonic()
        for message_id in arrived:
            provider, delivered = pending.pop(message_id)
            delays[provider].append(seen - delivered)
        time.sleep(0.05)
    return {
        provider: {
            "delivered": len(values) + sum(1 for p, _ in pending.values() if p == provider),
            "arrived": len(values),
            "p50_seconds": _percentile(values, 0.5),
            "p95_seconds": _percentile(values, 0.95),
            "max_seconds": round(max(values), 2) if values else None,
            "mean_seconds": round(statistics.mean(values), 2) if values else None,
        }
        for provider, values in delays.items()
    }


def _safety_syncs(processes: dict[str, subprocess.Popen], *, count: int, idle_cpu_per_second: float) -> dict:
    """The syncs beat still runs for watched mailboxes (every MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS): made due all
    at once, their CPU cost each (less what the processes spend idle meanwhile) and per mailbox-hour."""
    from django.conf import settings
    from django.utils import timezone

    from mailbox.models import SyncState

    interval = float(settings.MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS)
    _wait(lambda: _queues_empty(REDIS_URL), timeout=300)
    before, started = sum(_cpu_seconds(p.pid) for p in processes.values()), time.monotonic()
    due_since = timezone.now()
    SyncState.objects.update(last_success_at=due_since - timedelta(seconds=interval + 1))
    done = _wait(lambda: SyncState.objects.filter(last_success_at__gte=due_since).count() == count, timeout=900)
    _wait(lambda: _queues_empty(REDIS_URL), timeout=300)
    spent = sum(_cpu_seconds(p.pid) for p in processes.values()) - before
    cpu = spent - idle_cpu_per_second * (time.monotonic() - started)
    return {
        "all_done": done,
        "interval_seconds": interval,
        "cpu_seconds_per_sync": round(cpu / count, 4),
        "cpu_seconds_per_mailbox_hour": round(cpu / count * 3600 / interval, 3),
    }


def _run(tmp: Path) -> dict:
    import redis
    from django.test import override_settings

    from mailbox.models import SyncState
    from providers.models import ProviderApp
    from sandbox.dovecot import DovecotServer

    count = int(os.environ.get("BENCH_WATCH_MAILBOXES", "1000"))
    idle_seconds = float(os.environ.get("BENCH_WATCH_IDLE_SECONDS", "120"))
    deliveries = int(os.environ.get("BENCH_WATCH_DELIVERIES", "120"))
    redis.Redis.from_url(REDIS_URL).flushdb()
    _broker_use(REDIS_URL)
    with google_sandbox(tmp) as (sandbox, google_app, user):
        dovecot = DovecotServer(
            introspection_url=sandbox.microsoft_introspection_url, tls=sandbox.tls, max_connections=count
        ).start()
        try:
            client_id, secret = str(uuid.uuid4()), "sbx~" + secrets.token_urlsafe(16)
            sandbox.microsoft.register_client(client_id, secret)
            microsoft_app = ProviderApp.objects.create(
                provider="microsoft", client_id=client_id, client_secret=secret, enabled=True, tenant="common"
            )
            env = {
                **os.environ,
                **sandbox.env(),
                **dovecot.env(),
                "MICROSOFT_APPEND_SENT": "false",
                "DATABASE_URL": _database_url(),
                "REDIS_URL": REDIS_URL,
                "CELERY_BROKER_URL": REDIS_URL,
                "MEDIA_ROOT": str(tmp / "media"),
                "OAUTHLIB_INSECURE_TRANSPORT": "1",
            }
            with override_settings(**{k: v for k, v in dovecot.env().items() if k != "MICROSOFT_APPEND_SENT"}):
                accounts = _accounts(sandbox, dovecot, user=user, google_app=google_app,
                                     microsoft_app=microsoft_app, count=count)  # fmt: skip
            figures: dict = {"mailboxes": count, "cores": os.cpu_count()}
            logs = Path(tempfile.gettempdir()) / "mailhub-bench-watch-logs"
            shutil.rmtree(logs, ignore_errors=True)
            logs.mkdir()
            with _celery(env, logs) as processes:
                from mailbox import sync, tasks

                started = time.monotonic()
                sync.accounts_queued([a.pk for a in accounts])  # as beat does: not queued twice
                for i, account in enumerate(accounts):  # on both sync workers: the first syncs are not measured
                    queue = (tasks.FIRST_SYNC_QUEUE, tasks.PERIODIC_SYNC_QUEUE)[i % 2]
                    tasks.account_sync.apply_async((account.pk,), queue=queue)
                first_synced = _wait(
                    lambda: SyncState.objects.filter(stage=SyncState.Stage.INCREMENTAL).count() == count, timeout=900
                )
                figures["first_syncs_seconds"] = round(time.monotonic() - started, 1) if first_synced else None
                watched = _wait(
                    lambda: SyncState.objects.filter(watched_since__isnull=False).count() == count, timeout=600
                )
                figures["all_watched_seconds"] = round(time.monotonic() - started, 1) if watched else None
                figures["watched"] = SyncState.objects.filter(watched_since__isnull=False).count()
                _wait(lambda: _queues_empty(REDIS_URL), timeout=600)  # what the first syncs left queued is done
                time.sleep(10)
                cpu_before = {name: _cpu_seconds(p.pid) for name, p in processes.items()}
                time.sleep(idle_seconds)
                cpu = {name: _cpu_seconds(p.pid) - cpu_before[name] for name, p in processes.items()}
                mailbox_hours = count * idle_seconds / 3600
                watch_rss = _rss_mb(processes["watch"].pid)
                figures["idle"] = {
                    "seconds": idle_seconds,
                    "cpu_seconds_by_process": {name: round(value, 2) for name, value in cpu.items()},
                    "cpu_seconds_per_mailbox_hour": round(sum(cpu.values()) / mailbox_hours, 3),
                    "watch_worker_rss_mb": round(watch_rss, 1),
                    "watch_worker_kb_per_mailbox": round(watch_rss * 1024 / max(figures["watched"], 1), 1),
                }
                figures["freshness"] = _freshness(accounts, sandbox, dovecot, deliveries=deliveries)
                idle_rate = sum(cpu.values()) / idle_seconds
                figures["safety_syncs"] = _safety_syncs(processes, count=count, idle_cpu_per_second=idle_rate)
                figures["cpu_seconds_per_mailbox_hour_total"] = round(
                    figures["idle"]["cpu_seconds_per_mailbox_hour"]
                    + figures["safety_syncs"]["cpu_seconds_per_mailbox_hour"],
                    3,
                )
            figures["targets"] = TARGETS
            from django.db import connection

            figures["database"] = connection.vendor
            return figures
        finally:
            dovecot.stop()


def run() -> dict:
    with throwaway_database("mailhub-bench-watch-") as tmp:
        return _run(tmp)


if __name__ == "__main__":
    sys.exit("run it as: python -m bench watch")
