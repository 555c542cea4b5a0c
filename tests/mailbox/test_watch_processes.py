"""Watchers as `make run` runs them: real Celery processes on Redis (a sync worker, two watch workers on the
``watch`` queue with a thread pool, beat) and Dovecot. New mail reaches the database without any sync being
asked for, and when the watch worker holding the mailbox is killed, the other takes it over."""

from __future__ import annotations

import time

import pytest

from mailbox import sync
from mailbox.models import Message, SyncState
from tests.fixtures.faults import wait_for
from tests.fixtures.outbox import ProxiedProvider
from tests.mailbox.test_watch import _raw

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults, pytest.mark.dovecot]

FAST_WATCH = {
    "MAILHUB_WATCH_ENSURE_SECONDS": "1",
    "MAILHUB_WATCH_LEASE_SECONDS": "3",
    "MAILHUB_WATCH_RETRY_SECONDS": "0.5",
}


def _arrives(account, message_id: str, *, timeout: float) -> float | None:
    started = time.monotonic()
    if wait_for(lambda: Message.objects.filter(account=account, message_id=message_id).exists(), timeout=timeout):
        return time.monotonic() - started
    return None


def test_new_mail_arrives_by_itself_and_a_killed_watch_worker_is_replaced(dovecot, outlook_account, celery_processes):
    account = outlook_account()
    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    processes = celery_processes("redis", ProxiedProvider({}, dovecot.env()))
    processes.env.update(FAST_WATCH)
    processes.worker("sync")
    watchers = {name: processes.worker(name, queues="watch", pool="threads") for name in ("watch1", "watch2")}
    processes.beat()

    def owner_pid() -> int | None:
        state = SyncState.objects.filter(account=account, watched_since__isnull=False).first()
        return int(state.watch_owner.split(":")[1]) if state and state.watch_owner else None

    assert wait_for(lambda: owner_pid() is not None, timeout=60), processes.output()
    raw, message_id = _raw("Delivered while watched")
    dovecot.append(account.email, raw)
    assert _arrives(account, message_id, timeout=15) is not None, processes.output()

    holder = next(w for w in watchers.values() if w.pid == owner_pid())
    holder.stop()  # SIGKILL: its leases are never given back
    survivor = next(w for w in watchers.values() if w is not holder)
    assert wait_for(lambda: owner_pid() == survivor.pid, timeout=60), processes.output()
    raw, message_id = _raw("Delivered after the takeover")
    dovecot.append(account.email, raw)
    assert _arrives(account, message_id, timeout=15) is not None, processes.output()
