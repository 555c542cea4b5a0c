"""Mail UI server times on PostgreSQL with 100,000 messages for one user over 2 accounts.

``run()`` starts ``python -m bench.ui`` with ``DATABASE_URL`` pointed at the ``bench_ui`` database (created if
missing, migrated, filled once and reused while it still holds the same data set), then times the inbox, a deep
keyset page, a folder, a thread, searches and the sidebar poll with Django's test client: p50/p95 in ms over
repeated requests, and the SQL query count of one request per page; then what 200 open idle pages asking for
changes cost per minute.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib
from datetime import timedelta

DATABASE_URL = os.environ.get("BENCH_UI_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_ui")
MESSAGES = int(os.environ.get("BENCH_UI_MESSAGES", "100000"))
REPEAT = int(os.environ.get("BENCH_UI_REPEAT", "60"))
TARGETS_MS = {"inbox": 50, "thread": 50, "search": 150}


def run() -> dict:
    env = {**os.environ, "DATABASE_URL": DATABASE_URL, "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1", "DEBUG": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.ui"], env=env, capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.ui failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- Inside the subprocess (Django set up against bench_ui) ----------------------------------------

WORDS = [
    "report",
    "invoice",
    "meeting",
    "agenda",
    "budget",
    "quarterly",
    "release",
    "deploy",
    "review",
    "design",
    "customer",
    "contract",
    "schedule",
    "travel",
    "lunch",
    "project",
    "kickoff",
    "roadmap",
    "feedback",
    "hiring",
    "offer",
    "planning",
    "update",
    "weekly",
    "digest",
    "newsletter",
    "security",
    "incident",
    "outage",
    "database",
    "migration",
    "backup",
    "storage",
    "network",
    "invoice",
    "payment",
    "receipt",
    "order",
    "shipment",
    "delivery",
    "warehouse",
    "marketing",
    "campaign",
    "launch",
    "analytics",
    "dashboard",
    "metrics",
    "revenue",
    "forecast",
]
PEOPLE = [(f"Person {i}", f"person{i}@example{i % 37}.org") for i in range(1500)]


def _database_create() -> None:
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _populate(user) -> None:
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import MailAccount
    from mailbox import search
    from mailbox.models import Folder, Message, MessageFolder, SyncState, Thread

    rng = random.Random(42)
    now = timezone.now()
    raw = zlib.compress(b"From: x@example.org\r\nSubject: bench\r\n\r\nbench body\r\n")
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS mailbox_message_search")
    per_account = MESSAGES // 2
    for a, (provider, email) in enumerate([("google", "bench@gmail.example"), ("microsoft", "bench@outlook.example")]):
        account = MailAccount.objects.create(user=user, provider=provider, email=email)
        SyncState.objects.create(account=account, stage="incremental", last_success_at=now)
        roles = [("INBOX", "Inbox", "inbox"), ("SENT", "Sent", "sent"), ("ARCHIVE", "Archive", "archive"),
                 ("TRASH", "Trash", "trash")] + [(f"L{i}", f"Label {i}", "user") for i in range(8)]  # fmt: skip
        folders = Folder.objects.bulk_create(Folder(account=account, remote_id=r, name=n, role=k) for r, n, k in roles)
        inbox, sent, archive, labels = folders[0], folders[1], folders[2], folders[4:]
        # Threads of 1-5 messages (2 on average), spread over two years, newest thread first in time.
        sizes, total = [], 0
        while total < per_account:
            size = min(rng.choice([1, 1, 1, 2, 2, 3, 4, 5]), per_account - total)
            sizes.append(size)
            total += size
        threads = []
        for t, size in enumerate(sizes):
            last = now - timedelta(minutes=t * 20 + rng.randint(0, 15))
            threads.append(Thread(account=account, remote_id=f"t{a}-{t}", subject=f"{_text(rng, 4)} #{t}",
                                  snippet=_text(rng, 12), senders=rng.choice(PEOPLE)[0], last_message_at=last,
                                  message_count=size))  # fmt: skip
        with transaction.atomic():
            threads = Thread.objects.bulk_create(threads, batch_size=5000)
        batch: list[Message] = []
        memberships: list[tuple[int, list]] = []

        def flush(batch: list[Message] = batch, memberships: list[tuple[int, list]] = memberships) -> None:
            with transaction.atomic():
                created = Message.objects.bulk_create(batch, batch_size=2000)
                MessageFolder.objects.bulk_create(
                    (MessageFolder(message=m, folder=f) for m, (_, fs) in zip(created, memberships, strict=True)
                     for f in fs),
                    batch_size=5000,
                )  # fmt: skip
            batch.clear()
            memberships.clear()

        thread_updates = []
        for thread, size in zip(threads, sizes, strict=True):
            assert thread.last_message_at is not None  # every seeded thread gets one above
            in_inbox = rng.random() < 0.7
            unread = 0
            for i in range(size):
                name, address = rng.choice(PEOPLE)
                is_read = not (in_inbox and i == size - 1 and rng.random() < 0.08)
                unread += not is_read
                has_att = rng.random() < 0.1
                when = thread.last_message_at - timedelta(minutes=(size - 1 - i) * 3)
                body = _text(rng, rng.randint(40, 160))
                batch.append(Message(
                    account=account, thread=thread, remote_id=f"m{a}-{thread.id}-{i}",
                    message_id=f"{thread.id}.{i}@bench",
                    subject=thread.subject, from_name=name, from_address=address,
                    to=[{"name": "Bench", "email": email}], date=when, snippet=body[:120], body_text=body,
                    body_html=f"<p>{body}</p><table><tr><td>{_text(rng, 5)}</td></tr></table>" if i % 2 else "",
                    size=len(body), is_read=is_read, has_attachments=has_att, raw_compressed=raw,
                ))  # fmt: skip
                fs = [inbox if in_inbox else (sent if rng.random() < 0.15 else archive)]
                if rng.random() < 0.2:
                    fs.append(rng.choice(labels))
                memberships.append((i, fs))
            thread.unread_count = unread
            thread_updates.append(thread)
            if len(batch) >= 5000:
                flush()
        if batch:
            flush()
        with transaction.atomic():
            Thread.objects.bulk_update(thread_updates, ["unread_count"], batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute(search.PG_FORWARD[1])
        cursor.execute("VACUUM ANALYZE")


def _live_cost(client, user, *, pages: int = 200, minutes: float = 1.0) -> dict:
    """What ``pages`` open, idle pages cost the server: each asks for changes every MAILHUB_LIVE_SECONDS and gets
    a 204. The requests of ``minutes`` are served one after another through the whole Django stack (sessions,
    auth, middleware, the version query); the app's CPU time and the wall time (app and PostgreSQL) are reported
    per minute of those pages being open."""
    from django.conf import settings
    from django.urls import reverse

    from mailbox.selectors import mail_version

    url = reverse("mailbox:changes") + "?v=" + mail_version(user=user)
    requests = int(pages * minutes * 60 / settings.MAILHUB_LIVE_SECONDS)
    assert client.get(url).status_code == 204
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        client.get(url)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "open_pages": pages,
        "poll_seconds": settings.MAILHUB_LIVE_SECONDS,
        "requests_per_minute": round(requests / minutes),
        "app_cpu_seconds_per_minute": round(cpu / minutes, 2),
        "wall_seconds_per_minute_app_and_db": round(wall / minutes, 2),
        "share_of_one_core": round(wall / minutes / 60, 3),
        "ms_per_request": round(wall * 1000 / requests, 2),
    }


def _times(client, url: str, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches (templates, plans)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    samples.sort()
    return {
        "url": url,
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 2),
        "queries": len(queries.captured_queries),
    }


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhub.settings")
    _database_create()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from mailbox.models import Folder, Message, Thread

    call_command("migrate", verbosity=0, interactive=False)
    users = get_user_model().objects
    user = users.filter(username="bench").first()
    started = time.perf_counter()
    populated = False
    if user is None or Message.objects.filter(account__user=user).count() != MESSAGES:
        if user:
            user.delete()
        user = users.create_user("bench", "bench@example.org", "bench-password")
        _populate(user)
        populated = True
    populate_seconds = round(time.perf_counter() - started, 1)

    client = Client()
    client.force_login(user)
    inbox_url = reverse("mailbox:inbox")
    # A deep page: follow the keyset cursor 40 pages (2,000 threads) down.
    deep_url = inbox_url
    for _ in range(40):
        page = client.get(deep_url).content.decode()
        deep_url = inbox_url + "?cursor=" + page.split("cursor=")[1].split('"')[0].replace("&amp;", "&")
    label = Folder.objects.filter(account__user=user, role="user").first()
    thread = Thread.objects.filter(account__user=user, message_count=5).order_by("-last_message_at").first()
    newest = thread.messages.order_by("-date").first() if thread else None
    if label is None or thread is None or newest is None:
        raise RuntimeError("the seeded mailbox has no user label or no thread of 5 messages")
    pages = {
        "inbox": inbox_url,
        "inbox_page_41": deep_url,
        "folder_label": reverse("mailbox:folder", args=[label.id]),
        "thread": reverse("mailbox:thread", args=[thread.id]),
        "message_body": reverse("mailbox:message_body", args=[newest.id]),
        "search_common_word": reverse("mailbox:search") + "?q=invoice",
        "search_two_words": reverse("mailbox:search") + "?q=quarterly+roadmap",
        "search_sender": reverse("mailbox:search") + "?q=person42%40example5.org",
        "search_filtered": reverse("mailbox:search") + f"?q=budget&unread=on&folder={label.id}",
        "search_rare": reverse("mailbox:search") + f"?q=%23{thread.subject.split('#')[1]}",
        "sidebar_poll": reverse("mailbox:sidebar"),
    }
    results = {name: _times(client, url, REPEAT) for name, url in pages.items()}
    live = _live_cost(client, user)
    search_p95 = max(v["p95_ms"] for k, v in results.items() if k.startswith("search"))
    figures = {
        "database": "postgresql",
        "messages": Message.objects.filter(account__user=user).count(),
        "threads": Thread.objects.filter(account__user=user).count(),
        "accounts": 2,
        "populated_now": populated,
        "populate_seconds": populate_seconds,
        "repeat": REPEAT,
        "pages": results,
        "live_200_idle_pages": live,
        "targets_ms": TARGETS_MS,
        "met": {
            "inbox_p95": results["inbox"]["p95_ms"] < TARGETS_MS["inbox"],
            "thread_p95": results["thread"]["p95_ms"] < TARGETS_MS["thread"],
            "search_p95": search_p95 < TARGETS_MS["search"],
        },
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
