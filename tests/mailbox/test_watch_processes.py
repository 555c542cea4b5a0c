"""Watchers as `make run` runs them: real Celery processes (on Redis, and on the filesystem broker of `make run`)
with a sync worker, two watch workers on the ``watch`` queue with a thread pool, and beat; and Dovecot. New mail
reaches the database without any sync being asked for, and when the watch worker holding the mailbox is killed,
the other takes it over."""

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


@pytest.mark.parametrize("broker", ["redis", "filesystem"])  # filesystem: `make run`'s default
def test_new_mail_arrives_by_itself_and_a_killed_watch_worker_is_replaced(
    broker, dovecot, outlook_account, celery_processes
):
    account = outlook_account()
    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    processes = celery_processes(broker, ProxiedProvider({}, dovecot.env()))
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
    assert _arrives(account, message_id, timeout=30) is not None, processes.output()

    holder = next(w for w in watchers.values() if w.pid == owner_pid())
    holder.stop()  # SIGKILL: its leases are never given back
    survivor = next(w for w in watchers.values() if w is not holder)
    assert wait_for(lambda: owner_pid() == survivor.pid, timeout=60), processes.output()
    raw, message_id = _raw("Delivered after the takeover")
    dovecot.append(account.email, raw)
    assert _arrives(account, message_id, timeout=30) is not None, processes.output()


def test_a_long_first_sync_does_not_delay_another_mailboxs_incremental_sync(
    alice, google_app, sandbox_settings, gmail_behind_proxy, celery_processes
):
    from mailbox import tasks
    from sandbox.corpus import generate_messages
    from tests.fixtures.mail import gmail_account_create

    busy, other = (gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice) for _ in range(2))
    sandbox_settings.gmail.seed(busy.email, list(generate_messages(30, to_address=busy.email)))
    assert sync.account_sync(account_id=other.pk).outcome == "ok"
    processes = celery_processes("redis", gmail_behind_proxy)
    processes.worker("sync", queues="celery")
    processes.worker("first", queues="bulk")
    sandbox_settings.gmail.delay_next(20, method="messages.list", email=busy.email)  # a first sync that lasts
    tasks.account_sync_enqueue(busy.pk)
    assert wait_for(lambda: SyncState.objects.filter(account=busy, lock_owner__gt="").exists(), timeout=60)

    raw, message_id = _raw("For the other mailbox", to=other.email)
    sandbox_settings.gmail.insert_message(other.email, raw)
    tasks.account_sync_enqueue(other.pk)
    assert _arrives(other, message_id, timeout=15) is not None, processes.output()
    assert SyncState.objects.get(account=busy).stage != SyncState.Stage.INCREMENTAL  # still in its first sync
    assert wait_for(lambda: SyncState.objects.get(account=busy).stage == SyncState.Stage.INCREMENTAL, timeout=60)
