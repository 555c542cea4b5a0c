"""Batch send: a 1,000-recipient batch from a CSV list, pacing off, sent through the outbox to the in-process
sandbox Gmail API over real HTTP (the same path as a worker, called in a loop here).

Figures: how long creating the batch takes (reading the list, one queued row per recipient with its own raw
message), messages sent per second, and the peak of Python allocations while sending (``tracemalloc``: the
sandbox runs in the same process, so RSS would count it too). Runs on a throwaway test database like the
Gmail section. ``BENCH_BATCH_RECIPIENTS`` sets the size.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

from bench.gmail import _account, google_sandbox, throwaway_database


def _run(n: int, tmp: Path) -> dict:
    from django.db import connection

    from mailbox import batches, outbox
    from mailbox.models import OutgoingMessage

    overrides = {"MAILHUB_BATCH_PACING": False, "GMAIL_QUOTA_UNITS_PER_SECOND": 0}
    with google_sandbox(tmp, **overrides) as (sandbox, app, user):
        account = _account(sandbox=sandbox, app=app, user=user, email="bench.batch@gmail.com")
        listing = "email,name,company\n" + "".join(
            f"reader{i}@example.org,Reader {i},Company {i % 37}\n" for i in range(n)
        )
        draft = OutgoingMessage.objects.create(
            account=account,
            subject="News for {{ company }}",
            body_text="Dear {{ first_name }},\n\n" + "The quarter in a few lines. " * 40,
        )
        started = time.perf_counter()
        with _no_dispatch():
            recipients = batches.recipients_from_csv(listing.encode())
            batch = batches.batch_create(draft=draft, recipients=recipients, user=user)
        create_seconds = time.perf_counter() - started

        ids = list(batch.messages.order_by("pk").values_list("pk", flat=True))
        tracemalloc.start()
        started = time.perf_counter()
        outcomes = [outbox.outgoing_send(outgoing_id=pk).outcome for pk in ids]
        send_seconds = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        sent = sandbox.gmail.sent_messages(account.email)
        return {
            "recipients": n,
            "database": connection.vendor,
            "create_seconds": round(create_seconds, 2),
            "send_seconds": round(send_seconds, 2),
            "messages_per_second": round(len(sent) / send_seconds, 1),
            "sent_at_gmail": len(sent),
            "sent_twice": len(sent) - len({m.raw for m in sent}),
            "not_sent": sum(outcome != "sent" for outcome in outcomes),
            "peak_python_allocations_mb_while_sending": round(peak / 2**20, 1),
        }


class _no_dispatch:
    """Queue no Celery tasks (there is no worker here): the loop above plays the worker."""

    def __enter__(self) -> None:
        from mailbox import tasks

        self._delay, self._apply = tasks.outgoing_send.delay, tasks.outgoing_send.apply_async
        tasks.outgoing_send.delay = tasks.outgoing_send.apply_async = lambda *a, **k: None

    def __exit__(self, *exc: object) -> None:
        from mailbox import tasks

        tasks.outgoing_send.delay, tasks.outgoing_send.apply_async = self._delay, self._apply


def run() -> dict:
    n = int(os.environ.get("BENCH_BATCH_RECIPIENTS", "1000"))
    with throwaway_database("mailhub-bench-batch-") as tmp:
        return _run(n, tmp)
