"""Mail UI server times on PostgreSQL: BENCH_UI_MESSAGES messages (100,000 unless set; the scale run is 1,000,000)
in 50 mailboxes of 20 users. The measured user ("bench") owns 3 of them, each 3 times as full as another user's
(16% of the mail); the other 47 belong to 19 other users, so a page that does not filter by user early pays for
everyone's mail.

``run()`` starts ``python -m bench.ui`` with ``DATABASE_URL`` pointed at BENCH_UI_DATABASE_URL (``bench_ui`` unless
set; created if missing, migrated, seeded once with COPY and reused while it holds the same data set), then times
the inbox, a deep keyset page, a label and an Inbox folder, a thread, searches and the sidebar poll with Django's
test client: p50/p95 in ms over repeated requests, and the SQL query count of one request per page; then what
200 open idle pages asking for changes cost per minute.
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
TARGETS_MS = {"inbox": 50, "thread": 50, "folder": 80, "search": 150, "sidebar_poll": 50}


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
USERS = 20
MAILBOXES = 50
OWN_MAILBOXES = 3  # the measured user's; the other 47 belong to the 19 other users
OWN_WEIGHT = 3  # each of the measured user's mailboxes holds 3 times the mail of another user's
SEED_VERSION = 2  # bump when the seeded data set changes shape: the next run seeds afresh
_ROLES = [("INBOX", "Inbox", "inbox"), ("SENT", "Sent", "sent"), ("ARCHIVE", "Archive", "archive"),
          ("TRASH", "Trash", "trash")] + [(f"L{i}", f"Label {i}", "user") for i in range(8)]  # fmt: skip
_SEED_TABLE = "bench_ui_seed"
_TWO_YEARS_MINUTES = 2 * 365 * 24 * 60
_THREAD_COLUMNS = ["id", "account_id", "remote_id", "subject", "snippet", "senders", "last_message_at",
                   "message_count", "unread_count", "is_starred", "has_attachments"]  # fmt: skip
_MESSAGE_COLUMNS = ["id", "account_id", "thread_id", "remote_id", "message_id", "in_reply_to", "references",
                    "subject", "from_name", "from_address", "to", "cc", "bcc", "reply_to", "date", "snippet",
                    "body_text", "body_html", "size", "is_read", "is_starred", "is_draft", "has_attachments",
                    "parse_error", "attachment_names", "raw_compressed", "created_at", "updated_at"]  # fmt: skip


def _seed_key() -> str:
    return json.dumps({"version": SEED_VERSION, "messages": MESSAGES, "users": USERS, "mailboxes": MAILBOXES})


def _database_prepare() -> bool:
    """Create the database, or keep it when it holds this very data set; True when it must be seeded."""
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    if exists:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            table = conn.execute("SELECT to_regclass(%s)", [_SEED_TABLE]).fetchone()
            row = conn.execute(f"SELECT key FROM {_SEED_TABLE}").fetchone() if table and table[0] else None  # noqa: S608
        if row and row[0] == _seed_key():
            return False
    # Dropping the database beats deleting a million rows through their cascades.
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return True


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _mailbox_sizes() -> list[int]:
    """Messages per mailbox: the measured user's weigh OWN_WEIGHT each, the others 1; they add up to MESSAGES."""
    weights = [OWN_WEIGHT] * OWN_MAILBOXES + [1] * (MAILBOXES - OWN_MAILBOXES)
    sizes = [MESSAGES * w // sum(weights) for w in weights]
    sizes[-1] += MESSAGES - sum(sizes)
    return sizes


def _owner_of(mailbox: int) -> int:
    """User 0 is the measured one; the other users' mailboxes are dealt out in turn."""
    return 0 if mailbox < OWN_MAILBOXES else 1 + (mailbox - OWN_MAILBOXES) % (USERS - 1)


def _copy(cursor, table: str, columns: list[str], rows: list[tuple]) -> None:
    quoted = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:  # noqa: S608 - constants
        for row in rows:
            copy.write_row(row)


def _populate() -> None:
    """USERS users with MAILBOXES mailboxes holding MESSAGES messages: threads, messages and memberships go in
    with COPY (ids chosen here), with the tables' secondary indexes dropped meanwhile and built once after."""
    from django.db import connection

    from mailbox.folder_counts import folder_counts_recount

    with connection.cursor() as wrapper:
        cursor = wrapper.cursor  # psycopg's own, for COPY
        cursor.execute("SET maintenance_work_mem = '512MB'")
        _people_seed()
        tables = ["mailbox_message", "mailbox_messagefolder", "mailbox_thread"]
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            [tables],
        )
        indexes = cursor.fetchall()
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SET session_replication_role = replica")  # no foreign-key trigger per row
        _mail_seed(cursor)
        cursor.execute("SET session_replication_role = DEFAULT")
        for table in tables:
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")  # noqa: S608
        for _name, definition in indexes:
            cursor.execute(definition)
    folder_counts_recount()  # COPY in replica mode fires no trigger
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor
        cursor.execute(f"CREATE TABLE {_SEED_TABLE} (key text)")
        cursor.execute(f"INSERT INTO {_SEED_TABLE} VALUES (%s)", [_seed_key()])  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def _people_seed() -> None:
    """The users (the measured one is "bench"), their mailboxes (Gmail and Outlook in turn), sync states and
    12 folders per mailbox; ids 1.. in order, so the mail can point at them."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from accounts.models import MailAccount
    from mailbox.models import Folder, SyncState

    password = make_password("bench-password")
    names = ["bench"] + [f"member{u}" for u in range(1, USERS)]
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=n, email=f"{n}@example.org", password=password) for n in names
    )
    accounts = MailAccount.objects.bulk_create(
        MailAccount(
            user=users[_owner_of(a)],
            provider="google" if a % 2 == 0 else "microsoft",
            email=f"box{a}@{'gmail' if a % 2 == 0 else 'outlook'}.example",
        )
        for a in range(MAILBOXES)
    )
    now = timezone.now()
    SyncState.objects.bulk_create(SyncState(account=a, stage="incremental", last_success_at=now) for a in accounts)
    Folder.objects.bulk_create(
        Folder(account=account, remote_id=r, name=n, role=k) for account in accounts for r, n, k in _ROLES
    )


def _mail_seed(cursor) -> None:
    from accounts.models import MailAccount
    from mailbox.models import Folder

    rng = random.Random(42)
    bodies = [_text(rng, rng.randint(40, 160)) for _ in range(4000)]
    ids = {"thread": 0, "message": 0, "membership": 0}
    accounts = list(MailAccount.objects.order_by("id"))
    for account, size in zip(accounts, _mailbox_sizes(), strict=True):
        folders = {f.remote_id: f.id for f in Folder.objects.filter(account=account)}
        threads, messages, memberships = _mailbox_rows(account, size, folders, rng, bodies, ids)
        _copy(cursor, "mailbox_thread", _THREAD_COLUMNS, threads)
        _copy(cursor, "mailbox_message", _MESSAGE_COLUMNS, messages)
        _copy(cursor, "mailbox_messagefolder", ["id", "message_id", "folder_id"], memberships)


def _mailbox_rows(account, size: int, folders: dict[str, int], rng: random.Random, bodies: list[str], ids: dict):
    """One mailbox's threads of 1-5 messages (2 on average) spread over two years, newest first; 70% of threads
    in the Inbox (8% of those end unread), the rest in Sent or Archive; a fifth of the messages also in a label."""
    from django.utils import timezone

    now = timezone.now()
    raw = zlib.compress(b"From: x@example.org\r\nSubject: bench\r\n\r\nbench body\r\n")
    to = json.dumps([{"name": "Bench", "email": account.email}])
    labels = [folders[f"L{i}"] for i in range(8)]
    step = _TWO_YEARS_MINUTES / max(1, size / 2)
    threads: list[tuple] = []
    messages: list[tuple] = []
    memberships: list[tuple] = []
    done, t = 0, 0
    while done < size:
        n = min(rng.choice([1, 1, 1, 2, 2, 3, 4, 5]), size - done)
        done += n
        ids["thread"] += 1
        thread_id = ids["thread"]
        last = now - timedelta(minutes=t * step + rng.random() * step * 0.75)
        subject = f"{_text(rng, 4)} #{thread_id}"
        in_inbox = rng.random() < 0.7
        unread = any_attachment = 0
        for i in range(n):
            ids["message"] += 1
            name, address = rng.choice(PEOPLE)
            is_read = not (in_inbox and i == n - 1 and rng.random() < 0.08)
            has_att = rng.random() < 0.1
            unread += not is_read
            any_attachment |= has_att
            body = rng.choice(bodies)
            html = f"<p>{body}</p><table><tr><td>{_text(rng, 5)}</td></tr></table>" if i % 2 else ""
            when = last - timedelta(minutes=(n - 1 - i) * 3)
            messages.append((ids["message"], account.id, thread_id, f"m{thread_id}-{i}", f"{thread_id}.{i}@bench",
                             "", "", subject, name, address, to, "[]", "[]", "[]", when, body[:120], body, html,
                             len(body), is_read, False, False, has_att, "", "", raw, now, now))  # fmt: skip
            home = "INBOX" if in_inbox else ("SENT" if rng.random() < 0.15 else "ARCHIVE")
            for folder_id in [folders[home]] + ([rng.choice(labels)] if rng.random() < 0.2 else []):
                ids["membership"] += 1
                memberships.append((ids["membership"], ids["message"], folder_id))
        threads.append((thread_id, account.id, f"t{thread_id}", subject, _text(rng, 12), rng.choice(PEOPLE)[0],
                        last, n, unread, False, bool(any_attachment)))  # fmt: skip
        t += 1
    return threads, messages, memberships


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
    seed = _database_prepare()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from mailbox.models import Folder, Message, Thread

    call_command("migrate", verbosity=0, interactive=False)
    started = time.perf_counter()
    if seed:
        _populate()
    populate_seconds = round(time.perf_counter() - started, 1)
    user = get_user_model().objects.get(username="bench")

    client = Client()
    client.force_login(user)
    inbox_url = reverse("mailbox:inbox")
    # A deep page: follow the keyset cursor 40 pages (2,000 threads) down.
    deep_url = inbox_url
    for _ in range(40):
        page = client.get(deep_url).content.decode()
        deep_url = inbox_url + "?cursor=" + page.split("cursor=")[1].split('"')[0].replace("&amp;", "&")
    label = Folder.objects.filter(account__user=user, role="user").order_by("id").first()
    big = Folder.objects.filter(account__user=user, role="inbox").order_by("id").first()
    thread = Thread.objects.filter(account__user=user, message_count=5).order_by("-last_message_at").first()
    newest = thread.messages.order_by("-date").first() if thread else None
    if label is None or big is None or thread is None or newest is None:
        raise RuntimeError("the seeded mailbox has no user label or no thread of 5 messages")
    pages = {
        "inbox": inbox_url,
        "inbox_page_41": deep_url,
        "folder_label": reverse("mailbox:folder", args=[label.id]),
        "folder_inbox": reverse("mailbox:folder", args=[big.id]),
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
    folder_p95 = max(v["p95_ms"] for k, v in results.items() if k.startswith("folder"))
    search_p95 = max(v["p95_ms"] for k, v in results.items() if k.startswith("search"))
    figures = {
        "database": "postgresql",
        "messages": Message.objects.count(),
        "users": USERS,
        "accounts": MAILBOXES,
        "measured_user": {
            "accounts": OWN_MAILBOXES,
            "messages": Message.objects.filter(account__user=user).count(),
            "threads": Thread.objects.filter(account__user=user).count(),
        },
        "populated_now": seed,
        "populate_seconds": populate_seconds,
        "repeat": REPEAT,
        "pages": results,
        "live_200_idle_pages": live,
        "targets_ms": TARGETS_MS,
        "met": {
            "inbox_p95": results["inbox"]["p95_ms"] < TARGETS_MS["inbox"],
            "thread_p95": results["thread"]["p95_ms"] < TARGETS_MS["thread"],
            "folder_p95": folder_p95 < TARGETS_MS["folder"],
            "sidebar_poll_p95": results["sidebar_poll"]["p95_ms"] < TARGETS_MS["sidebar_poll"],
            "search_p95": search_p95 < TARGETS_MS["search"],
        },
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
