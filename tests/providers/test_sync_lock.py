"""The sync lock: renewed by a heartbeat while a sync lives, free soon after its worker dies, never dropped work.

Short TTLs (a second or two) stand in for the 60 s default so the tests take seconds; test_sync_kill.py
kills real processes. The waits here are the point: a lock must outlive several TTLs.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from mailbox import sync, tasks
from mailbox.models import Message, SyncState
from tests.fixtures.faults import redis_test_url

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = redis_test_url(base=6, variable="MAILHUB_TEST_REDIS_DB")


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _sync_in_thread(account_id: int) -> tuple[threading.Thread, list]:
    outcomes: list = []

    def run() -> None:
        try:
            outcomes.append(sync.account_sync(account_id=account_id).outcome)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            outcomes.append(repr(exc))
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcomes


def test_a_sync_waiting_long_on_the_provider_keeps_its_lock(gmail_account, gmail_mailbox, settings):
    """One request that takes 4 TTLs: the heartbeat renews the lock throughout; nobody else gets in."""
    settings.MAILHUB_SYNC_LOCK_TTL_SECONDS = 1.0
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = 0
    gmail_mailbox.seed(120)
    box = gmail_mailbox.store
    box.delay_next(4.0, method="messages.list", email=gmail_mailbox.email)
    thread, outcomes = _sync_in_thread(gmail_account.pk)
    try:
        assert _wait_for(lambda: box.stats(gmail_mailbox.email).get("messages.list", 0) >= 1, timeout=30)
        expiries = []
        for _ in range(6):  # 3 s into the 4 s wait: three TTLs
            time.sleep(0.5)
            assert sync.account_sync(account_id=gmail_account.pk).outcome == "busy"
            expiries.append(SyncState.objects.get(account=gmail_account).lock_expires_at)
            assert expiries[-1] > timezone.now()
        assert expiries == sorted(expiries) and len(set(expiries)) >= 4  # renewed, not just set once
    finally:
        thread.join(timeout=60)
    assert outcomes == ["ok"]
    state = SyncState.objects.get(account=gmail_account)
    assert not state.lock_owner and state.status == SyncState.Status.IDLE
    assert Message.objects.filter(account=gmail_account).count() == 120


def test_renewals_during_a_busy_sync_do_not_break_sqlite_transactions(gmail_account, gmail_mailbox, settings):
    """A renewal every 50 ms while 400 messages are stored: the sync's own transactions wait for the write
    lock instead of failing with "database is locked" (SQLite in WAL mode, IMMEDIATE transactions)."""
    settings.MAILHUB_SYNC_LOCK_TTL_SECONDS = 0.2
    # Paced to 2,000 quota units a second, the 400 gets (5 units each) take at least a second however fast the
    # machine is: time for about twenty renewals while the sync writes.
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = 2000
    gmail_mailbox.seed(400)
    seen: set = set()
    thread, outcomes = _sync_in_thread(gmail_account.pk)
    while thread.is_alive():
        seen.add(SyncState.objects.filter(account=gmail_account).values_list("lock_expires_at", flat=True).first())
        time.sleep(0.02)
    thread.join()
    assert outcomes == ["ok"]
    assert len(seen - {None}) >= 5, "the heartbeat should have renewed the lock many times"
    assert Message.objects.filter(account=gmail_account).count() == 400


def test_a_sync_whose_lock_was_taken_over_stops_writing_progress(gmail_account, gmail_mailbox, settings):
    """Taken for dead (its lock lapsed and another worker took it): it stops at its next report, leaving
    the new holder's lock and progress alone."""
    settings.MAILHUB_SYNC_LOCK_TTL_SECONDS = 1.0
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = 0
    gmail_mailbox.seed(150)
    box = gmail_mailbox.store
    box.delay_next(2.0, method="messages.list", email=gmail_mailbox.email)
    thread, outcomes = _sync_in_thread(gmail_account.pk)
    try:
        assert _wait_for(lambda: box.stats(gmail_mailbox.email).get("messages.list", 0) >= 1, timeout=30)
        SyncState.objects.filter(account=gmail_account).update(
            lock_owner="the-other-worker", lock_expires_at=timezone.now() + timedelta(minutes=1), progress_done=7
        )
    finally:
        thread.join(timeout=60)
    assert outcomes == ["lost"]
    state = SyncState.objects.get(account=gmail_account)
    assert state.lock_owner == "the-other-worker" and state.progress_done == 7
    assert state.stage != SyncState.Stage.INCREMENTAL  # it did not declare the first sync finished


@pytest.fixture
def redis_worker():
    import redis
    from celery.contrib.testing.worker import start_worker

    from mailhub.celery import app as celery_app

    def use_broker(url: str) -> None:
        celery_app.conf.broker_url = url
        celery_app._pool = None  # the producer pool is bound to the broker it was made for
        celery_app.amqp._producer_pool = None

    redis.Redis.from_url(REDIS_URL).flushdb()
    previous = celery_app.conf.broker_url
    use_broker(REDIS_URL)
    try:
        queues = list(tasks.SYNC_QUEUES)
        with start_worker(
            celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING", queues=queues
        ):
            yield celery_app
    finally:
        use_broker(previous)
        redis.Redis.from_url(REDIS_URL).flushdb()


def test_a_task_finding_a_dead_workers_lock_comes_back_when_it_lapses(redis_worker, gmail_account, gmail_mailbox):
    """What a killed worker leaves: a RUNNING state and a lock nobody renews. Its redelivered task (or any
    duplicate) finds it held, and instead of being dropped runs again once the lock has lapsed."""
    from mailbox.tasks import account_sync

    gmail_mailbox.seed(10)
    lapses_at = timezone.now() + timedelta(seconds=2)
    SyncState.objects.filter(account=gmail_account).update(
        lock_owner="killed-worker", lock_expires_at=lapses_at, status=SyncState.Status.RUNNING
    )
    account_sync.delay(gmail_account.pk)
    assert _wait_for(
        lambda: SyncState.objects.filter(
            account=gmail_account, stage=SyncState.Stage.INCREMENTAL, status=SyncState.Status.IDLE
        ).exists(),
        timeout=30,
    ), "the task was dropped"
    state = SyncState.objects.get(account=gmail_account)
    assert state.started_at >= lapses_at and not state.lock_owner and state.status == SyncState.Status.IDLE
    assert Message.objects.filter(account=gmail_account).count() == 10
